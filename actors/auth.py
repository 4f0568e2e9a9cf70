"""AuthActor: the room password, the token table and the login rate limit."""

from __future__ import annotations

import hmac
import logging
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from chatroom.actors.base import Actor
from chatroom.actors.messages import User

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class LoginGranted:
    """Reply to a login with the right password: a new token for a new user."""

    token: str
    user: User
    expires_at: float


@dataclass(frozen=True, slots=True)
class LoginDenied:
    """Reply to a rejected login. ``retry_after`` is set when the address is rate-limited."""

    reason: str
    retry_after: float | None = None


LoginResult = LoginGranted | LoginDenied


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """Reply to a token check: who owns the token and when it expires (clock seconds)."""

    user: User
    expires_at: float


class AuthActor(Actor):
    """Owns the token table: logs users in, checks and removes tokens.

    A token is 32 random bytes from :mod:`secrets`, hex-encoded, and expires
    ``token_lifetime`` seconds after login. Failed logins are counted per
    client address, and an address with ``max_login_failures`` failures within
    ``failure_window`` seconds is rejected until the oldest of them ages out.
    """

    def __init__(
        self,
        password: str,
        *,
        token_lifetime: float = 24 * 3600,
        max_login_failures: int = 10,
        failure_window: float = 60.0,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__()

        self._password = password.encode()
        self._token_lifetime = token_lifetime
        self._max_login_failures = max_login_failures
        self._failure_window = failure_window
        self._clock = clock

        self._tokens: dict[str, TokenInfo] = {}
        self._failures: dict[str, deque[float]] = {}

    def login(self, name: str, password: str, address: str = "") -> LoginResult:
        """Check ``password`` and return a new token, or the reason for rejecting it.

        ``name`` must already be validated by the caller. ``address`` identifies
        the client for the failed-login rate limit.
        """
        now = self._clock()
        failures = self._recent_failures(address, now)
        if len(failures) >= self._max_login_failures:
            retry_after = failures[0] + self._failure_window - now
            logger.warning(
                f"Login rejected for {name!r} from {address or 'unknown address'}: "
                f"{len(failures)} failed logins within {self._failure_window:g} s"
            )
            return LoginDenied("too many failed logins", retry_after=max(retry_after, 1.0))

        # hmac.compare_digest takes the same time wherever the first difference is.
        if not hmac.compare_digest(password.encode(), self._password):
            failures.append(now)
            self._failures[address] = failures
            logger.warning(f"Login failed for {name!r} from {address or 'unknown address'}")
            return LoginDenied("wrong password")

        token = secrets.token_hex(32)
        user = User(id=str(uuid.uuid4()), name=name)
        info = TokenInfo(user, expires_at=now + self._token_lifetime)
        self._tokens[token] = info
        logger.info(f"User {user.id} logged in as {name!r}")
        return LoginGranted(token, user, info.expires_at)

    def check(self, token: str) -> TokenInfo | None:
        """Return the token's owner, or None for an unknown or expired token (which is removed)."""
        info = self._tokens.get(token)
        if info is None:
            return None
        if info.expires_at <= self._clock():
            del self._tokens[token]
            return None
        return info

    def logout(self, token: str) -> User | None:
        """Remove ``token`` and return its owner, or None if it was not valid."""
        info = self.check(token)
        if info is None:
            return None
        del self._tokens[token]
        logger.info(f"User {info.user.id} logged out")
        return info.user

    def sweep_expired(self) -> int:
        """Remove expired tokens and stale failure records. Returns the count of tokens removed."""
        now = self._clock()
        expired = [token for token, info in self._tokens.items() if info.expires_at <= now]
        for token in expired:
            del self._tokens[token]

        for address in list(self._failures):
            if not self._recent_failures(address, now):
                del self._failures[address]

        if expired:
            logger.debug(f"Swept {len(expired)} expired tokens")
        return len(expired)

    def token_count(self) -> int:
        """Return the number of tokens in the table, expired ones not yet swept included."""
        return len(self._tokens)

    def _recent_failures(self, address: str, now: float) -> deque[float]:
        failures = self._failures.get(address, deque())
        while failures and failures[0] <= now - self._failure_window:
            failures.popleft()
        return failures


class AuthProxy(ActorMemberMixin, pykka.ActorProxy[AuthActor]):
    """Typed ``AuthActor`` proxy: each call is a message and returns a future of the reply."""

    login = proxy_method(AuthActor.login)
    check = proxy_method(AuthActor.check)
    logout = proxy_method(AuthActor.logout)
    sweep_expired = proxy_method(AuthActor.sweep_expired)
    token_count = proxy_method(AuthActor.token_count)
