"""Dahua DVRIP (TCP 37777): 32-byte header with a known command, optional JSON body."""

from __future__ import annotations

from analyzers.protocols import dahua_dvrip
from tests.fuzz.traffic.common import touch

MAX_LEN = 8192


def fuzz_one(data: bytes) -> None:
    msg = dahua_dvrip.parse(memoryview(data))
    if msg is None:
        return
    touch(msg.command, msg.body_length, msg.json_body())
    assert msg.pack() == bytes(data[: len(msg.pack())]), "DVRIP message does not round-trip"


def seeds() -> list[bytes]:
    body = b'{"method":"global.login","params":{"userName":"admin","password":"x"},"id":1}\n'
    return [
        dahua_dvrip.build(0xA0, b"", b"admin\0\0\0\0\0\0\0admin"),
        dahua_dvrip.build(0xF4, body),
        dahua_dvrip.build(0xB1, b"\0" * 16, b"\x08"),
    ]
