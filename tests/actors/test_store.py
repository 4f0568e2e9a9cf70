from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from chatroom.actors.messages import User
from chatroom.actors.session import SessionActor, SessionProxy
from chatroom.actors.store import MessageStoreActor, MessageStoreProxy, join_lines
from tests.helpers import FakeOutbox

ANN = User("a" * 8, "ann")
BOB = User("b" * 8, "bob")


@pytest.fixture
def store() -> MessageStoreProxy:
    ref = MessageStoreActor.start(bucket_size=10, max_replay=25)
    return ref.proxy()  # type: ignore[return-value]


def post_many(store: MessageStoreProxy, count: int, user: User = ANN) -> None:
    for index in range(count):
        store.post(user, f"message {index + 1}")
    store.last_id().get(timeout=5)  # Waits until the store has handled every post.


def page(store: MessageStoreProxy, number: int) -> dict[str, Any] | None:
    result = store.history(number).get(timeout=5)
    return None if result is None else json.loads(result.body)


def start_session(
    store: MessageStoreProxy, outbox: FakeOutbox, user: User = ANN, since: int | None = None
) -> SessionProxy:
    ref = SessionActor.start(
        session_id=f"s-{id(outbox)}",
        user=user,
        store=store,
        outbox=outbox,
        encode=join_lines,
        since=since,
    )
    assert outbox.welcomed.wait(timeout=10), "the store sent no first frame"
    return ref.proxy()  # type: ignore[return-value]


def message_ids(outbox: FakeOutbox) -> list[int]:
    ids = []
    for frame in outbox.frames():
        value = json.loads(frame)
        if "body" in value:
            ids.append(value["id"])
    return ids


def test_empty_room_newest_page_is_zero(store: MessageStoreProxy) -> None:
    assert page(store, -1) == {"page": 0, "messages": []}
    assert page(store, 0) == {"page": 0, "messages": []}
    assert page(store, 1) is None


def test_history_buckets_of_ten(store: MessageStoreProxy) -> None:
    post_many(store, 25)

    newest = page(store, -1)
    assert newest is not None
    assert newest["page"] == 2
    assert [m["id"] for m in newest["messages"]] == list(range(21, 26))

    first = page(store, 0)
    assert first is not None
    assert [m["id"] for m in first["messages"]] == list(range(1, 11))
    assert [m["body"] for m in first["messages"]][:2] == ["message 1", "message 2"]

    middle = page(store, 1)
    assert middle is not None
    assert [m["id"] for m in middle["messages"]] == list(range(11, 21))

    assert page(store, 3) is None


def test_full_page_body_cached(store: MessageStoreProxy) -> None:
    post_many(store, 12)

    first = store.history(0).get(timeout=5)
    again = store.history(0).get(timeout=5)

    assert first is not None
    assert again is not None
    assert first.body is again.body


def test_message_has_wire_fields(store: MessageStoreProxy) -> None:
    store.post(ANN, "héllo 👋")
    newest = page(store, -1)

    assert newest is not None
    message = newest["messages"][0]
    assert list(message) == ["id", "user", "time", "body"]
    assert message["user"] == {"id": ANN.id, "name": "ann"}
    assert message["body"] == "héllo 👋"
    assert message["time"].endswith("Z")


def test_subscriber_gets_welcome_then_messages(store: MessageStoreProxy) -> None:
    outbox = FakeOutbox(expected_messages=3)
    start_session(store, outbox)

    post_many(store, 3)
    assert outbox.complete.wait(timeout=5)

    frames = [json.loads(frame) for frame in outbox.frames()]
    assert frames[0] == {"id": ANN.id, "name": "ann"}
    assert frames[1] == {"type": "presence", "users": [ANN.to_wire()]}
    assert message_ids(outbox) == [1, 2, 3]


def test_since_replays_missed_messages(store: MessageStoreProxy) -> None:
    post_many(store, 15)
    outbox = FakeOutbox(expected_messages=8)

    start_session(store, outbox, since=7)
    assert outbox.complete.wait(timeout=5)

    assert message_ids(outbox) == list(range(8, 16))


def test_since_beyond_max_replay_sends_gap(store: MessageStoreProxy) -> None:
    post_many(store, 40)
    outbox = FakeOutbox(expected_messages=25)

    start_session(store, outbox, since=5)
    assert outbox.complete.wait(timeout=5)

    frames = [json.loads(frame) for frame in outbox.frames()]
    gaps = [frame for frame in frames if frame.get("type") == "gap"]
    assert gaps == [{"type": "gap", "first_missing": 6, "last_missing": 15}]
    assert message_ids(outbox) == list(range(16, 41))


def test_presence_counts_user_once(store: MessageStoreProxy) -> None:
    first_tab = FakeOutbox()
    second_tab = FakeOutbox()
    start_session(store, first_tab)
    start_session(store, second_tab)
    start_session(store, FakeOutbox(), user=BOB)

    users = store.online_users().get(timeout=5)
    assert sorted(user["name"] for user in users) == ["ann", "bob"]


def test_presence_left_after_last_tab(store: MessageStoreProxy) -> None:
    watcher = FakeOutbox()
    start_session(store, watcher, user=BOB)
    ann_session = start_session(store, FakeOutbox())

    ann_session.stop().get(timeout=5)
    assert store.online_users().get(timeout=5) == [BOB.to_wire()]
    store.history(-1).get(timeout=5)  # Flushes the queued presence events.

    events = [json.loads(frame) for frame in watcher.frames()]
    assert {"type": "joined", "user": ANN.to_wire()} in events
    assert {"type": "left", "user": ANN.to_wire()} in events


def test_presence_events_sent_after_delay(store: MessageStoreProxy) -> None:
    watcher = FakeOutbox()
    start_session(store, watcher, user=BOB)
    start_session(store, FakeOutbox(), user=ANN)

    expected = {"type": "joined", "user": ANN.to_wire()}
    for _ in range(100):
        if expected in [json.loads(frame) for frame in watcher.frames()]:
            break
        threading.Event().wait(0.05)
    assert expected in [json.loads(frame) for frame in watcher.frames()]


def test_thousand_sessions_burst_exactly_once() -> None:
    """1000 sessions each post one message at the same moment.

    Every session must receive each of the 1000 messages exactly once, and all
    sessions in the same order. The test is bounded by the pytest timeout,
    never by a clock assertion.
    """
    store: MessageStoreProxy = MessageStoreActor.start().proxy()  # type: ignore[assignment]
    clients = 1000
    outboxes = [FakeOutbox(expected_messages=clients) for _ in range(clients)]
    sessions = [
        start_session(store, outbox, user=User(f"user-{index}", f"user {index}"))
        for index, outbox in enumerate(outboxes)
    ]

    for index, session in enumerate(sessions):
        session.receive_text(f"hello from {index}")

    for outbox in outboxes:
        assert outbox.complete.wait(timeout=60)

    expected = list(range(1, clients + 1))
    for outbox in outboxes:
        assert message_ids(outbox) == expected
