"""Logging set-up for the command line, and an access log that never shows a token."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from chatroom.actors.base import set_tracing, trace_logger

_TOKEN_IN_QUERY = re.compile(r"(?<=[?&]token=)[^&]*")


def redact(path_qs: str) -> str:
    """Replace the value of any ``token`` query parameter with ``REDACTED``."""
    return _TOKEN_IN_QUERY.sub("REDACTED", path_qs)


class AccessLogger(AbstractAccessLogger):
    """One line per request: address, method, path with tokens redacted, status, size, time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            f'{request.remote} "{request.method} {redact(request.path_qs)}" '
            f"{response.status} {response.body_length} {time * 1000:.1f}ms"
        )


class JsonFormatter(logging.Formatter):
    """Format each record as one JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "thread": record.threadName,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


@dataclass(slots=True)
class _Window:
    started: float
    passed: int = 1
    suppressed: int = 0


class RepeatFilter(logging.Filter):
    """Pass the first ``limit`` identical records per ``interval`` seconds and count the rest.

    Records are identical when their logger, level and formatted message are
    equal, and only records at ``min_level`` or above are limited. The first
    identical record after the interval carries the count of those suppressed.

    NOTE: a count is reported only when the same message comes again after
    the interval, and it is lost when more than ``max_keys`` distinct
    messages push its entry out.
    """

    def __init__(
        self,
        limit: int = 5,
        interval: float = 60.0,
        *,
        min_level: int = logging.WARNING,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._limit = limit
        self._interval = interval
        self._min_level = min_level
        self._max_keys = max_keys
        self._clock = clock
        # Oldest window first, so the entries dropped past max_keys are the stalest.
        self._windows: OrderedDict[tuple[str, int, str], _Window] = OrderedDict()
        self._lock = threading.Lock()  # Actor threads and the event loop log concurrently.

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self._min_level:
            return True
        message = record.getMessage()
        key = (record.name, record.levelno, message)
        now = self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now - window.started < self._interval:
                if window.passed < self._limit:
                    window.passed += 1
                    return True
                window.suppressed += 1
                return False

            self._windows[key] = _Window(now)
            self._windows.move_to_end(key)
            while len(self._windows) > self._max_keys:
                self._windows.popitem(last=False)

        if window is not None and window.suppressed:
            record.msg = (
                f"{message} ({window.suppressed} identical messages suppressed "
                f"in the previous {self._interval:g} s)"
            )
            record.args = None
        return True


def setup_logging(level: str, log_format: str, *, trace_actors: bool = False) -> None:
    """Send every log record at ``level`` or above to standard error as text or JSON.

    Identical warnings and errors are rate-limited by :class:`RepeatFilter`.
    With ``trace_actors``, every message an actor receives is logged at DEBUG on
    ``chatroom.trace``, whatever ``level`` is.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RepeatFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s [%(threadName)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pykka logs each exception returned to a caller at INFO; show those only when debugging.
    if root.level > logging.DEBUG:
        logging.getLogger("pykka").setLevel(logging.WARNING)

    set_tracing(trace_actors)
    if trace_actors:
        trace_logger.setLevel(logging.DEBUG)
