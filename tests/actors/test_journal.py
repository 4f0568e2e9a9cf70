"""SqliteJournal on its own, and the message store writing ahead to it and restoring from it."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chatroom.actors.journal import (
    JOURNAL_FILE,
    DataDirLock,
    JournalError,
    SqliteJournal,
)
from chatroom.actors.messages import ChatMessage, User
from chatroom.actors.store import MessageStoreActor, MessageStoreProxy
from tests.actors.test_store import message_ids, start_session
from tests.helpers import FakeOutbox

ANN = User("a" * 8, "ann")


def make_messages(first_id: int, count: int, when: datetime | None = None) -> list[ChatMessage]:
    return [
        ChatMessage.create(message_id, ANN, f"message {message_id} 👋", now=when)
        for message_id in range(first_id, first_id + count)
    ]


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[SqliteJournal]:
    opened = SqliteJournal.open(tmp_path)
    yield opened
    opened.close()


def start_store(data_dir: Path, **options: Any) -> tuple[Any, MessageStoreProxy]:
    """Start a store on ``data_dir``'s journal and wait until it has restored."""
    options.setdefault("bucket_size", 10)
    ref = MessageStoreActor.start(
        journal=functools.partial(SqliteJournal.open, data_dir), **options
    )
    store: MessageStoreProxy = ref.proxy()  # type: ignore[assignment]
    store.check_journal().get(timeout=10)
    return ref, store


def post_many(store: MessageStoreProxy, count: int) -> None:
    for index in range(count):
        store.post(ANN, f"message {index + 1}")
    store.last_id().get(timeout=10)  # Waits until the store has handled every post.


def page_body(store: MessageStoreProxy, number: int) -> bytes | None:
    result = store.history(number).get(timeout=10)
    return None if result is None else result.body


def page_ids(store: MessageStoreProxy, number: int) -> list[int] | None:
    body = page_body(store, number)
    return None if body is None else [message["id"] for message in json.loads(body)["messages"]]


# ---------------------------------------------------------------- SqliteJournal


def test_journal_empty_ids_zero(journal: SqliteJournal) -> None:
    assert journal.last_id() == 0
    assert journal.first_id() == 0
    assert journal.read_range(1, 0) == []
    assert journal.read_after(0, 10) == []


def test_journal_keeps_payload_bytes(journal: SqliteJournal) -> None:
    messages = make_messages(1, 5)
    journal.append_batch(messages)

    assert journal.read_range(1, 5) == [message.payload for message in messages]
    assert journal.read_range(2, 3) == [messages[1].payload, messages[2].payload]
    assert journal.first_id() == 1
    assert journal.last_id() == 5


def test_journal_read_after_limit(journal: SqliteJournal) -> None:
    messages = make_messages(1, 10)
    journal.append_batch(messages)

    assert journal.read_after(3, 4) == [message.payload for message in messages[3:7]]
    assert journal.read_after(10, 4) == []


def test_journal_missing_range_raises(journal: SqliteJournal) -> None:
    journal.append_batch(make_messages(1, 5))

    with pytest.raises(JournalError, match="missing messages between ids 4 and 8"):
        journal.read_range(4, 8)


def test_journal_duplicate_id_rolls_back_batch(journal: SqliteJournal, tmp_path: Path) -> None:
    journal.append_batch(make_messages(1, 3))

    with pytest.raises(JournalError, match=f"ids 3-5 to the journal {tmp_path}"):
        journal.append_batch(make_messages(3, 3))

    assert journal.last_id() == 3  # Neither 4 nor 5 was stored: one batch, one transaction.


def test_journal_delete_before(journal: SqliteJournal) -> None:
    journal.append_batch(make_messages(1, 30))

    assert journal.delete_before(11) == 10
    assert journal.first_id() == 11
    assert journal.last_id() == 30


def test_journal_survives_reopen(tmp_path: Path) -> None:
    messages = make_messages(1, 4)
    first = SqliteJournal.open(tmp_path)
    first.append_batch(messages)
    first.close()

    again = SqliteJournal.open(tmp_path)
    try:
        assert again.read_range(1, 4) == [message.payload for message in messages]
    finally:
        again.close()


@pytest.mark.parametrize(("synchronous", "level"), [("normal", 1), ("full", 2)])
def test_journal_wal_and_synchronous(tmp_path: Path, synchronous: str, level: int) -> None:
    opened = SqliteJournal.open(tmp_path, synchronous=synchronous)
    try:
        connection = opened._connection
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == level
    finally:
        opened.close()


def test_journal_second_open_refused(journal: SqliteJournal, tmp_path: Path) -> None:
    with pytest.raises(JournalError, match=f"data directory {tmp_path} is in use"):
        SqliteJournal.open(tmp_path)


def test_journal_lock_released_on_close(tmp_path: Path) -> None:
    SqliteJournal.open(tmp_path).close()

    lock = DataDirLock.acquire(tmp_path)
    lock.release()


