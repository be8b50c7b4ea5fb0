"""Xiongmai DVRIP / NetIP / "Sofia" (TCP 34567, UDP 34568) and its discovery (UDP 34569).

A 20-byte little-endian header, then a JSON body ending in "\\n\\0":
    0 head u8 (0xff) | 1 version u8 (0 request, 1 response) | 2 reserved u16 | 4 session u32 |
    8 sequence u32 | 12 total packets u8 | 13 current packet u8 | 14 message id u16 | 16 length u32
Discovery: message 1530 (request, broadcast), 1531 (reply, `{"NetWork.NetCommon": {...}}` with MAC,
HostName, HostIP as "0x..." hex, TCPPort 34567, SN...). Login reply 1001 carries "DeviceType ".
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from analyzers.protocols._text import clean

TCP_PORT = 34567
DISCOVERY_PORT = 34569
HEAD = 0xFF
HEADER = struct.Struct("<BBHIIBBHI")  # 20 bytes
MAX_BODY = 1 << 20
MSG_NAMES = {
    1000: "login_req",
    1001: "login_rsp",
    1006: "keepalive_req",
    1007: "keepalive_rsp",
    1020: "sysinfo_req",
    1021: "sysinfo_rsp",
    1040: "config_set",
    1042: "config_get",
    1410: "monitor_req",
    1413: "monitor_claim",
    1520: "upgrade_start",
    1522: "upgrade_data",
    1530: "discovery_req",
    1531: "discovery_rsp",
}
DISCOVERY_REQ, DISCOVERY_RSP = 1530, 1531


@dataclass(slots=True)
class XmMessage:
    version: int
    reserved: int
    session: int
    sequence: int
    total: int
    current: int
    msg_id: int
    length: int
    raw_body: bytes = b""
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return MSG_NAMES.get(self.msg_id, str(self.msg_id))

    @property
    def net_common(self) -> dict[str, Any]:
        nc = self.body.get("NetWork.NetCommon")
        return nc if isinstance(nc, dict) else {}

    @property
    def host_ip(self) -> str | None:
        """HostIP is a little-endian hex string ("0x6401A8C0" = 192.168.1.100)."""
        value = self.net_common.get("HostIP")
        if not isinstance(value, str):
            return None
        try:
            return socket.inet_ntoa(struct.pack("<I", int(value, 16)))
        except (ValueError, struct.error, OverflowError):
            return None

    def pack(self) -> bytes:
        return (
            HEADER.pack(
                HEAD,
                self.version,
                self.reserved,
                self.session,
                self.sequence,
                self.total,
                self.current,
                self.msg_id,
                self.length,
            )
            + self.raw_body
        )

    def text(self, name: str) -> str | None:
        return clean(self.net_common.get(name) or self.body.get(name))


def parse(data: bytes | bytearray | memoryview) -> XmMessage | None:
    """A DVRIP message with a plausible header (0xff, version 0/1, bounded length), or None.
    The JSON body is decoded when complete; otherwise `body` stays empty."""
    if len(data) < HEADER.size or data[0] != HEAD:
        return None
    _head, version, reserved, session, seq, total, cur, msg_id, length = HEADER.unpack_from(data, 0)
    if version > 1 or length > MAX_BODY:
        return None
    raw = bytes(data[HEADER.size : HEADER.size + length])
    body: dict[str, Any] = {}
    text = raw.rstrip(b"\x00\n ")
    if text.startswith(b"{") and len(raw) == length:
        try:
            value = json.loads(text.decode("utf-8", "replace"))
        except ValueError:
            value = None
        if isinstance(value, dict):
            body = value
    return XmMessage(version, reserved, session, seq, total, cur, msg_id, length, raw, body)


def build(msg_id: int, body: dict[str, Any] | None = None, *, version: int = 1, session: int = 0,
          sequence: int = 0) -> bytes:  # fmt: skip
    raw = b"" if body is None else json.dumps(body, separators=(",", ":")).encode() + b"\n\x00"
    return XmMessage(version, 0, session, sequence, 0, 0, msg_id, len(raw), raw).pack()


def host_ip_hex(ip: str) -> str:
    """The NetCommon HostIP spelling of an IPv4 address."""
    return "0x" + format(struct.unpack("<I", socket.inet_aton(ip))[0], "08X")
