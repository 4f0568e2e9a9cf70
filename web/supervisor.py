"""Restart the room's long-lived actors when one of them dies.

pykka has no supervision tree: an actor whose ``tell`` handler raises runs
``on_failure`` and stops. The supervisor notices the stopped actor on the
event loop and starts a fresh one in its place. Until then, requests that
reach the dead actor get 503 and ``/healthz`` names it.

A hung actor (alive, but not answering) cannot be restarted, since Python
cannot stop a thread from outside; requests to it time out with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

logger = logging.getLogger(__name__)

ActorFactory = Callable[[], pykka.ActorRef[Any]]


@dataclass
class _Watched:
    name: str
    start: ActorFactory
    on_restart: Callable[[pykka.ActorRef[Any]], None]
    ref: pykka.ActorRef[Any]
    restarts: int = 0


class Supervisor:
    """Checks every ``interval`` seconds that each watched actor is alive, and restarts it if not.

    The check only reads a flag on each actor ref, so it never blocks the loop.
    """

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._watched: list[_Watched] = []
        self._task: asyncio.Task[None] | None = None

    def watch(
        self,
        name: str,
        start: ActorFactory,
        on_restart: Callable[[pykka.ActorRef[Any]], None],
    ) -> pykka.ActorRef[Any]:
        """Start an actor with ``start`` and watch it; ``on_restart`` receives each replacement."""
        ref = start()
        self._watched.append(_Watched(name, start, on_restart, ref))
        return ref

    def refs(self) -> list[pykka.ActorRef[Any]]:
        """Return the current refs, in the order they were first started."""
        return [watched.ref for watched in self._watched]

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def check(self) -> None:
        """Restart every watched actor that has stopped."""
        for watched in self._watched:
            if watched.ref.is_alive():
                continue
            watched.restarts += 1
            logger.error(
                f"The {watched.name} actor stopped unexpectedly; restarting it "
                f"(restart {watched.restarts})"
            )
            watched.ref = watched.start()
            watched.on_restart(watched.ref)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                self.check()
            except Exception:
                logger.exception("Restarting an actor failed; trying again shortly")
