"""The crossings between the event loop and the actors' threads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pykka
import pytest

from chatroom.actors.base import Actor
from chatroom.web.bridge import ActorTimeoutError, LoopBroadcaster, ask


class SlowActor(Actor):
    """Replies after blocking its own thread until the test releases it."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__()
        self.release = release

    def answer(self, value: int) -> int:
        self.release.wait(timeout=10)
        return value * 2

    def fail(self) -> None:
        raise ValueError("no such page")


async def count_ticks(stop: asyncio.Event) -> int:
    ticks = 0
    while not stop.is_set():
        await asyncio.sleep(0.005)
        ticks += 1
    return ticks


async def test_ask_returns_actor_reply() -> None:
    release = threading.Event()
    release.set()
    proxy = SlowActor.start(release).proxy()

    assert await ask(proxy.answer(21), timeout=5) == 42


async def test_ask_raises_actor_exception() -> None:
    proxy = SlowActor.start(threading.Event()).proxy()

    with pytest.raises(ValueError, match="no such page"):
        await ask(proxy.fail(), timeout=5)


async def test_ask_times_out() -> None:
    release = threading.Event()
    proxy = SlowActor.start(release).proxy()

    with pytest.raises(ActorTimeoutError):
        await ask(proxy.answer(1), timeout=0.05)
    release.set()


async def test_ask_rejects_plain_pykka_future() -> None:
    with pytest.raises(TypeError, match="NotifyingFuture"):
        await ask(pykka.ThreadingFuture(), timeout=1)


async def test_loop_serves_while_actor_busy() -> None:
    """While one request waits on a blocked actor, the loop keeps running other coroutines."""
    release = threading.Event()
    proxy = SlowActor.start(release).proxy()
    waiting = asyncio.create_task(ask(proxy.answer(1), timeout=10))

    ticks = 0
    for _ in range(20):
        await asyncio.sleep(0.005)
        ticks += 1
    still_waiting = not waiting.done()
    release.set()

    assert ticks == 20
    assert still_waiting
    assert await waiting == 2


async def test_awaiting_pykka_future_blocks_loop() -> None:
    """Counter-example: ``await`` on a pykka 4 future yields once, then blocks in get().

    This is why every wait on an actor goes through ``bridge.ask``.
    """
    release = threading.Event()
    proxy = SlowActor.start(release).proxy()
    stop = asyncio.Event()
    ticker = asyncio.create_task(count_ticks(stop))
    await asyncio.sleep(0)  # Let the ticker start its first sleep.
    threading.Timer(0.2, release.set).start()

    result = await proxy.answer(1)
    stop.set()
    ticks = await ticker

    assert result == 2
    assert ticks <= 1


class RecordingOutbox:
    def __init__(self) -> None:
        self.writes: list[tuple[bytes, int]] = []

    def write(self, data: bytes, message_count: int) -> None:
        self.writes.append((data, message_count))

    def put(self, data: bytes, message_count: int) -> bool:
        return True

    def close(self, code: int, reason: str) -> None:
        pass


async def test_broadcaster_merges_batches_loop_has_not_written() -> None:
    loop = asyncio.get_running_loop()
    broadcaster = LoopBroadcaster(loop)
    outboxes = [RecordingOutbox() for _ in range(3)]
    targets: Sequence[Any] = tuple(outboxes)

    # Called back to back without yielding, so the loop cannot write in between,
    # as when the store hands over batches faster than the loop writes them.
    broadcaster(targets, b"one\n", 1)
    broadcaster(targets, b"two\n", 1)
    broadcaster((outboxes[0],), b"welcome\n", 0)
    broadcaster(targets, b"three\n", 1)
    await asyncio.sleep(0.01)

    assert outboxes[0].writes == [(b"one\ntwo\n", 2), (b"welcome\n", 0), (b"three\n", 1)]
    assert outboxes[1].writes == [(b"one\ntwo\n", 2), (b"three\n", 1)]
