from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.web.conftest import PASSWORD, RoomFactory, bearer, join, login, receive_messages

Client = TestClient[Any, Any]


async def test_login_returns_hex_token(room: Client) -> None:
    token = await login(room)

    assert len(token) == 64
    int(token, 16)


async def test_login_wrong_password_401(room: Client) -> None:
    response = await room.post("/login", json={"user": "ann", "password": "nope"})

    assert response.status == 401
    assert (await response.json()) == {"error": "Wrong password."}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"password": "x"}', '"user" is missing'),
        (b'{"user": "ann"}', '"password" is missing'),
        (b'{"user": "   ", "password": "x"}', "empty"),
        (b'{"user": 5, "password": "x"}', "must be a string"),
        (b'{"user": "ann", "password": 5}', "must be a string"),
        (b'{"user": "' + b"x" * 33 + b'", "password": "x"}', "maximum is 32"),
        (b'{"user": "a\\u0007b", "password": "x"}', "U+0007"),
        (b'{"user": "a\\nb", "password": "x"}', "U+000A"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
async def test_login_bad_input_400(room: Client, body: bytes, fragment: str) -> None:
    response = await room.post("/login", data=body, headers={"Content-Type": "application/json"})

    assert response.status == 400
    assert fragment in (await response.json())["error"]


async def test_login_name_trimmed_and_unicode_kept(room: Client) -> None:
    response = await room.post("/login", json={"user": "  Zoë 👩‍💻 ", "password": PASSWORD})
    token = (await response.json())["token"]

    ws, first = await join(room, token)
    await ws.close()

    assert first["name"] == "Zoë 👩‍💻"


async def test_login_form_content_type_415(room: Client) -> None:
    response = await room.post("/login", data={"user": "ann", "password": PASSWORD})

    assert response.status == 415
    assert "application/json" in (await response.json())["error"]


async def test_login_rate_limited_429(room_factory: RoomFactory) -> None:
    room = await room_factory(max_login_failures=3)
    for _ in range(3):
        response = await room.post("/login", json={"user": "ann", "password": "nope"})
        assert response.status == 401

    response = await room.post("/login", json={"user": "ann", "password": PASSWORD})

    assert response.status == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert "try again" in (await response.json())["error"]


async def test_huge_body_413_json(room: Client) -> None:
    response = await room.post(
        "/login", data=b"x" * 200_000, headers={"Content-Type": "application/json"}
    )

    assert response.status == 413
    assert "error" in await response.json()


@pytest.mark.parametrize("path", ["/history", "/users", "/logout"])
async def test_missing_token_401(room: Client, path: str) -> None:
    response = await room.get(path)

    assert response.status == 401
    assert "token" in (await response.json())["error"].lower()


@pytest.mark.parametrize("path", ["/history", "/users", "/logout"])
async def test_bad_token_401(room: Client, path: str) -> None:
    response = await room.get(path, headers=bearer("0" * 64))

    assert response.status == 401
    assert "log in again" in (await response.json())["error"]


async def test_history_empty_room(room: Client) -> None:
    token = await login(room)

    for query in ("", "?page=-1", "?page=0"):
        response = await room.get(f"/history{query}", headers=bearer(token))
        assert response.status == 200
        assert (await response.json()) == {"page": 0, "messages": []}


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("?page=abc", "integer"),
        ("?page=1.5", "integer"),
        ("?page=-2", "-1"),
        ("?page=1", "does not exist"),
        ("?page=99999999999999999999999", "does not exist"),
        ("?page=0&page=0", "at most once"),
        ("?pgae=0", "Unknown query parameter"),
    ],
)
async def test_history_bad_page_400(room: Client, query: str, fragment: str) -> None:
    token = await login(room)

    response = await room.get(f"/history{query}", headers=bearer(token))

    assert response.status == 400
    assert fragment in (await response.json())["error"]


async def test_history_pages_after_posts(room_factory: RoomFactory) -> None:
    room = await room_factory(post_rate=1000.0, post_burst=1000.0)
    token = await login(room)
    ws, _ = await join(room, token)
    for index in range(250):
        await ws.send_str(f"message {index + 1}")
    await receive_messages(ws, 250)

    newest = await (await room.get("/history", headers=bearer(token))).json()
    first = await (await room.get("/history?page=0", headers=bearer(token))).json()
    middle = await (await room.get("/history?page=1", headers=bearer(token))).json()
    beyond = await room.get("/history?page=3", headers=bearer(token))
    await ws.close()

    assert newest["page"] == 2
    assert [m["id"] for m in newest["messages"]] == list(range(201, 251))
    assert [m["id"] for m in first["messages"]] == list(range(1, 101))
    assert first["messages"][0]["body"] == "message 1"
    assert [m["id"] for m in middle["messages"]] == list(range(101, 201))
    assert beyond.status == 400


async def test_users_lists_online_once(room: Client) -> None:
    token = await login(room, "ann")
    first_tab, _ = await join(room, token)
    second_tab, _ = await join(room, token)

    response = await room.get("/users", headers=bearer(token))
    users = (await response.json())["users"]
    await first_tab.close()
    await second_tab.close()

    assert [user["name"] for user in users] == ["ann"]


async def test_logout_invalidates_token_and_closes_socket(room: Client) -> None:
    token = await login(room)
    ws, _ = await join(room, token)

    response = await room.get("/logout", headers=bearer(token))
    assert response.status == 200
    assert (await response.json()) == {"status": "logged out"}

    async for _ in ws:
        pass
    assert ws.close_code == 1008

    again = await room.get("/history", headers=bearer(token))
    assert again.status == 401


async def test_unknown_route_404_json(room: Client) -> None:
    response = await room.get("/nope")

    assert response.status == 404
    assert "error" in await response.json()


async def test_wrong_method_405_json(room: Client) -> None:
    response = await room.get("/login")

    assert response.status == 405
    assert "error" in await response.json()


async def test_index_served_with_security_headers(room: Client) -> None:
    response = await room.get("/")

    assert response.status == 200
    assert "text/html" in response.headers["Content-Type"]
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_healthz_ok(room: Client) -> None:
    response = await room.get("/healthz")

    assert response.status == 200
    assert (await response.json()) == {"status": "ok"}
