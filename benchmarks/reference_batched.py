"""Reference chat server that writes each loop turn's messages with one write per socket.

A baseline for the benchmarks: plain aiohttp, no actors. Server-to-client
websocket frames are unmasked (RFC 6455 section 5.1), so a message's frame
bytes are the same for every recipient. Each frame is built once and appended
to a batch. A callback scheduled with ``call_soon`` runs after the callbacks
already queued in the current event loop turn, and it writes the whole batch
with one ``transport.write`` per socket. The websockets are opened with
``compress=False`` so that no per-connection deflate state changes the bytes.

Run: ``.venv/bin/python benchmarks/reference_batched.py --port 0``
"""

from __future__ import annotations

import asyncio
import logging
import struct

from aiohttp import web
from reference_common import Room, make_app, parse_args, read_client_frames, run

logger = logging.getLogger("reference.batched")

# A socket whose unsent output exceeds this is closed as too slow (close code 1008).
MAX_WRITE_BUFFER_BYTES = 64 * 1024 * 1024


def encode_text_frame(text: str) -> bytes:
    """Return an unmasked, final websocket text frame carrying text."""
    payload = text.encode()
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x81, length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x81, 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 127, length)
    return header + payload


class BatchedRoom(Room):
    def __init__(self, password: str) -> None:
        super().__init__(password)
        self.transports: dict[asyncio.Transport, web.WebSocketResponse] = {}
        self.batch: list[bytes] = []
        self.flush_scheduled = False

    def post(self, user: dict[str, str], body: str) -> None:
        self.batch.append(encode_text_frame(self.encode_message(user, body)))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        data = b"".join(self.batch)
        self.batch.clear()
        too_slow: list[web.WebSocketResponse] = []
        for transport, ws in list(self.transports.items()):
            if transport.is_closing():
                del self.transports[transport]
                continue
            transport.write(data)
            if transport.get_write_buffer_size() > MAX_WRITE_BUFFER_BYTES:
                del self.transports[transport]
                too_slow.append(ws)
        for ws in too_slow:
            logger.warning(
                "closing a websocket whose write buffer exceeds %d bytes", MAX_WRITE_BUFFER_BYTES
            )
            asyncio.get_running_loop().create_task(
                ws.close(code=1008, message=b"client cannot keep up")
            )

    async def serve_socket(
        self, request: web.Request, ws: web.WebSocketResponse, user: dict[str, str]
    ) -> None:
        transport = request.transport
        if transport is None:
            logger.error("websocket of %s has no transport after the upgrade", user["name"])
            await ws.close(code=1011, message=b"no transport")
            return
        await ws.send_json(user)
        self.transports[transport] = ws
        try:
            await read_client_frames(ws, lambda body: self.post(user, body), user)
        finally:
            self.transports.pop(transport, None)


def main() -> None:
    args = parse_args("Reference chat server: one transport.write per socket and event loop turn.")
    run(make_app(BatchedRoom(args.password)), args.host, args.port)


if __name__ == "__main__":
    main()
