"""Health, metrics and logs: what an operator sees of a running room."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import pykka
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from chatroom.actors.auth import AuthActor
from chatroom.actors.base import set_tracing
from chatroom.actors.store import MessageStoreActor
from chatroom.web.app import create_app
from chatroom.web.bridge import LoopOutbox
from chatroom.web.config import ConfigError, Settings
from chatroom.web.logs import AccessLogger
from chatroom.web.metrics import Metrics
from chatroom.web.state import METRICS_URL
from tests.web.conftest import (
    PASSWORD,
    RoomFactory,
    bearer,
    join,
    login,
    receive_json,
    receive_messages,
)
from tests.web.room_process import RoomProcess

Client = TestClient[Any, Any]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# The supervisor would restart a stopped actor within a second; these tests
# stop one on purpose and look at the room before anything restarts it.
NO_RESTART = 3600.0


@pytest.fixture
def tracing() -> Iterator[None]:
    set_tracing(True)
    yield
    set_tracing(False)


def parse_samples(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def scrape(room: Client) -> Samples:
    response = await room.get("/metrics")
    assert response.status == 200, await response.text()
    return parse_samples(await response.text())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def stop_actor(actor_class: type[pykka.Actor]) -> None:
    [ref] = pykka.ActorRegistry.get_by_class(actor_class)
    await asyncio.to_thread(ref.stop, timeout=10)


async def wait_for_metric(room: Client, name: str, expected: float, **labels: str) -> float:
    """Scrape until the metric has the expected value; return the last value seen."""
    seen = value(await scrape(room), name, **labels)
    for _ in range(200):
        if seen == expected:
            break
        await asyncio.sleep(0.025)
        seen = value(await scrape(room), name, **labels)
    return seen


# Health.


async def test_health_503_names_stopped_store(room_factory: RoomFactory) -> None:
    room = await room_factory(supervise_interval=NO_RESTART)
    assert (await room.get("/healthz")).status == 200

    await stop_actor(MessageStoreActor)
    response = await room.get("/healthz")

    assert response.status == 503
    assert await response.json() == {"status": "unavailable", "failing": ["store"]}


async def test_health_503_names_stopped_auth(room_factory: RoomFactory) -> None:
    room = await room_factory(supervise_interval=NO_RESTART)

    await stop_actor(AuthActor)
    response = await room.get("/healthz")

    assert response.status == 503
    assert await response.json() == {"status": "unavailable", "failing": ["auth"]}


# Where /metrics is served.


async def test_metrics_prometheus_text_format(room: Client) -> None:
    response = await room.get("/metrics")
    text = await response.text()

    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE chatroom_messages_posted_total counter" in text
    assert "# TYPE chatroom_delivery_latency_seconds histogram" in text


async def test_metrics_off_not_served(room_factory: RoomFactory) -> None:
    room = await room_factory(metrics="off")

    response = await room.get("/metrics")

    assert response.status == 404


async def test_metrics_separate_loopback_port(room_factory: RoomFactory) -> None:
    room = await room_factory(metrics="separate", metrics_port=0)
    url = room.app[METRICS_URL]

    on_main_port = await room.get("/metrics")
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()

    assert on_main_port.status == 404
    assert url.startswith("http://127.0.0.1:")
    assert response.status == 200
    assert "chatroom_connected_sockets 0.0" in text


async def test_metrics_port_in_use_fails_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(metrics="separate", metrics_port=port)
        server = TestServer(create_app(settings, PASSWORD))

        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
            await server.start_server()
        await server.close()

    assert pykka.ActorRegistry.get_all() == []


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"metrics": "yes"}, "metrics must be one of off, on, separate"),
        ({"metrics_port": 70000}, "metrics_port must be between 0 and 65535"),
    ],
)
def test_metrics_settings_validated(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Settings().replace(**changes).validate()


# Each metric moves when its event happens.


async def test_sockets_and_tokens_gauges(room: Client) -> None:
    before = await scrape(room)
    token = await login(room)
    logged_in = await scrape(room)
    ws, _ = await join(room, token)
    joined = await scrape(room)
    await ws.close()
    sockets_after_close = await wait_for_metric(room, "chatroom_connected_sockets", 0)
    await room.get("/logout", headers=bearer(token))
    logged_out = await scrape(room)

    assert value(before, "chatroom_logged_in_tokens") == 0
    assert value(logged_in, "chatroom_logged_in_tokens") == 1
    assert value(logged_in, "chatroom_connected_sockets") == 0
    assert value(joined, "chatroom_connected_sockets") == 1
    assert sockets_after_close == 0
    assert value(logged_out, "chatroom_logged_in_tokens") == 0


async def test_scrape_without_auth_reports_nan(room_factory: RoomFactory) -> None:
    room = await room_factory(supervise_interval=NO_RESTART)

    await stop_actor(AuthActor)
    samples = await scrape(room)

    assert math.isnan(value(samples, "chatroom_logged_in_tokens"))
    assert value(samples, "chatroom_actors", actor="auth") == 0


async def test_post_counts_messages_deliveries_batches(room: Client) -> None:
    ann, _ = await join(room, await login(room, "ann"))
    bob, _ = await join(room, await login(room, "bob"))
    before = await scrape(room)

    await ann.send_str("hello")
    for ws in (ann, bob):
        await receive_messages(ws, 1)
    after_post = await scrape(room)
    # A newcomer with since=0 is sent the message again: one more delivery, not a post.
    cid, _ = await join(room, await login(room, "cid"), since=0)
    await receive_messages(cid, 1)
    after_replay = await scrape(room)
    for ws in (ann, bob, cid):
        await ws.close()

    assert value(before, "chatroom_messages_posted_total") == 0
    assert value(before, "chatroom_deliveries_total") == 0
    assert value(after_post, "chatroom_messages_posted_total") == 1
    assert value(after_post, "chatroom_deliveries_total") == 2
    assert value(after_post, "chatroom_fanout_batch_messages_count") == 1
    assert value(after_post, "chatroom_fanout_batch_messages_sum") == 1
    assert value(after_post, "chatroom_delivery_latency_seconds_count") == 1
    assert value(after_post, "chatroom_delivery_latency_seconds_sum") > 0
    assert value(after_replay, "chatroom_messages_posted_total") == 1
    assert value(after_replay, "chatroom_deliveries_total") == 3
    assert value(after_replay, "chatroom_fanout_batch_messages_count") == 1


async def test_login_failures_counted_by_reason(room_factory: RoomFactory) -> None:
    room = await room_factory(max_login_failures=1)

    wrong = await room.post("/login", json={"user": "ann", "password": "wrong"})
    after_wrong = await scrape(room)
    limited = await room.post("/login", json={"user": "ann", "password": "wrong"})
    after_limited = await scrape(room)

    assert wrong.status == 401
    assert limited.status == 429
    assert value(after_wrong, "chatroom_login_failures_total", reason="wrong_password") == 1
    assert value(after_wrong, "chatroom_login_failures_total", reason="rate_limited") == 0
    assert value(after_limited, "chatroom_login_failures_total", reason="wrong_password") == 1
    assert value(after_limited, "chatroom_login_failures_total", reason="rate_limited") == 1


async def test_rate_limited_messages_counted(room_factory: RoomFactory) -> None:
    room = await room_factory(post_rate=0.001, post_burst=1.0)
    ws, _ = await join(room, await login(room))

    for number in range(3):
        await ws.send_str(f"message {number}")
    errors: list[str] = []
    while len(errors) < 2:
        frame = await receive_json(ws)
        if frame.get("type") == "error":
            errors.append(frame["code"])
    samples = await scrape(room)
    await ws.close()

    assert errors == ["rate_limited", "rate_limited"]
    assert value(samples, "chatroom_rate_limited_messages_total") == 2


async def test_history_requests_by_outcome(room_factory: RoomFactory) -> None:
    room = await room_factory(supervise_interval=NO_RESTART)
    token = await login(room)

    assert (await room.get("/history", headers=bearer(token))).status == 200
    assert (await room.get("/history?page=x", headers=bearer(token))).status == 400
    assert (await room.get("/history?page=7", headers=bearer(token))).status == 400
    assert (await room.get("/history")).status == 401
    await stop_actor(MessageStoreActor)
    assert (await room.get("/history", headers=bearer(token))).status == 503
    samples = await scrape(room)

    assert value(samples, "chatroom_history_requests_total", outcome="ok") == 1
    assert value(samples, "chatroom_history_requests_total", outcome="bad_request") == 2
    assert value(samples, "chatroom_history_requests_total", outcome="unauthorized") == 1
    assert value(samples, "chatroom_history_requests_total", outcome="unavailable") == 1


async def test_mailbox_depth_per_actor_kind(room: Client) -> None:
    release = threading.Event()

    class BusyAuth(AuthActor):
        def wait_for_release(self) -> None:
            release.wait(timeout=30)  # Blocks this actor's thread, never the event loop.

    busy = BusyAuth.start(PASSWORD)
    try:
        busy.proxy().wait_for_release()
        for _ in range(3):
            busy.tell("queued behind the blocked call")
        samples = await scrape(room)
    finally:
        release.set()
        await asyncio.to_thread(busy.stop, timeout=10)

    assert value(samples, "chatroom_actors", actor="auth") == 2
    assert value(samples, "chatroom_actor_mailbox_messages", actor="auth") >= 3
    assert value(samples, "chatroom_actor_mailbox_max_messages", actor="auth") >= 3
    assert value(samples, "chatroom_actors", actor="store") == 1
    assert value(samples, "chatroom_actor_mailbox_messages", actor="session") == 0


async def open_silent_socket(room: Client, token: str) -> tuple[socket.socket, str]:
    """Upgrade a raw socket with a tiny receive buffer to a websocket, then never read from it."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(raw, ("127.0.0.1", room.port))
    request = (
        f"GET /join?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{room.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: c2xvdyBjbGllbnQgdGVzdA==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(raw, request.encode())
    head = await loop.sock_recv(raw, 1024)
    return raw, head.decode(errors="replace")


async def test_slow_client_closed_and_drops_counted(room_factory: RoomFactory) -> None:
    room = await room_factory(post_rate=1e5, post_burst=1e5, queue_max_bytes=4096)
    slow, head = await open_silent_socket(room, await login(room, "slow"))
    poster, _ = await join(room, await login(room, "poster"))
    # The poster reads everything, so only the silent socket falls behind.
    reading = asyncio.create_task(receive_messages(poster, 100_000, timeout=60))
    body = "x" * 3000
    try:
        closed = 0.0
        for _ in range(200):
            for _ in range(20):
                await poster.send_str(body)
            closed = value(await scrape(room), "chatroom_slow_clients_closed_total")
            if closed:
                break
        # What the slow client's write buffer still held when it was closed.
        dropped = value(await scrape(room), "chatroom_deliveries_dropped_total")
    finally:
        reading.cancel()
        slow.close()
        await poster.close()

    assert head.startswith("HTTP/1.1 101"), head
    assert closed == 1
    assert dropped > 0


class BufferingTransport:
    """A transport whose peer reads nothing: every byte written stays in its buffer."""

    def __init__(self) -> None:
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.buffered += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False


class ClosedWebSocket:
    closed = True


async def test_outbox_counts_slow_close_and_drops() -> None:
    metrics = Metrics(connected_sockets=lambda: 0)
    outbox = LoopOutbox(
        asyncio.get_running_loop(),
        ClosedWebSocket(),  # type: ignore[arg-type]
        BufferingTransport(),  # type: ignore[arg-type]
        max_bytes=100,
        max_messages=1000,
        metrics=metrics,
    )

    outbox.write(b"x" * 60, 2)
    outbox.write(b"x" * 60, 3)  # 120 bytes waiting: over the bound, closed.
    outbox.write(b"x" * 60, 4)  # Reaches a closing outbox: dropped.
    samples = parse_samples(generate_latest(metrics.registry).decode())

    assert outbox.close_reason == "client cannot keep up"
    assert value(samples, "chatroom_slow_clients_closed_total") == 1
    assert value(samples, "chatroom_deliveries_dropped_total") == 2 + 3 + 4


# Logs.


async def test_trace_of_one_post(
    room: Client, caplog: pytest.LogCaptureFixture, tracing: None
) -> None:
    """One post travels: the session gets the text, the store gets the post, then its _Flush."""
    caplog.set_level(logging.DEBUG, logger="chatroom.trace")
    ws, _ = await join(room, await login(room))
    await receive_json(ws)  # The presence list.
    await receive_json(ws)  # The "joined" event, flushed after presence_delay.
    caplog.clear()

    await ws.send_str("hello")
    await receive_messages(ws, 1)
    trace = [record.getMessage() for record in caplog.records if record.name == "chatroom.trace"]
    await ws.close()

    assert [line.split()[0] for line in trace] == [
        "SessionActor",
        "MessageStoreActor",
        "MessageStoreActor",
    ]
    assert [line.split(" received ")[1].split()[0] for line in trace] == [
        "receive_text",
        "post",
        "_Flush",
    ]
    assert all(line.endswith("waiting)") for line in trace)
    assert {record.levelno for record in caplog.records if record.name == "chatroom.trace"} == {
        logging.DEBUG
    }


async def test_trace_off_logs_nothing(room: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="chatroom.trace")
    ws, _ = await join(room, await login(room))

    await ws.send_str("hello")
    await receive_messages(ws, 1)
    await ws.close()

    assert [record for record in caplog.records if record.name == "chatroom.trace"] == []


def scripted_session(url: str) -> tuple[list[str], list[str]]:
    """Log in, join twice, chat, read history, fail logins and log out; return the secrets used."""

    async def run() -> tuple[list[str], list[str]]:
        async with aiohttp.ClientSession() as session:
            secrets = [PASSWORD, "wrong-password-1", "wrong-password-2"]
            for wrong in secrets[1:]:
                response = await session.post(
                    f"{url}/login", json={"user": "mallory", "password": wrong}
                )
                assert response.status == 401
            tokens = []
            for name in ("ann", "bob"):
                response = await session.post(
                    f"{url}/login", json={"user": name, "password": PASSWORD}
                )
                tokens.append((await response.json())["token"])

            ann = await session.ws_connect(f"{url}/join?token={tokens[0]}")
            bob = await session.ws_connect(
                f"{url}/join", protocols=("chatroom", f"bearer.{tokens[1]}")
            )
            await ann.send_str("hello bob")
            await receive_messages(bob, 1)
            await bob.send_str("")  # An error frame.
            await session.get(f"{url}/history", headers=bearer(tokens[0]))
            await session.get(f"{url}/history?page=3", headers=bearer(tokens[1]))
            await session.get(f"{url}/users", headers=bearer(tokens[1]))
            await session.get(f"{url}/join?token={tokens[0]}x")  # Invalid token: 401.
            await session.get(f"{url}/logout", headers=bearer(tokens[0]))
            async for _ in ann:
                pass
            await bob.close()
            await session.post(f"{url}/logout", headers=bearer(tokens[1]))
            return secrets, tokens

    return asyncio.run(run())


def assert_no_secret(lines: list[str], secrets: list[str]) -> None:
    for line in lines:
        for secret in secrets:
            assert secret not in line, f"a secret appears in the log line: {line!r}"


async def test_no_secret_in_logs_with_tracing(
    caplog: pytest.LogCaptureFixture, tracing: None
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings(presence_delay=0.01, max_login_failures=3)
    server = TestServer(create_app(settings, PASSWORD))
    await server.start_server(access_log_class=AccessLogger)
    try:
        url = str(server.make_url("")).rstrip("/")
        secrets, tokens = await asyncio.to_thread(scripted_session, url)
    finally:
        await server.close()

    formatter = logging.Formatter()
    lines = [formatter.format(record) for record in caplog.records]
    messages = [record.getMessage() for record in caplog.records]
    assert any("received receive_text" in line for line in messages), "no trace lines"
    assert any('"GET /join?token=REDACTED' in line for line in messages), "no access log"
    assert any("Login failed for 'mallory'" in line for line in messages)
    assert_no_secret(lines, secrets + tokens)


@pytest.mark.timeout(120)
def test_no_secret_in_cli_logs() -> None:
    """The real ``chatroom serve`` at DEBUG, in JSON, with --trace-actors, through a session."""
    with RoomProcess("--log-level", "DEBUG", "--log-format", "json", "--trace-actors") as room:
        secrets, tokens = scripted_session(room.url)
        status = room.terminate()
        room.wait_for_line("Room stopped", 10)
        lines = list(room.lines)

    messages = [json.loads(line)["message"] for line in lines]
    assert status == 0
    assert any(message.startswith("Room open at http://127.0.0.1:") for message in messages)
    assert any("received post" in message for message in messages)
    assert sum("Login failed for 'mallory' from 127.0.0.1" in m for m in messages) == 2
    assert sum(" opened from 127.0.0.1" in message for message in messages) == 2
    assert any("closed with code 1008 (logged out)" in message for message in messages)
    assert any(message == "Room stopped" for message in messages)
    assert_no_secret(lines, secrets + tokens)
