"""The journal: the room's history on disk, which the message store writes ahead of fan-out.

:class:`Journal` is the small interface the store needs, so that another
backend can replace SQLite without touching fan-out. :class:`SqliteJournal`
implements it with the standard library's ``sqlite3``. :class:`DataDirLock`
keeps a second server off a data directory that a running one uses.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from chatroom.actors.messages import ChatMessage

logger = logging.getLogger(__name__)

JOURNAL_FILE = "journal.sqlite3"
LOCK_FILE = "chatroom.lock"

# Written to the SQLite header (PRAGMA application_id), so that the journal can
# tell its own files from other SQLite databases. The bytes spell "chrm".
APPLICATION_ID = 0x6368726D
SCHEMA_VERSION = 1

SYNCHRONOUS_MODES = ("normal", "full")


class JournalError(Exception):
    """Raised when a journal cannot be opened, read or written; the message names the file."""


class Journal(Protocol):
    """The store's durable history: message payloads by id, ids contiguous and never reused.

    Every method is called from the message store's thread only.
    """

    @property
    def name(self) -> str:
        """Where the journal lives, for log and error messages, such as its file path."""
        ...

    def append_batch(self, messages: Sequence[ChatMessage]) -> None:
        """Store ``messages`` in one transaction: all of them are durable or none is.

        Raises :class:`JournalError` if the batch could not be committed.
        """
        ...

    def read_range(self, first_id: int, last_id: int) -> list[bytes]:
        """Return the payloads of ids ``first_id`` to ``last_id`` inclusive, oldest first.

        Raises :class:`JournalError` if any id in the range is missing.
        """
        ...

    def read_after(self, since: int, limit: int) -> list[bytes]:
        """Return up to ``limit`` payloads of the messages after id ``since``, oldest first."""
        ...

    def first_id(self) -> int:
        """Return the id of the oldest message still stored, 0 when the journal is empty."""
        ...

    def last_id(self) -> int:
        """Return the id of the newest message, 0 when the journal is empty."""
        ...

    def delete_before(self, first_kept_id: int) -> int:
        """Delete every message with an id below ``first_kept_id``; return how many were deleted."""
        ...

    def close(self) -> None:
        """Release the journal's files and locks; the journal is unusable afterwards."""
        ...


