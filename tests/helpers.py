"""Test doubles shared by several test modules."""

from __future__ import annotations

import threading


class FakeOutbox:
    """An outbox that records what a session hands over, for tests without sockets.

    With the store's default JSON Lines encoder, each line of ``data`` is one
    frame, so tests can count messages and read their ids.
    """

    def __init__(self, *, accept: bool = True, expected_messages: int = 0) -> None:
        self.chunks: list[bytes] = []
        self.closed: tuple[int, str] | None = None
        self.message_count = 0
        self._accept = accept
        self._expected = expected_messages
        self.complete = threading.Event()
        self.closed_event = threading.Event()
        self.welcomed = threading.Event()

    def put(self, data: bytes, message_count: int) -> bool:
        self.chunks.append(data)
        self.welcomed.set()
        self.message_count += message_count
        if self._expected and self.message_count >= self._expected:
            self.complete.set()
        return self._accept

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self.closed_event.set()

    def frames(self) -> list[bytes]:
        return [line for chunk in self.chunks for line in chunk.splitlines()]
