"""Hikvision SADP: the UDP 37020 XML parser and the layer-2 (EtherType 0x8033) header parser,
with every property the discovery analyzer reads and the fingerprint lookups it feeds."""

from __future__ import annotations

from analyzers.protocols import sadp
from tests.fuzz.traffic.common import fingerprint_strings, touch, udp_payloads

MAX_LEN = 4096


def fuzz_one(data: bytes) -> None:
    view = memoryview(data)
    msg = sadp.parse(view)
    if msg is not None:
        touch(msg.is_reply, msg.model, msg.serial, msg.firmware, msg.mac, msg.oem_code, msg.ipv4)
        fingerprint_strings(msg.model, msg.oem_code)
    l2 = sadp.parse_l2(view)
    if l2 is not None:
        touch(l2.is_response, l2.query_name, l2.mac, l2.ipv4)
        assert sadp.parse_l2(l2.pack()) == l2, "layer-2 header does not round-trip"


def seeds() -> list[bytes]:
    reply = sadp.build(
        "ProbeMatch",
        {"Uuid": "1", "DeviceType": "139", "DeviceDescription": "DS-2CD2143G0-I", "DeviceSN": "DS-1",
         "MAC": "c0-56-e3-00-00-01", "IPv4Address": "10.0.0.5", "SoftwareVersion": "V5.5.0",
         "DetailOEMCode": "1"},
    )  # fmt: skip
    probe = sadp.build("Probe", {"Uuid": "ABC", "Types": "inquiry"})
    l2 = sadp.SadpL2(0x21, 1, 0, 7, 0x0406, 0x04, 0, 0, b"\xc0\x56\xe3\0\0\1", b"\x0a\0\0\5",
                     b"\xff" * 6, b"\xff" * 4, b"\xff\xff\xff\0", b"payload").pack()  # fmt: skip
    return [reply, probe, l2, *udp_payloads(sadp.UDP_PORT, 4)]
