"""Durable history, end to end: ``chatroom serve`` killed and restarted, large journals,
export and import, and the start-up errors of a bad or busy data directory.

Every server here is a real ``chatroom serve`` process on 127.0.0.1 with its
own data directory under the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chatroom.actors.journal import JOURNAL_FILE, SqliteJournal
from chatroom.actors.messages import ChatMessage, User, encode_json
from chatroom.actors.store import MessageStoreActor, MessageStoreProxy
from chatroom.web.app import create_app
from chatroom.web.config import ConfigError, Settings
from tests.web import conftest

REPO = Path(__file__).resolve().parent.parent.parent
PASSWORD = "correct horse"
ROOM_OPEN = re.compile(r"Room open at http://127\.0\.0\.1:(\d+)/")
START_TIMEOUT = 60.0
FAST_POSTING = {"CHATROOM_POST_RATE": "100000", "CHATROOM_POST_BURST": "100000"}
BUCKET_SIZE = 100  # The default bucket_size; no config file changes it here.


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "chatroom.web.cli", *args]


def run_cli(
    *args: str, cwd: Path, stdin: bytes = b"", timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        command(*args),
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env={**os.environ, "CHATROOM_PASSWORD": PASSWORD},
        timeout=timeout,
        check=False,
    )


class Server:
    """A ``chatroom serve`` process; its standard error goes to a file, which is polled."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"server-{time.monotonic_ns()}.log"
        argv = command("serve", "--host", "127.0.0.1", "--port", "0", *args)
        environment = {**os.environ, "CHATROOM_PASSWORD": PASSWORD, **(env or {})}
        # A file, not a pipe: nothing reads a pipe while the test runs, and a
        # full pipe would block the server.
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=log, env=environment, cwd=workdir
            )
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            match = ROOM_OPEN.search(self.log())
            if match:
                return f"http://127.0.0.1:{match.group(1)}"
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"chatroom serve did not open the room:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Servers a test starts; each one left running is stopped afterwards."""
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


async def login(session: aiohttp.ClientSession, url: str, name: str) -> str:
    async with session.post(f"{url}/login", json={"user": name, "password": PASSWORD}) as response:
        assert response.status == 200, await response.text()
        token: str = (await response.json())["token"]
        return token


async def read_history(url: str) -> tuple[list[dict[str, Any]], dict[int, bytes]]:
    """Return every message of the room, oldest first, and each page's raw body."""
    async with aiohttp.ClientSession() as session:
        token = await login(session, url, "reader")
        headers = {"Authorization": f"Bearer {token}"}
        bodies: dict[int, bytes] = {}
        async with session.get(f"{url}/history?page=-1", headers=headers) as response:
            assert response.status == 200
            newest = json.loads(await response.read())["page"]
        for number in range(newest + 1):
            async with session.get(f"{url}/history?page={number}", headers=headers) as response:
                assert response.status == 200, await response.text()
                bodies[number] = await response.read()
    messages = [
        message for number in sorted(bodies) for message in json.loads(bodies[number])["messages"]
    ]
    return messages, bodies


async def post_and_receive(url: str, body: str) -> dict[str, Any]:
    """Join as a new client, post ``body`` and return the message as the room sent it back."""
    async with aiohttp.ClientSession() as session:
        token = await login(session, url, "latecomer")
        async with session.ws_connect(f"{url}/join?token={token}") as ws:
            await ws.send_str(body)
            async with asyncio.timeout(30):
                async for frame in ws:
                    value = json.loads(frame.data)
                    if value.get("body") == body:
                        return dict(value)
    pytest.fail(f"the room never sent back {body!r}")


def check_pages_whole(bodies: dict[int, bytes], last_id: int) -> None:
    """Check that every page but the newest is full and that each page has exactly its ids."""
    newest = max(bodies)
    for number, body in bodies.items():
        ids = [message["id"] for message in json.loads(body)["messages"]]
        end = min((number + 1) * BUCKET_SIZE, last_id)
        assert ids == list(range(number * BUCKET_SIZE + 1, end + 1)), f"page {number} is torn"
        if number < newest:
            assert len(ids) == BUCKET_SIZE


