"""The duplicate-warning filter and the trace's message names."""

from __future__ import annotations

import logging

import pykka
from pykka.messages import ProxyCall

from chatroom.actors.base import message_type
from chatroom.web.logs import RepeatFilter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_record(message: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("chatroom.test", level, __file__, 1, message, args or None, None)


def test_repeat_filter_passes_first_n_then_suppresses() -> None:
    repeat = RepeatFilter(limit=3, interval=60.0, clock=FakeClock())

    passed = [repeat.filter(make_record("disk full on %s", "/var")) for _ in range(5)]

    assert passed == [True, True, True, False, False]


def test_repeat_filter_reports_count_after_interval() -> None:
    clock = FakeClock()
    repeat = RepeatFilter(limit=1, interval=60.0, clock=clock)
    for _ in range(4):
        repeat.filter(make_record("disk full"))

    clock.now = 60.0
    record = make_record("disk full")
    passed = repeat.filter(record)

    assert passed
    assert record.getMessage() == (
        "disk full (3 identical messages suppressed in the previous 60 s)"
    )


def test_repeat_filter_counts_each_message_apart() -> None:
    repeat = RepeatFilter(limit=1, interval=60.0, clock=FakeClock())

    first = [repeat.filter(make_record("login failed from %s", "10.0.0.1")) for _ in range(2)]
    second = repeat.filter(make_record("login failed from %s", "10.0.0.2"))
    other_level = repeat.filter(make_record("login failed from %s", "10.0.0.1", level=40))

    assert first == [True, False]
    assert second
    assert other_level


def test_repeat_filter_leaves_info_alone() -> None:
    repeat = RepeatFilter(limit=1, interval=60.0, clock=FakeClock())

    passed = [repeat.filter(make_record("session opened", level=logging.INFO)) for _ in range(3)]

    assert passed == [True, True, True]


def test_repeat_filter_keys_bounded() -> None:
    repeat = RepeatFilter(limit=1, interval=60.0, max_keys=2, clock=FakeClock())
    for name in ("a", "b", "c"):
        repeat.filter(make_record(name))

    # "a" was pushed out, so it passes again although its interval has not ended.
    assert repeat.filter(make_record("a"))
    assert not repeat.filter(make_record("c"))


def test_message_type_names() -> None:
    call = ProxyCall(attr_path=("post",), args=("secret body",), kwargs={})

    assert message_type(call) == "post"
    assert message_type(pykka.messages._ActorStop()) == "stop"
    assert message_type("text") == "str"
