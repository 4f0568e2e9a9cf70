"""Property-based tests: nothing a client sends to /login or /history gets a 500.

Hypothesis generates the inputs; a real server process answers them over a
loopback socket. Every answer must be a 2xx or 4xx with a JSON body, and
every 4xx must carry an ``error`` sentence.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.web.room_process import PASSWORD, RoomProcess

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=10,
)


@pytest.fixture(scope="module")
def room() -> Iterator[RoomProcess]:
    # Failed logins are rate-limited per address; allow enough for the examples.
    with RoomProcess(env={"CHATROOM_MAX_LOGIN_FAILURES": "1000000"}) as process:
        yield process


def request(
    room: RoomProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """Send one request and return the status and the decoded JSON body."""
    http_request = urllib.request.Request(
        room.url + path, data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(http_request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def token_for(room: RoomProcess) -> str:
    body = json.dumps({"user": "prop", "password": PASSWORD}).encode()
    status, document = request(room, "POST", "/login", body, {"Content-Type": "application/json"})
    assert status == 200
    token: str = document["token"]
    return token


def check_answer(status: int, document: Any, allowed: set[int]) -> None:
    assert status in allowed, (status, document)
    assert isinstance(document, dict)
    if status >= 400:
        assert isinstance(document.get("error"), str)
        assert document["error"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    document=st.dictionaries(st.sampled_from(["user", "password", "extra"]), JSON_VALUES)
    | JSON_VALUES
)
def test_login_any_json_never_500(room: RoomProcess, document: Any) -> None:
    body = json.dumps(document).encode()

    status, answer = request(room, "POST", "/login", body, {"Content-Type": "application/json"})

    check_answer(status, answer, {200, 400, 401})


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=300),
    content_type=st.sampled_from(
        [
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "image/png",
        ]
    ),
)
def test_login_any_bytes_never_500(room: RoomProcess, body: bytes, content_type: str) -> None:
    status, answer = request(room, "POST", "/login", body, {"Content-Type": content_type})

    check_answer(status, answer, {200, 400, 401, 415})


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pairs=st.lists(
        st.tuples(st.sampled_from(["page", "Page", "p", "page[]", ""]), st.text(max_size=30)),
        max_size=3,
    )
)
def test_history_any_query_never_500(room: RoomProcess, pairs: list[tuple[str, str]]) -> None:
    token = token_for(room)
    query = urllib.parse.urlencode(pairs)

    status, answer = request(
        room, "GET", f"/history?{query}", headers={"Authorization": f"Bearer {token}"}
    )

    check_answer(status, answer, {200, 400})


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(page=st.integers(min_value=-(2**70), max_value=2**70))
def test_history_any_page_number_never_500(room: RoomProcess, page: int) -> None:
    token = token_for(room)

    status, answer = request(
        room, "GET", f"/history?page={page}", headers={"Authorization": f"Bearer {token}"}
    )

    check_answer(status, answer, {200, 400})
    if status == 200:
        assert answer["page"] == 0
        assert page in (-1, 0)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(header=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80))
def test_history_any_authorization_never_500(room: RoomProcess, header: str) -> None:
    status, answer = request(room, "GET", "/history", headers={"Authorization": header})

    check_answer(status, answer, {200, 401})
