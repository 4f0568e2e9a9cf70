"""Every crossing between the asyncio event loop and the actors' threads.

The loop must never block on an actor. In pykka 4, ``await future`` yields
once and then calls the blocking ``future.get()``, which stalls every socket
on the loop until the actor replies. So:

- loop to actor: proxy calls and tells, which only put a message in a mailbox;
- actor reply to loop: :func:`ask` resolves an asyncio future from the
  actor's thread through ``loop.call_soon_threadsafe``;
- actor to socket: :class:`LoopBroadcaster`, which hands each fan-out batch
  of the store to the loop in one call, and :class:`LoopOutbox`, which each
  session writes through.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pykka
from aiohttp import web

from chatroom.actors.base import NotifyingFuture
from chatroom.actors.outbox import Outbox

if TYPE_CHECKING:
    from chatroom.web.metrics import Metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ActorTimeoutError(Exception):
    """Raised when an actor does not reply within the ask timeout."""


async def ask(future: pykka.Future[T], timeout: float) -> T:
    """Wait for an actor's reply without blocking the event loop.

    ``future`` must come from one of chatroom's actors (a proxy call or
    ``ask(block=False)``), so that it is a :class:`NotifyingFuture`. Raises
    :class:`ActorTimeoutError` after ``timeout`` seconds, or the actor's own
    exception.
    """
    if not isinstance(future, NotifyingFuture):
        raise TypeError(f"expected a NotifyingFuture from a chatroom actor, got {future!r}")

    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()

    def resolve(done: NotifyingFuture[Any]) -> None:
        if waiter.done():
            return  # The request timed out or was cancelled first.
        try:
            waiter.set_result(done.get(timeout=0))
        except Exception as exc:
            waiter.set_exception(exc)

    def on_done(done: NotifyingFuture[Any]) -> None:
        # Runs in the actor's thread: hand the result to the loop, nothing more.
        try:
            loop.call_soon_threadsafe(resolve, done)
        except RuntimeError:
            logger.debug("Actor replied after the event loop closed")

    future.add_done_callback(on_done)
    try:
        async with asyncio.timeout(timeout):
            return await waiter
    except TimeoutError:
        raise ActorTimeoutError(f"no reply from the actor within {timeout} seconds") from None


async def stop_actor(ref: pykka.ActorRef[Any], timeout: float) -> None:
    """Stop an actor once it has handled the messages already in its mailbox.

    ``ActorRef.stop(block=False)`` returns a future that is resolved only by
    a blocking ``get()``, so this waits in a worker thread. It runs only at
    shutdown, a few times, so the small default thread pool is enough.
    """
    stopped = await asyncio.to_thread(ref.stop, block=True, timeout=timeout)
    if not stopped:
        logger.warning(f"{ref} had already stopped")


@dataclass(slots=True)
class _Batch:
    """Fan-out data waiting for the event loop, for one set of recipients."""

    targets: Sequence[Outbox]
    chunks: list[bytes]
    message_count: int
    posted_at: float | None


class LoopBroadcaster:
    """The store's broadcaster: hands fan-out batches to the event loop, which writes them.

    The store calls it from its thread with the outboxes of every subscriber.
    A batch that arrives while the loop has not yet written the one before it,
    for the same recipients, joins that one. So when the loop falls behind
    during a burst, each socket still gets one write per loop turn rather than
    one per batch, and the store's thread never waits. After the last write,
    each batch is counted in ``metrics`` once.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, metrics: Metrics | None = None) -> None:
        self._loop = loop
        self._metrics = metrics
        self._lock = threading.Lock()
        self._waiting: list[_Batch] = []  # In order; only the last one may still grow.

    def __call__(
        self,
        targets: Sequence[Outbox],
        data: bytes,
        message_count: int,
        posted_at: float | None = None,
    ) -> None:
        with self._lock:
            last = self._waiting[-1] if self._waiting else None
            if last is not None and last.targets is targets:
                last.chunks.append(data)
                last.message_count += message_count
                if last.posted_at is None:
                    last.posted_at = posted_at
                return
            self._waiting.append(_Batch(targets, [data], message_count, posted_at))
            if last is not None:
                return  # The hand-off for the earlier batch is already scheduled.
        try:
            self._loop.call_soon_threadsafe(self._write_waiting)
        except RuntimeError:
            logger.debug("Fan-out after the event loop closed")

    def _write_waiting(self) -> None:
        with self._lock:
            batches, self._waiting = self._waiting, []
        for batch in batches:
            data = b"".join(batch.chunks)
            for outbox in batch.targets:
                # Every outbox in the web layer is a LoopOutbox.
                cast(LoopOutbox, outbox).write(data, batch.message_count)
            if self._metrics is not None:
                self._metrics.record_batch(len(batch.targets), batch.message_count, batch.posted_at)