def test_journal_not_sqlite_names_file(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    path.write_bytes(b"this is not a database, only text that is long enough " * 100)

    with pytest.raises(JournalError, match=f"{path}: file is not a database"):
        SqliteJournal.open(tmp_path)
    DataDirLock.acquire(tmp_path).release()  # The failed open released its lock.


def test_journal_foreign_sqlite_refused(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE notes (text TEXT)")
    connection.commit()
    connection.close()

    with pytest.raises(JournalError, match=f"{path} is a SQLite database but not a chatroom"):
        SqliteJournal.open(tmp_path)


def test_journal_newer_format_refused(tmp_path: Path) -> None:
    SqliteJournal.open(tmp_path).close()
    connection = sqlite3.connect(tmp_path / JOURNAL_FILE)
    connection.execute("PRAGMA user_version = 2")
    connection.close()

    with pytest.raises(JournalError, match="format version 2"):
        SqliteJournal.open(tmp_path)


def test_journal_open_for_reading_missing(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no journal found"):
        SqliteJournal.open_for_reading(tmp_path / "nowhere")


def test_journal_reader_beside_writer(journal: SqliteJournal, tmp_path: Path) -> None:
    messages = make_messages(1, 3)
    journal.append_batch(messages)

    reader = SqliteJournal.open_for_reading(tmp_path)
    try:
        assert list(reader.iter_payloads()) == [message.payload for message in messages]
    finally:
        reader.close()


def test_journal_create_from_rows(tmp_path: Path) -> None:
    messages = make_messages(5, 3)

    count = SqliteJournal.create(tmp_path, ((m.id, m.payload) for m in messages))

    assert count == 3
    opened = SqliteJournal.open(tmp_path)
    try:
        assert opened.first_id() == 5
        assert opened.read_range(5, 7) == [message.payload for message in messages]
    finally:
        opened.close()


def test_journal_create_refuses_messages(journal: SqliteJournal, tmp_path: Path) -> None:
    journal.append_batch(make_messages(1, 2))
    journal.close()

    with pytest.raises(JournalError, match="already contains a journal with 2 messages"):
        SqliteJournal.create(tmp_path, iter([]))


def test_journal_create_replaces_empty(tmp_path: Path) -> None:
    SqliteJournal.open(tmp_path).close()

    assert SqliteJournal.create(tmp_path, ((m.id, m.payload) for m in make_messages(1, 2))) == 2


def test_journal_create_error_leaves_nothing(tmp_path: Path) -> None:
    def rows() -> Iterator[tuple[int, bytes]]:
        yield 1, b"{}"
        raise ValueError("line 2 is broken")

    with pytest.raises(ValueError, match="line 2 is broken"):
        SqliteJournal.create(tmp_path, rows())

    assert sorted(path.name for path in tmp_path.iterdir()) == ["chatroom.lock"]


# ---------------------------------------------------------------- the store on a journal


def test_store_ids_continue_after_restart(tmp_path: Path) -> None:
    ref, store = start_store(tmp_path)
    post_many(store, 25)
    ref.stop()

    _, store = start_store(tmp_path)
    assert store.last_id().get(timeout=10) == 25
    store.post(ANN, "after the restart")

    assert page_ids(store, -1) == list(range(21, 27))


def test_store_pages_identical_after_restart(tmp_path: Path) -> None:
    ref, store = start_store(tmp_path, memory_buckets=100)
    post_many(store, 95)
    before = [page_body(store, number) for number in range(10)]
    newest = page_body(store, -1)
    ref.stop()

    _, store = start_store(tmp_path, memory_buckets=3)
    after = [page_body(store, number) for number in range(10)]

    assert after == before
    assert page_body(store, -1) == newest
    assert page_body(store, 10) is None


def test_store_memory_bounded_by_buckets(tmp_path: Path) -> None:
    ref, store = start_store(tmp_path, bucket_size=100, memory_buckets=5)
    post_many(store, 150)
    first_page = page_body(store, 0)  # Still in memory.

    post_many(store, 9850)

    assert store.last_id().get(timeout=10) == 10_000
    assert store.buckets_in_memory().get(timeout=10) == 5
    assert page_body(store, 0) == first_page  # Now read from the journal.
    assert page_ids(store, 94) == list(range(9401, 9501))
    assert page_ids(store, 95) == list(range(9501, 9601))
    ref.stop()

    _, store = start_store(tmp_path, bucket_size=100, memory_buckets=5)
    assert store.buckets_in_memory().get(timeout=10) == 5
    assert page_body(store, 0) == first_page


def test_store_without_journal_keeps_all() -> None:
    ref = MessageStoreActor.start(bucket_size=10, memory_buckets=2)
    store: MessageStoreProxy = ref.proxy()  # type: ignore[assignment]
    post_many(store, 55)

    assert store.buckets_in_memory().get(timeout=10) == 6
    assert page_ids(store, 0) == list(range(1, 11))


def test_store_replay_reads_journal(tmp_path: Path) -> None:
    ref, store = start_store(tmp_path, memory_buckets=2, max_replay=25)
    post_many(store, 100)
    ref.stop()
    _, store = start_store(tmp_path, memory_buckets=2, max_replay=25)

    outbox = FakeOutbox(expected_messages=25)
    start_session(store, outbox, since=70)
    assert outbox.complete.wait(timeout=10)

    frames = [json.loads(frame) for frame in outbox.frames()]
    assert {"type": "gap", "first_missing": 71, "last_missing": 75} in frames
    assert message_ids(outbox) == list(range(76, 101))  # 76 to 80 from the journal.


class FailingJournal:
    """A SqliteJournal whose appends fail while ``failing`` is set, and call ``on_append``."""

    def __init__(self, inner: SqliteJournal) -> None:
        self.inner = inner
        self.failing = False
        self.name = inner.name
        self.on_append: Callable[[Sequence[ChatMessage]], None] = lambda messages: None

    def append_batch(self, messages: Sequence[ChatMessage]) -> None:
        self.on_append(messages)
        if self.failing:
            raise JournalError("disk full (simulated)")
        self.inner.append_batch(messages)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def start_failing_store(data_dir: Path) -> tuple[FailingJournal, MessageStoreProxy]:
    journals: list[FailingJournal] = []

    def open_journal() -> FailingJournal:
        journals.append(FailingJournal(SqliteJournal.open(data_dir)))
        return journals[-1]

    ref = MessageStoreActor.start(bucket_size=10, journal=open_journal)
    store: MessageStoreProxy = ref.proxy()  # type: ignore[assignment]
    store.check_journal().get(timeout=10)
    return journals[0], store


def test_store_commits_before_fan_out(tmp_path: Path) -> None:
    journal, store = start_failing_store(tmp_path)
    outbox = FakeOutbox(expected_messages=30)
    start_session(store, outbox)
    # Each commit, with the ids the session had received when it began.
    commits: list[tuple[list[int], list[int]]] = []
    journal.on_append = lambda messages: commits.append(
        ([message.id for message in messages], message_ids(outbox))
    )

    post_many(store, 30)
    assert outbox.complete.wait(timeout=10)

    assert commits, "the store committed no batch"
    committed: list[int] = []
    for batch, delivered in commits:
        assert delivered == committed  # Only committed batches had reached the session.
        committed += batch
    assert message_ids(outbox) == committed == list(range(1, 31))


def test_store_failed_commit_not_fanned_out(tmp_path: Path) -> None:
    journal, store = start_failing_store(tmp_path)
    outbox = FakeOutbox(expected_messages=3)
    start_session(store, outbox)

    post_many(store, 2)
    journal.failing = True
    store.post(ANN, "lost")
    assert page_ids(store, -1) == [1, 2]
    journal.failing = False
    store.post(ANN, "kept")
    assert outbox.complete.wait(timeout=10)

    bodies = [json.loads(frame).get("body") for frame in outbox.frames()]
    assert "lost" not in bodies
    assert message_ids(outbox) == [1, 2, 3]  # The id of the lost post is given out again.
    assert page_ids(store, -1) == [1, 2, 3]


def test_store_startup_error_raised(tmp_path: Path) -> None:
    (tmp_path / JOURNAL_FILE).write_bytes(b"not a database " * 100)
    ref = MessageStoreActor.start(journal=functools.partial(SqliteJournal.open, tmp_path))
    store: MessageStoreProxy = ref.proxy()  # type: ignore[assignment]

    with pytest.raises(JournalError, match="file is not a database"):
        store.check_journal().get(timeout=10)
    with pytest.raises(JournalError):
        store.post(ANN, "never stored").get(timeout=10)


def test_store_max_messages_retention(tmp_path: Path) -> None:
    ref, store = start_store(tmp_path, max_messages=25, max_replay=1000)
    post_many(store, 100)

    # Ids 76 to 100 must stay, so bucket 7 (ids 71 to 80) is the oldest kept.
    assert page_body(store, 6) is None
    assert page_ids(store, 7) == list(range(71, 81))
    ref.stop()

    reader = SqliteJournal.open_for_reading(tmp_path)
    try:
        assert reader.first_id() == 71
    finally:
        reader.close()

    _, store = start_store(tmp_path, max_messages=25, memory_buckets=1)
    assert page_body(store, 6) is None
    assert page_ids(store, 7) == list(range(71, 81))  # From the journal.
    outbox = FakeOutbox(expected_messages=30)
    start_session(store, outbox, since=0)
    assert outbox.complete.wait(timeout=10)
    frames = [json.loads(frame) for frame in outbox.frames()]
    assert {"type": "gap", "first_missing": 1, "last_missing": 70} in frames


def test_store_max_age_retention(tmp_path: Path) -> None:
    old = datetime(2020, 1, 1, tzinfo=UTC)
    journal = SqliteJournal.open(tmp_path)
    journal.append_batch(make_messages(1, 50, when=old))
    journal.close()

    _, store = start_store(tmp_path, max_age=3600.0)
    # Every bucket is too old, but the newest one (ids 41 to 50) always stays.
    assert page_body(store, 3) is None
    assert page_ids(store, 4) == list(range(41, 51))

    store.post(ANN, "a new bucket starts")
    assert page_body(store, 4) is None
    assert page_ids(store, -1) == [51]