class DataDirLock:
    """An exclusive ``flock`` on a file in a data directory, held until :meth:`release`.

    ``flock`` locks belong to the open file, so a second lock on the same
    directory fails from another process and from the same one alike. The
    kernel releases the lock when the process dies, even by SIGKILL, so no
    stale lock survives a crash.
    """

    def __init__(self, directory: Path, descriptor: int) -> None:
        self.directory = directory
        self._descriptor: int | None = descriptor

    @classmethod
    def acquire(cls, directory: Path) -> DataDirLock:
        """Create ``directory`` if needed and lock it, or raise :class:`JournalError`."""
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(
                directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise JournalError(f"cannot use data directory {directory}: {exc.strerror}") from exc

        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise JournalError(
                f"data directory {directory} is in use by another chatroom process "
                f"(PID {owner}); stop that server or choose another --data-dir"
            ) from None
        except OSError as exc:
            os.close(descriptor)
            raise JournalError(f"cannot lock data directory {directory}: {exc.strerror}") from exc

        # The PID is only for the error message above; the lock itself is the flock.
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        return cls(directory, descriptor)

    def release(self) -> None:
        """Release the lock; calling it again does nothing."""
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


class SqliteJournal:
    """The journal as one SQLite database in WAL mode, ``journal.sqlite3`` in the data directory.

    The table ``messages(id INTEGER PRIMARY KEY, payload BLOB NOT NULL)``
    keeps each message's JSON payload byte for byte. Each fan-out batch is one
    transaction, committed before the batch is fanned out.

    Durability depends on ``synchronous``, SQLite's ``PRAGMA synchronous``
    (https://www.sqlite.org/pragma.html#pragma_synchronous, WAL mode):

    - ``normal`` (the default): a commit writes the batch to the write-ahead
      log without waiting for the disk, which SQLite syncs only when it
      checkpoints. Every committed batch survives a crash of the process
      (SIGKILL, out of memory, a bug). A power loss or an operating-system
      crash can lose the batches committed since the last checkpoint,
      although clients may already have received them, and the ids of lost
      messages are then given out again. The database itself stays
      consistent, because SQLite checksums the log's frames.
    - ``full``: each commit also waits for ``fsync`` of the log, so every
      batch a client received also survives a power loss, provided the disk
      honours flushes. This costs one ``fsync`` per batch.

    A ``sqlite3`` connection belongs to the thread that opened it, so the
    message store opens the journal in its own thread and only that thread
    uses it.
    """

    def __init__(
        self, connection: sqlite3.Connection, path: Path, lock: DataDirLock | None
    ) -> None:
        self._connection = connection
        self._path = path
        self._lock = lock

    @classmethod
    def open(cls, data_dir: Path, *, synchronous: str = "normal") -> SqliteJournal:
        """Lock ``data_dir`` and open its journal, creating both if they are missing.

        Raises :class:`JournalError` if the directory is in use by another
        server, or if the file is not a chatroom journal or is unreadable.
        """
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, got {synchronous!r}")
        lock = DataDirLock.acquire(data_dir)
        path = data_dir / JOURNAL_FILE
        try:
            connection = _connect(path, create=True)
            try:
                _prepare(connection, path, synchronous)
            except BaseException:
                connection.close()
                raise
        except BaseException:
            lock.release()
            raise
        return cls(connection, path, lock)

    @classmethod
    def open_for_reading(cls, data_dir: Path) -> SqliteJournal:
        """Open an existing journal to read it, without the directory lock.

        A running server may keep writing meanwhile: WAL mode lets a reader
        see a consistent snapshot beside one writer. Raises
        :class:`JournalError` if there is no journal or it is not valid.
        """
        path = data_dir / JOURNAL_FILE
        if not path.is_file():
            raise JournalError(f"no journal found: {path} does not exist")
        connection = _connect(path, create=False)
        try:
            _check_header(connection, path)
            connection.execute("PRAGMA query_only = ON")
        except BaseException:
            connection.close()
            raise
        return cls(connection, path, None)

    @classmethod
    def create(cls, data_dir: Path, rows: Iterable[tuple[int, bytes]]) -> int:
        """Write a new journal into ``data_dir`` from ``(id, payload)`` rows; return the count.

        The directory must not contain a journal with messages, but an empty
        one is replaced. The rows go into a temporary file in one transaction,
        which is renamed into place only once complete, so an error in
        ``rows`` (it may raise while it is consumed) leaves the directory as
        it was. Raises :class:`JournalError` if the directory is in use, already
        contains messages, or cannot be written.
        """
        lock = DataDirLock.acquire(data_dir)
        path = data_dir / JOURNAL_FILE
        temporary = data_dir / (JOURNAL_FILE + ".importing")
        try:
            _check_no_messages(path)
            temporary.unlink(missing_ok=True)
            count = _write_rows(temporary, rows)
            for suffix in ("", "-wal", "-shm"):  # An empty journal, checked above.
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            _replace(temporary, path)
            return count
        except OSError as exc:
            raise JournalError(f"cannot write the journal {path}: {exc}") from exc
        finally:
            temporary.unlink(missing_ok=True)
            lock.release()

    @property
    def name(self) -> str:
        return str(self._path)

    def append_batch(self, messages: Sequence[ChatMessage]) -> None:
        rows = [(message.id, message.payload) for message in messages]
        try:
            with self._transaction():
                self._connection.executemany(
                    "INSERT INTO messages (id, payload) VALUES (?, ?)", rows
                )
        except sqlite3.Error as exc:
            span = f"ids {rows[0][0]}-{rows[-1][0]}" if rows else "an empty batch"
            raise JournalError(f"cannot write {span} to the journal {self._path}: {exc}") from exc

    def read_range(self, first_id: int, last_id: int) -> list[bytes]:
        if last_id < first_id:
            return []
        rows = self._query(
            "SELECT payload FROM messages WHERE id BETWEEN ? AND ? ORDER BY id", first_id, last_id
        )
        # id is the primary key, so as many rows as ids in the range means none is missing.
        if len(rows) != last_id - first_id + 1:
            raise JournalError(
                f"the journal {self._path} is missing messages between ids {first_id} and "
                f"{last_id}: found {len(rows)} of {last_id - first_id + 1}"
            )
        return [bytes(row[0]) for row in rows]

    def read_after(self, since: int, limit: int) -> list[bytes]:
        rows = self._query(
            "SELECT payload FROM messages WHERE id > ? ORDER BY id LIMIT ?", since, limit
        )
        return [bytes(row[0]) for row in rows]

    def first_id(self) -> int:
        rows = self._query("SELECT min(id) FROM messages")
        first: int = rows[0][0] or 0
        return first

    def last_id(self) -> int:
        rows = self._query("SELECT max(id) FROM messages")
        last: int = rows[0][0] or 0
        return last

    def delete_before(self, first_kept_id: int) -> int:
        try:
            with self._transaction():
                cursor = self._connection.execute(
                    "DELETE FROM messages WHERE id < ?", (first_kept_id,)
                )
        except sqlite3.Error as exc:
            raise JournalError(
                f"cannot delete messages before id {first_kept_id} from the journal "
                f"{self._path}: {exc}"
            ) from exc
        return cursor.rowcount

    def iter_payloads(self) -> Iterator[bytes]:
        """Yield every payload, oldest first, from one snapshot of the journal.

        The read transaction stays open until the iterator is exhausted or
        closed, so a server writing meanwhile changes nothing in what it yields.
        """
        try:
            self._connection.execute("BEGIN")
            try:
                cursor = self._connection.execute("SELECT payload FROM messages ORDER BY id")
                while rows := cursor.fetchmany(1000):
                    for row in rows:
                        yield bytes(row[0])
            finally:
                self._connection.execute("COMMIT")
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read the journal {self._path}: {exc}") from exc

    def close(self) -> None:
        try:
            self._connection.close()
        except sqlite3.Error as exc:
            logger.error(f"Closing the journal {self._path} failed: {exc}")
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Run the body in one write transaction, rolled back if it or the commit fails."""
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._connection.execute("COMMIT")
        except BaseException:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
            raise

    def _query(self, sql: str, *parameters: int) -> list[tuple[Any, ...]]:
        try:
            return self._connection.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read the journal {self._path}: {exc}") from exc


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    # isolation_level=None: the journal issues BEGIN and COMMIT itself, so a
    # batch is exactly one transaction.
    mode = "rwc" if create else "rw"
    try:
        return sqlite3.connect(
            f"{path.absolute().as_uri()}?mode={mode}", uri=True, isolation_level=None
        )
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open the journal {path}: {exc}") from exc


def _prepare(connection: sqlite3.Connection, path: Path, synchronous: str) -> None:
    """Check the journal's header and schema, creating them in a new file, and set WAL mode."""
    try:
        tables = connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        ).fetchall()
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        if not tables and application_id == 0:
            _create_schema(connection, path)
        _check_header(connection, path)
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        connection.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    except (sqlite3.Error, OSError) as exc:
        raise JournalError(f"cannot open the journal {path}: {exc}") from exc
    if str(mode).lower() != "wal":
        raise JournalError(f"cannot switch the journal {path} to WAL mode (it stays in {mode})")


