"""DHCPv4 and DHCPv6 (analyzers/traffic/dhcp.py): BOOTP header, options, relay envelopes, DUIDs,
IA_NA addresses. The parsers return None for anything that is not DHCP; they never raise."""

from __future__ import annotations

import struct

from analyzers.traffic import dhcp
from tests.fuzz.traffic.common import udp_payloads

MAX_LEN = 4096


def fuzz_one(data: bytes) -> None:
    if data[:1] and data[0] & 1:
        facts = dhcp.parse_dhcp6(data[1:])
        if facts is not None:
            assert isinstance(facts["addresses"], list)
    else:
        facts = dhcp.parse_dhcp4(data[1:])
        if facts is not None:
            assert facts["mac"] is None or len(facts["mac"]) == 17


def _dhcp4(op: int, options: bytes) -> bytes:
    mac = bytes.fromhex("c056e3000001")
    head = struct.pack("!BBBBIHH4s4s4s4s16s", op, 1, 6, 0, 0x1234, 0, 0, bytes(4), bytes([10, 0, 0, 9]),
                       bytes(4), bytes(4), mac + bytes(10))  # fmt: skip
    return head + bytes(192) + b"\x63\x82\x53\x63" + options + b"\xff"


def _opt(code: int, value: bytes) -> bytes:
    return bytes([code, len(value)]) + value


def _opt6(code: int, value: bytes) -> bytes:
    return struct.pack("!HH", code, len(value)) + value


def seeds() -> list[bytes]:
    request = _dhcp4(
        1,
        _opt(53, b"\x03")
        + _opt(12, b"IPC-cam")
        + _opt(60, b"udhcp 1.20")
        + _opt(55, b"\x01\x03\x06")
        + _opt(50, bytes([10, 0, 0, 9]))
        + _opt(61, b"\x01\xc0\x56\xe3\0\0\1")
        + _opt(161, b"https://m/x"),
    )
    ack = _dhcp4(2, _opt(53, b"\x05"))
    duid = b"\x00\x01\x00\x01" + bytes(4) + bytes.fromhex("c056e3000001")
    solicit = (
        b"\x01\x00\x00\x01"
        + _opt6(1, duid)
        + _opt6(39, b"\x00\x03cam\x00")
        + _opt6(6, b"\x00\x17\x00\x18")
        + _opt6(16, b"\0\0\0\x09\x00\x04abcd")
        + _opt6(112, b"https://m/y")
    )
    reply = (
        b"\x07\x00\x00\x01" + _opt6(1, duid) + _opt6(3, bytes(12) + _opt6(5, bytes(15) + b"\x02" + bytes(8)))
    )
    relay = (
        b"\x0c\x00" + bytes(32) + _opt6(79, b"\x00\x01" + bytes.fromhex("c056e3000001")) + _opt6(9, solicit)
    )
    v4 = [request, ack, *udp_payloads(67, 4)]
    v6 = [solicit, reply, relay, *udp_payloads(547, 4)]
    return [b"\0" + m for m in v4] + [b"\1" + m for m in v6]
