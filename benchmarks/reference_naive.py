"""Reference chat server that delivers each message with one ``send_str`` per socket.

A baseline for the benchmarks: plain aiohttp, no actors. Each posted message
is serialised once and then awaited into every connected websocket in turn.
A lock around numbering and sending keeps one total order, because
``send_str`` can suspend on a full write buffer and another post would
otherwise overtake it.

Run: ``.venv/bin/python benchmarks/reference_naive.py --port 0``
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from reference_common import Room, make_app, parse_args, read_client_frames, run

logger = logging.getLogger("reference.naive")


class NaiveRoom(Room):
    def __init__(self, password: str) -> None:
        super().__init__(password)
        self.sockets: set[web.WebSocketResponse] = set()
        self.send_lock = asyncio.Lock()

    async def post(self, user: dict[str, str], body: str) -> None:
        async with self.send_lock:
            text = self.encode_message(user, body)
            for ws in list(self.sockets):
                try:
                    await ws.send_str(text)
                except ConnectionError as error:
                    logger.info("dropping a websocket that failed to send: %s", error)
                    self.sockets.discard(ws)

    async def serve_socket(
        self, request: web.Request, ws: web.WebSocketResponse, user: dict[str, str]
    ) -> None:
        await ws.send_json(user)
        self.sockets.add(ws)
        try:
            await read_client_frames(ws, lambda body: self.post(user, body), user)
        finally:
            self.sockets.discard(ws)


def main() -> None:
    args = parse_args("Reference chat server: one awaited send_str per socket and message.")
    run(make_app(NaiveRoom(args.password)), args.host, args.port)


if __name__ == "__main__":
    main()
