"""Fixtures for the web tests: a real room on a loopback port and clients for it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from chatroom.web.app import create_app
from chatroom.web.config import Settings

PASSWORD = "correct horse"

RoomFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def room_factory(aiohttp_client: Any) -> RoomFactory:
    """Start a room with settings changed by keyword, for example ``max_replay=5``."""

    async def start(**changes: Any) -> TestClient[Any, Any]:
        settings = Settings(presence_delay=0.01).replace(**changes)
        client: TestClient[Any, Any] = await aiohttp_client(create_app(settings, PASSWORD))
        return client

    return start


@pytest.fixture
async def room(room_factory: RoomFactory) -> TestClient[Any, Any]:
    return await room_factory()


async def login(client: TestClient[Any, Any], name: str = "ann") -> str:
    response = await client.post("/login", json={"user": name, "password": PASSWORD})
    assert response.status == 200, await response.text()
    token: str = (await response.json())["token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def join(
    client: TestClient[Any, Any], token: str, since: int | None = None
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    """Open /join and read the first frame, the user object."""
    query = f"/join?token={token}" + ("" if since is None else f"&since={since}")
    ws = await client.ws_connect(query)
    first = json.loads((await ws.receive(timeout=10)).data)
    return ws, first


async def receive_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> dict[str, Any]:
    message = await ws.receive(timeout=timeout)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    value: dict[str, Any] = json.loads(message.data)
    return value


async def receive_messages(
    ws: aiohttp.ClientWebSocketResponse, count: int, timeout: float = 30
) -> list[dict[str, Any]]:
    """Read frames until ``count`` chat messages arrived; skip typed events."""
    messages: list[dict[str, Any]] = []
    while len(messages) < count:
        frame = await receive_json(ws, timeout)
        if "type" not in frame:
            messages.append(frame)
    return messages
