"""Browser tests of the chat client: Debian's Chromium driven by Playwright.

Each test starts its own server as a subprocess (``python -m chatroom.web.cli
serve --port 0``) so rooms, rate limits and history never leak between tests.
The tests use Playwright's sync API, which must not run inside an event loop,
so they are plain functions. The helpers that post messages from Python run
``asyncio.run`` in a worker thread instead.

On a failure every open page is saved as a PNG under tests/web/artifacts/.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    Request,
    ViewportSize,
    expect,
    sync_playwright,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
PASSWORD = "correct horse battery staple"
ARTIFACTS = Path(__file__).parent / "artifacts"
URL_PATTERN = re.compile(r"http://127\.0\.0\.1:(\d+)/")
SERVER_START_SECONDS = 20.0
HELPER_TIMEOUT_SECONDS = 30.0

# Posting 250 messages from one socket would otherwise hit the default
# rate limit of 10 per second with a burst of 30.
FAST_POSTING = {"session": {"post_rate": 1000.0, "post_burst": 1000.0}}

# Records every WebSocket the page opens in window.__sockets. While
# window.__blockJoin is true, new sockets go to a path that returns 404, so
# the client's reconnects fail as if the server were gone. Playwright injects
# this before the page's own scripts run.
SOCKET_SPY = """
(() => {
  const NativeWebSocket = window.WebSocket;
  window.__sockets = [];
  window.__blockJoin = false;
  window.WebSocket = class extends NativeWebSocket {
    constructor(url, protocols) {
      const blocked = String(url).replace("/join", "/join-blocked-by-test");
      const target = window.__blockJoin ? blocked : url;
      super(target, protocols);
      window.__sockets.push(this);
    }
  };
})();
"""

# Page-side functions for the history test: the top of a message's bubble
# relative to the viewport, optionally after scrolling the list to the top.
# The bubble, not the list item, is measured because the item also contains the
# author line, which disappears when an older page makes it a continuation.
MEASURE = "key => document.querySelector(`[data-key='${key}'] .bubble`).getBoundingClientRect().top"
SCROLL_TO_TOP_AND_MEASURE = (
    "(node, key) => { node.scrollTop = 0; "
    "return document.querySelector(`[data-key='${key}'] .bubble`).getBoundingClientRect().top; }"
)

T = TypeVar("T")

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium", allow_module_level=True)


# ---------------------------------------------------------------- server


def _toml(settings: dict[str, dict[str, float]]) -> str:
    lines: list[str] = []
    for section, values in settings.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value!r}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def _start_server(
    directory: Path, settings: dict[str, dict[str, float]]
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a room on a free loopback port and return the process and its base URL."""
    config = directory / "config.toml"
    config.write_text(_toml(settings))
    log_path = directory / "server.log"
    env = {**os.environ, "CHATROOM_PASSWORD": PASSWORD}
    command = [
        sys.executable,
        "-m",
        "chatroom.web.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--config",
        str(config),
    ]
    # The log goes to a file, not a pipe, because the test does not read a
    # pipe while it runs and a full pipe would block the server.
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=directory
        )

    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        match = URL_PATTERN.search(log_path.read_text(errors="replace"))
        if match:
            return process, f"http://127.0.0.1:{match.group(1)}"
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    process.wait(timeout=10)
    log_text = log_path.read_text(errors="replace")
    pytest.fail(f"server did not log its URL within {SERVER_START_SECONDS} s:\n{log_text}")


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Return a function that starts a server with extra settings and returns its URL."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(settings: dict[str, dict[str, float]] | None = None) -> str:
        directory = tmp_path / f"server{len(processes)}"
        directory.mkdir()
        process, url = _start_server(directory, settings or FAST_POSTING)
        processes.append(process)
        return url

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def server(server_factory: Callable[..., str]) -> str:
    """Base URL of a fresh room with a relaxed post rate."""
    return server_factory()


