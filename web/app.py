"""The aiohttp application: typed app state, actor lifecycle, middlewares and routes."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pykka
from aiohttp import WSCloseCode, web

from chatroom.actors.auth import AuthActor, AuthProxy
from chatroom.actors.journal import JournalError, SqliteJournal
from chatroom.actors.store import JournalOpener, MessageStoreActor, MessageStoreProxy
from chatroom.web import bridge, http, join
from chatroom.web.config import Settings
from chatroom.web.frames import encode_text_frames
from chatroom.web.metrics import SCRAPE_ASK_TIMEOUT, Metrics, loopback_listener, scrape_handler
from chatroom.web.state import (
    ACTORS,
    CLIENT_DIR,
    CONNECTIONS,
    METRICS,
    METRICS_URL,
    PASSWORD,
    SETTINGS,
    Actors,
    Connections,
)
from chatroom.web.supervisor import Supervisor

logger = logging.getLogger(__name__)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DATA_DIR = web.AppKey("data_dir", Path)
"""The directory of the room's journal; unset when the history stays in memory only."""

JOURNAL_OPEN_TIMEOUT = 60.0
"""Seconds the start waits for the store to open its journal. Restoring reads only the newest
buckets, but SQLite may first replay a large write-ahead log left by a crash."""

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
    settings: Settings,
    password: str,
    client_dir: Path | None = None,
    *,
    data_dir: Path | None = None,
) -> web.Application:
    """Build the room's application; its actors start and stop with the app.

    With ``data_dir`` the history is journaled there and survives restarts;
    without it the history lives in memory only.
    """
    app = web.Application(
        client_max_size=settings.max_request_bytes,
        middlewares=[json_errors, security_headers],
    )
    app[SETTINGS] = settings
    app[PASSWORD] = password
    connections = app[CONNECTIONS] = Connections()
    app[CLIENT_DIR] = client_dir or default_client_dir()
    if data_dir is not None:
        app[DATA_DIR] = data_dir
    app[METRICS] = Metrics(connected_sockets=lambda: len(connections.sockets))

    # Before run_actors, so that a metrics port in use fails the start before any actor runs.
    if settings.metrics == "separate":
        app.cleanup_ctx.append(run_metrics_listener)
    app.cleanup_ctx.append(run_actors)
    app.on_shutdown.append(close_sockets)

    app.router.add_post("/login", http.login)
    app.router.add_get("/history", http.history)
    app.router.add_get("/users", http.users)
    app.router.add_get("/logout", http.logout)
    app.router.add_post("/logout", http.logout)
    app.router.add_get("/healthz", http.healthz)
    if settings.metrics == "on":
        app.router.add_get("/metrics", metrics_scrape_handler(app))
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

    That is true in the repository (``web/`` and ``client/``) and once installed
    (``chatroom/web/`` and ``chatroom/client/``).
    """
    return Path(__file__).resolve().parent.parent / "client"


async def run_actors(app: web.Application) -> AsyncIterator[None]:
    """Start the actors in dependency order, and stop them in reverse when the app stops.

    A supervisor restarts the auth actor or the store if one of them dies.
    Raises :class:`JournalError` if the store cannot open or restore its journal.
    """
    settings = app[SETTINGS]
    loop = asyncio.get_running_loop()
    journal: JournalOpener | None = None
    if DATA_DIR in app:
        journal = functools.partial(
            SqliteJournal.open, app[DATA_DIR], synchronous=settings.journal_synchronous
        )
    journal_checks: set[asyncio.Task[None]] = set()

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
            broadcast=bridge.LoopBroadcaster(loop, app[METRICS]),
            journal=journal,
            memory_buckets=settings.memory_buckets,
            max_messages=settings.max_messages,
            max_age=settings.max_age,
        )

    def replace_auth(ref: pykka.ActorRef[Any]) -> None:
        # The tokens died with the old actor, so every client must log in again.
        actors.auth = cast(AuthProxy, ref.proxy())

    def replace_store(ref: pykka.ActorRef[Any]) -> None:
        # Open sessions are subscribed to the old store: close them so that
        # clients reconnect, with since=, to the new one.
        actors.store = cast(MessageStoreProxy, ref.proxy())
        app[CONNECTIONS].close_all(WSCloseCode.SERVICE_RESTART, "room restarted")
        if journal is not None:
            check = loop.create_task(check_restarted_store(ref, settings.shutdown_timeout))
            journal_checks.add(check)
            check.add_done_callback(journal_checks.discard)

    supervisor = Supervisor(settings.supervise_interval)
    auth_ref = supervisor.watch("auth", start_auth, replace_auth)
    store_ref = supervisor.watch("store", start_store, replace_store)
    actors = Actors(
        auth=cast(AuthProxy, auth_ref.proxy()), store=cast(MessageStoreProxy, store_ref.proxy())
    )
    app[ACTORS] = actors
    try:
        await bridge.ask(actors.store.check_journal(), JOURNAL_OPEN_TIMEOUT)
    except BaseException:
        for ref in reversed(supervisor.refs()):
            await bridge.stop_actor(ref, settings.shutdown_timeout)
        raise
    supervisor.start()
    sweeper = asyncio.create_task(sweep_tokens(actors, settings.token_sweep_interval))

    try:
        yield
    finally:
        sweeper.cancel()
        await supervisor.stop()
        for ref in reversed(supervisor.refs()):
            await bridge.stop_actor(ref, settings.shutdown_timeout)


async def check_restarted_store(ref: pykka.ActorRef[Any], stop_timeout: float) -> None:
    """Stop a restarted store whose journal failed to open, so the supervisor tries again.

    A store without its journal would hand out ids that the journal already holds.
    """
    store = cast(MessageStoreProxy, ref.proxy())
    try:
        await bridge.ask(store.check_journal(), JOURNAL_OPEN_TIMEOUT)
    except JournalError as exc:
        logger.error(f"The restarted store cannot use its journal; stopping it: {exc}")
        await bridge.stop_actor(ref, stop_timeout)
    except (bridge.ActorTimeoutError, pykka.ActorDeadError) as exc:
        logger.error(f"The restarted store did not report on its journal: {exc}")


def metrics_scrape_handler(app: web.Application) -> Handler:
    """Build the ``GET /metrics`` handler of ``app``'s metrics."""

    async def count_tokens() -> int:
        return await bridge.ask(app[ACTORS].auth.token_count(), SCRAPE_ASK_TIMEOUT)

    return scrape_handler(app[METRICS], count_tokens)


