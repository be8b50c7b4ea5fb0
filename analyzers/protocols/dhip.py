"""Dahua DHIP: a 32-byte little-endian header, then JSON (discovery on UDP 37810; also over TCP).

    0 header size u32 (0x20) | 4 magic "DHIP" | 8 session u32 | 12 request id u32 |
    16 length 1 u32 | 20 u32 | 24 length 2 u32 | 28 u32
Discovery: request `{"method":"DHDiscover.search",...}`, reply `{"method":"client.notifyDevInfo",
"params":{"deviceInfo":{DeviceType, SerialNo, Vendor, Manufacturer, Version, ...}}}`.
Recognised by the first 8 bytes on any port (`20 00 00 00 "DHIP"`).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

from analyzers.protocols._text import clean

UDP_PORT = 37810
MAGIC = b"DHIP"
PREFIX = b"\x20\x00\x00\x00DHIP"
HEADER = struct.Struct("<I4sIIIIII")  # 32 bytes
MAX_BODY = 65_536


@dataclass(slots=True)
class DhipMessage:
    session: int
    request_id: int
    length1: int
    field5: int
    length2: int
    field7: int
    body: dict[str, Any] = field(default_factory=dict)
    raw_body: bytes = b""

    @property
    def method(self) -> str | None:
        m = self.body.get("method")
        return m if isinstance(m, str) else None

    @property
    def device_info(self) -> dict[str, Any]:
        params = self.body.get("params")
        info = params.get("deviceInfo") if isinstance(params, dict) else None
        return info if isinstance(info, dict) else {}

    @property
    def is_reply(self) -> bool:
        return bool(self.device_info)

    def info(self, name: str) -> str | None:
        return clean(self.device_info.get(name))

    @property
    def mac(self) -> str | None:
        m = self.body.get("mac")
        return clean(m).lower() if isinstance(m, str) and clean(m) else None  # type: ignore[union-attr]

    def pack(self) -> bytes:
        return (
            HEADER.pack(
                HEADER.size,
                MAGIC,
                self.session,
                self.request_id,
                self.length1,
                self.field5,
                self.length2,
                self.field7,
            )
            + self.raw_body
        )


def looks_like(data: bytes | bytearray | memoryview) -> bool:
    return len(data) >= 8 and bytes(data[:8]) == PREFIX


def parse(data: bytes | bytearray | memoryview) -> DhipMessage | None:
    """A DHIP message with a JSON object body, or None."""
    if len(data) < HEADER.size or not looks_like(data):
        return None
    size, _magic, session, req, len1, f5, len2, f7 = HEADER.unpack_from(data, 0)
    if size != HEADER.size:
        return None
    end = HEADER.size + min(len1 or len2, MAX_BODY)
    raw = bytes(data[HEADER.size : end])
    text = raw.rstrip(b"\x00\r\n ")
    body: Any = {}
    if text:
        try:
            body = json.loads(text.decode("utf-8", "replace"))
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
    return DhipMessage(session, req, len1, f5, len2, f7, body, raw)


def build(body: dict[str, Any], *, session: int = 0, request_id: int = 0, newline: bool = True) -> bytes:
    raw = json.dumps(body, separators=(",", ":")).encode() + (b"\n" if newline else b"")
    return DhipMessage(session, request_id, len(raw), 0, len(raw), 0, body, raw).pack()
