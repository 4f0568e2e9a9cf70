from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from tests.web.conftest import (
    PASSWORD,
    RoomFactory,
    bearer,
    join,
    login,
    receive_json,
    receive_messages,
)

Client = TestClient[Any, Any]


async def test_join_bad_token_401_before_upgrade(room: Client) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
        await room.ws_connect("/join?token=" + "0" * 64)

    assert raised.value.status == 401


async def test_join_missing_token_401(room: Client) -> None:
    response = await room.get("/join")

    assert response.status == 401
    assert "token" in (await response.json())["error"]


async def test_first_frame_user_then_presence(room: Client) -> None:
    token = await login(room, "ann")

    ws, first = await join(room, token)
    presence = await receive_json(ws)
    await ws.close()

    assert set(first) == {"id", "name"}
    assert first["name"] == "ann"
    assert presence == {"type": "presence", "users": [first]}


async def test_token_as_subprotocol(room: Client) -> None:
    token = await login(room)

    ws = await room.ws_connect("/join", protocols=("chatroom", f"bearer.{token}"))
    first = json.loads((await ws.receive(timeout=10)).data)
    await ws.close()

    assert ws.protocol == "chatroom"
    assert first["name"] == "ann"


async def test_message_shape_and_echo(room: Client) -> None:
    token = await login(room, "ann")
    ws, user = await join(room, token)

    await ws.send_str("héllo wörld 👋🏽 שלום e\u0301")
    [message] = await receive_messages(ws, 1)
    await ws.close()

    assert list(message) == ["id", "user", "time", "body"]
    assert message["id"] == 1
    assert message["user"] == user
    assert message["body"] == "héllo wörld 👋🏽 שלום e\u0301"
    assert message["time"].endswith("Z")


async def test_blank_body_error_frame(room: Client) -> None:
    token = await login(room)
    ws, _ = await join(room, token)

    await ws.send_str("   ")
    frames = [await receive_json(ws) for _ in range(3)]
    await ws.close()

    errors = [frame for frame in frames if frame.get("type") == "error"]
    assert errors[0]["code"] == "empty_body"


async def test_oversized_body_error_frame_not_posted(room_factory: RoomFactory) -> None:
    room = await room_factory(max_message_bytes=10)
    token = await login(room)
    ws, _ = await join(room, token)

    await ws.send_str("x" * 11)
    await ws.send_str("ok")
    frames: list[dict[str, Any]] = []
    while not any("body" in frame for frame in frames):
        frames.append(await receive_json(ws))
    await ws.close()

    errors = [frame for frame in frames if frame.get("type") == "error"]
    messages = [frame for frame in frames if "body" in frame]
    assert errors[0]["code"] == "too_large"
    assert "10 bytes" in errors[0]["error"]
    assert [message["body"] for message in messages] == ["ok"]
    assert messages[0]["id"] == 1


async def test_binary_frame_closes_1003(room: Client) -> None:
    token = await login(room)
    ws, _ = await join(room, token)

    await ws.send_bytes(b"\x00\x01")
    async for _ in ws:
        pass

    assert ws.close_code == 1003


async def test_frame_over_transport_limit_closes_1009(room_factory: RoomFactory) -> None:
    room = await room_factory(max_frame_bytes=1024)
    token = await login(room)
    ws, _ = await join(room, token)

    await ws.send_str("x" * 2000)
    async for _ in ws:
        pass

    assert ws.close_code == 1009


async def test_invalid_utf8_closes_1007(room: Client) -> None:
    token = await login(room)
    ws, _ = await join(room, token)

    await ws.send_frame(b"\xff\xfe invalid", WSMsgType.TEXT)
    async for _ in ws:
        pass

    assert ws.close_code == 1007


async def test_foreign_origin_403(room: Client) -> None:
    token = await login(room)

    with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
        await room.ws_connect(f"/join?token={token}", origin="https://evil.example")

    assert raised.value.status == 403


async def test_allowed_origin_accepted(room_factory: RoomFactory) -> None:
    room = await room_factory(allowed_origins=["https://chat.example"])
    token = await login(room)

    ws = await room.ws_connect(f"/join?token={token}", origin="https://chat.example")
    await ws.close()


async def test_own_origin_accepted(room: Client) -> None:
    token = await login(room)
    origin = f"http://{room.host}:{room.port}"

    ws = await room.ws_connect(f"/join?token={token}", origin=origin)
    await ws.close()


async def test_connections_per_token_capped_429(room_factory: RoomFactory) -> None:
    room = await room_factory(max_connections_per_token=2)
    token = await login(room)
    first, _ = await join(room, token)
    second, _ = await join(room, token)

    with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
        await room.ws_connect(f"/join?token={token}")
    await first.close()
    await second.close()

    assert raised.value.status == 429


async def test_bad_since_400(room: Client) -> None:
    token = await login(room)

    response = await room.get(f"/join?token={token}&since=abc")

    assert response.status == 400
    assert "since" in (await response.json())["error"]


async def test_since_replays_missed_without_duplicates(room_factory: RoomFactory) -> None:
    room = await room_factory(post_rate=1000.0, post_burst=1000.0)
    token = await login(room)
    writer, _ = await join(room, token)
    for index in range(30):
        await writer.send_str(f"m{index + 1}")
    await receive_messages(writer, 30)

    reader, _ = await join(room, token, since=12)
    replayed = await receive_messages(reader, 18)
    await writer.send_str("live")
    [live] = await receive_messages(reader, 1)
    await writer.close()
    await reader.close()

    assert [message["id"] for message in replayed] == list(range(13, 31))
    assert live["id"] == 31