async def run_metrics_listener(app: web.Application) -> AsyncIterator[None]:
    """Serve ``/metrics`` on its own loopback port for as long as the app runs."""
    port = app[SETTINGS].metrics_port
    async with loopback_listener(metrics_scrape_handler(app), port) as url:
        app[METRICS_URL] = url
        yield


async def sweep_tokens(actors: Actors, interval: float) -> None:
    """Tell the auth actor to drop expired tokens every ``interval`` seconds."""
    while True:
        await asyncio.sleep(interval)
        actors.auth.sweep_expired()


async def close_sockets(app: web.Application) -> None:
    """Close every websocket with 1001 (going away) before the actors stop."""
    connections = app[CONNECTIONS]
    if connections.sockets:
        logger.info(f"Closing {len(connections.sockets)} websockets")
    # Through each outbox, so that the session's close log shows this code and reason.
    connections.close_all(WSCloseCode.GOING_AWAY, "server shutting down")
    closing = [
        outbox.close_task
        for outboxes in connections.by_token.values()
        for outbox in outboxes
        if outbox.close_task is not None
    ]
    await asyncio.gather(*closing, return_exceptions=True)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every HTTP error into JSON ``{"error": ...}``, and an actor timeout into 503."""
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
    except JournalError as exc:
        logger.error(f"{request.method} {request.path} failed to read the journal: {exc}")
        return http.error_response(
            500, "The history could not be read; the server log has details."
        )


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