# ---------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Pages:
    """Opens pages in separate browser contexts (separate sessionStorage) and watches them."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.dialogs: list[str] = []
        self.page_errors: list[str] = []
        self.csp_violations: list[str] = []

    def new(self, viewport: ViewportSize | None = None) -> Page:
        context = self.browser.new_context(viewport=viewport or {"width": 1000, "height": 700})
        context.set_default_timeout(10_000)
        context.add_init_script(SOCKET_SPY)
        self.contexts.append(context)
        page = context.new_page()
        page.on("dialog", self._on_dialog)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("console", self._on_console)
        return page

    def _on_console(self, message: ConsoleMessage) -> None:
        # Chromium reports each blocked inline script, inline style or
        # eval as a console error naming the Content Security Policy.
        if "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)

    def _on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def screenshot_all(self, test_name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", test_name)
        for context_index, context in enumerate(self.contexts):
            for page_index, page in enumerate(context.pages):
                path = ARTIFACTS / f"{safe_name}-{context_index}-{page_index}.png"
                try:
                    page.screenshot(path=str(path), full_page=True)
                except Exception as error:
                    # A failed screenshot must not hide the test's own failure.
                    print(f"screenshot of {path.name} failed: {error}")

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Pages]:
    """Page factory; saves screenshots of every page when the test fails."""
    opened = Pages(browser)
    failures_before = request.session.testsfailed
    yield opened
    # The call phase's report is logged before fixtures tear down, so a failed
    # test body has already been counted here.
    if request.session.testsfailed > failures_before:
        opened.screenshot_all(request.node.name)
    opened.close()
    assert opened.dialogs == [], f"the page opened dialogs: {opened.dialogs}"
    assert opened.page_errors == [], f"uncaught errors in the page: {opened.page_errors}"
    assert opened.csp_violations == [], f"CSP violations: {opened.csp_violations}"


# ---------------------------------------------------------------- helpers


def _run_in_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion in a fresh event loop on a worker thread.

    Playwright's sync API owns this thread's event loop, so asyncio.run here
    would fail.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=HELPER_TIMEOUT_SECONDS + 5)


def http_json(
    method: str, url: str, body: object = None, token: str | None = None
) -> tuple[int, Any]:
    """Send one HTTP request with the standard library and return (status, parsed JSON)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def login_token(base_url: str, name: str) -> str:
    status, body = http_json("POST", f"{base_url}/login", {"user": name, "password": PASSWORD})
    assert status == 200, f"login of {name!r} returned {status}: {body}"
    return str(body["token"])


async def _post(base_url: str, token: str, bodies: list[str]) -> list[int]:
    ws_url = base_url.replace("http://", "ws://") + "/join"
    protocols = ["chatroom", f"bearer.{token}"]
    async with (
        asyncio.timeout(HELPER_TIMEOUT_SECONDS),
        aiohttp.ClientSession() as http,
        http.ws_connect(ws_url, protocols=protocols) as socket,
    ):
        me = json.loads((await socket.receive()).data)
        for body in bodies:
            await socket.send_str(body)
        # Wait for the echo of every body, so the messages are stored
        # before the test goes on.
        ids: list[int] = []
        while len(ids) < len(bodies):
            frame = json.loads((await socket.receive()).data)
            if frame.get("type") == "error":
                raise AssertionError(f"server rejected a posted message: {frame}")
            if "type" not in frame and frame.get("user", {}).get("id") == me["id"]:
                ids.append(int(frame["id"]))
        return ids


def post_messages(base_url: str, token: str, bodies: list[str]) -> list[int]:
    """Post messages over a websocket of their own and return their ids."""
    return _run_in_thread(_post(base_url, token, bodies))


def log_in(page: Page, base_url: str, name: str) -> None:
    page.goto(base_url + "/")
    page.get_by_label("Display name").fill(name)
    page.get_by_label("Room password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#connection-status")).to_have_attribute("data-state", "online")


def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


def message_keys(page: Page) -> list[str]:
    keys: list[str] = page.eval_on_selector_all(
        "#message-list li.message", "items => items.map(item => item.dataset.key)"
    )
    return keys


def message_bodies(page: Page) -> list[str]:
    bodies: list[str] = page.eval_on_selector_all(
        "#message-list li.message .body", "nodes => nodes.map(node => node.textContent)"
    )
    return bodies


def keys_of(ids: range | list[int]) -> list[str]:
    return [f"message:{message_id}" for message_id in ids]


# ---------------------------------------------------------------- tests


