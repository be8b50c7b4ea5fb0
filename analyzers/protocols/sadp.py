"""Hikvision SADP discovery: XML over UDP 37020 and the layer-2 variant (EtherType 0x8033).

UDP: a bare XML document, `<Probe>` (request: Uuid, Types) or `<ProbeMatch>` (reply: DeviceType,
DeviceDescription, DeviceSN, MAC "00-11-22-33-44-55", IPv4Address, SoftwareVersion, DSPVersion,
DetailOEMCode...). Some firmware emits malformed XML, so leaves are scanned line-tolerantly.

Layer 2: a fixed 38-byte header (big-endian), then a payload:
    0 marker u8 (0x21) | 1 type u8 (1 response, 2 request) | 2 origin u16 | 4 counter u32 |
    8 marker2 u16 (0x0406) | 10 query type u8 | 11 params u8 | 12 checksum u16 |
    14 current MAC | 20 current IPv4 | 24 destination MAC | 30 destination IPv4 | 34 subnet mask
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from analyzers.protocols._text import as_bytes, clean, decode_text, leaf_tags

UDP_PORT = 37020
ETHERTYPE = 0x8033
L2_MARKER = 0x21
L2_MARKER2 = 0x0406
L2_HEADER = struct.Struct("!BBHIHBBH6s4s6s4s4s")  # 38 bytes
L2_QUERY_TYPES = {
    0x02: "DeviceOnlineRequest",
    0x03: "Inquiry",
    0x04: "InquiryResponse",
    0x06: "UpdateIP",
    0x07: "UpdateIPResponse",
    0x0A: "ResetPassword",
    0x0B: "ResetPasswordResponse",
    0x0C: "CMSInfo",
    0x0D: "CMSInfoResponse",
    0x10: "ModifyNetParam",
    0x11: "ModifyNetParamResponse",
}
_ROOTS = ("ProbeMatch", "Probe")


@dataclass(slots=True)
class SadpMessage:
    """A parsed SADP XML message; `fields` holds every leaf element as text."""

    kind: str  # "ProbeMatch" | "Probe"
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def is_reply(self) -> bool:
        return self.kind == "ProbeMatch"

    @property
    def model(self) -> str | None:
        return clean(self.fields.get("DeviceDescription") or self.fields.get("DeviceType"))

    @property
    def serial(self) -> str | None:
        return clean(self.fields.get("DeviceSN"))

    @property
    def firmware(self) -> str | None:
        return clean(self.fields.get("SoftwareVersion"))

    @property
    def mac(self) -> str | None:
        return normalise_mac(self.fields.get("MAC"))

    @property
    def oem_code(self) -> str | None:
        return clean(self.fields.get("DetailOEMCode") or self.fields.get("OEMinfo"))

    @property
    def ipv4(self) -> str | None:
        return clean(self.fields.get("IPv4Address"), 15)


def normalise_mac(text: str | None) -> str | None:
    """ "00-11-22-33-44-55" / "00:11:..." -> "00:11:22:33:44:55"; None when not a MAC."""
    if not text:
        return None
    hexes = text.strip().replace("-", "").replace(":", "").lower()
    if len(hexes) != 12 or any(c not in "0123456789abcdef" for c in hexes):
        return None
    return ":".join(hexes[i : i + 2] for i in range(0, 12, 2))


def parse(data: bytes | bytearray | memoryview) -> SadpMessage | None:
    """A SADP XML Probe / ProbeMatch, or None for anything else."""
    raw = as_bytes(data)
    head = raw[:256]
    kind = next((r for r in _ROOTS if b"<" + r.encode() in head or b"<" + r.encode() in raw), None)
    if kind is None or not raw.lstrip().startswith(b"<"):
        return None
    fields = leaf_tags(decode_text(raw))
    if kind == "ProbeMatch":
        # a reply must identify a device; an XML blob that merely mentions ProbeMatch does not count
        if not (fields.get("DeviceSN") or fields.get("MAC") or fields.get("DeviceType")):
            return None
    elif "Types" not in fields and "Uuid" not in fields:
        return None
    return SadpMessage(kind, fields)


def build(kind: str, fields: dict[str, str]) -> bytes:
    """Serialise a Probe / ProbeMatch the way devices do (XML declaration, CRLF-separated leaves)."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', f"<{kind}>"]
    for name, value in fields.items():
        esc = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        lines.append(f"<{name}>{esc}</{name}>")
    lines.append(f"</{kind}>")
    return "\r\n".join(lines).encode("utf-8")


@dataclass(slots=True)
class SadpL2:
    """The 38-byte layer-2 SADP header and its payload."""

    marker: int
    type: int
    origin: int
    counter: int
    marker2: int
    query_type: int
    params: int
    checksum: int
    cur_mac: bytes
    cur_ip: bytes
    dst_mac: bytes
    dst_ip: bytes
    subnet: bytes
    payload: bytes = b""

    @property
    def is_response(self) -> bool:
        return self.type & 0x0F == 1

    @property
    def query_name(self) -> str:
        return L2_QUERY_TYPES.get(self.query_type, f"0x{self.query_type:02x}")

    @property
    def mac(self) -> str:
        return self.cur_mac.hex(":")

    @property
    def ipv4(self) -> str:
        return socket.inet_ntoa(self.cur_ip)

    def pack(self) -> bytes:
        return (
            L2_HEADER.pack(
                self.marker,
                self.type,
                self.origin,
                self.counter,
                self.marker2,
                self.query_type,
                self.params,
                self.checksum,
                self.cur_mac,
                self.cur_ip,
                self.dst_mac,
                self.dst_ip,
                self.subnet,
            )
            + self.payload
        )


def parse_l2(data: bytes | bytearray | memoryview) -> SadpL2 | None:
    """Layer-2 SADP (EtherType 0x8033 payload), or None when the markers do not match."""
    if len(data) < L2_HEADER.size:
        return None
    try:
        values = L2_HEADER.unpack_from(data, 0)
    except struct.error:
        return None
    if values[0] != L2_MARKER or values[4] != L2_MARKER2 or values[1] & 0x0F not in (1, 2):
        return None
    marker, ptype, origin, counter, marker2, qtype, params, checksum, cmac, cip, dmac, dip, mask = values
    payload = bytes(data[L2_HEADER.size :])
    return SadpL2(
        marker, ptype, origin, counter, marker2, qtype, params, checksum, cmac, cip, dmac, dip, mask, payload
    )
