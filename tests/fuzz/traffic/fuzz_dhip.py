"""Dahua DHIP (UDP 37810 / any port by its prefix): header + JSON body, device-info accessors."""

from __future__ import annotations

from analyzers.protocols import dhip
from tests.fuzz.traffic.common import fingerprint_strings, touch, udp_payloads

MAX_LEN = 8192


def fuzz_one(data: bytes) -> None:
    view = memoryview(data)
    dhip.looks_like(view)
    msg = dhip.parse(view)
    if msg is None:
        return
    touch(msg.method, msg.is_reply, msg.mac)
    names = ("DeviceType", "SerialNo", "Vendor", "Manufacturer", "Version")
    values = [msg.info(name) for name in names]
    fingerprint_strings(*values)
    msg.pack()


def seeds() -> list[bytes]:
    reply = dhip.build(
        {"method": "client.notifyDevInfo", "mac": "3c:ef:8c:00:00:01",
         "params": {"deviceInfo": {"DeviceType": "IPC-HDW1230S", "SerialNo": "4H01D66PAJ2FA64",
                                   "Vendor": "Dahua", "Manufacturer": "Dahua", "Version": "2.800"}}},
    )  # fmt: skip
    search = dhip.build({"method": "DHDiscover.search", "params": {"mac": "", "uni": 1}}, newline=False)
    return [reply, search, *udp_payloads(dhip.UDP_PORT, 4)]
