"""ONVIF WS-Discovery (UDP 3702): SOAP kind, XAddrs, Scopes and the scope accessors."""

from __future__ import annotations

from analyzers.protocols import onvif
from tests.fuzz.traffic.common import fingerprint_strings, touch, udp_payloads

MAX_LEN = 16384


def fuzz_one(data: bytes) -> None:
    msg = onvif.parse(memoryview(data))
    if msg is None:
        return
    touch(msg.is_announcement, msg.name, msg.hardware, msg.scope("mfr"), msg.scope("location/city"),
          msg.scope("manufacturer"), msg.types)  # fmt: skip
    fingerprint_strings(msg.name, msg.hardware, msg.scope("mfr"))


def seeds() -> list[bytes]:
    matches = onvif.build_probe_matches(
        ["http://192.168.1.64/onvif/device_service"],
        ["onvif://www.onvif.org/name/HIKVISION%20DS-2CD", "onvif://www.onvif.org/hardware/DS-2CD2143G0-I",
         "onvif://www.onvif.org/location/city/hangzhou", "onvif://www.onvif.org/type/video_encoder"],
        message_id="uuid:1", relates_to="uuid:2", address="urn:uuid:3",
    )  # fmt: skip
    return [matches, *udp_payloads(onvif.UDP_PORT, 4)]
