"""The room keeps working for everyone when one client is slow, dead, hostile or broken."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pykka
import pytest
from aiohttp.test_utils import TestClient

from chatroom.actors.session import SessionActor
from chatroom.actors.store import MessageStoreActor
from tests.web.conftest import RoomFactory, bearer, join, login, receive_messages
from tests.web.room_process import PASSWORD, RoomProcess

Client = TestClient[Any, Any]


async def open_silent_socket(
    url: str, token: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Upgrade a raw socket to a websocket by hand, with a tiny receive buffer, and read nothing."""
    host_port = url.removeprefix("http://")
    host, port = host_port.rsplit(":", 1)
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, (host, int(port)))
    # A small limit makes the stream reader stop reading the socket at once, like a stuck client.
    reader, writer = await asyncio.open_connection(sock=raw, limit=4096)
    writer.write(
        (
            f"GET /join?token={token} HTTP/1.1\r\nHost: {host_port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: c2xvdyBjbGllbnQgdGVzdA==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    headers = await reader.readuntil(b"\r\n\r\n")
    assert headers.startswith(b"HTTP/1.1 101"), headers
    return reader, writer


def parse_close_code(stream: bytes) -> int | None:
    """Walk the unmasked server frames in ``stream`` and return the close frame's code.

    Returns None when no complete close frame is in ``stream`` yet.
    """
    offset = 0
    while offset + 2 <= len(stream):
        opcode = stream[offset] & 0x0F
        length = stream[offset + 1] & 0x7F
        offset += 2
        if length == 126:
            if offset + 2 > len(stream):
                return None
            (length,) = struct.unpack_from("!H", stream, offset)
            offset += 2
        elif length == 127:
            if offset + 8 > len(stream):
                return None
            (length,) = struct.unpack_from("!Q", stream, offset)
            offset += 8
        if offset + length > len(stream):
            return None
        if opcode == 0x8:
            (code,) = struct.unpack_from("!H", stream, offset)
            return int(code)
        offset += length
    return None


async def http_login(session: aiohttp.ClientSession, url: str, name: str) -> str:
    response = await session.post(f"{url}/login", json={"user": name, "password": PASSWORD})
    assert response.status == 200, await response.text()
    token: str = (await response.json())["token"]
    return token


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The benchmark's C load generator, which keeps up with 200 clients where Python would lag."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is missing, and the load generator is a C program")
    binary = tmp_path_factory.mktemp("loadgen") / "loadgen"
    source = Path(__file__).resolve().parents[2] / "benchmarks" / "loadgen.c"
    subprocess.run([gcc, "-O2", "-o", str(binary), str(source)], check=True, timeout=120)
    return binary


@pytest.mark.timeout(300)
async def test_slow_client_closed_others_get_everything(loadgen: Path, tmp_path: Path) -> None:
    """One client stops reading while 200 others exchange 20,000 messages.

    The others, driven by the C load generator, must each receive all 20,000
    exactly once and in one order (it exits non-zero otherwise). The slow one
    must be closed with 1008. The server's peak memory must grow by less than
    the bound below, because the slow client's queue is bounded (1 MiB by
    default) and the 20,000 messages of history take a few MiB.
    """
    # 20,000 messages at 2,000 a second: a busy room, not one instantaneous dump.
    clients, rate, seconds, body_pad = 200, 2000, 10, 300
    memory_growth_bound_kib = 200 * 1024
    env = {"CHATROOM_POST_RATE": "100000", "CHATROOM_POST_BURST": "100000"}
    with RoomProcess(env=env) as room:
        async with aiohttp.ClientSession() as session:
            slow_token = await http_login(session, room.url, "slow")
            tokens = [await http_login(session, room.url, f"user{i}") for i in range(clients)]
        tokens_file = tmp_path / "tokens.txt"
        tokens_file.write_text("\n".join(tokens) + "\n")

        slow_reader, slow_writer = await open_silent_socket(room.url, slow_token)
        rss_before = room.peak_rss_kib()
        port = room.url.rsplit(":", 1)[1]
        command = [str(loadgen), "--port", port, "--tokens", str(tokens_file)]
        command += ["--rate", str(rate), "--duration", str(seconds), "--body-pad", str(body_pad)]
        command += ["--settle-ms", "200", "--timeout", "120", "--join-timeout", "60"]
        others = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )

        closing_logged = await asyncio.to_thread(room.wait_for_line, "cannot keep up", 120)
        stream = b""
        while chunk := await asyncio.wait_for(slow_reader.read(2**20), 30):
            stream += chunk
            if parse_close_code(stream) is not None:
                break
        slow_writer.close()

        output, errors = await asyncio.wait_for(others.communicate(), 200)
        rss_after = room.peak_rss_kib()

    result = json.loads(output.decode().strip().splitlines()[-1])
    assert others.returncode == 0, errors.decode()[-2000:]
    assert result["event"] == "result"
    assert closing_logged
    assert parse_close_code(stream) == 1008
    assert rss_after - rss_before < memory_growth_bound_kib


async def test_heartbeat_closes_silent_peer(room_factory: RoomFactory) -> None:
    room = await room_factory(heartbeat=0.4)
    token = await login(room)
    ws = await room.ws_connect(f"/join?token={token}", autoping=False, heartbeat=None)

    # Read without answering pings until the server gives up on this peer.
    async with asyncio.timeout(30):
        while not ws.closed:
            message = await ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break

    for _ in range(100):
        if not pykka.ActorRegistry.get_by_class(SessionActor):
            break
        await asyncio.sleep(0.05)
    assert pykka.ActorRegistry.get_by_class(SessionActor) == []


async def test_abrupt_disconnects_quiet_and_no_leak(
    room_factory: RoomFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Clients that vanish mid-broadcast leave no session actor and no warning behind."""
    room = await room_factory(post_rate=1000.0, post_burst=1000.0)
    caplog.set_level(logging.DEBUG)
    staying = []
    for index in range(5):
        ws, _ = await join(room, await login(room, f"stay{index}"))
        staying.append(ws)
    leaving = []
    for index in range(10):
        ws, _ = await join(room, await login(room, f"leave{index}"))
        leaving.append(ws)

    for number in range(50):
        await staying[0].send_str(f"burst {number}")
    for ws in leaving:
        transport = ws._response.connection.transport if ws._response.connection else None
        if transport is not None:
            transport.abort()
    await staying[0].send_str("after")
    for ws in staying:
        await receive_messages(ws, 51)

    for _ in range(100):
        if len(pykka.ActorRegistry.get_by_class(SessionActor)) == len(staying):
            break
        await asyncio.sleep(0.05)
    for ws in staying:
        await ws.close()

    assert len(pykka.ActorRegistry.get_by_class(SessionActor)) <= len(staying)
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == []


async def test_room_full_503(room_factory: RoomFactory) -> None:
    room = await room_factory(max_connections=2)
    first, _ = await join(room, await login(room, "one"))
    second, _ = await join(room, await login(room, "two"))

    response = await room.get(f"/join?token={await login(room, 'three')}")
    await first.close()
    await second.close()

    assert response.status == 503
    assert "full" in (await response.json())["error"]


async def test_store_crash_restarted_by_supervisor(
    room_factory: RoomFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The store's fan-out raises once: it stops, sockets close 1012, and a new store serves."""
    room = await room_factory(supervise_interval=0.05)
    token = await login(room)
    ws, _ = await join(room, token)
    original_flush = MessageStoreActor._flush
    failures: list[bool] = []

    def flush_failing_once(self: MessageStoreActor) -> None:
        if not failures:
            failures.append(True)
            raise RuntimeError("disk on fire")
        original_flush(self)

    monkeypatch.setattr(MessageStoreActor, "_flush", flush_failing_once)
    await ws.send_str("this one crashes the store")
    async for _ in ws:
        pass
    assert ws.close_code == 1012

    for _ in range(100):
        health = await room.get("/healthz")
        if health.status == 200:
            break
        await asyncio.sleep(0.05)
    assert health.status == 200

    ws, _ = await join(room, token)
    await ws.send_str("after the restart")
    [message] = await receive_messages(ws, 1)
    await ws.close()

    assert message["body"] == "after the restart"
    assert any("stopped unexpectedly" in record.getMessage() for record in caplog.records)


async def test_hung_store_503_and_health(
    room_factory: RoomFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = await room_factory(ask_timeout=0.3)
    token = await login(room)
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    def hang(self: MessageStoreActor, page: int) -> None:
        # Blocks the store's own thread, never the event loop, until the test ends.
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=30)

    monkeypatch.setattr(MessageStoreActor, "history", hang)
    response = await room.get("/history", headers=bearer(token))
    health = await room.get("/healthz")
    release.set()

    assert response.status == 503
    assert "error" in await response.json()
    assert health.status == 503
    assert (await health.json())["failing"] == ["store"]


def test_access_log_redacts_token() -> None:
    with RoomProcess() as room:
        body = json.dumps({"user": "ann", "password": PASSWORD}).encode()

        async def scenario() -> str:
            async with aiohttp.ClientSession() as session:
                response = await session.post(f"{room.url}/login", data=body)
                token: str = (await response.json())["token"]
                ws = await session.ws_connect(f"{room.url}/join?token={token}")
                await ws.close()
                await session.get(f"{room.url}/history", headers=bearer(token))
            return token

        token = asyncio.run(scenario())
        assert room.wait_for_line('"GET /history', 10)
        log = "".join(room.lines)

    assert token not in log
    assert PASSWORD not in log
    assert "token=REDACTED" in log


@pytest.mark.timeout(120)
def test_sigterm_closes_sockets_1001_and_exits_zero() -> None:
    clients = 300
    with RoomProcess() as room:

        async def connect_all() -> tuple[list[int | None], int]:
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                sockets = []
                for index in range(clients):
                    token = await http_login(session, room.url, f"user{index}")
                    ws = await session.ws_connect(f"{room.url}/join?token={token}")
                    await ws.receive(timeout=30)
                    sockets.append(ws)

                async def close_code(ws: aiohttp.ClientWebSocketResponse) -> int | None:
                    async for _ in ws:
                        pass
                    return ws.close_code

                # Clients keep reading, as browsers do, so they answer the server's close.
                readers = [asyncio.create_task(close_code(ws)) for ws in sockets]
                status = await asyncio.to_thread(room.terminate, 60)
                codes = await asyncio.gather(*readers)
            return codes, status

        started = time.monotonic()
        codes, status = asyncio.run(connect_all())
        log = "".join(room.lines)

    assert status == 0
    assert codes == [1001] * clients
    assert "Room stopped" in log
    assert log.count("closed with code 1001 (server shutting down)") == clients
    assert "still running" not in log
    assert time.monotonic() - started < 110  # Bounded by the test timeout, not a speed claim.
