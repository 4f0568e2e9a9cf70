"""Parts shared by the two reference chat servers used as benchmark baselines.

The reference servers implement only the subset of the chatroom protocol that
the load generator exercises: ``POST /login``, ``GET /join?token=...``, the user
object as the first websocket frame, and message frames
``{"id":N,"user":{...},"time":"...","body":"..."}`` for every posted body.
They send no presence, joined or left frames, keep no history and never
expire tokens. They differ only in how a message reaches the sockets, which a
subclass of :class:`Room` defines.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

logger = logging.getLogger("reference")

MAX_NAME_LENGTH = 32
MAX_BODY_BYTES = 4096


class Room:
    """Users, tokens and the message counter. Subclasses deliver the messages."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.users_by_token: dict[str, dict[str, str]] = {}
        self.last_id = 0

    def encode_message(self, user: dict[str, str], body: str) -> str:
        """Assign the next id to body and return the message as compact JSON, "id" first."""
        self.last_id += 1
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        message = {"id": self.last_id, "user": user, "time": now, "body": body}
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False)

    async def serve_socket(
        self, request: web.Request, ws: web.WebSocketResponse, user: dict[str, str]
    ) -> None:
        """Send the user object, deliver messages to ws until it closes, and post what it sends."""
        raise NotImplementedError


def error_response(status: int, sentence: str) -> web.Response:
    return web.json_response({"error": sentence}, status=status)


def reject_bad_body(body: str) -> str | None:
    """Return the error frame for an invalid message body, or None if the body is valid."""
    if not body.strip():
        return json.dumps(
            {"type": "error", "code": "empty_body", "error": "Message body is empty."}
        )
    if len(body.encode()) > MAX_BODY_BYTES:
        return json.dumps(
            {
                "type": "error",
                "code": "too_large",
                "error": f"Message body exceeds {MAX_BODY_BYTES} bytes.",
            }
        )
    return None


async def read_client_frames(
    ws: web.WebSocketResponse, post: Callable[[str], Any], user: dict[str, str]
) -> None:
    """Pass every valid text frame from ws to post until the socket closes.

    post may return an awaitable, which is awaited before the next frame is read.
    """
    async for frame in ws:
        if frame.type != WSMsgType.TEXT:
            if frame.type == WSMsgType.BINARY:
                await ws.close(code=1003, message=b"binary frames are not supported")
            break
        body = str(frame.data)
        error = reject_bad_body(body)
        if error is not None:
            await ws.send_str(error)
            continue
        result = post(body)
        if asyncio.iscoroutine(result):
            await result
    logger.debug("websocket of %s closed with code %s", user["name"], ws.close_code)


def make_app(room: Room) -> web.Application:
    async def login(request: web.Request) -> web.Response:
        try:
            data = await request.json()
        except ValueError:
            return error_response(400, "Request body is not valid JSON.")
        if not isinstance(data, dict):
            return error_response(400, "Request body must be a JSON object.")
        name = data.get("user")
        password = data.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            return error_response(400, 'Fields "user" and "password" must be strings.')
        name = name.strip()
        if not name or len(name) > MAX_NAME_LENGTH or any(ord(ch) < 32 for ch in name):
            return error_response(
                400, f"User name must be 1 to {MAX_NAME_LENGTH} printable characters."
            )
        if not secrets.compare_digest(password.encode(), room.password.encode()):
            return error_response(401, "Wrong password.")
        token = secrets.token_hex(32)
        room.users_by_token[token] = {"id": str(uuid.uuid4()), "name": name}
        return web.json_response({"token": token})

    async def join(request: web.Request) -> web.StreamResponse:
        user = room.users_by_token.get(request.query.get("token", ""))
        if user is None:
            return error_response(401, "Missing or invalid token.")
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        await room.serve_socket(request, ws, user)
        return ws

    app = web.Application()
    app.router.add_post("/login", login)
    app.router.add_get("/join", join)
    return app


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="TCP port; 0 picks a free port (default 0)"
    )
    parser.add_argument(
        "--password",
        default=os.environ.get("CHATROOM_PASSWORD", "bench"),
        help="room password (default: $CHATROOM_PASSWORD, else 'bench')",
    )
    args = parser.parse_args()
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error(
            f"--host {args.host} is not a loopback address; "
            "the reference servers bind loopback addresses only"
        )
    return args


async def serve_forever(app: web.Application, host: str, port: int) -> None:
    """Serve app on host:port until SIGTERM or SIGINT, printing the address once listening."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    site = web.SockSite(runner, sock, backlog=4096, shutdown_timeout=2.0)
    await site.start()
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"listening on http://{shown_host}:{bound_port}/", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    logger.info("stopping")
    await runner.cleanup()


def run(app: web.Application, host: str, port: int) -> None:
    """Run app with uvloop when it is importable, else with the default asyncio loop."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    try:
        import uvloop
    except ImportError:
        print(
            f"event loop: asyncio default (uvloop not importable), Python {sys.version.split()[0]}",
            flush=True,
        )
        asyncio.run(serve_forever(app, host, port))
        return
    version = importlib.metadata.version("uvloop")
    print(f"event loop: uvloop {version}, Python {sys.version.split()[0]}", flush=True)
    uvloop.run(serve_forever(app, host, port))
