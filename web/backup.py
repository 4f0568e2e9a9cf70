"""``chatroom export`` and ``chatroom import``: the history as JSON Lines, to back up or move it.

Each line is one message's payload, the same JSON object that clients
receive: ``{"id":…,"user":{"id":…,"name":…},"time":…,"body":…}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from chatroom.actors.journal import SqliteJournal
from chatroom.actors.messages import ChatMessage, User, encode_json

# The server's own time format (ChatMessage.create): RFC 3339 in UTC with a Z.
TIME_PATTERN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


class InvalidHistoryError(Exception):
    """Raised when an import line is not a valid chat message or breaks the id sequence."""


def export_history(data_dir: Path, output: BinaryIO) -> int:
    """Write every message in ``data_dir``'s journal to ``output``, one per line; return the count.

    The lines are the stored payloads byte for byte. A server may keep
    running on the directory: the export is one consistent snapshot.
    """
    journal = SqliteJournal.open_for_reading(data_dir)
    try:
        count = 0
        for payload in journal.iter_payloads():
            output.write(payload + b"\n")
            count += 1
        output.flush()
        return count
    finally:
        journal.close()


def import_history(data_dir: Path, lines: Iterable[bytes]) -> int:
    """Create ``data_dir``'s journal from JSON Lines; return the number of messages.

    The directory must not hold a journal with messages. Ids must be
    contiguous; the first may be above 1, as in the export of a room whose
    retention deleted its oldest messages. Each message is stored in the
    compact form the server writes, so an export of the imported room
    repeats the lines of a chatroom export byte for byte. Nothing is written
    unless every line is valid.
    """
    return SqliteJournal.create(data_dir, _rows(lines))


def _rows(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    expected_id: int | None = None
    for number, line in enumerate(lines, start=1):
        message = parse_line(line.rstrip(b"\r\n"), number)
        if expected_id is not None and message.id != expected_id:
            raise InvalidHistoryError(
                f"line {number}: expected id {expected_id}, got {message.id}; "
                "ids must increase by 1 from line to line"
            )
        expected_id = message.id + 1
        yield message.id, message.payload


def parse_line(line: bytes, number: int) -> ChatMessage:
    """Validate one JSON Lines record and return it as a message with a compact payload."""
    try:
        value = json.loads(line)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too.
        raise InvalidHistoryError(f"line {number}: not valid JSON: {exc}") from None
    if not isinstance(value, dict) or set(value) != {"id", "user", "time", "body"}:
        raise InvalidHistoryError(
            f'line {number}: expected an object with exactly "id", "user", "time" and "body"'
        )

    message_id = value["id"]
    if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id < 1:
        raise InvalidHistoryError(
            f'line {number}: "id" must be an integer from 1, got {message_id!r}'
        )
    user = _parse_user(value["user"], number)
    time = value["time"]
    if not isinstance(time, str) or not _is_server_time(time):
        raise InvalidHistoryError(
            f'line {number}: "time" must be UTC in RFC 3339 form such as '
            f'"2024-05-01T12:00:00.000000Z", got {time!r}'
        )
    body = value["body"]
    if not isinstance(body, str) or not body.strip():
        raise InvalidHistoryError(f'line {number}: "body" must be a string with text')

    wire = {"id": message_id, "user": user.to_wire(), "time": time, "body": body}
    try:
        payload = encode_json(wire)
    except UnicodeEncodeError:
        raise InvalidHistoryError(f"line {number}: the text contains a lone surrogate") from None
    return ChatMessage(message_id, user, time, body, payload)


def _parse_user(value: Any, number: int) -> User:
    if not isinstance(value, dict) or set(value) != {"id", "name"}:
        raise InvalidHistoryError(f'line {number}: "user" must be an object with "id" and "name"')
    if not all(isinstance(value[key], str) and value[key] for key in ("id", "name")):
        raise InvalidHistoryError(f'line {number}: "user" id and name must be non-empty strings')
    return User(value["id"], value["name"])


def _is_server_time(text: str) -> bool:
    if TIME_PATTERN.fullmatch(text) is None:
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:  # For example month 13.
        return False
    return True