def test_two_users_chat_and_presence(server: str, pages: Pages) -> None:
    alice = pages.new()
    bob = pages.new()
    log_in(alice, server, "Alice")
    log_in(bob, server, "Bob")

    # Presence: both lists show both users, and Alice gets a notice of Bob's arrival.
    expect(alice.locator("#presence-list li")).to_have_text(["Alice (you)", "Bob"])
    expect(bob.locator("#presence-list li")).to_have_text(["Alice", "Bob (you)"])
    expect(alice.locator(".notice")).to_contain_text(["Bob joined"])
    # No user gets a notice of their own arrival.
    expect(alice.locator(".notice")).to_have_count(1)
    expect(bob.locator(".notice")).to_have_count(0)

    send(alice, "Hello Bob! 👋 Grüße, 你好")
    bob_sees = bob.locator("li.message.other").filter(has_text="Hello Bob!")
    expect(bob_sees.locator(".body")).to_have_text("Hello Bob! 👋 Grüße, 你好")
    expect(bob_sees.locator(".author")).to_have_text("Alice")
    expect(alice.locator("li.message.own .body")).to_have_text(["Hello Bob! 👋 Grüße, 你好"])

    # Shift+Enter adds a line; Enter sends.
    box = bob.get_by_label("Message", exact=True)
    box.fill("line one")
    box.press("Shift+Enter")
    box.press_sequentially("line two")
    box.press("Enter")
    expect(alice.locator("li.message.other .body")).to_have_text(["line one\nline two"])
    expect(box).to_have_value("")

    # Consecutive messages of one sender form one group.
    send(bob, "second in a row")
    expect(alice.locator("li.message.other")).to_have_count(2)
    expect(alice.locator("li.message.other.group-start")).to_have_count(1)

    # Bob logs out: Alice's list drops him and a notice reports it.
    bob.get_by_role("button", name="Log out").click()
    expect(alice.locator("#presence-list li")).to_have_text(["Alice (you)"])
    expect(alice.locator(".notice").last).to_contain_text("Bob left")


def test_composer_size_counter_and_limit(server: str, pages: Pages) -> None:
    page = pages.new()
    log_in(page, server, "Writer")
    box = page.get_by_label("Message", exact=True)
    hint = page.locator("#composer-hint")

    box.fill("a" * 3000)
    expect(hint).to_be_hidden()

    box.fill("a" * 3500)
    expect(hint).to_have_text("3500 / 4096 bytes")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()

    # 1025 emoji are 4100 bytes of UTF-8: too large although 1025 characters.
    box.fill("😀" * 1025)
    expect(hint).to_contain_text("4 bytes too long")
    expect(page.get_by_role("button", name="Send")).to_be_disabled()
    box.press("Enter")
    expect(box).to_have_value("😀" * 1025)


def test_wrong_password_shows_inline_error(server: str, pages: Pages) -> None:
    page = pages.new()
    page.goto(server + "/")

    page.get_by_label("Display name").fill("Mallory")
    page.get_by_label("Room password").fill("not the password")
    page.get_by_role("button", name="Log in").click()

    expect(page.locator("#login-error")).to_have_text("Wrong password. Try again.")
    expect(page.locator("#chat-view")).to_be_hidden()
    expect(page.get_by_label("Room password")).to_be_focused()


