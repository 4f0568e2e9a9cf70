"""MessageStoreActor: the history, the subscriber set and the fan-out."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from chatroom.actors.base import Actor
from chatroom.actors.messages import ChatMessage, User, encode_json
from chatroom.actors.outbox import Broadcaster, Outbox, put_each

logger = logging.getLogger(__name__)

Encoder = Callable[[Sequence[bytes]], bytes]
"""Turns JSON payloads into the bytes that go on the wire, for example websocket frames."""


def join_lines(payloads: Sequence[bytes]) -> bytes:
    """Encode payloads as JSON Lines; the default encoder, for use without a web layer."""
    return b"".join(payload + b"\n" for payload in payloads)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Reply to a history request: the page number and its JSON body, ready to send."""

    page: int
    body: bytes


@dataclass(slots=True, eq=False)
class Bucket:
    """A numbered bucket of up to ``bucket_size`` messages, linked to the one before it.

    Message ``id`` lives in bucket ``(id - 1) // bucket_size``, since ids start
    at 1 and every bucket but the newest is full.
    """

    number: int
    previous: Bucket | None
    messages: list[ChatMessage] = field(default_factory=list)
    page_body: bytes | None = None
    """The cached history body, set once the bucket is full and can no longer change."""


@dataclass(frozen=True, slots=True)
class _Flush:
    """Self-addressed message: fan out the posts queued since the last flush.

    It is private, so it is a plain ``tell`` rather than a proxy call, since
    pykka proxies expose only public methods.
    """


_FLUSH = _Flush()


@dataclass(frozen=True, slots=True)
class _Subscriber:
    user: User
    outbox: Outbox


