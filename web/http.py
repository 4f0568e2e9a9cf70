"""HTTP handlers: log in, read history, list who is online, log out, health.

Each handler validates its input at the edge, forwards the request to an
actor, and waits for the reply through :func:`chatroom.web.bridge.ask`.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pykka
from aiohttp import WSCloseCode, web

from chatroom.actors.auth import LoginDenied, TokenInfo
from chatroom.web import state
from chatroom.web.bridge import ActorTimeoutError, ask

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPES = {"application/json", "text/plain", "application/octet-stream", ""}


def error_response(
    status: int, text: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Build a JSON error response ``{"error": text}``."""
    response = web.json_response({"error": text}, status=status)
    for name in ("Retry-After", "Allow", "WWW-Authenticate"):
        if headers and name in headers:
            response.headers[name] = headers[name]
    return response


def fail(status: int, text: str, **headers: str) -> web.HTTPException:
    """Return an HTTP exception with a JSON body, for the handler to raise."""
    body = json.dumps({"error": text})
    exc_class = web.HTTPException
    for candidate in (
        web.HTTPBadRequest,
        web.HTTPUnauthorized,
        web.HTTPForbidden,
        web.HTTPUnsupportedMediaType,
        web.HTTPTooManyRequests,
        web.HTTPServiceUnavailable,
    ):
        if candidate.status_code == status:
            exc_class = candidate
    return exc_class(text=body, content_type="application/json", headers=headers or None)


def check_query(request: web.Request, allowed: set[str]) -> None:
    """Reject unknown and repeated query parameters with 400."""
    for name in request.query:
        if name not in allowed:
            raise fail(400, f"Unknown query parameter {name!r}; expected one of {sorted(allowed)}.")
        if len(request.query.getall(name)) > 1:
            raise fail(400, f"Query parameter {name!r} must appear at most once.")


def validate_name(value: Any, max_length: int) -> str:
    """Return the trimmed display name, or raise 400 saying what is wrong with it."""
    if not isinstance(value, str):
        raise fail(400, 'Field "user" must be a string.')
    name = value.strip()
    if not name:
        raise fail(400, "The display name is empty; choose a name.")
    if len(name) > max_length:
        raise fail(400, f"The display name is {len(name)} characters; the maximum is {max_length}.")
    for char in name:
        # Cc: control characters, Cs: lone surrogates, Zl/Zp: line and paragraph separators.
        if unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp"):
            raise fail(400, f"The display name contains the control character U+{ord(char):04X}.")
    return name


async def login(request: web.Request) -> web.Response:
    """``POST /login`` ``{"user", "password"}``: returns ``{"token"}`` or 400, 401, 429."""
    settings = request.app[state.SETTINGS]
    check_query(request, set())
    if request.content_type not in JSON_CONTENT_TYPES:
        raise fail(415, f"Expected a JSON body (application/json), got {request.content_type}.")

    try:
        document = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise fail(
            400, 'The body is not valid JSON; send {"user": NAME, "password": PASSWORD}.'
        ) from None
    if not isinstance(document, dict):
        raise fail(400, 'Expected a JSON object {"user": NAME, "password": PASSWORD}.')
    for key in ("user", "password"):
        if key not in document:
            raise fail(400, f'Field "{key}" is missing.')
    name = validate_name(document["user"], settings.max_name_length)
    password = document["password"]
    if not isinstance(password, str):
        raise fail(400, 'Field "password" must be a string.')

    address = request.remote or ""
    auth = request.app[state.ACTORS].auth
    result = await ask(auth.login(name, password, address), settings.ask_timeout)

    if isinstance(result, LoginDenied):
        reason = "wrong_password" if result.retry_after is None else "rate_limited"
        request.app[state.METRICS].login_failures.labels(reason).inc()
        if result.retry_after is not None:
            seconds = str(int(result.retry_after + 0.999))
            raise fail(
                429,
                f"Too many failed logins; try again in {seconds} seconds.",
                **{"Retry-After": seconds},
            )
        raise fail(401, "Wrong password.")
    return web.json_response({"token": result.token})


