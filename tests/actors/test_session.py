from __future__ import annotations

import json

import pytest

from chatroom.actors.messages import User
from chatroom.actors.session import PostLimits, SessionActor
from chatroom.actors.store import join_lines
from tests.helpers import FakeOutbox

ANN = User("a" * 8, "ann")


class RecordingStore:
    """Stands in for the store's proxy and records what the session sends it."""

    def __init__(self) -> None:
        self.posts: list[tuple[User, str]] = []
        self.subscribed: list[str] = []
        self.unsubscribed: list[str] = []

    def post(self, user: User, body: str) -> None:
        self.posts.append((user, body))

    def subscribe(self, session_id: str, user: User, outbox: object, since: int | None) -> None:
        self.subscribed.append(session_id)

    def unsubscribe(self, session_id: str) -> None:
        self.unsubscribed.append(session_id)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_session(
    outbox: FakeOutbox, store: RecordingStore, clock: FakeClock | None = None, **limits: float
) -> SessionActor:
    # Called directly, without a thread: on_receive and friends are plain methods.
    return SessionActor(
        session_id="s1",
        user=ANN,
        store=store,  # type: ignore[arg-type]
        outbox=outbox,
        encode=join_lines,
        limits=PostLimits(**limits),  # type: ignore[arg-type]
        clock=clock or FakeClock(),
    )


def error_codes(outbox: FakeOutbox) -> list[str]:
    return [json.loads(frame)["code"] for frame in outbox.frames()]


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore()


def test_text_posted_to_store(fake_outbox: FakeOutbox, store: RecordingStore) -> None:
    session = make_session(fake_outbox, store)

    session.receive_text("hello")

    assert store.posts == [(ANN, "hello")]
    assert fake_outbox.chunks == []


@pytest.mark.parametrize("body", ["", "   ", "\n\t "])
def test_blank_body_rejected(fake_outbox: FakeOutbox, store: RecordingStore, body: str) -> None:
    session = make_session(fake_outbox, store)

    session.receive_text(body)

    assert store.posts == []
    assert error_codes(fake_outbox) == ["empty_body"]


def test_body_size_counted_in_utf8_bytes(fake_outbox: FakeOutbox, store: RecordingStore) -> None:
    session = make_session(fake_outbox, store, max_body_bytes=8)

    session.receive_text("👋👋")  # 8 bytes: accepted.
    session.receive_text("👋👋a")  # 9 bytes: rejected.

    assert store.posts == [(ANN, "👋👋")]
    assert error_codes(fake_outbox) == ["too_large"]


def test_rate_limit_then_refill(fake_outbox: FakeOutbox, store: RecordingStore) -> None:
    clock = FakeClock()
    session = make_session(fake_outbox, store, clock, rate=1.0, burst=2.0)

    for _ in range(3):
        session.receive_text("spam")
    assert len(store.posts) == 2
    assert error_codes(fake_outbox) == ["rate_limited"]

    clock.now += 1.0
    session.receive_text("later")
    assert len(store.posts) == 3


def test_sustained_flood_closes_1008(fake_outbox: FakeOutbox, store: RecordingStore) -> None:
    session = make_session(fake_outbox, store, rate=1.0, burst=1.0, max_rejections=5)

    for _ in range(10):
        session.receive_text("spam")

    assert fake_outbox.closed == (1008, "rate limit exceeded")
    assert len(store.posts) == 1


def test_full_outbox_closes_1008(store: RecordingStore) -> None:
    outbox = FakeOutbox(accept=False)
    session = make_session(outbox, store)

    session.receive_text("")  # Answered with an error frame, which the outbox rejects.

    assert outbox.closed == (1008, "client cannot keep up")


def test_handler_error_closes_1011(store: RecordingStore) -> None:
    class BrokenStore(RecordingStore):
        def post(self, user: User, body: str) -> None:
            raise RuntimeError("store exploded")

    outbox = FakeOutbox()
    session = make_session(outbox, BrokenStore())

    session.receive_text("hello")

    assert outbox.closed == (1011, "internal error")


def test_session_subscribes_and_unsubscribes(
    fake_outbox: FakeOutbox, store: RecordingStore
) -> None:
    ref = SessionActor.start(
        session_id="s1",
        user=ANN,
        store=store,
        outbox=fake_outbox,
        encode=join_lines,
    )
    ref.stop(timeout=5)

    assert store.subscribed == ["s1"]
    assert store.unsubscribed == ["s1"]