def _create_schema(connection: sqlite3.Connection, path: Path) -> None:
    # The history is private to the room; SQLite gives its -wal and -shm
    # files the same permissions as the database file.
    os.chmod(path, 0o600)
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
    connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    connection.execute("COMMIT")


def _check_header(connection: sqlite3.Connection, path: Path) -> None:
    """Raise :class:`JournalError` unless ``path`` is a chatroom journal this version reads."""
    try:
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        columns = connection.execute("PRAGMA table_info(messages)").fetchall()
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open the journal {path}: {exc}") from exc
    if application_id != APPLICATION_ID:
        raise JournalError(
            f"{path} is a SQLite database but not a chatroom journal "
            f"(application_id {application_id:#x}); move it away or choose another --data-dir"
        )
    if version != SCHEMA_VERSION:
        raise JournalError(
            f"the journal {path} has format version {version}, "
            f"but this chatroom reads only version {SCHEMA_VERSION}"
        )
    if [column[1] for column in columns] != ["id", "payload"]:
        raise JournalError(f"the journal {path} has no valid messages table")


def _check_no_messages(path: Path) -> None:
    """Raise :class:`JournalError` unless ``path`` is missing or is a journal without messages."""
    if not path.exists():
        return
    connection = _connect(path, create=False)
    try:
        _check_header(connection, path)
        count = connection.execute("SELECT count(*) FROM messages").fetchone()[0]
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read the journal {path}: {exc}") from exc
    finally:
        connection.close()
    if count:
        raise JournalError(
            f"the data directory {path.parent} already contains a journal with {count} messages; "
            "import needs an empty data directory"
        )


def _write_rows(path: Path, rows: Iterable[tuple[int, bytes]]) -> int:
    """Create a journal at ``path`` holding ``rows``, in one transaction; return the count."""
    connection = _connect(path, create=True)
    try:
        # No rollback journal and no fsync while filling the temporary file:
        # if anything fails, the file is deleted. _replace syncs it at the end.
        connection.execute("PRAGMA journal_mode = OFF")
        connection.execute("PRAGMA synchronous = OFF")
        _create_schema(connection, path)
        connection.execute("BEGIN")
        cursor = connection.executemany("INSERT INTO messages (id, payload) VALUES (?, ?)", rows)
        connection.execute("COMMIT")
        connection.execute("PRAGMA journal_mode = WAL")
        return cursor.rowcount
    except (sqlite3.Error, OSError) as exc:
        raise JournalError(f"cannot write the journal {path}: {exc}") from exc
    finally:
        connection.close()


def _replace(source: Path, target: Path) -> None:
    """Flush ``source`` to disk and rename it to ``target``, then flush the directory entry."""
    descriptor = os.open(source, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(source, target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
