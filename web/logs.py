"""Logging set-up for the command line, and an access log that never shows a token."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

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


def setup_logging(level: str, log_format: str) -> None:
    """Send every log record at ``level`` or above to standard error as text or JSON."""
    handler = logging.StreamHandler(sys.stderr)
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
