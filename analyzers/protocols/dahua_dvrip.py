"""Dahua DVRIP, the private binary protocol on TCP 37777: a 32-byte header, then a body.

    0 command u8 | 1..3 command-specific | 4 body length u32le | 8..31 command-specific
Known commands: 0xa0 login request (old), 0xa1 probe (answered by 0xb1 ...), 0xa4 query (version
0x08, serial 0x07 at byte 8), 0xf4 JSON-RPC carriers (the JSON body starts at offset 32 on newer
firmware). Enough to say "this port speaks Dahua DVRIP" and to read a JSON body when present.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

TCP_PORT = 37777
HEADER_LEN = 32
_LEN = struct.Struct("<I")
KNOWN_COMMANDS = frozenset({0xA0, 0xA1, 0xA3, 0xA4, 0xB0, 0xB1, 0xB3, 0xB4, 0xF4, 0xF5})
MAX_BODY = 65_536


@dataclass(slots=True)
class DvripHeader:
    command: int
    body_length: int
    header: bytes  # the 32 header bytes as sent (round trip)
    body: bytes = b""

    def json_body(self) -> dict[str, Any] | None:
        text = self.body.rstrip(b"\x00\r\n ")
        if not text.startswith(b"{"):
            return None
        try:
            value = json.loads(text.decode("utf-8", "replace"))
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def pack(self) -> bytes:
        return self.header + self.body


def parse(data: bytes | bytearray | memoryview) -> DvripHeader | None:
    """A DVRIP message whose header names a known command, or None."""
    if len(data) < HEADER_LEN or data[0] not in KNOWN_COMMANDS:
        return None
    (length,) = _LEN.unpack_from(data, 4)
    if length > MAX_BODY:
        return None
    header = bytes(data[:HEADER_LEN])
    return DvripHeader(data[0], length, header, bytes(data[HEADER_LEN : HEADER_LEN + length]))


def build(command: int, body: bytes = b"", extra: bytes = b"") -> bytes:
    """Header with `command`, body length at 4 and `extra` bytes from offset 8; then the body."""
    head = bytearray(HEADER_LEN)
    head[0] = command
    _LEN.pack_into(head, 4, len(body))
    head[8 : 8 + len(extra[:24])] = extra[:24]
    return bytes(head) + body
