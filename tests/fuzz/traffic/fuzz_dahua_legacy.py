"""Dahua legacy discovery (UDP 5050): binary section, MAC string and Key:value lines."""

from __future__ import annotations

from analyzers.protocols import dahua_legacy
from tests.fuzz.traffic.common import fingerprint_strings, touch, udp_payloads

MAX_LEN = 4096


def fuzz_one(data: bytes) -> None:
    view = memoryview(data)
    dahua_legacy.is_request(view)
    msg = dahua_legacy.parse(view)
    if msg is not None:
        touch(msg.serial, msg.model, msg.ipv4, msg.netmask, msg.gateway, msg.mac, msg.device_type)
        fingerprint_strings(msg.model)


def seeds() -> list[bytes]:
    reply = dahua_legacy.build_reply(
        "IPC-HFW", "192.168.1.108", "255.255.255.0", "192.168.1.1", "3c:ef:8c:00:00:02",
        {"Name": "cam", "Device": "IPC-HFW4431R-Z", "SerialNo": "3J0123PAZ", "IPv6Addr": "::1"},
    )  # fmt: skip
    return [reply, dahua_legacy.build_request(), *udp_payloads(dahua_legacy.UDP_PORT, 4)]