def test_bad_name_shows_server_error(server: str, pages: Pages) -> None:
    page = pages.new()
    page.goto(server + "/")
    status, body = http_json("POST", f"{server}/login", {"user": "   ", "password": PASSWORD})
    assert status == 400

    page.get_by_label("Display name").fill("   ")
    page.get_by_label("Room password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    expect(page.locator("#login-error")).to_have_text(body["error"])
    expect(page.locator("#chat-view")).to_be_hidden()


def test_name_field_stops_at_32_characters(server: str, pages: Pages) -> None:
    page = pages.new()
    page.goto(server + "/")

    page.get_by_label("Display name").fill("x" * 40)

    assert page.get_by_label("Display name").input_value() == "x" * 32


def test_unreachable_server_shows_inline_error(server: str, pages: Pages) -> None:
    page = pages.new()
    page.goto(server + "/")
    page.route("**/login", lambda route: route.abort("connectionrefused"))

    page.get_by_label("Display name").fill("Alice")
    page.get_by_label("Room password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    expect(page.locator("#login-error")).to_contain_text("could not be reached")


def test_markup_in_body_shows_literally(server: str, pages: Pages) -> None:
    markup = "<img src=x onerror=alert(1)>"
    sender = pages.new()
    reader = pages.new()
    log_in(sender, server, "<b>Eve</b>")
    log_in(reader, server, "Reader")

    send(sender, markup)

    message = reader.locator("li.message.other")
    expect(message.locator(".body")).to_have_text(markup)
    expect(message.locator(".author")).to_have_text("<b>Eve</b>")
    expect(reader.locator("#presence-list")).to_contain_text("<b>Eve</b>")
    assert reader.locator("#message-list img").count() == 0
    assert reader.locator("#message-list b").count() == 0
    assert sender.locator("#message-list img").count() == 0


def test_server_error_frame_shows_near_composer(server: str, pages: Pages) -> None:
    page = pages.new()
    log_in(page, server, "Alice")

    # The composer never sends a blank message, so send one on the socket itself.
    page.evaluate("window.__sockets.at(-1).send('   ')")

    expect(page.locator("#composer-error")).not_to_be_empty()
    expect(page.locator("#connection-status")).to_have_attribute("data-state", "online")


def test_scrolling_up_loads_older_pages(server: str, pages: Pages) -> None:
    token = login_token(server, "Historian")
    ids = post_messages(server, token, [f"history {number:03d}" for number in range(1, 251)])
    assert ids == list(range(1, 251))

    page = pages.new()
    history_requests: list[str] = []

    def record_history_request(request: Request) -> None:
        if "/history" in request.url:
            history_requests.append(request.url.removeprefix(server))

    page.on("request", record_history_request)
    log_in(page, server, "Reader")

    # Opens at the newest page (2: ids 201..250), scrolled to the bottom.
    expect(page.locator("li.message").last).to_contain_text("history 250")
    expect(page.locator("li.message").last).to_be_in_viewport()
    assert message_keys(page) == keys_of(range(201, 251))

    # Scroll to the top and measure in the same task, before the scroll
    # event can start loading the previous page.
    scroller = page.locator("#scroller")
    top_before = scroller.evaluate(SCROLL_TO_TOP_AND_MEASURE, "message:201")
    expect(page.locator('[data-key="message:101"]')).to_be_attached()

    # The message that was at the top stays where the reader saw it.
    top_after = page.evaluate(MEASURE, "message:201")
    assert abs(top_after - top_before) < 5, (top_before, top_after)
    assert message_keys(page) == keys_of(range(101, 251))

    scroller.evaluate("node => { node.scrollTop = 0; }")
    expect(page.locator('[data-key="message:1"]')).to_be_attached()
    expect(page.locator("#history-status")).to_have_text("Beginning of the conversation")
    expect(page.get_by_role("button", name="Load older messages")).to_be_hidden()

    assert message_keys(page) == keys_of(range(1, 251))
    assert message_bodies(page) == [f"history {number:03d}" for number in range(1, 251)]
    assert history_requests == ["/history", "/history?page=1", "/history?page=0"]

    # Scrolled up, a new message shows a marker instead of moving the view.
    reading_position = scroller.evaluate("node => node.scrollTop")
    post_messages(server, token, ["while reading old ones"])
    marker = page.get_by_role("button", name="New messages ↓")
    expect(marker).to_be_visible()
    assert scroller.evaluate("node => node.scrollTop") == reading_position

    marker.click()
    expect(page.locator("li.message").last).to_be_in_viewport()
    expect(marker).to_be_hidden()


def test_reconnect_shows_missed_messages_once(server: str, pages: Pages) -> None:
    page = pages.new()
    log_in(page, server, "Alice")
    token = login_token(server, "Bob")
    (before_id,) = post_messages(server, token, ["before the drop"])
    expect(page.locator("li.message .body")).to_have_text(["before the drop"])

    # Drop the socket and keep /join unreachable while Bob posts.
    page.evaluate("window.__blockJoin = true; window.__sockets.at(-1).close();")
    status = page.locator("#connection-status")
    expect(status).to_have_attribute("data-state", "reconnecting")
    expect(status).to_contain_text(re.compile(r"Reconnecting in \d+ s"))
    expect(page.get_by_role("button", name="Send")).to_be_disabled()
    expect(page.locator("#composer-hint")).to_contain_text("Sending is disabled")

    missed = ["missed one", "missed two", "missed three"]
    post_messages(server, token, missed)

    page.evaluate("window.__blockJoin = false;")
    page.get_by_role("button", name="Reconnect now").click()
    expect(status).to_have_attribute("data-state", "online")
    expect(page.locator("li.message .body")).to_have_text(["before the drop", *missed])

    socket_url: str = page.evaluate("window.__sockets.at(-1).url")
    assert socket_url.endswith(f"/join?since={before_id}"), socket_url
    assert token not in socket_url

    # Live messages keep arriving on the new socket, still exactly once.
    post_messages(server, token, ["after the reconnect"])
    expect(page.locator("li.message .body")).to_have_text(
        ["before the drop", *missed, "after the reconnect"]
    )
    keys = message_keys(page)
    assert len(keys) == len(set(keys)) == 5


def test_gap_reloads_newest_page(server_factory: Callable[..., str], pages: Pages) -> None:
    server = server_factory({**FAST_POSTING, "room": {"max_replay": 5}})
    page = pages.new()
    log_in(page, server, "Alice")
    token = login_token(server, "Bob")
    post_messages(server, token, ["first"])
    expect(page.locator("li.message .body")).to_have_text(["first"])

    page.evaluate("window.__blockJoin = true; window.__sockets.at(-1).close();")
    expect(page.locator("#connection-status")).to_have_attribute("data-state", "reconnecting")
    # 8 missed messages are more than max_replay (5): the server sends a gap frame.
    missed = [f"missed {number}" for number in range(1, 9)]
    post_messages(server, token, missed)
    page.evaluate("window.__blockJoin = false;")
    page.get_by_role("button", name="Reconnect now").click()

    expect(page.locator("li.message .body")).to_have_text(["first", *missed])
    assert message_keys(page) == keys_of(range(1, 10))


def test_reload_keeps_session(server: str, pages: Pages) -> None:
    page = pages.new()
    log_in(page, server, "Alice")
    send(page, "still here after a reload")
    expect(page.locator("li.message.own .body")).to_have_text(["still here after a reload"])

    page.reload()

    expect(page.locator("#login-view")).to_be_hidden()
    expect(page.locator("#connection-status")).to_have_attribute("data-state", "online")
    expect(page.locator("#current-user-name")).to_have_text("Alice")
    # Still the same user: the message is drawn as our own.
    expect(page.locator("li.message.own .body")).to_have_text(["still here after a reload"])
    assert page.evaluate("sessionStorage.getItem('chatroom.token')")


def test_logout_returns_to_form(server: str, pages: Pages) -> None:
    page = pages.new()
    log_in(page, server, "Alice")
    token = page.evaluate("sessionStorage.getItem('chatroom.token')")

    page.get_by_role("button", name="Log out").click()

    expect(page.locator("#login-view")).to_be_visible()
    expect(page.locator("#chat-view")).to_be_hidden()
    expect(page.locator("#login-notice")).to_have_text("You logged out.")
    assert page.evaluate("sessionStorage.getItem('chatroom.token')") is None
    status, _ = http_json("GET", f"{server}/users", token=token)
    assert status == 401

    page.reload()
    expect(page.locator("#login-view")).to_be_visible()


def test_logout_elsewhere_ends_session(server: str, pages: Pages) -> None:
    page = pages.new()
    log_in(page, server, "Alice")
    token = page.evaluate("sessionStorage.getItem('chatroom.token')")

    # Another client with the same token logs out: the server closes our
    # socket with 1008 "logged out".
    status, _ = http_json("GET", f"{server}/logout", token=token)
    assert status == 200

    expect(page.locator("#login-view")).to_be_visible()
    expect(page.locator("#login-notice")).to_have_text("You were logged out.")


def test_phone_layout_collapses_presence(server: str, pages: Pages) -> None:
    page = pages.new(viewport={"width": 375, "height": 667})
    log_in(page, server, "Alice")
    toggle = page.get_by_role("button", name="Online (1)")

    expect(toggle).to_be_visible()
    expect(page.locator("#presence-list")).to_be_hidden()

    toggle.click()
    expect(page.locator("#presence-list")).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    # Nothing is wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_rate_limited_login_shows_retry_after(
    server_factory: Callable[..., str], pages: Pages
) -> None:
    server = server_factory({**FAST_POSTING, "auth": {"max_login_failures": 2}})
    page = pages.new()
    page.goto(server + "/")
    page.get_by_label("Display name").fill("Mallory")
    login_button = page.get_by_role("button", name="Log in")

    for _ in range(3):
        page.get_by_label("Room password").fill("wrong")
        login_button.click()
        expect(page.locator("#login-error")).not_to_be_empty()
        if login_button.is_disabled():
            break

    expect(page.locator("#login-error")).to_contain_text(
        re.compile(r"Too many failed log-ins\. Try again in \d+ s\.")
    )
    expect(login_button).to_be_disabled()


def test_expired_token_returns_to_form(server_factory: Callable[..., str], pages: Pages) -> None:
    server = server_factory(
        {**FAST_POSTING, "auth": {"token_lifetime": 2.0, "token_sweep_interval": 0.5}}
    )
    page = pages.new()
    log_in(page, server, "Alice")

    expect(page.locator("#login-view")).to_be_visible(timeout=15_000)
    expect(page.locator("#login-notice")).to_have_text("Your session expired. Log in again.")
    assert page.evaluate("sessionStorage.getItem('chatroom.token')") is None


def test_invalid_saved_token_returns_to_form(server: str, pages: Pages) -> None:
    page = pages.new()
    page.goto(server + "/")
    page.evaluate("sessionStorage.setItem('chatroom.token', '0'.repeat(64))")
    page.evaluate("sessionStorage.setItem('chatroom.name', 'Alice')")

    page.reload()

    expect(page.locator("#login-view")).to_be_visible()
    expect(page.locator("#login-notice")).to_have_text(
        "Your session is no longer valid. Log in again."
    )
    # The saved name is offered again, so only the password is needed.
    expect(page.get_by_label("Display name")).to_have_value("Alice")
