"""MessageStoreActor: the history, the subscriber set and the fan-out."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from chatroom.actors.base import Actor, mailbox_depth
from chatroom.actors.journal import Journal, JournalError
from chatroom.actors.messages import ChatMessage, User, encode_json
from chatroom.actors.outbox import Broadcaster, Outbox, put_each

logger = logging.getLogger(__name__)

Encoder = Callable[[Sequence[bytes]], bytes]
"""Turns JSON payloads into the bytes that go on the wire, for example websocket frames."""

JournalOpener = Callable[[], Journal]
"""Opens the journal; the store calls it in its own thread, because SQLite connections are
bound to the thread that opened them."""

MAX_BATCH_FRAMES = 2000
"""Most frames one fan-out batch collects before the flush stops waiting for more posts."""

MAX_FLUSH_DEFERRALS = 16
"""Most times one flush goes behind newer mailbox messages, which bounds the wait of a post."""

OLD_PAGE_CACHE_SIZE = 16
"""Bodies of pages older than the in-memory buckets that the store keeps, newest use first."""

JOURNAL_ERROR_LOG_INTERVAL = 10.0
"""Seconds between error logs about failed journal writes, so a full disk logs a few lines."""


def join_lines(payloads: Sequence[bytes]) -> bytes:
    """Encode payloads as JSON Lines; the default encoder, for use without a web layer."""
    return b"".join(payload + b"\n" for payload in payloads)


def format_page(number: int, payloads: Sequence[bytes]) -> bytes:
    """Build the JSON body of history page ``number`` from its messages' payloads."""
    return b'{"page":%d,"messages":[%s]}' % (number, b",".join(payloads))


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
    history and fans it out. The batch is encoded once, and the broadcaster
    hands the same bytes to every subscriber's outbox in one crossing into the
    event loop. So a burst of N posts to S sessions costs a few batches, not
    N x S actor messages.

    Fan-out never waits: the broadcaster only queues bytes, and a client that
    cannot keep up is closed by its own outbox. The store asks nothing of any
    other actor, so no cycle of asks can form through it.

    With a journal, the store writes ahead: each batch is committed in one
    transaction before it joins the in-memory buckets and is fanned out. On
    start it restores the newest ``memory_buckets`` buckets and continues the
    ids, and it keeps only that many buckets in memory, reading older pages
    from the journal when asked. Without a journal every bucket stays in
    memory. ``max_messages`` and ``max_age`` (0 turns each off) delete whole
    old buckets, never the newest one.
    """

    def __init__(
        self,
        *,
        bucket_size: int = 100,
        max_replay: int = 1000,
        presence_delay: float = 0.1,
        encode: Encoder = join_lines,
        broadcast: Broadcaster = put_each,
        journal: JournalOpener | None = None,
        memory_buckets: int = 50,
        max_messages: int = 0,
        max_age: float = 0.0,
    ) -> None:
        super().__init__()

        self._bucket_size = bucket_size
        self._max_replay = max_replay
        self._presence_delay = presence_delay
        self._encode = encode
        self._broadcast = broadcast

        self._open_journal = journal
        self._journal: Journal | None = None
        self._startup_error: JournalError | None = None
        self._memory_buckets = memory_buckets
        self._max_messages = max_messages
        self._max_age = max_age
        self._old_pages: OrderedDict[int, bytes] = OrderedDict()
        self._write_failures = 0
        self._write_failure_logged_at = -JOURNAL_ERROR_LOG_INTERVAL

        self._newest: Bucket | None = None
        self._last_id = 0
        self._first_id = 1  # The oldest id kept; retention raises it by whole buckets.

        self._pending_messages: list[ChatMessage] = []
        self._oldest_pending_at = 0.0  # time.monotonic() of the first post in _pending_messages.
        self._pending_payloads: list[bytes] = []
        self._flush_scheduled = False
        self._flush_deferrals = 0
        self._presence_timer: threading.Timer | None = None

        self._subscribers: dict[str, _Subscriber] = {}
        # The outboxes of every subscriber, rebuilt at the next flush after a
        # change, so that many clients joining or leaving at once cost O(N) once.
        self._targets: tuple[Outbox, ...] = ()
        self._targets_stale = False
        self._online: Counter[User] = Counter()
        self._online_payloads: dict[User, bytes] = {}  # Each online user's JSON, in join order.

    def on_start(self) -> None:
        if self._open_journal is None:
            logger.info("Message store started without a journal: the history stays in memory")
            return
        try:
            self._journal = self._open_journal()
            self._restore()
        except JournalError as exc:
            # Kept for check_journal(): raising here would only make pykka log a traceback.
            self._startup_error = exc
            self._close_journal()
            return
        if self._last_id == 0:
            logger.info(f"Message store started with an empty journal at {self._journal.name}")
            return
        logger.info(
            f"Message store restored from {self._journal.name}: "
            f"ids {self._first_id} to {self._last_id}, {self._bucket_count()} buckets in memory"
        )

    def on_stop(self) -> None:
        if self._presence_timer is not None:
            self._presence_timer.cancel()
        self._flush()
        self._close_journal()
        if self._startup_error is not None:
            logger.info("Message store stopped; its journal could not be opened")
            return
        logger.info(f"Message store stopped at message id {self._last_id}")

    def on_failure(self, *exc_info: object) -> None:
        # pykka skips on_stop() after an unhandled exception; the journal's
        # directory lock must still be released so the store can be restarted.
        self._close_journal()

    def check_journal(self) -> None:
        """Raise the :class:`JournalError` that opening or restoring the journal raised, if any.

        The server calls it once after start and before it accepts clients.
        Until then, a store whose journal failed has an empty history.
        """
        if self._startup_error is not None:
            raise self._startup_error

    # Commands from sessions.

    def post(self, user: User, body: str) -> None:
        """Stamp ``body`` with the next id and the server time, and queue it for fan-out.

        The body must already be validated. The message joins the history and
        reaches the subscribers when the next ``_flush`` runs.
        """
        if self._startup_error is not None:
            raise self._startup_error  # Never give out ids that the journal may already hold.
        self._last_id += 1
        message = ChatMessage.create(self._last_id, user, body)
        if not self._pending_messages:
            self._oldest_pending_at = time.monotonic()
        self._pending_messages.append(message)
        self._queue_frame(message.payload)

    def subscribe(self, session_id: str, user: User, outbox: Outbox, since: int | None) -> None:
        """Add a session's outbox to the fan-out, after the frames it must see first.

        Those are the user object, the presence list and, when ``since`` is
        set, every message with a greater id (at most ``max_replay``). A
        ``gap`` frame comes first when older messages after ``since`` are left
        out, because of ``max_replay`` or because retention deleted them. They
        go through the same broadcaster as every batch, so they reach the
        client before anything fanned out later.
        """
        # Queued posts are not in the history yet, so they are not in the
        # backlog either: the newcomer receives them once, in the next batch.
        # It receives its own "joined" event there too, which the client can
        # ignore since the presence list already names it.
        if self._online[user] == 0:
            user_payload = encode_json(user.to_wire())
            self._online_payloads[user] = user_payload
            self._queue_presence(b'{"type":"joined","user":%s}' % user_payload)

        self._subscribers[session_id] = _Subscriber(user, outbox)
        self._targets_stale = True
        self._online[user] += 1

        # The presence list is joined from each user's JSON, serialised once per
        # user, since a room of N clients sends N lists of up to N users.
        users = b",".join(self._online_payloads.values())
        frames = [self._online_payloads[user], b'{"type":"presence","users":[%s]}' % users]
        backlog: list[ChatMessage] = []
        if since is not None:
            backlog = self._messages_after(since)
            first_missing = since + 1
            if backlog and backlog[0].id > first_missing:
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
        self._targets_stale = True

        user = subscriber.user
        self._online[user] -= 1
        if self._online[user] == 0:
            del self._online[user]
            user_payload = self._online_payloads.pop(user)
            self._queue_presence(b'{"type":"left","user":%s}' % user_payload)
        logger.debug(f"Session {session_id} of user {user.id} unsubscribed")

    # Queries from the web layer.

    def history(self, page: int) -> HistoryPage | None:
        """Return bucket ``page`` as a history body, or None if there is no such bucket.

        ``page == -1`` is the newest bucket, which is page 0 in an empty room.
        Queued posts are flushed first, so the page includes every message
        posted before this request reached the mailbox. A page older than the
        buckets in memory is read from the journal; one that retention deleted
        is None. Raises :class:`JournalError` if the journal cannot be read.
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
            if bucket is None:
                return self._read_old_page(page)
            if bucket.number != page:
                return None

        assert bucket is not None
        return HistoryPage(bucket.number, self._page_body(bucket))

    def online_users(self) -> list[dict[str, str]]:
        """Return who is online, each user once, as wire objects."""
        return self._online_wire()

    def last_id(self) -> int:
        """Return the id of the newest message, 0 in an empty room."""
        return self._last_id

    def buckets_in_memory(self) -> int:
        """Return how many buckets the in-memory list links: at most ``memory_buckets``
        with a journal, every bucket without one."""
        return self._bucket_count()

    # Internal messages.

    def on_receive(self, message: Any) -> None:
        """Handle messages that are not proxy calls: only the private ``_Flush``."""
        if isinstance(message, _Flush):
            if self._should_defer_flush():
                self.actor_ref.tell(_FLUSH)  # Behind the messages now waiting.
                return
            self._flush()
        else:
            logger.warning(f"Message store ignored an unexpected message: {message!r}")

    def _should_defer_flush(self) -> bool:
        """Return True when posts may still join this batch: more messages wait in
        the mailbox, and the batch and its deferrals are under their caps.

        During a burst the flush then runs once the mailbox has drained, so a
        thousand posts arriving from a thousand session threads share a few
        fan-outs. When the room is quiet the mailbox is empty and the flush
        runs at once, so a lone message is not delayed.
        """
        if self._flush_deferrals >= MAX_FLUSH_DEFERRALS:
            return False
        if len(self._pending_payloads) >= MAX_BATCH_FRAMES or not mailbox_depth(self.actor_inbox):
            return False
        self._flush_deferrals += 1
        return True

    def _flush(self) -> None:
        """Commit the queued messages, append them to the history and fan the batch out.

        With a journal, the batch is committed in one transaction first, so
        no session receives a message that a crash could lose.
        """
        self._flush_scheduled = False
        self._flush_deferrals = 0
        if self._presence_timer is not None:
            self._presence_timer.cancel()
            self._presence_timer = None
        if not self._pending_payloads:
            return

        messages, self._pending_messages = self._pending_messages, []
        payloads, self._pending_payloads = self._pending_payloads, []
        if messages and self._journal is not None:
            try:
                self._journal.append_batch(messages)
            except JournalError as exc:
                payloads = self._drop_unsaved(messages, payloads, exc)
                messages = []

        newest_number = self._newest.number if self._newest is not None else -1
        for message in messages:
            self._append(message)

        if payloads:
            posted_at = self._oldest_pending_at if messages else None
            if self._targets_stale:
                self._targets = tuple(sub.outbox for sub in self._subscribers.values())
                self._targets_stale = False
            self._broadcast(self._targets, self._encode(payloads), len(messages), posted_at)
        if self._newest is not None and self._newest.number != newest_number:
            self._trim_buckets()  # After the fan-out, which it would only delay.

    def _queue_frame(self, payload: bytes) -> None:
        self._pending_payloads.append(payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.actor_ref.tell(_FLUSH)

    def _queue_presence(self, payload: bytes) -> None:
        """Queue a presence event, fanned out with the next batch or after ``presence_delay``.

        When many clients connect or leave at once, for example when the
        server starts or stops, each event fanned out on its own would cost a
        delivery to every session. Waiting a moment lets them share one batch.
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

        body = format_page(bucket.number, [message.payload for message in bucket.messages])
        if len(bucket.messages) == self._bucket_size:
            bucket.page_body = body
        return body

    def _messages_after(self, since: int) -> list[ChatMessage]:
        """Return the newest ``max_replay`` messages with ids above ``since``, oldest first.

        Messages older than the buckets in memory come from the journal.
        """
        newest = self._newest
        if newest is None:
            return []
        last = newest.messages[-1].id
        start = max(since + 1, last - self._max_replay + 1, self._first_id)
        if start > last:
            return []

        buckets: list[Bucket] = []
        bucket: Bucket | None = newest
        while bucket is not None and bucket.messages[-1].id >= start:
            buckets.append(bucket)
            bucket = bucket.previous

        messages: list[ChatMessage] = []
        oldest_in_memory = buckets[-1].messages[0].id
        if bucket is None and start < oldest_in_memory:
            messages = self._read_old_messages(start, oldest_in_memory - 1)
        for bucket in reversed(buckets):
            messages.extend(message for message in bucket.messages if message.id >= start)
        return messages

    # The journal: restoring, pages older than memory, retention.

    def _restore(self) -> None:
        """Load the newest ``memory_buckets`` buckets from the journal and continue its ids."""
        assert self._journal is not None
        last = self._journal.last_id()
        if last == 0:
            return
        first = self._journal.first_id()
        newest_number = (last - 1) // self._bucket_size
        oldest_number = max(
            newest_number - self._memory_buckets + 1, (first - 1) // self._bucket_size
        )
        start = max(oldest_number * self._bucket_size + 1, first)
        for offset, payload in enumerate(self._journal.read_range(start, last)):
            self._append(self._decode(payload, start + offset))
        self._first_id = first
        self._last_id = last
        self._trim_buckets()

    def _read_old_page(self, page: int) -> HistoryPage | None:
        """Return a page older than the buckets in memory from the journal, or None."""
        if self._journal is None or page < (self._first_id - 1) // self._bucket_size:
            return None
        body = self._old_pages.get(page)
        if body is not None:
            self._old_pages.move_to_end(page)
            return HistoryPage(page, body)

        first = max(page * self._bucket_size + 1, self._first_id)
        body = format_page(page, self._journal.read_range(first, (page + 1) * self._bucket_size))
        self._old_pages[page] = body
        if len(self._old_pages) > OLD_PAGE_CACHE_SIZE:
            self._old_pages.popitem(last=False)
        return HistoryPage(page, body)

    def _read_old_messages(self, first_id: int, last_id: int) -> list[ChatMessage]:
        """Read messages older than memory for a replay, or none if the journal fails."""
        if self._journal is None:
            return []
        try:
            payloads = self._journal.read_range(first_id, last_id)
            return [
                self._decode(payload, first_id + offset) for offset, payload in enumerate(payloads)
            ]
        except JournalError as exc:
            # The replay then starts after a gap frame, which the client handles.
            logger.error(f"Replay of ids {first_id} to {last_id} skipped: {exc}")
            return []

    def _decode(self, payload: bytes, expected_id: int) -> ChatMessage:
        name = self._journal.name if self._journal is not None else "the journal"
        try:
            message = ChatMessage.from_payload(payload)
        except (ValueError, KeyError, TypeError) as exc:
            raise JournalError(f"message {expected_id} in {name} is invalid: {exc!r}") from exc
        if message.id != expected_id:
            raise JournalError(f"the row of id {expected_id} in {name} contains id {message.id}")
        return message

    def _trim_buckets(self) -> None:
        """Apply retention, then cut the in-memory list to the newest ``memory_buckets``.

        Runs when a bucket starts and after a restore, so ``max_age`` takes
        effect only then, not on a timer.
        """
        newest = self._newest
        assert newest is not None
        try:
            first_kept = self._first_kept_bucket(newest)
            if first_kept * self._bucket_size + 1 > self._first_id:
                self._delete_before(first_kept)
        except JournalError as exc:
            logger.error(f"Retention skipped, the journal kept every message: {exc}")

        first_kept = (self._first_id - 1) // self._bucket_size
        limit = self._memory_buckets if self._journal is not None else None
        bucket, count = newest, 1
        while bucket.previous is not None:
            if bucket.previous.number < first_kept or (limit is not None and count >= limit):
                bucket.previous = None  # The older buckets become garbage.
                break
            bucket = bucket.previous
            count += 1

    def _first_kept_bucket(self, newest: Bucket) -> int:
        """Return the oldest bucket that ``max_messages`` and ``max_age`` keep."""
        first = (self._first_id - 1) // self._bucket_size
        if self._max_messages:
            oldest_kept = newest.messages[-1].id - self._max_messages + 1
            first = max(first, (max(oldest_kept, 1) - 1) // self._bucket_size)
        if self._max_age and first < newest.number:
            cutoff = datetime.now(UTC) - timedelta(seconds=self._max_age)
            first = self._first_bucket_since(cutoff, first, newest.number)
        return min(first, newest.number)

    def _first_bucket_since(self, cutoff: datetime, low: int, high: int) -> int:
        """Return the oldest bucket in ``low..high`` whose newest message is at ``cutoff`` or later.

        Buckets fill in time order, so a binary search over their newest
        messages finds it; ``high`` is returned when every bucket is older.
        """
        if self._bucket_end_time(low) >= cutoff:
            return low
        # Invariant: bucket low ends before cutoff, and high is kept in any case.
        while high - low > 1:
            middle = (low + high) // 2
            if self._bucket_end_time(middle) >= cutoff:
                high = middle
            else:
                low = middle
        return high

    def _bucket_end_time(self, number: int) -> datetime:
        """Return the time of the newest message in bucket ``number``, which is not the newest."""
        last_id = (number + 1) * self._bucket_size
        bucket = self._newest
        while bucket is not None and bucket.number > number:
            bucket = bucket.previous
        if bucket is not None and bucket.number == number:
            message = bucket.messages[-1]
        else:
            message = self._read_message(last_id)
        return datetime.fromisoformat(message.time)

    def _read_message(self, message_id: int) -> ChatMessage:
        if self._journal is None:
            raise JournalError(f"message {message_id} is neither in memory nor in a journal")
        [payload] = self._journal.read_range(message_id, message_id)
        return self._decode(payload, message_id)

    def _delete_before(self, first_kept: int) -> None:
        first_id = first_kept * self._bucket_size + 1
        if self._journal is not None:
            deleted = self._journal.delete_before(first_id)
            logger.info(f"Retention deleted {deleted} messages before id {first_id}")
        self._first_id = first_id
        for page in [page for page in self._old_pages if page < first_kept]:
            del self._old_pages[page]

    def _drop_unsaved(
        self, messages: list[ChatMessage], payloads: list[bytes], exc: JournalError
    ) -> list[bytes]:
        """Forget a batch that the journal could not commit, and return its other frames.

        No session has received these posts, so their ids are given out again
        and the history stays contiguous. The posts are lost, and an error is logged.
        """
        self._last_id = messages[0].id - 1
        self._write_failures += 1
        now = time.monotonic()
        if now - self._write_failure_logged_at >= JOURNAL_ERROR_LOG_INTERVAL:
            self._write_failure_logged_at = now
            logger.error(
                f"Dropped {len(messages)} posts, ids {messages[0].id} to {messages[-1].id}, "
                f"that the journal could not store ({self._write_failures} failed batches "
                f"so far): {exc}"
            )
        unsaved = {id(message.payload) for message in messages}
        return [payload for payload in payloads if id(payload) not in unsaved]

    def _close_journal(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _bucket_count(self) -> int:
        count = 0
        bucket = self._newest
        while bucket is not None:
            count += 1
            bucket = bucket.previous
        return count

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
    buckets_in_memory = proxy_method(MessageStoreActor.buckets_in_memory)
    check_journal = proxy_method(MessageStoreActor.check_journal)
