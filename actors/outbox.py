"""Outboxes and broadcasters: how actors hand bytes to the clients' sockets.

The actors never touch a socket. The web layer gives each session an
:class:`Outbox` and gives the store a :class:`Broadcaster`; both only hand
bytes over to the event loop, which does the writing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Outbox(Protocol):
    """One client's bounded outbound queue. Its methods may be called from any thread."""

    def put(self, data: bytes, message_count: int) -> bool:
        """Queue ``data`` for the client. Returns False when the queue is over its bound."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Close the client's socket with a websocket close ``code`` and ``reason``."""
        ...


class Broadcaster(Protocol):
    """Hands one batch of bytes to many outboxes at once."""

    def __call__(
        self,
        targets: Sequence[Outbox],
        data: bytes,
        message_count: int,
        posted_at: float | None = None,
    ) -> None:
        """Queue ``data`` for every outbox in ``targets``, without waiting for any of them.

        ``data`` contains ``message_count`` chat messages. ``posted_at`` is the
        ``time.monotonic()`` at which the oldest of them was posted, for the
        delivery latency metric, or None when the batch contains no new post.
        """
        ...


def put_each(
    targets: Sequence[Outbox], data: bytes, message_count: int, posted_at: float | None = None
) -> None:
    """Broadcast by calling ``put`` on each outbox; the default, for use without an event loop.

    An outbox over its bound is closed with 1008, as the web layer's broadcaster does.
    """
    for outbox in targets:
        if not outbox.put(data, message_count):
            outbox.close(1008, "client cannot keep up")
