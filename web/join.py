"""``GET /join``: the websocket handler that pairs one socket with one SessionActor."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from aiohttp import WSCloseCode, WSMsgType, web
from yarl import URL

from chatroom.actors.session import PostLimits, SessionActor, SessionProxy
from chatroom.web import state
from chatroom.web.bridge import LoopOutbox
from chatroom.web.frames import encode_text_frames
from chatroom.web.http import check_query, check_token, fail

logger = logging.getLogger(__name__)

SUBPROTOCOL = "chatroom"
TOKEN_PROTOCOL_PREFIX = "bearer."


def token_from_request(request: web.Request) -> str:
    """Take the token from ``?token=`` or from a ``bearer.TOKEN`` websocket subprotocol.

    Browsers cannot set headers on a websocket request, and a token in the URL
    ends up in logs and history, so the browser client sends it as a subprotocol.
    """
    token = request.query.get("token")
    if token:
        return token
    for protocol in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        protocol = protocol.strip()
        if protocol.startswith(TOKEN_PROTOCOL_PREFIX):
            return protocol.removeprefix(TOKEN_PROTOCOL_PREFIX)
    raise fail(401, "Missing token; pass ?token=TOKEN or the subprotocol 'bearer.TOKEN'.")


def check_origin(request: web.Request, allowed: list[str]) -> None:
    """Reject a browser page from another site (cross-site websocket hijacking) with 403.

    Clients that send no Origin header, such as command-line tools, are allowed.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return
    own = f"{request.scheme}://{request.host}"
    if origin == own or origin in allowed:
        return
    forwarded_host = request.headers.get("X-Forwarded-Host")
    if forwarded_host and URL(origin).host == forwarded_host.split(":")[0]:
        return
    raise fail(403, f"Origin {origin} may not open this room's websocket.")


def parse_since(request: web.Request) -> int | None:
    text = request.query.get("since")
    if text is None:
        return None
    try:
        since = int(text)
    except ValueError:
        raise fail(400, f"since must be a message id (an integer), got {text!r}.") from None
    if since < 0:
        raise fail(400, f"since must be 0 or greater, got {since}.")
    return since


async def join(request: web.Request) -> web.WebSocketResponse:
    """Upgrade to a websocket and relay frames between the client and its SessionActor."""
    settings = request.app[state.SETTINGS]
    connections = request.app[state.CONNECTIONS]

    check_query(request, {"token", "since"})
    token = token_from_request(request)
    info = await check_token(request, token)
    since = parse_since(request)
    check_origin(request, settings.allowed_origins)
    if len(connections.sockets) >= settings.max_connections:
        raise fail(
            503, f"The room is full ({settings.max_connections} connections); try again later."
        )
    if connections.count_for(token) >= settings.max_connections_per_token:
        raise fail(
            429,
            f"This token already has {settings.max_connections_per_token} open connections; "
            "close one first.",
        )

    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,),
        heartbeat=settings.heartbeat,
        max_msg_size=settings.max_frame_bytes,
        compress=False,  # Frames are built once for all recipients, uncompressed.
    )
    await ws.prepare(request)
    transport = request.transport
    if transport is None:  # The client left during the upgrade.
        return ws

    loop = asyncio.get_running_loop()
    outbox = LoopOutbox(
        loop,
        ws,
        transport,
        max_bytes=settings.queue_max_bytes,
        max_messages=settings.queue_max_messages,
        metrics=request.app[state.METRICS],
    )
    session_id = uuid.uuid4().hex[:12]
    user = info.user
    connections.add(token, ws, outbox)
    expiry = loop.call_later(
        max(info.expires_at - time.monotonic(), 0.0),
        outbox.close_now,
        WSCloseCode.POLICY_VIOLATION,
        "token expired",
    )

    # NOTE: Thread.start() inside SessionActor.start() waits until the new
    # thread runs, a short stall of the loop per join that grows under load.
    session_ref = SessionActor.start(
        session_id=session_id,
        user=user,
        store=request.app[state.ACTORS].store,
        outbox=outbox,
        encode=encode_text_frames,
        since=since,
        limits=PostLimits(
            max_body_bytes=settings.max_message_bytes,
            rate=settings.post_rate,
            burst=settings.post_burst,
            max_rejections=settings.max_rate_rejections,
        ),
        on_rate_limited=request.app[state.METRICS].rate_limited_messages.inc,
    )
    session: SessionProxy = session_ref.proxy()  # type: ignore[assignment]
    started = time.monotonic()
    logger.info(f"Session {session_id} of user {user.id} opened from {request.remote}")

    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                session.receive_text(message.data)
            elif message.type == WSMsgType.BINARY:
                outbox.close_now(WSCloseCode.UNSUPPORTED_DATA, "binary frames are not supported")
                break
    finally:
        expiry.cancel()
        connections.remove(token, ws, outbox)
        session_ref.stop(block=False)
        # The server's own code and reason when it closed first, since the peer's
        # reply overwrites ws.close_code. NOTE: aiohttp does not keep the reason
        # a peer sends with its close frame.
        code = outbox.close_code or ws.close_code
        reason = outbox.close_reason or "closed by the client, the network or shutdown"
        logger.info(
            f"Session {session_id} of user {user.id} closed with code {code} "
            f"({reason}) after {time.monotonic() - started:.1f} s"
        )

    if outbox.close_task is not None:
        await outbox.close_task
    return ws
