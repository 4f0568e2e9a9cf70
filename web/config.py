"""Settings: built-in defaults, overridden by config.toml, the environment and the command line."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from chatroom.actors.journal import SYNCHRONOUS_MODES


class ConfigError(Exception):
    """Raised when a setting from a file, the environment or the command line is invalid."""


PORT_SETTINGS = ("port", "metrics_port")
# Limits where 0 means "no limit", so they may be 0 but not negative.
OPTIONAL_LIMITS = ("max_messages", "max_age")
METRICS_MODES = ("off", "on", "separate")


def _setting(default: Any, section: str, help: str) -> Any:
    if isinstance(default, list):
        return field(
            default_factory=lambda: list(default), metadata={"section": section, "help": help}
        )
    return field(default=default, metadata={"section": section, "help": help})


@dataclass(frozen=True)
class Settings:
    """Every tunable of a room. config.toml lists the same keys, by section, with these defaults."""

    host: str = _setting("127.0.0.1", "server", "address to listen on")
    port: int = _setting(8080, "server", "TCP port to listen on; 0 picks a free one")
    max_request_bytes: int = _setting(65536, "server", "largest accepted HTTP request body, bytes")
    shutdown_timeout: float = _setting(
        5.0, "server", "seconds to wait for sockets to close on stop"
    )
    metrics: str = _setting(
        "on", "server", "GET /metrics: off, on (this port) or separate (metrics_port)"
    )
    metrics_port: int = _setting(
        8081, "server", "loopback TCP port of /metrics when metrics is separate; 0 picks one"
    )

    token_lifetime: float = _setting(86400.0, "auth", "seconds a token stays valid after login")
    token_sweep_interval: float = _setting(60.0, "auth", "seconds between sweeps of expired tokens")
    max_name_length: int = _setting(32, "auth", "longest display name, in characters")
    max_login_failures: int = _setting(10, "auth", "failed logins per address within the window")
    login_failure_window: float = _setting(60.0, "auth", "seconds over which failures are counted")

    bucket_size: int = _setting(100, "room", "messages per history bucket (page)")
    max_message_bytes: int = _setting(4096, "room", "largest message body, bytes of UTF-8")
    max_frame_bytes: int = _setting(65536, "room", "largest websocket frame; larger closes 1009")
    max_replay: int = _setting(1000, "room", "most messages replayed on reconnect with since")
    presence_delay: float = _setting(0.1, "room", "seconds join and leave events may wait to batch")

    queue_max_bytes: int = _setting(1048576, "session", "bytes queued for one client before 1008")
    queue_max_messages: int = _setting(
        10000, "session", "messages queued for one client before 1008"
    )
    post_rate: float = _setting(10.0, "session", "messages per second one client may post")
    post_burst: float = _setting(30.0, "session", "messages one client may post at once")
    max_rate_rejections: int = _setting(50, "session", "rate-limited messages in a row before 1008")
    heartbeat: float = _setting(
        25.0, "session", "seconds between pings; no pong in half that closes"
    )
    max_connections: int = _setting(10000, "session", "open websockets in the whole room")
    max_connections_per_token: int = _setting(8, "session", "open websockets per token")
    allowed_origins: list[str] = _setting([], "session", "extra Origins allowed to open /join")

    ask_timeout: float = _setting(5.0, "actors", "seconds a request waits on an actor before 503")
    supervise_interval: float = _setting(1.0, "actors", "seconds between checks for a dead actor")

    data_dir: str = _setting(
        "data", "storage", "directory of the journal; relative paths start at the working directory"
    )
    journal_synchronous: str = _setting(
        "normal", "storage", "normal survives a process crash; full also survives a power loss"
    )
    memory_buckets: int = _setting(
        50, "storage", "newest buckets kept in memory; older pages are read from the journal"
    )
    max_messages: int = _setting(
        0, "storage", "keep at least this many newest messages, delete older buckets; 0 keeps all"
    )
    max_age: float = _setting(
        0.0, "storage", "delete buckets whose newest message is older, in seconds; 0 keeps all"
    )

    @classmethod
    def load(
        cls,
        config_path: Path | None,
        environ: Mapping[str, str],
        overrides: Mapping[str, Any],
    ) -> Settings:
        """Merge the layers: ``overrides`` (command line) over the environment over the file."""
        values: dict[str, Any] = {}
        if config_path is not None:
            values.update(read_config_file(config_path))
        values.update(read_environment(environ))
        values.update({name: value for name, value in overrides.items() if value is not None})
        try:
            settings = cls(**values)
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a value out of range."""
        for name in PORT_SETTINGS:
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"{name} must be between 0 and 65535, got {port}")
        if self.metrics not in METRICS_MODES:
            raise ConfigError(
                f"metrics must be one of {', '.join(METRICS_MODES)}, got {self.metrics!r}"
            )
        if self.journal_synchronous not in SYNCHRONOUS_MODES:
            raise ConfigError(
                f"journal_synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, "
                f"got {self.journal_synchronous!r}"
            )
        if not self.data_dir:
            raise ConfigError("data_dir must not be empty; use --memory to run without a journal")
        for name in OPTIONAL_LIMITS:
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"{name} must be 0 (no limit) or greater, got {getattr(self, name)}"
                )
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in PORT_SETTINGS or item.name in OPTIONAL_LIMITS:
                continue
            if isinstance(value, int | float) and value <= 0:
                raise ConfigError(f"{item.name} must be greater than 0, got {value}")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML config file into setting names; unknown keys and wrong types are errors."""
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in config file {path}: {exc}") from exc

    by_name = {item.name: item for item in fields(Settings)}
    values: dict[str, Any] = {}
    for section, table in document.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: expected a [table] for {section!r}, got a value")
        for key, value in table.items():
            item = by_name.get(key)
            if item is None or item.metadata["section"] != section:
                raise ConfigError(f"{path}: unknown setting {section}.{key}")
            values[key] = _check_type(f"{section}.{key}", value, item)
    return values


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Read ``CHATROOM_<NAME>`` variables, for example ``CHATROOM_PORT=9000``."""
    values: dict[str, Any] = {}
    for item in fields(Settings):
        variable = f"CHATROOM_{item.name.upper()}"
        if variable in environ:
            values[item.name] = _parse_text(variable, environ[variable], item)
    return values


def _parse_text(name: str, text: str, item: dataclasses.Field[Any]) -> Any:
    kind = _kind(item)
    try:
        if kind is list:
            return [part.strip() for part in text.split(",") if part.strip()]
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"{name} must be {_KIND_NAMES[kind]}, got {text!r}") from None
    return text


def _check_type(name: str, value: Any, item: dataclasses.Field[Any]) -> Any:
    kind = _kind(item)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{name} must be {_KIND_NAMES[kind]}, got {value!r}")
    if isinstance(value, list) and not all(isinstance(part, str) for part in value):
        raise ConfigError(f"{name} must be a list of strings, got {value!r}")
    return value


_KIND_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    list: "a list of strings",
    bool: "true or false",
}


def _kind(item: dataclasses.Field[Any]) -> type:
    kinds: dict[str, type] = {"str": str, "int": int, "float": float, "list[str]": list}
    return kinds[str(item.type)]