async def test_since_large_gap_sends_gap_frame(room_factory: RoomFactory) -> None:
    room = await room_factory(post_rate=1000.0, post_burst=1000.0, max_replay=5)
    token = await login(room)
    writer, _ = await join(room, token)
    for index in range(20):
        await writer.send_str(f"m{index + 1}")
    await receive_messages(writer, 20)

    reader, _ = await join(room, token, since=2)
    frames: list[dict[str, Any]] = []
    while len([frame for frame in frames if "body" in frame]) < 5:
        frames.append(await receive_json(reader))
    await writer.close()
    await reader.close()

    gaps = [frame for frame in frames if frame.get("type") == "gap"]
    assert gaps == [{"type": "gap", "first_missing": 3, "last_missing": 15}]
    assert [frame["id"] for frame in frames if "body" in frame] == [16, 17, 18, 19, 20]


async def test_reconnect_during_posts_no_gap_no_duplicate(room_factory: RoomFactory) -> None:
    """A client reconnects with since while 50 others keep posting.

    The messages it saw before plus those after its reconnect must be every
    message exactly once, in order.
    """
    room = await room_factory(post_rate=1000.0, post_burst=1000.0)
    writers = []
    for index in range(50):
        token = await login(room, f"writer{index}")
        ws, _ = await join(room, token)
        writers.append(ws)
    reader_token = await login(room, "reader")
    reader, _ = await join(room, reader_token)

    async def post_all(ws: aiohttp.ClientWebSocketResponse, index: int) -> None:
        for number in range(10):
            await ws.send_str(f"w{index}-{number}")
            await asyncio.sleep(0)

    posting = asyncio.gather(*(post_all(ws, index) for index, ws in enumerate(writers)))
    before = await receive_messages(reader, 100)
    await reader.close()
    reader, _ = await join(room, reader_token, since=before[-1]["id"])
    await posting
    after = await receive_messages(reader, 500 - len(before))
    for ws in [*writers, reader]:
        await ws.close()

    ids = [message["id"] for message in before + after]
    assert ids == list(range(1, 501))


async def burst(room: Client, clients: int) -> list[list[dict[str, Any]]]:
    """Log ``clients`` users in, join them all, have each post once, and collect every message."""
    # The test client's own session allows 100 connections; this test needs more.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = []
        for index in range(clients):
            response = await session.post(
                room.make_url("/login"), json={"user": f"user{index}", "password": PASSWORD}
            )
            token = (await response.json())["token"]
            ws = await session.ws_connect(room.make_url(f"/join?token={token}"), heartbeat=None)
            await ws.receive(timeout=30)  # The user object: from here on nothing is missed.
            sockets.append(ws)

        readers = [
            asyncio.create_task(receive_messages(ws, clients, timeout=120)) for ws in sockets
        ]
        await asyncio.gather(*(ws.send_str(f"hello from {i}") for i, ws in enumerate(sockets)))
        received = await asyncio.gather(*readers)
        for ws in sockets:
            await ws.close()
    return received


def check_exactly_once_same_order(received: list[list[dict[str, Any]]], clients: int) -> None:
    expected_ids = list(range(1, clients + 1))
    first_order = [message["body"] for message in received[0]]
    assert sorted(first_order) == sorted(f"hello from {i}" for i in range(clients))
    for messages in received:
        assert [message["id"] for message in messages] == expected_ids
        assert [message["body"] for message in messages] == first_order


async def test_every_client_gets_every_message_once(room: Client) -> None:
    """200 clients log in, join, and each sends one message at the same moment."""
    received = await burst(room, 200)

    check_exactly_once_same_order(received, 200)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_thousand_clients_burst(room: Client) -> None:
    """1000 real websocket clients each send one message; all receive all 1000 exactly once."""
    received = await burst(room, 1000)

    check_exactly_once_same_order(received, 1000)


async def test_logout_elsewhere_closes_all_tabs(room: Client) -> None:
    token = await login(room)
    first, _ = await join(room, token)
    second, _ = await join(room, token)

    await room.get("/logout", headers=bearer(token))
    for ws in (first, second):
        async for _ in ws:
            pass

    assert first.close_code == 1008
    assert second.close_code == 1008


async def test_token_expiry_closes_socket(room_factory: RoomFactory) -> None:
    room = await room_factory(token_lifetime=0.5)
    token = await login(room)
    ws, _ = await join(room, token)

    async for _ in ws:
        pass

    assert ws.close_code == 1008
    assert await room.get("/users", headers=bearer(token)) is not None


async def test_presence_frames_joined_and_left(room: Client) -> None:
    ann_ws, ann = await join(room, await login(room, "ann"))
    await receive_json(ann_ws)  # Ann's presence list.

    bob_token = await login(room, "bob")
    first_tab, bob = await join(room, bob_token)
    second_tab, _ = await join(room, bob_token)
    bob_presence = await receive_json(first_tab)
    await first_tab.close()
    await second_tab.close()

    events: list[dict[str, Any]] = []
    while len([event for event in events if event.get("type") == "left"]) < 1:
        events.append(await receive_json(ann_ws))
    await ann_ws.close()

    assert sorted(user["name"] for user in bob_presence["users"]) == ["ann", "bob"]
    joined = [event["user"] for event in events if event.get("type") == "joined"]
    left = [event["user"] for event in events if event.get("type") == "left"]
    assert joined.count(bob) == 1  # Two tabs, one user: one joined event.
    assert left == [bob]
    assert ann not in left
