"""Xiongmai DVRIP / NetIP / Sofia (TCP 34567, discovery UDP 34569): header, JSON body, NetCommon."""

from __future__ import annotations

from analyzers.protocols import xm_dvrip
from tests.fuzz.traffic.common import touch, udp_payloads

MAX_LEN = 8192


def fuzz_one(data: bytes) -> None:
    msg = xm_dvrip.parse(memoryview(data))
    if msg is None:
        return
    touch(msg.name, msg.net_common, msg.host_ip, msg.text("SN"), msg.text("HostName"), msg.text("MAC"))
    assert xm_dvrip.parse(msg.pack()) == msg, "DVRIP message does not round-trip"


def seeds() -> list[bytes]:
    reply = xm_dvrip.build(
        xm_dvrip.DISCOVERY_RSP,
        {"NetWork.NetCommon": {"HostIP": xm_dvrip.host_ip_hex("192.168.1.10"), "HostName": "NVR",
                               "MAC": "00:12:31:00:00:01", "SN": "abcdef0123456789", "TCPPort": 34567},
         "Ret": 100},
    )  # fmt: skip
    login = xm_dvrip.build(1000, {"EncryptType": "MD5", "LoginType": "DVRIP-Web", "PassWord": "tlJwpbo6",
                                  "UserName": "admin"}, version=0)  # fmt: skip
    return [reply, login, xm_dvrip.build(xm_dvrip.DISCOVERY_REQ, version=0),
            *udp_payloads(xm_dvrip.DISCOVERY_PORT, 4)]  # fmt: skip
