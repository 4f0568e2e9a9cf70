"""SessionActor: one per websocket client, between the socket and the store."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Concatenate, ParamSpec

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from chatroom.actors.base import Actor
from chatroom.actors.messages import User, encode_json
from chatroom.actors.outbox import Outbox
from chatroom.actors.store import Encoder, MessageStoreProxy

logger = logging.getLogger(__name__)

# Websocket close codes (RFC 6455, section 7.4.1) that a session chooses itself.
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011


@dataclass(frozen=True, slots=True)
class PostLimits:
    """Posting limits of one client: the body size, and a token bucket for its rate.

    ``rate`` tokens per second refill a bucket of ``burst`` tokens, and each
    message takes one. A client that has ``max_rejections`` messages rejected
    for rate in a row is closed.
    """

    max_body_bytes: int = 4096
    rate: float = 10.0
    burst: float = 30.0
    max_rejections: int = 50


P = ParamSpec("P")


def closes_on_error(
    method: Callable[Concatenate[SessionActor, P], None],
) -> Callable[Concatenate[SessionActor, P], None]:
    """Close the client with 1011 when ``method`` raises, instead of storing the error.

    An exception in a proxy call lands in a future that no caller reads, and pykka
    logs it only at INFO; this logs it as an error with the session's ids.
    """

    @functools.wraps(method)
    def guarded(self: SessionActor, /, *args: P.args, **kwargs: P.kwargs) -> None:
        try:
            method(self, *args, **kwargs)
        except Exception:
            logger.exception(f"Session {self._session_id} of user {self._user.id} failed")
            self._close(INTERNAL_ERROR, "internal error")

    return guarded


class SessionActor(Actor):
    """One client's actor: relays its frames to the store, rejecting invalid ones.

    The actor checks each body (blank, too large, too fast) and posts the
    valid ones to the store. It never touches the socket: what it sends the
    client, error frames and the close, goes through the client's outbox,
    which the event loop writes. It subscribes the outbox to the store when
    it starts and unsubscribes it when it stops, whoever stops it.

    NOTE: the store's fan-out goes to the outbox directly, not through this
    actor's mailbox. Waking one actor thread per client for every batch cost
    about 60 us of CPU per delivery under the GIL (2 cores, CPython 3.11),
    so 1000 clients at 50 messages a second would need three cores.
    """

    def __init__(
        self,
        *,
        session_id: str,
        user: User,
        store: MessageStoreProxy,
        outbox: Outbox,
        encode: Encoder,
        since: int | None = None,
        limits: PostLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_rate_limited: Callable[[], object] | None = None,
    ) -> None:
        """``on_rate_limited`` runs in this actor's thread for each message rejected for rate."""
        super().__init__()

        self._session_id = session_id
        self._user = user
        self._store = store
        self._outbox = outbox
        self._encode = encode
        self._since = since
        self._limits = limits or PostLimits()
        self._clock = clock
        self._on_rate_limited = on_rate_limited

        self._tokens = self._limits.burst
        self._refilled_at = clock()
        self._rejections_in_row = 0
        self._closed = False

    def on_start(self) -> None:
        self._store.subscribe(self._session_id, self._user, self._outbox, self._since)

    def on_stop(self) -> None:
        # A tell-like call: the store never replies to a session, so no ask cycle.
        self._store.unsubscribe(self._session_id)

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        logger.error(
            f"Session {self._session_id} of user {self._user.id} failed: {exception_value!r}"
        )
        self._close(INTERNAL_ERROR, "internal error")

    # Messages from the web layer.

    @closes_on_error
    def receive_text(self, body: str) -> None:
        """Post ``body`` to the store, or send the client an error frame saying why not."""
        if self._closed:
            return

        if not body.strip():
            self._send_error("empty_body", "A message must contain text other than white space.")
            return

        size = len(body.encode())
        if size > self._limits.max_body_bytes:
            self._send_error(
                "too_large",
                f"A message may be at most {self._limits.max_body_bytes} bytes of UTF-8; "
                f"this one is {size}.",
            )
            return

        if not self._take_token():
            if self._on_rate_limited is not None:
                self._on_rate_limited()
            self._rejections_in_row += 1
            if self._rejections_in_row >= self._limits.max_rejections:
                logger.warning(
                    f"Session {self._session_id} of user {self._user.id} closed for flooding"
                )
                self._close(POLICY_VIOLATION, "rate limit exceeded")
                return
            self._send_error("rate_limited", "You are sending too fast; wait a moment and resend.")
            return

        self._rejections_in_row = 0
        self._store.post(self._user, body)

    def close(self, code: int, reason: str) -> None:
        """Close the client's socket with ``code`` and ``reason``, for example on logout."""
        self._close(code, reason)

    # Helpers.

    def _send_error(self, code: str, text: str) -> None:
        if self._closed:
            return
        frame = self._encode([encode_json({"type": "error", "code": code, "error": text})])
        if not self._outbox.put(frame, 0):
            logger.info(f"Session {self._session_id} of user {self._user.id} cannot keep up")
            self._close(POLICY_VIOLATION, "client cannot keep up")

    def _close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._outbox.close(code, reason)

    def _take_token(self) -> bool:
        now = self._clock()
        elapsed = now - self._refilled_at
        self._refilled_at = now
        self._tokens = min(self._limits.burst, self._tokens + elapsed * self._limits.rate)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class SessionProxy(ActorMemberMixin, pykka.ActorProxy[SessionActor]):
    """Typed ``SessionActor`` proxy: each call is a message and returns a future."""

    receive_text = proxy_method(SessionActor.receive_text)
    close = proxy_method(SessionActor.close)
