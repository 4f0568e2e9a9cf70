"""Websocket text frames built once and written to many sockets.

A server's frames are not masked (RFC 6455, section 5.1), so a frame is the
same bytes for every recipient. The store encodes each fan-out batch once
with :func:`encode_text_frames` and every session writes those bytes as they
are. The sockets must be opened without permessage-deflate, since a
compressed connection expects compressed frames.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

_FIN_TEXT = 0x81  # FIN bit set, opcode 0x1 (text).


def encode_text_frame(payload: bytes) -> bytes:
    """Frame ``payload`` (UTF-8 text) as one final, unmasked websocket text frame."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", _FIN_TEXT, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", _FIN_TEXT, 126, length)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, length)
    return header + payload


def encode_text_frames(payloads: Sequence[bytes]) -> bytes:
    """Frame each payload and join the frames into one buffer for one transport write."""
    return b"".join([encode_text_frame(payload) for payload in payloads])