class LoopOutbox:
    """A session's bounded outbound queue: its socket's write buffer, on the event loop.

    Fan-out batches arrive on the loop through :class:`LoopBroadcaster` and
    are written at once, one transport write per batch. The session actor's
    own frames (errors) arrive through :meth:`put`, from its thread.

    The bound is the transport's write buffer, which grows only while the
    client reads slower than the room talks. Past ``max_bytes`` bytes or
    ``max_messages`` messages waiting there, the client is closed with 1008,
    and the rest of the room goes on unslowed.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        *,
        max_bytes: int,
        max_messages: int,
        metrics: Metrics | None = None,
    ) -> None:
        self._loop = loop
        self._ws = ws
        self._transport = transport
        self._max_bytes = max_bytes
        self._max_messages = max_messages
        self._metrics = metrics

        # Each write's end offset in the byte stream and its message count, so
        # the messages still in the write buffer can be counted.
        self._writes: deque[tuple[int, int]] = deque()
        self._bytes_written = 0
        self._messages_buffered = 0

        self._closing = False
        # The code and reason this side closed the socket with; None if the peer closed first.
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.close_task: asyncio.Task[bool] | None = None

    # Called from any thread.

    def put(self, data: bytes, message_count: int) -> bool:
        """Queue ``data`` for the socket from an actor's thread; always accepted.

        The bound is checked when the loop writes it.
        """
        self._call_on_loop(self.write, data, message_count)
        return True

    def close(self, code: int, reason: str) -> None:
        """Close the socket from the loop with ``code`` and ``reason``."""
        self._call_on_loop(self.close_now, code, reason)

    # Called on the event loop.

    def write(self, data: bytes, message_count: int) -> None:
        """Write ``data`` to the socket, or close it if its buffer is over the bound."""
        if self._closing or self._transport.is_closing():
            if self._metrics is not None and message_count:
                self._metrics.deliveries_dropped.inc(message_count)
            return
        self._transport.write(data)

        self._bytes_written += len(data)
        self._writes.append((self._bytes_written, message_count))
        self._messages_buffered += message_count
        sent = self._bytes_written - self._transport.get_write_buffer_size()
        while self._writes and self._writes[0][0] <= sent:
            self._messages_buffered -= self._writes.popleft()[1]

        if (
            sent + self._max_bytes < self._bytes_written
            or self._messages_buffered > self._max_messages
        ):
            logger.info(
                f"Closing a client that cannot keep up: {self._bytes_written - sent} bytes, "
                f"{self._messages_buffered} messages waiting"
            )
            if self._metrics is not None:
                self._metrics.slow_clients_closed.inc()
                self._metrics.deliveries_dropped.inc(self._messages_buffered)
            self.close_now(1008, "client cannot keep up")

    def close_now(self, code: int, reason: str) -> None:
        """Start the closing handshake; frames written after this are dropped."""
        if self._closing:
            return
        self._closing = True
        self.close_code = code
        self.close_reason = reason
        if not self._ws.closed:
            self.close_task = self._loop.create_task(
                self._ws.close(code=code, message=reason.encode())
            )

    @property
    def closing(self) -> bool:
        return self._closing

    def _call_on_loop(self, callback: Any, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            logger.debug("Outbox used after the event loop closed")
