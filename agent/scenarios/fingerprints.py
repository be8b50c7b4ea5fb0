"""Device-fingerprint scenario captures: `python -m agent.scenarios.fingerprints --out DIR` writes
one pcap per scenario; tests call `write_scenario(name, path)`.

Deterministic camera-VLAN discovery traffic built from the formats in shared/reference/
camera-network.md §2 with the project's own builders (analyzers.protocols.*): a Hikvision SADP
ProbeMatch, a Dahua-made camera whose DHIP reply announces another brand, a Xiongmai 34569 reply,
an ONVIF ProbeMatch with scopes, a firmware change between two SADP replies, and negatives (random
payloads on the same ports).
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import dpkt

from agent.capture.writer import PcapWriter
from analyzers.protocols import dhip, onvif, sadp, xm_dvrip

T0 = 1_700_000_000.0
HOSTS = {
    "hik-cam": ("192.168.10.20", "44:19:b6:00:00:20"),
    "dahua-oem": ("192.168.10.21", "4c:11:bf:00:00:21"),
    "xm-cam": ("192.168.10.22", "00:12:14:00:00:22"),
    "onvif-cam": ("192.168.10.23", "bc:ad:28:00:00:23"),
    "lts-cam": ("192.168.10.24", "44:19:b6:00:00:24"),
    "admin-pc": ("192.168.10.100", "00:1b:21:00:01:00"),
    "sadp-group": ("239.255.255.250", "01:00:5e:7f:ff:fa"),
    "dhip-group": ("239.255.255.251", "01:00:5e:7f:ff:fb"),
    "broadcast": ("255.255.255.255", "ff:ff:ff:ff:ff:ff"),
}


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    sip, smac = HOSTS[src]
    dip, dmac = HOSTS[dst]
    u = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    u.ulen = len(u)
    ip = dpkt.ip.IP(src=socket.inet_aton(sip), dst=socket.inet_aton(dip), p=17, ttl=64, data=u)
    ip.len = len(ip)
    return bytes(dpkt.ethernet.Ethernet(src=_mac(smac), dst=_mac(dmac), type=0x0800, data=ip))


def sadp_reply(model: str, serial: str, firmware: str, mac: str, ip: str, oem: str = "1") -> bytes:
    return sadp.build(
        "ProbeMatch",
        {
            "Uuid": "7F8A2C10-0000-4000-8000-000000000001",
            "Types": "inquiry",
            "DeviceType": "138209",
            "DeviceDescription": model,
            "DeviceSN": serial,
            "CommandPort": "8000",
            "HttpPort": "80",
            "MAC": mac.replace(":", "-"),
            "IPv4Address": ip,
            "IPv4SubnetMask": "255.255.255.0",
            "IPv4Gateway": "192.168.10.1",
            "DHCP": "false",
            "SoftwareVersion": firmware,
            "DSPVersion": "V7.3 build 200410",
            "BootTime": "2024-01-02 03:04:05",
            "Activated": "true",
            "DetailOEMCode": oem,
        },
    )


def _sadp_probe() -> bytes:
    return sadp.build("Probe", {"Uuid": "0D4C3E2F-1111-4222-8333-444455556666", "Types": "inquiry"})


def scenario_sadp() -> list[tuple[float, bytes]]:
    ip, mac = HOSTS["hik-cam"]
    reply = sadp_reply("DS-2CD2143G2-I", "DS-2CD2143G2-I20230101AAWRJ12345678", "V5.7.3build 220112", mac, ip)
    return [
        (T0, udp("admin-pc", "sadp-group", 37020, 37020, _sadp_probe())),
        (T0 + 0.05, udp("hik-cam", "sadp-group", 37020, 37020, reply)),
        (T0 + 3.05, udp("hik-cam", "sadp-group", 37020, 37020, reply)),  # repeated: no new event
    ]


def scenario_sadp_fw_change() -> list[tuple[float, bytes]]:
    ip, mac = HOSTS["hik-cam"]
    serial = "DS-2CD2143G2-I20230101AAWRJ12345678"
    old = sadp_reply("DS-2CD2143G2-I", serial, "V5.7.3build 220112", mac, ip)
    new = sadp_reply("DS-2CD2143G2-I", serial, "V5.7.15build 230801", mac, ip)
    return [
        (T0, udp("hik-cam", "sadp-group", 37020, 37020, old)),
        (T0 + 60.0, udp("hik-cam", "sadp-group", 37020, 37020, new)),
        (T0 + 63.0, udp("hik-cam", "sadp-group", 37020, 37020, new)),
    ]


def scenario_sadp_lts() -> list[tuple[float, bytes]]:
    """A Hikvision-made camera sold as LTS (model prefix): relabel."""
    ip, mac = HOSTS["lts-cam"]
    reply = sadp_reply("CMIP3C42W-28", "CMIP3C42W-2820220505AAWRK11112222", "V5.6.5build 210930", mac, ip)
    return [(T0, udp("lts-cam", "sadp-group", 37020, 37020, reply))]


def dhip_reply(vendor: str, manufacturer: str) -> bytes:
    ip, mac = HOSTS["dahua-oem"]
    body = {
        "mac": mac,
        "method": "client.notifyDevInfo",
        "params": {
            "deviceInfo": {
                "DeviceClass": "IPC",
                "DeviceType": "IPC-HDW5442TM-AS",
                "HttpPort": 80,
                "IPv4Address": {
                    "IPAddress": ip,
                    "SubnetMask": "255.255.255.0",
                    "DefaultGateway": "192.168.10.1",
                },
                "MachineName": "entrance",
                "Manufacturer": manufacturer,
                "Port": 37777,
                "SerialNo": "7J0ABCD1234EFGH",
                "Vendor": vendor,
                "Version": "2.820.0000000.5.R",
            }
        },
    }
    return dhip.build(body, session=0, request_id=0)


def scenario_dhip_relabel() -> list[tuple[float, bytes]]:
    probe = dhip.build({"method": "DHDiscover.search", "params": {"mac": "", "uni": 0}})
    return [
        (T0, udp("admin-pc", "dhip-group", 37810, 37810, probe)),
        (T0 + 0.02, udp("dahua-oem", "admin-pc", 37810, 37810, dhip_reply("Intelbras", "Intelbras"))),
    ]


def scenario_xm() -> list[tuple[float, bytes]]:
    ip, mac = HOSTS["xm-cam"]
    req = xm_dvrip.build(xm_dvrip.DISCOVERY_REQ, version=0)
    rsp = xm_dvrip.build(
        xm_dvrip.DISCOVERY_RSP,
        {
            "NetWork.NetCommon": {
                "GateWay": "0x010AA8C0",
                "HostIP": xm_dvrip.host_ip_hex(ip),
                "HostName": "NVR",
                "HttpPort": 80,
                "MAC": mac,
                "MonMode": "TCP",
                "SN": "6f8c2d1e0a9b7c35",
                "SSLPort": 8443,
                "Submask": "0x00FFFFFF",
                "TCPMaxConn": 10,
                "TCPPort": 34567,
                "UDPPort": 34568,
            },
            "Ret": 100,
            "SessionID": "0x00000000",
        },
    )
    return [
        (T0, udp("admin-pc", "broadcast", 34569, 34569, req)),
        (T0 + 0.03, udp("xm-cam", "broadcast", 34569, 34569, rsp)),
    ]


def scenario_onvif() -> list[tuple[float, bytes]]:
    ip, _mac = HOSTS["onvif-cam"]
    scopes = [
        "onvif://www.onvif.org/type/video_encoder",
        "onvif://www.onvif.org/Profile/Streaming",
        "onvif://www.onvif.org/name/HIKVISION",
        "onvif://www.onvif.org/hardware/DS-2CD2387G2-LU",
        "onvif://www.onvif.org/location/city/hangzhou",
    ]
    body = onvif.build_probe_matches(
        [f"http://{ip}/onvif/device_service"],
        scopes,
        message_id="uuid:00000000-0000-4000-8000-0000000000a1",
        relates_to="uuid:00000000-0000-4000-8000-0000000000a0",
        address="urn:uuid:00000000-0000-4000-8000-bcad28000023",
    )
    return [(T0, udp("onvif-cam", "admin-pc", 3702, 3702, body))]


def scenario_negatives() -> list[tuple[float, bytes]]:
    """Non-camera payloads on the discovery ports: must give no fingerprint facts."""
    junk = bytes(range(64)) * 4
    return [
        (T0, udp("admin-pc", "sadp-group", 3702, 3702, b"<?xml version='1.0'?><hello>not wsd</hello>")),
        (T0 + 0.1, udp("hik-cam", "admin-pc", 3702, 51000, junk)),
        (T0 + 0.2, udp("hik-cam", "admin-pc", 37020, 51001, b"<ProbeMatch>garbage")),
        (
            T0 + 0.3,
            udp("dahua-oem", "admin-pc", 37810, 51002, b"\x20\x00\x00\x00DHIP" + junk[:24] + b"{not json"),
        ),
        (T0 + 0.4, udp("xm-cam", "admin-pc", 34569, 51003, b"\xff" + junk[:40])),
        (T0 + 0.5, udp("dahua-oem", "admin-pc", 5050, 51004, b"\xb3" + junk)),
    ]


SCENARIOS: dict[str, Callable[[], list[tuple[float, bytes]]]] = {
    "sadp": scenario_sadp,
    "sadp_fw_change": scenario_sadp_fw_change,
    "sadp_lts": scenario_sadp_lts,
    "dhip_relabel": scenario_dhip_relabel,
    "xm_discovery": scenario_xm,
    "onvif": scenario_onvif,
    "negatives": scenario_negatives,
}


def write_scenario(name: str, path: str | Path) -> Path:
    path = Path(path)
    with PcapWriter(path) as w:
        w.write_many(SCENARIOS[name]())
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for the pcaps")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in SCENARIOS:
        print(write_scenario(name, out / f"fp_{name}.pcap"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
