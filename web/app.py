"""The aiohttp application: typed app state, actor lifecycle, middlewares and routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pykka
from aiohttp import WSCloseCode, web

from chatroom.actors.auth import AuthActor, AuthProxy
from chatroom.actors.store import MessageStoreActor, MessageStoreProxy
from chatroom.web import bridge, http, join
from chatroom.web.config import Settings
from chatroom.web.frames import encode_text_frames
from chatroom.web.state import (
    ACTORS,
    CLIENT_DIR,
    CONNECTIONS,
    PASSWORD,
    SETTINGS,
    Actors,
    Connections,
)
from chatroom.web.supervisor import Supervisor

logger = logging.getLogger(__name__)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def create_app(
    settings: Settings, password: str, client_dir: Path | None = None
) -> web.Application:
    """Build the room's application; its actors start and stop with the app."""
    app = web.Application(
        client_max_size=settings.max_request_bytes,
        middlewares=[json_errors, security_headers],
    )
    app[SETTINGS] = settings
    app[PASSWORD] = password
    app[CONNECTIONS] = Connections()
    app[CLIENT_DIR] = client_dir or default_client_dir()

    app.cleanup_ctx.append(run_actors)
    app.on_shutdown.append(close_sockets)

    app.router.add_post("/login", http.login)
    app.router.add_get("/history", http.history)
    app.router.add_get("/users", http.users)
    app.router.add_get("/logout", http.logout)
    app.router.add_post("/logout", http.logout)
    app.router.add_get("/healthz", http.healthz)
    app.router.add_get("/join", join.join)
    add_client_routes(app, app[CLIENT_DIR])
    return app


CLIENT_SUFFIXES = {".html", ".js", ".css", ".svg", ".png", ".ico", ".webmanifest"}


def add_client_routes(app: web.Application, client_dir: Path) -> None:
    """Serve ``index.html`` at ``/`` and each other client file at ``/<path>``.

    Each file gets its own route, rather than one catch-all static route, so
    that a wrong method on an API path is 405 and an unknown path is 404.
    """
    app.router.add_get("/", http.index)
    for path in sorted(client_dir.rglob("*")):
        if path.is_file() and path.suffix in CLIENT_SUFFIXES:
            url = "/" + path.relative_to(client_dir).as_posix()
            app.router.add_get(url, http.static_file(path))


def default_client_dir() -> Path:
    """Return the folder of the browser client, ``client/`` beside this package.

    That holds in the repository (``web/`` and ``client/``) and once installed
    (``chatroom/web/`` and ``chatroom/client/``).
    """
    return Path(__file__).resolve().parent.parent / "client"


async def run_actors(app: web.Application) -> AsyncIterator[None]:
    """Start the actors in dependency order, and stop them in reverse when the app stops.

    A supervisor restarts the auth actor or the store if one of them dies.
    """
    settings = app[SETTINGS]
    loop = asyncio.get_running_loop()

    def start_auth() -> pykka.ActorRef[AuthActor]:
        return AuthActor.start(
            app[PASSWORD],
            token_lifetime=settings.token_lifetime,
            max_login_failures=settings.max_login_failures,
            failure_window=settings.login_failure_window,
        )

    def start_store() -> pykka.ActorRef[MessageStoreActor]:
        return MessageStoreActor.start(
            bucket_size=settings.bucket_size,
            max_replay=settings.max_replay,
            presence_delay=settings.presence_delay,
            encode=encode_text_frames,
            broadcast=bridge.LoopBroadcaster(loop),
        )

    def replace_auth(ref: pykka.ActorRef[Any]) -> None:
        # The tokens died with the old actor, so every client must log in again.
        actors.auth = cast(AuthProxy, ref.proxy())

    def replace_store(ref: pykka.ActorRef[Any]) -> None:
        # Open sessions are subscribed to the old store: close them so that
        # clients reconnect, with since=, to the new one.
        actors.store = cast(MessageStoreProxy, ref.proxy())
        app[CONNECTIONS].close_all(WSCloseCode.SERVICE_RESTART, "room restarted")

    supervisor = Supervisor(settings.supervise_interval)
    auth_ref = supervisor.watch("auth", start_auth, replace_auth)
    store_ref = supervisor.watch("store", start_store, replace_store)
    actors = Actors(
        auth=cast(AuthProxy, auth_ref.proxy()), store=cast(MessageStoreProxy, store_ref.proxy())
    )
    app[ACTORS] = actors
    supervisor.start()
    sweeper = asyncio.create_task(sweep_tokens(actors, settings.token_sweep_interval))

    try:
        yield
    finally:
        sweeper.cancel()
        await supervisor.stop()
        for ref in reversed(supervisor.refs()):
            await bridge.stop_actor(ref, settings.shutdown_timeout)


async def sweep_tokens(actors: Actors, interval: float) -> None:
    """Tell the auth actor to drop expired tokens every ``interval`` seconds."""
    while True:
        await asyncio.sleep(interval)
        actors.auth.sweep_expired()


async def close_sockets(app: web.Application) -> None:
    """Close every websocket with 1001 (going away) before the actors stop."""
    sockets = list(app[CONNECTIONS].sockets)
    if sockets:
        logger.info(f"Closing {len(sockets)} websockets")
    closing = [
        ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down") for ws in sockets
    ]
    await asyncio.gather(*closing, return_exceptions=True)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every HTTP error as JSON ``{"error": ...}``, and an actor timeout as 503."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return http.error_response(exc.status, _error_text(exc), headers=exc.headers)
    except bridge.ActorTimeoutError as exc:
        logger.error(f"{request.method} {request.path} timed out: {exc}")
        return http.error_response(503, "The room is busy or unavailable; try again shortly.")
    except pykka.ActorDeadError as exc:
        logger.error(f"{request.method} {request.path} reached a stopped actor: {exc}")
        return http.error_response(503, "The room is shutting down or unavailable.")


def _error_text(exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "Not found; the API is /login, /history, /users, /join and /logout."
    if exc.status == 405:
        return (
            f"Method not allowed; use {', '.join(sorted(exc.headers.get('Allow', '').split(',')))}."
        )
    if exc.status == 413:
        return "The request body is too large."
    return exc.text or exc.reason


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if not isinstance(response, web.WebSocketResponse):
        response.headers.update(SECURITY_HEADERS)
    return response
