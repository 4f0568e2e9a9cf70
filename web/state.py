"""The application's typed state, shared by the handlers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from chatroom.actors.auth import AuthProxy
from chatroom.actors.store import MessageStoreProxy
from chatroom.web.bridge import LoopOutbox
from chatroom.web.config import Settings
from chatroom.web.metrics import Metrics


@dataclass
class Connections:
    """The open websockets, by token, so logout can close them and caps can be enforced.

    Only the event loop touches this registry.
    """

    by_token: dict[str, set[LoopOutbox]] = field(default_factory=dict)
    sockets: set[web.WebSocketResponse] = field(default_factory=set)

    def add(self, token: str, ws: web.WebSocketResponse, outbox: LoopOutbox) -> None:
        self.by_token.setdefault(token, set()).add(outbox)
        self.sockets.add(ws)

    def remove(self, token: str, ws: web.WebSocketResponse, outbox: LoopOutbox) -> None:
        self.sockets.discard(ws)
        outboxes = self.by_token.get(token)
        if outboxes is not None:
            outboxes.discard(outbox)
            if not outboxes:
                del self.by_token[token]

    def close_all(self, code: int, reason: str) -> None:
        """Start closing every open websocket with ``code`` and ``reason``."""
        for outboxes in self.by_token.values():
            for outbox in outboxes:
                outbox.close_now(code, reason)

    def count_for(self, token: str) -> int:
        return len(self.by_token.get(token, ()))


@dataclass
class Actors:
    """The room's long-lived actors. The supervisor swaps in a new proxy when it restarts one,
    so handlers read them from here on each request rather than keeping their own.
    """

    auth: AuthProxy
    store: MessageStoreProxy


SETTINGS = web.AppKey("settings", Settings)
PASSWORD = web.AppKey("password", str)
ACTORS = web.AppKey("actors", Actors)
CONNECTIONS = web.AppKey("connections", Connections)
CLIENT_DIR = web.AppKey("client_dir", Path)
METRICS = web.AppKey("metrics", Metrics)
METRICS_URL = web.AppKey("metrics_url", str)
"""URL of ``/metrics`` on the separate loopback listener, set only when metrics is separate."""
