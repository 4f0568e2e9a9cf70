"""The actor base class and the future type that lets asyncio wait without blocking.

pykka's ``ThreadingFuture`` can only be waited on by blocking in ``get()``.
:class:`NotifyingFuture` adds a done-callback, so the web layer can resolve an
asyncio future from the actor's thread instead (see ``chatroom.web.bridge``).

The base class can also trace every message an actor receives, for
``chatroom serve --trace-actors``: see :func:`set_tracing`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, cast

import pykka
from pykka._types import OptExcInfo
from pykka.messages import ProxyCall, ProxyGetAttr, ProxySetAttr, _ActorStop

T = TypeVar("T")

trace_logger = logging.getLogger("chatroom.trace")

# Read by every actor thread for every message, and written only by set_tracing(),
# so a plain module-level bool is enough: a stale read only delays the switch.
_tracing = False


def set_tracing(enabled: bool) -> None:
    """Switch message tracing on or off for every chatroom actor.

    When on, each actor logs every message it takes from its mailbox at DEBUG
    on the ``chatroom.trace`` logger: the actor, the message type and how many
    messages still wait behind it. When off, the cost is one flag check per message.
    """
    global _tracing
    _tracing = enabled


DoneCallback = Callable[["NotifyingFuture[Any]"], None]


class NotifyingFuture(pykka.ThreadingFuture[T]):
    """A ``ThreadingFuture`` that runs callbacks once its value or exception is set.

    Callbacks run in the thread that sets the result, which is the actor's own
    thread, so a callback must only hand work over (for example with
    ``loop.call_soon_threadsafe``) and never block.
    """

    def __init__(self) -> None:
        super().__init__()
        self._callbacks: list[DoneCallback] = []
        self._callbacks_lock = threading.Lock()
        self._done = False

    def add_done_callback(self, callback: DoneCallback) -> None:
        """Run ``callback(self)`` when the future is done, at once if it already is."""
        with self._callbacks_lock:
            if not self._done:
                self._callbacks.append(callback)
                return
        callback(self)

    def set(self, value: Any | None = None) -> None:
        super().set(value)
        self._run_callbacks()

    def set_exception(self, exc_info: OptExcInfo | None = None) -> None:
        super().set_exception(exc_info)
        self._run_callbacks()

    def _run_callbacks(self) -> None:
        with self._callbacks_lock:
            self._done = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)


class Actor(pykka.ThreadingActor):
    """Base class of chatroom's actors: a thread, a mailbox, notifying futures.

    Every future that an ask or a proxy call to one of these actors returns is a
    :class:`NotifyingFuture`.
    """

    # NOTE: _create_future() is the hook pykka's own runtimes override to pick
    # their future class; pykka 4.x has no public way to choose it.
    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return NotifyingFuture()

    # Actor threads are non-daemon, so an actor left running keeps the process
    # alive; the server stops every actor on shutdown.
    use_daemon_thread: ClassVar[bool] = False

    # NOTE: pykka 4.5 passes every message taken from the mailbox, proxy calls and
    # stop requests included, to _handle_receive(); it is private but the only
    # hook that receives them all.
    def _handle_receive(self, message: Any) -> Any:
        if _tracing:
            trace_logger.debug(
                f"{self.trace_name} received {message_type(message)} "
                f"({mailbox_depth(self.actor_inbox)} waiting)"
            )
        return super()._handle_receive(message)

    @property
    def trace_name(self) -> str:
        """The actor's name in trace lines: its class and the first 8 hex digits of its URN."""
        return f"{type(self).__name__} {self.actor_urn.removeprefix('urn:uuid:')[:8]}"


def mailbox_depth(inbox: object) -> int:
    """Return how many messages wait in a ``ThreadingActor``'s mailbox, a ``queue.Queue``.

    ``qsize()`` only reads the queue's length, so it never waits on the actor.
    """
    return cast("queue.Queue[Any]", inbox).qsize()


def message_type(message: Any) -> str:
    """Name a mailbox message for the trace: the method a proxy call runs, or the class name.

    A proxy call's arguments are left out, since they may be a password or a token.
    """
    if isinstance(message, ProxyCall):
        return ".".join(message.attr_path)
    if isinstance(message, ProxyGetAttr):
        return "get " + ".".join(message.attr_path)
    if isinstance(message, ProxySetAttr):
        return "set " + ".".join(message.attr_path)
    if isinstance(message, _ActorStop):
        return "stop"
    return type(message).__name__