async def authorize(request: web.Request) -> tuple[str, TokenInfo]:
    """Check the ``Authorization: Bearer`` token; raise 401 when it is missing or invalid."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise fail(
            401,
            "Missing token; send the header 'Authorization: Bearer TOKEN'.",
            **{"WWW-Authenticate": "Bearer"},
        )
    return token.strip(), await check_token(request, token.strip())


async def check_token(request: web.Request, token: str) -> TokenInfo:
    """Return who owns ``token``; raise 401 when it is unknown or expired."""
    settings = request.app[state.SETTINGS]
    info = await ask(request.app[state.ACTORS].auth.check(token), settings.ask_timeout)
    if info is None:
        raise fail(
            401, "The token is invalid or expired; log in again.", **{"WWW-Authenticate": "Bearer"}
        )
    return info


async def history(request: web.Request) -> web.Response:
    """``GET /history?page=N``: bucket N, oldest first; no page or -1 means the newest.

    Every request is counted in the history metric by the status it ends with.
    """
    metrics = request.app[state.METRICS]
    try:
        response = await read_history(request)
    except web.HTTPException as exc:
        metrics.count_history_request(exc.status)
        raise
    except (ActorTimeoutError, pykka.ActorDeadError):
        metrics.count_history_request(503)  # The json_errors middleware returns 503.
        raise
    except Exception:
        metrics.count_history_request(500)
        raise
    metrics.count_history_request(response.status)
    return response


async def read_history(request: web.Request) -> web.Response:
    check_query(request, {"page"})
    await authorize(request)

    text = request.query.get("page", "-1")
    try:
        page = int(text)
    except ValueError:
        raise fail(400, f"Page must be an integer, got {text!r}.") from None
    if page < -1:
        raise fail(400, f"Page must be -1 (the newest) or a page number from 0, got {page}.")

    settings = request.app[state.SETTINGS]
    result = await ask(request.app[state.ACTORS].store.history(page), settings.ask_timeout)
    if result is None:
        raise fail(400, f"Page {page} does not exist; request page -1 for the newest.")
    return web.Response(body=result.body, content_type="application/json")


async def users(request: web.Request) -> web.Response:
    """``GET /users``: who is online, each user once."""
    check_query(request, set())
    await authorize(request)
    settings = request.app[state.SETTINGS]
    online = await ask(request.app[state.ACTORS].store.online_users(), settings.ask_timeout)
    return web.json_response({"users": online})


async def logout(request: web.Request) -> web.Response:
    """``GET /logout``: remove the token and close its websockets with 1008."""
    check_query(request, set())
    token, _ = await authorize(request)
    settings = request.app[state.SETTINGS]
    await ask(request.app[state.ACTORS].auth.logout(token), settings.ask_timeout)

    outboxes = request.app[state.CONNECTIONS].by_token.get(token, set())
    for outbox in list(outboxes):
        outbox.close_now(WSCloseCode.POLICY_VIOLATION, "logged out")
    return web.json_response({"status": "logged out"})


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: 200 when every actor replies within a second, else 503 naming it."""
    checks = {
        "auth": request.app[state.ACTORS].auth.token_count(),
        "store": request.app[state.ACTORS].store.last_id(),
    }
    failing = []
    for name, future in checks.items():
        try:
            await ask(future, 1.0)
        except Exception as exc:
            logger.warning(f"Health check failed for the {name} actor: {exc!r}")
            failing.append(name)
    if failing:
        return web.json_response({"status": "unavailable", "failing": failing}, status=503)
    return web.json_response({"status": "ok"})


async def index(request: web.Request) -> web.FileResponse:
    """``GET /``: the browser client."""
    return web.FileResponse(request.app[state.CLIENT_DIR] / "index.html")


def static_file(path: Path) -> Callable[[web.Request], Awaitable[web.FileResponse]]:
    """Return a handler that serves one file of the browser client."""

    async def serve(request: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    return serve
