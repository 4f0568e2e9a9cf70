"""Values that several actors exchange: users and chat messages.

Futures and mailboxes hand objects over without copying them, so every value
here is immutable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class User:
    """A logged-in person: a fresh UUID4 string per login and a display name."""

    id: str
    name: str

    def to_wire(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name}


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """A posted message with its room-wide id and server time (RFC 3339, UTC).

    ``payload`` is the message serialised once as compact UTF-8 JSON, with
    ``"id"`` as the first key; every delivery and history page reuses it.
    """

    id: int
    user: User
    time: str
    body: str
    payload: bytes

    @classmethod
    def create(
        cls, message_id: int, user: User, body: str, now: datetime | None = None
    ) -> ChatMessage:
        """Build a message stamped with ``now`` (default: the current UTC time)."""
        stamp = (now or datetime.now(UTC)).isoformat(timespec="microseconds")
        time = stamp.replace("+00:00", "Z")
        wire = {"id": message_id, "user": user.to_wire(), "time": time, "body": body}
        return cls(message_id, user, time, body, encode_json(wire))

    @classmethod
    def from_payload(cls, payload: bytes) -> ChatMessage:
        """Rebuild a message from its serialised form, keeping the bytes as they are."""
        wire = json.loads(payload)
        user = User(wire["user"]["id"], wire["user"]["name"])
        return cls(wire["id"], user, wire["time"], wire["body"], payload)


def encode_json(value: Any) -> bytes:
    """Serialise ``value`` as compact JSON that keeps non-ASCII text as UTF-8."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
