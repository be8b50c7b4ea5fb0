"""Dahua legacy discovery on UDP 5050 (broadcast).

Request: 32 bytes starting `a3 01`. Reply: first byte 0xb3, a 0x78-byte binary section (device type
as a NUL-padded string at 0x28, IPv4 address / mask / gateway / DNS from 0x38), then the MAC as a
17-character string, then `Key:value` lines (Name, Device, IPv6Addr, SerialNo...) split by CRLF.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from analyzers.protocols._text import as_bytes, clean
from analyzers.protocols.sadp import normalise_mac

UDP_PORT = 5050
REQUEST_MAGIC = 0xA3
REPLY_MAGIC = 0xB3
BINARY_LEN = 0x78
TYPE_AT, TYPE_LEN = 0x28, 0x10
IPV4_AT = 0x38
MAC_LEN = 17


@dataclass(slots=True)
class DahuaLegacyReply:
    device_type: str | None
    ipv4: str
    netmask: str
    gateway: str
    mac: str
    text: dict[str, str] = field(default_factory=dict)

    @property
    def serial(self) -> str | None:
        return clean(self.text.get("SerialNo"))

    @property
    def model(self) -> str | None:
        return clean(self.text.get("Device")) or self.device_type


def is_request(data: bytes | bytearray | memoryview) -> bool:
    return len(data) == 32 and data[0] == REQUEST_MAGIC and data[1] == 0x01


def parse(data: bytes | bytearray | memoryview) -> DahuaLegacyReply | None:
    raw = as_bytes(data)
    if len(raw) < BINARY_LEN + MAC_LEN or raw[0] != REPLY_MAGIC:
        return None
    mac = normalise_mac(raw[BINARY_LEN : BINARY_LEN + MAC_LEN].decode("latin-1"))
    if mac is None:
        return None
    dtype = clean(raw[TYPE_AT : TYPE_AT + TYPE_LEN].split(b"\x00", 1)[0].decode("latin-1"))
    ip, mask, gw = (socket.inet_ntoa(raw[IPV4_AT + 4 * i : IPV4_AT + 4 * i + 4]) for i in range(3))
    text: dict[str, str] = {}
    for line in raw[BINARY_LEN + MAC_LEN :].decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if sep and key.strip() and key.strip() not in text:
            text[key.strip()] = value.strip().strip("\x00")
    return DahuaLegacyReply(dtype, ip, mask, gw, mac, text)


def build_reply(
    device_type: str, ipv4: str, netmask: str, gateway: str, mac: str, text: dict[str, str]
) -> bytes:
    head = bytearray(BINARY_LEN)
    head[0] = REPLY_MAGIC
    name = device_type.encode()[:TYPE_LEN]
    head[TYPE_AT : TYPE_AT + len(name)] = name
    for i, addr in enumerate((ipv4, netmask, gateway)):
        head[IPV4_AT + 4 * i : IPV4_AT + 4 * i + 4] = socket.inet_aton(addr)
    lines = "\r\n".join(f"{k}:{v}" for k, v in text.items())
    return bytes(head) + mac.lower().encode() + lines.encode()


def build_request() -> bytes:
    req = bytearray(32)
    req[0], req[1], req[4] = REQUEST_MAGIC, 0x01, 0x02
    return bytes(req)