class MessageStoreActor(Actor):
    """The only owner of the history and of the set of subscribed sessions.

    Posts are stamped and queued. A self-addressed ``_Flush`` message, queued
    behind the posts already in the mailbox, appends the whole batch to the
    history and fans it out: the batch is encoded once, and the broadcaster
    hands the same bytes to every subscriber's outbox in one crossing into the
    event loop. So a burst of N posts to S sessions costs a few batches, not
    N x S actor messages.

    Fan-out never waits: the broadcaster only queues bytes, and a client that
    cannot keep up is closed by its own outbox. The store asks nothing of any
    other actor, so no cycle of asks can form through it.
    """

    def __init__(
        self,
        *,
        bucket_size: int = 100,
        max_replay: int = 1000,
        presence_delay: float = 0.1,
        encode: Encoder = join_lines,
        broadcast: Broadcaster = put_each,
    ) -> None:
        super().__init__()

        self._bucket_size = bucket_size
        self._max_replay = max_replay
        self._presence_delay = presence_delay
        self._encode = encode
        self._broadcast = broadcast

        self._newest: Bucket | None = None
        self._last_id = 0

        self._pending_messages: list[ChatMessage] = []
        self._pending_payloads: list[bytes] = []
        self._flush_scheduled = False
        self._presence_timer: threading.Timer | None = None

        self._subscribers: dict[str, _Subscriber] = {}
        self._targets: tuple[Outbox, ...] = ()
        self._online: Counter[User] = Counter()

    def on_start(self) -> None:
        logger.info("Message store started")

    def on_stop(self) -> None:
        if self._presence_timer is not None:
            self._presence_timer.cancel()
        self._flush()
        logger.info(f"Message store stopped at message id {self._last_id}")

    # Commands from sessions.

    def post(self, user: User, body: str) -> None:
        """Stamp ``body`` with the next id and the server time, and queue it for fan-out.

        The body must already be validated. The message joins the history and
        reaches the subscribers when the next ``_flush`` runs.
        """
        self._last_id += 1
        message = ChatMessage.create(self._last_id, user, body)
        self._pending_messages.append(message)
        self._queue_frame(message.payload)

    def subscribe(self, session_id: str, user: User, outbox: Outbox, since: int | None) -> None:
        """Add a session's outbox to the fan-out, after the frames it must see first.

        Those are the user object, the presence list and, when ``since`` is
        set, every message with a greater id (at most ``max_replay``, after a
        ``gap`` frame). They go through the same broadcaster as every batch,
        so they reach the client before anything fanned out later.
        """
        # Queued posts are not in the history yet, so they are not in the
        # backlog either: the newcomer receives them once, in the next batch.
        # It receives its own "joined" event there too, which the client can
        # ignore since the presence list already names it.
        if self._online[user] == 0:
            self._queue_presence(encode_json({"type": "joined", "user": user.to_wire()}))

        self._subscribers[session_id] = _Subscriber(user, outbox)
        self._targets = tuple(subscriber.outbox for subscriber in self._subscribers.values())
        self._online[user] += 1

        frames = [
            encode_json(user.to_wire()),
            encode_json({"type": "presence", "users": self._online_wire()}),
        ]
        backlog: list[ChatMessage] = []
        if since is not None:
            backlog = self._messages_after(since)
            first_missing = since + 1
            if len(backlog) > self._max_replay:
                backlog = backlog[-self._max_replay :]
                gap = {
                    "type": "gap",
                    "first_missing": first_missing,
                    "last_missing": backlog[0].id - 1,
                }
                frames.append(encode_json(gap))
        frames.extend(message.payload for message in backlog)

        self._broadcast((outbox,), self._encode(frames), len(backlog))
        logger.debug(f"Session {session_id} of user {user.id} subscribed, {len(backlog)} replayed")

    def unsubscribe(self, session_id: str) -> None:
        """Remove a session from the fan-out; a no-op for an unknown session."""
        subscriber = self._subscribers.pop(session_id, None)
        if subscriber is None:
            return
        self._targets = tuple(subscriber.outbox for subscriber in self._subscribers.values())

        user = subscriber.user
        self._online[user] -= 1
        if self._online[user] == 0:
            del self._online[user]
            self._queue_presence(encode_json({"type": "left", "user": user.to_wire()}))
        logger.debug(f"Session {session_id} of user {user.id} unsubscribed")

    # Queries from the web layer.

    def history(self, page: int) -> HistoryPage | None:
        """Return bucket ``page`` as a history body, or None if there is no such bucket.

        ``page == -1`` is the newest bucket, which is page 0 in an empty room.
        Queued posts are flushed first, so the page includes every message
        posted before this request reached the mailbox.
        """
        self._flush()
        if self._newest is None:
            if page in (-1, 0):
                return HistoryPage(0, b'{"page":0,"messages":[]}')
            return None

        bucket: Bucket | None = self._newest
        if page != -1:
            while bucket is not None and bucket.number > page:
                bucket = bucket.previous
            if bucket is None or bucket.number != page:
                return None

        assert bucket is not None
        return HistoryPage(bucket.number, self._page_body(bucket))

    def online_users(self) -> list[dict[str, str]]:
        """Return who is online, each user once, as wire objects."""
        return self._online_wire()

    def last_id(self) -> int:
        """Return the id of the newest message, 0 in an empty room."""
        return self._last_id

    # Internal messages.

    def on_receive(self, message: Any) -> None:
        """Handle messages that are not proxy calls: only the private ``_Flush``."""
        if isinstance(message, _Flush):
            self._flush()
        else:
            logger.warning(f"Message store ignored an unexpected message: {message!r}")

    def _flush(self) -> None:
        """Append the queued messages to the history and fan the batch out to every session."""
        self._flush_scheduled = False
        if self._presence_timer is not None:
            self._presence_timer.cancel()
            self._presence_timer = None
        if not self._pending_payloads:
            return

        messages, self._pending_messages = self._pending_messages, []
        payloads, self._pending_payloads = self._pending_payloads, []
        for message in messages:
            self._append(message)

        self._broadcast(self._targets, self._encode(payloads), len(messages))

    def _queue_frame(self, payload: bytes) -> None:
        self._pending_payloads.append(payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.actor_ref.tell(_FLUSH)

    def _queue_presence(self, payload: bytes) -> None:
        """Queue a presence event, fanned out with the next batch or after ``presence_delay``.

        When many clients connect or leave at once, for example when the
        server starts or stops, each event fanned out on its own would cost a
        delivery to every session; waiting a moment lets them share one batch.
        """
        self._pending_payloads.append(payload)
        if self._flush_scheduled or self._presence_timer is not None:
            return
        self._presence_timer = threading.Timer(self._presence_delay, self._presence_due)
        self._presence_timer.daemon = True
        self._presence_timer.start()

    def _presence_due(self) -> None:
        # Runs in the timer's thread: only tell the actor, which flushes in its own thread.
        with contextlib.suppress(pykka.ActorDeadError):  # The store stopped meanwhile.
            self.actor_ref.tell(_FLUSH)

    def _append(self, message: ChatMessage) -> None:
        newest = self._newest
        number = (message.id - 1) // self._bucket_size
        if newest is None or newest.number != number:
            newest = Bucket(number, previous=newest)
            self._newest = newest
        newest.messages.append(message)

    def _page_body(self, bucket: Bucket) -> bytes:
        if bucket.page_body is not None:
            return bucket.page_body

        payloads = b",".join(message.payload for message in bucket.messages)
        body = b'{"page":%d,"messages":[%s]}' % (bucket.number, payloads)
        if len(bucket.messages) == self._bucket_size:
            bucket.page_body = body
        return body

    def _messages_after(self, since: int) -> list[ChatMessage]:
        buckets: list[Bucket] = []
        bucket = self._newest
        while bucket is not None and bucket.messages and bucket.messages[-1].id > since:
            buckets.append(bucket)
            bucket = bucket.previous

        messages: list[ChatMessage] = []
        for bucket in reversed(buckets):
            messages.extend(message for message in bucket.messages if message.id > since)
        return messages

    def _online_wire(self) -> list[dict[str, str]]:
        return [user.to_wire() for user in self._online]


class MessageStoreProxy(ActorMemberMixin, pykka.ActorProxy[MessageStoreActor]):
    """Typed ``MessageStoreActor`` proxy: each call is a message and returns a future."""

    post = proxy_method(MessageStoreActor.post)
    subscribe = proxy_method(MessageStoreActor.subscribe)
    unsubscribe = proxy_method(MessageStoreActor.unsubscribe)
    history = proxy_method(MessageStoreActor.history)
    online_users = proxy_method(MessageStoreActor.online_users)
    last_id = proxy_method(MessageStoreActor.last_id)
