"""The actor base class and the future type that lets asyncio wait without blocking.

pykka's ``ThreadingFuture`` can only be waited on by blocking in ``get()``.
:class:`NotifyingFuture` adds a done-callback, so the web layer can resolve an
asyncio future from the actor's thread instead (see ``chatroom.web.bridge``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import pykka
from pykka._types import OptExcInfo

T = TypeVar("T")

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
