from __future__ import annotations

import pytest

from chatroom.actors.auth import AuthActor, LoginDenied, LoginGranted


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def auth(clock: FakeClock) -> AuthActor:
    # Called directly, without a thread: the actor's methods are plain code.
    return AuthActor(
        "secret", token_lifetime=60, max_login_failures=3, failure_window=10, clock=clock
    )


def test_login_right_password_grants_token(auth: AuthActor) -> None:
    result = auth.login("ann", "secret", "127.0.0.1")

    assert isinstance(result, LoginGranted)
    assert len(result.token) == 64
    int(result.token, 16)
    assert result.user.name == "ann"
    assert auth.check(result.token) is not None


def test_login_creates_new_user_each_time(auth: AuthActor) -> None:
    first = auth.login("ann", "secret")
    second = auth.login("ann", "secret")

    assert isinstance(first, LoginGranted)
    assert isinstance(second, LoginGranted)
    assert first.user.id != second.user.id
    assert first.token != second.token


def test_login_wrong_password_denied(auth: AuthActor) -> None:
    result = auth.login("ann", "wrong")

    assert result == LoginDenied("wrong password")


def test_check_unknown_token_returns_none(auth: AuthActor) -> None:
    assert auth.check("0" * 64) is None


def test_token_expires_after_lifetime(auth: AuthActor, clock: FakeClock) -> None:
    result = auth.login("ann", "secret")
    assert isinstance(result, LoginGranted)

    clock.now += 59
    assert auth.check(result.token) is not None
    clock.now += 1
    assert auth.check(result.token) is None
    assert auth.token_count() == 0


def test_logout_removes_token(auth: AuthActor) -> None:
    result = auth.login("ann", "secret")
    assert isinstance(result, LoginGranted)

    assert auth.logout(result.token) == result.user
    assert auth.check(result.token) is None
    assert auth.logout(result.token) is None


def test_sweep_removes_only_expired(auth: AuthActor, clock: FakeClock) -> None:
    old = auth.login("old", "secret")
    clock.now += 30
    new = auth.login("new", "secret")
    assert isinstance(old, LoginGranted)
    assert isinstance(new, LoginGranted)

    clock.now += 31
    assert auth.sweep_expired() == 1
    assert auth.token_count() == 1
    assert auth.check(new.token) is not None


def test_failures_rate_limited_per_address(auth: AuthActor, clock: FakeClock) -> None:
    for _ in range(3):
        assert auth.login("ann", "wrong", "10.0.0.1") == LoginDenied("wrong password")

    limited = auth.login("ann", "secret", "10.0.0.1")
    assert isinstance(limited, LoginDenied)
    assert limited.retry_after == pytest.approx(10)

    other_address = auth.login("bob", "secret", "10.0.0.2")
    assert isinstance(other_address, LoginGranted)

    clock.now += 10
    assert isinstance(auth.login("ann", "secret", "10.0.0.1"), LoginGranted)


def test_successful_logins_not_rate_limited(auth: AuthActor) -> None:
    for _ in range(20):
        assert isinstance(auth.login("ann", "secret", "10.0.0.1"), LoginGranted)


def test_auth_proxy_answers_through_thread() -> None:
    ref = AuthActor.start("secret")
    proxy = ref.proxy()

    result = proxy.login("ann", "secret").get(timeout=5)

    assert isinstance(result, LoginGranted)
    assert proxy.check(result.token).get(timeout=5).user == result.user