# ---------------------------------------------------------------- crash


CLIENTS = 20
POSTS_PER_CLIENT = 100  # 2,000 messages in all.
KILL_AFTER = 600  # Messages the first client has received when the server is killed.


async def post_until_killed(url: str, pid: int) -> list[list[str]]:
    """Connect the clients, post from all of them, and SIGKILL ``pid`` midway.

    Return, for each client, the text of every chat message frame it received.
    """
    received: list[list[str]] = [[] for _ in range(CLIENTS)]
    killed = asyncio.Event()

    async def read(index: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            if "body" in json.loads(frame.data):
                received[index].append(frame.data)
            if index == 0 and len(received[0]) >= KILL_AFTER and not killed.is_set():
                os.kill(pid, signal.SIGKILL)
                killed.set()

    async def write(index: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        for sequence in range(POSTS_PER_CLIENT):
            if ws.closed or killed.is_set():
                return
            try:
                await ws.send_str(f"c{index}-m{sequence}")
            except (ConnectionError, aiohttp.ClientError):
                return
            await asyncio.sleep(0.005)

    async with aiohttp.ClientSession() as session:
        tokens = [await login(session, url, f"client{index}") for index in range(CLIENTS)]
        sockets = [await session.ws_connect(f"{url}/join?token={token}") for token in tokens]
        readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(sockets)]
        async with asyncio.timeout(90):
            await asyncio.gather(*(write(i, ws) for i, ws in enumerate(sockets)))
            await killed.wait()
            await asyncio.gather(*readers, return_exceptions=True)
        for ws in sockets:
            await ws.close()
    return received


@pytest.mark.timeout(240)
def test_sigkill_loses_no_received_message(tmp_path: Path, servers: list[Server]) -> None:
    data_dir = tmp_path / "data"
    first = Server(tmp_path, "--data-dir", str(data_dir), env=FAST_POSTING)
    servers.append(first)

    received = asyncio.run(post_until_killed(first.url, first.process.pid))
    first.process.wait(timeout=30)
    assert first.process.returncode == -signal.SIGKILL

    second = Server(tmp_path, "--data-dir", str(data_dir), env=FAST_POSTING)
    servers.append(second)
    history, bodies = asyncio.run(read_history(second.url))

    last_id = len(history)
    assert last_id < CLIENTS * POSTS_PER_CLIENT, "the kill came after the last post"
    assert [message["id"] for message in history] == list(range(1, last_id + 1))
    check_pages_whole(bodies, last_id)
    posted_bodies = [message["body"] for message in history]
    assert len(set(posted_bodies)) == len(posted_bodies), "a post is in the history twice"

    assert len(received[0]) >= KILL_AFTER
    for frames in received:
        # Every client joined before the first post, so it received ids 1, 2, 3, ...
        ids = [json.loads(frame)["id"] for frame in frames]
        assert ids == list(range(1, len(ids) + 1))
        for frame, message_id in zip(frames, ids, strict=True):
            # Byte for byte what the client received, and at the same place.
            assert frame == encode_json(history[message_id - 1]).decode()

    after = asyncio.run(post_and_receive(second.url, "after the crash"))
    assert after["id"] == last_id + 1


# ---------------------------------------------------------------- large journal


def synthetic_payload(message_id: int) -> bytes:
    """The payload of message ``message_id`` in a generated journal, in the server's format."""
    user = message_id % 50
    return (
        f'{{"id":{message_id},"user":{{"id":"user-{user}","name":"user {user}"}},'
        f'"time":"2024-01-01T00:00:00.000000Z","body":"message {message_id}"}}'
    ).encode()


def expected_page(number: int, last_id: int) -> bytes:
    first = number * BUCKET_SIZE + 1
    payloads = [synthetic_payload(i) for i in range(first, min(first + BUCKET_SIZE, last_id + 1))]
    return b'{"page":%d,"messages":[%s]}' % (number, b",".join(payloads))


def test_synthetic_payload_server_format() -> None:
    message = json.loads(synthetic_payload(7))

    assert encode_json(message) == synthetic_payload(7)
    assert list(message) == ["id", "user", "time", "body"]


@pytest.mark.timeout(300)
def test_restart_with_million_messages(tmp_path: Path, servers: list[Server]) -> None:
    total = 1_000_000
    data_dir = tmp_path / "data"
    count = SqliteJournal.create(data_dir, ((i, synthetic_payload(i)) for i in range(1, total + 1)))
    assert count == total

    server = Server(tmp_path, "--data-dir", str(data_dir))
    servers.append(server)

    async def check_pages() -> None:
        async with aiohttp.ClientSession() as session:
            token = await login(session, server.url, "reader")
            headers = {"Authorization": f"Bearer {token}"}
            for query, number in (("-1", 9999), ("0", 0), ("5000", 5000), ("9950", 9950)):
                async with session.get(f"{server.url}/history?page={query}", headers=headers) as r:
                    assert r.status == 200, await r.text()
                    assert await r.read() == expected_page(number, total), f"page {query}"
            async with session.get(f"{server.url}/history?page=10000", headers=headers) as r:
                assert r.status == 400

    asyncio.run(check_pages())
    after = asyncio.run(post_and_receive(server.url, "message one million and one"))
    assert after["id"] == total + 1


# ---------------------------------------------------------------- export and import


def write_journal(data_dir: Path) -> list[bytes]:
    """Fill ``data_dir``'s journal with 250 messages of awkward text; return their payloads."""
    bodies = [
        "plain",
        "héllo wörld 👋🏽 שלום e\u0301",
        'quotes " and \\ backslash',
        "two\nlines\tand a tab",
        "separators \u2028 \u2029 and NUL-free controls \u0007",
    ]
    users = [User("u-1", "ann"), User("u-2", "Zoë")]
    messages = [
        ChatMessage.create(i, users[i % 2], f"{bodies[i % len(bodies)]} #{i}")
        for i in range(1, 251)
    ]
    journal = SqliteJournal.open(data_dir)
    try:
        journal.append_batch(messages[:100])
        journal.append_batch(messages[100:])
    finally:
        journal.close()
    return [message.payload for message in messages]


def test_export_import_round_trip(tmp_path: Path) -> None:
    payloads = write_journal(tmp_path / "first")

    exported = run_cli("export", "--data-dir", "first", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == b"".join(payload + b"\n" for payload in payloads)

    imported = run_cli("import", "--data-dir", "second", cwd=tmp_path, stdin=exported.stdout)
    assert imported.returncode == 0, imported.stderr
    assert b"imported 250 messages" in imported.stderr

    again = run_cli("export", "--data-dir", "second", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout == exported.stdout


def test_imported_room_serves_same_pages(tmp_path: Path) -> None:
    write_journal(tmp_path / "first")
    exported = run_cli("export", "--data-dir", "first", cwd=tmp_path).stdout
    run_cli("import", "--data-dir", "second", cwd=tmp_path, stdin=exported)

    pages = []
    for name in ("first", "second"):
        ref = MessageStoreActor.start(
            journal=lambda name=name: SqliteJournal.open(tmp_path / name), memory_buckets=1
        )
        store: MessageStoreProxy = ref.proxy()  # type: ignore[assignment]
        store.check_journal().get(timeout=10)
        pages.append([store.history(number).get(timeout=10) for number in (-1, 0, 1, 2)])
        ref.stop()

    assert pages[0] == pages[1]
    assert pages[0][0] is not None
    assert pages[0][0].page == 2


def test_import_refuses_journal_with_messages(tmp_path: Path) -> None:
    write_journal(tmp_path / "first")

    result = run_cli("import", "--data-dir", "first", cwd=tmp_path, stdin=b"")

    assert result.returncode == 2
    assert b"already contains a journal with 250 messages" in result.stderr


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ([b'{"id":1,"user":{"id":"u","name":"n"},"time":"2024-01-01T00:00:00Z","body":"a"}',
          b'{"id":3,"user":{"id":"u","name":"n"},"time":"2024-01-01T00:00:00Z","body":"b"}'],
         "line 2: expected id 2, got 3"),
        ([b"{not json"], "line 1: not valid JSON"),
        ([b'{"id":1,"user":{"id":"u","name":"n"},"time":"2024-01-01T00:00:00Z"}'],
         'line 1: expected an object with exactly "id", "user", "time" and "body"'),
        ([b'{"id":1,"user":{"id":"u","name":"n"},"time":"yesterday","body":"a"}'],
         'line 1: "time" must be UTC'),
        ([b'{"id":1,"user":{"id":"u","name":""},"time":"2024-01-01T00:00:00Z","body":"a"}'],
         'line 1: "user" id and name must be non-empty strings'),
        ([b'{"id":0,"user":{"id":"u","name":"n"},"time":"2024-01-01T00:00:00Z","body":"a"}'],
         'line 1: "id" must be an integer from 1'),
        ([b'{"id":1,"user":{"id":"u","name":"n"},"time":"2024-01-01T00:00:00Z","body":" "}'],
         'line 1: "body" must be a string with text'),
    ],
)  # fmt: skip
def test_import_rejects_invalid_line(tmp_path: Path, lines: list[bytes], error: str) -> None:
    result = run_cli("import", "--data-dir", "room", cwd=tmp_path, stdin=b"\n".join(lines) + b"\n")

    assert result.returncode == 2
    assert f"chatroom: error: {error}" in result.stderr.decode()
    assert not (tmp_path / "room" / JOURNAL_FILE).exists()


def test_export_without_journal_fails(tmp_path: Path) -> None:
    result = run_cli("export", "--data-dir", "missing", cwd=tmp_path)

    assert result.returncode == 2
    assert result.stdout == b""
    assert b"no journal found" in result.stderr


# ---------------------------------------------------------------- start-up errors


def corrupt_header(data_dir: Path) -> Path:
    write_journal(data_dir)
    path = data_dir / JOURNAL_FILE
    with path.open("r+b") as file:
        file.write(b"\xff" * 100)  # The SQLite header is the file's first 100 bytes.
    return path


def foreign_database(data_dir: Path) -> Path:
    import sqlite3

    data_dir.mkdir()
    path = data_dir / JOURNAL_FILE
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE notes (text TEXT)")
    connection.commit()
    connection.close()
    return path


def random_bytes(data_dir: Path) -> Path:
    data_dir.mkdir()
    path = data_dir / JOURNAL_FILE
    path.write_bytes(os.urandom(8192))
    return path


@pytest.mark.parametrize("damage", [corrupt_header, foreign_database, random_bytes])
def test_bad_journal_exits_2_naming_file(tmp_path: Path, damage: Any) -> None:
    path = damage(tmp_path / "data")

    result = run_cli("serve", "--port", "0", "--data-dir", "data", cwd=tmp_path, timeout=60)

    stderr = result.stderr.decode()
    errors = [line for line in stderr.splitlines() if line.startswith("chatroom: error:")]
    assert result.returncode == 2, stderr
    assert len(errors) == 1, stderr
    assert str(Path("data") / JOURNAL_FILE) in errors[0] or str(path) in errors[0]
    assert "Traceback" not in stderr
    assert "Room open" not in stderr


def test_second_server_same_dir_refused(tmp_path: Path, servers: list[Server]) -> None:
    data_dir = tmp_path / "data"
    first = Server(tmp_path, "--data-dir", str(data_dir))
    servers.append(first)

    result = run_cli("serve", "--port", "0", "--data-dir", str(data_dir), cwd=tmp_path, timeout=60)

    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert f"chatroom: error: data directory {data_dir} is in use" in stderr
    assert f"(PID {first.process.pid})" in stderr
    assert "Traceback" not in stderr
    after = asyncio.run(post_and_receive(first.url, "the first server still works"))
    assert after["id"] == 1


def test_memory_flag_writes_nothing(tmp_path: Path, servers: list[Server]) -> None:
    server = Server(tmp_path, "--memory")
    servers.append(server)

    asyncio.run(post_and_receive(server.url, "kept in memory only"))

    assert not (tmp_path / "data").exists()
    assert "without a journal" in server.log()


def test_default_data_dir_in_working_dir(tmp_path: Path, servers: list[Server]) -> None:
    server = Server(tmp_path)
    servers.append(server)

    asyncio.run(post_and_receive(server.url, "stored under ./data"))
    server.stop()

    assert server.process.returncode == 0
    reader = SqliteJournal.open_for_reading(tmp_path / "data")
    try:
        assert reader.last_id() == 1
    finally:
        reader.close()


# ---------------------------------------------------------------- store restarts


async def test_restarted_store_reopens_journal(
    aiohttp_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that dies releases its journal, and the one the supervisor starts restores it."""
    settings = Settings(presence_delay=0.01, supervise_interval=0.05)
    room = await aiohttp_client(create_app(settings, PASSWORD, data_dir=tmp_path / "data"))
    token = await conftest.login(room)
    ws, _ = await conftest.join(room, token)
    await ws.send_str("before the crash")
    [before] = await conftest.receive_messages(ws, 1)

    original_flush = MessageStoreActor._flush
    failures: list[bool] = []

    def flush_failing_once(self: MessageStoreActor) -> None:
        if not failures:
            failures.append(True)
            raise RuntimeError("simulated bug in the store")
        original_flush(self)

    monkeypatch.setattr(MessageStoreActor, "_flush", flush_failing_once)
    await ws.send_str("lost with the crash")
    async for _ in ws:
        pass
    assert ws.close_code == 1012

    for _ in range(200):
        health = await room.get("/healthz")
        if health.status == 200:
            break
        await asyncio.sleep(0.05)
    assert health.status == 200

    ws, _ = await conftest.join(room, token, since=before["id"])
    await ws.send_str("after the restart")
    [after] = await conftest.receive_messages(ws, 1)
    await ws.close()
    response = await room.get("/history?page=-1", headers=conftest.bearer(token))
    page = json.loads(await response.read())

    assert before["id"] == 1
    assert after["id"] == 2  # The crashed post was never committed, so its id is free.
    assert [message["body"] for message in page["messages"]] == [
        "before the crash",
        "after the restart",
    ]


# ---------------------------------------------------------------- settings


def test_config_toml_lists_storage_defaults() -> None:
    document = tomllib.loads((REPO / "config.toml").read_text())
    storage = {
        item.name: item.default
        for item in fields(Settings)
        if item.metadata["section"] == "storage"
    }

    assert document["storage"] == storage


def test_storage_settings_from_environment() -> None:
    environ = {"CHATROOM_JOURNAL_SYNCHRONOUS": "full", "CHATROOM_MAX_MESSAGES": "5000"}

    settings = Settings.load(None, environ, {})

    assert settings.journal_synchronous == "full"
    assert settings.max_messages == 5000


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"journal_synchronous": "off"}, "journal_synchronous must be one of normal, full"),
        ({"max_messages": -1}, "max_messages must be 0"),
        ({"memory_buckets": 0}, "memory_buckets must be greater than 0"),
        ({"data_dir": ""}, "data_dir must not be empty"),
    ],
)
def test_storage_settings_invalid(changes: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        Settings.load(None, {}, changes)
