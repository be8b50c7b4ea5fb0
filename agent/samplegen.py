"""Deterministic sample capture of a camera VLAN: `python -m agent.samplegen --out FILE`.

Writes a classic pcap (Ethernet, microsecond time stamps) of about ten minutes of traffic on a
camera VLAN, as seen on a SPAN port: seven IP cameras and a Hikvision NVR on 192.168.10.0/24
(VLAN 10), their router, and a management PC. The same `--seed` and `--packets` always give the
same bytes (no wall clock, no hash ordering, only `random.Random(seed)`). `camwatch demo` and the
golden tests replay the bundled copy, agent/sample/camera_vlan.pcap (`make sample` rebuilds it).

What is on the wire (formats from shared/reference/camera-network.md):
* DHCP DISCOVER/OFFER/REQUEST/ACK per device with host name (12), vendor class (60), parameter
  request list (55); cam-dock also sends a MUD URL (option 161). Renewals when --packets is large.
* ARP (requests, replies, gratuitous), IPv6 router advertisements, DAD and neighbour discovery,
  one IPv6 ULA HTTP flow; ICMP echo from the PC.
* RTSP (TCP 554) OPTIONS/DESCRIBE/SETUP/PLAY from the NVR to every camera (Dahua answers the first
  DESCRIBE with 401 and a Digest realm that names its serial), GET_PARAMETER keep-alives, one
  TEARDOWN; then RTP/UDP video (H.264, dynamic type 96) and, for two cameras, PCMA audio, with
  RTCP sender/receiver reports.
* DNS to the router (A answers with TTLs, one CNAME chain, an AAAA query with no answer), then the
  flows to those answers; NTP; vendor clouds; HTTP from the PC with vendor `Server:` headers.

Link layer: frames that cross the router's trunk (DNS, DHCP, internet flows, router ARP/RA) carry an
802.1Q tag (VID 10); the management PC's frames arrive over a provider QinQ link (S-tag 0x88a8 VID
100, C-tag VID 10); camera <-> NVR traffic is untagged (access ports). Each conversation keeps one tag
stack in both directions.

Hosts (also as data: SAMPLE_HOSTS). "expected" is what the default policy (rules/policy/default.yaml)
and catalogue (rules/endpoints.yaml) should conclude: for a device, the most serious verdict among
its outbound destinations; for a destination, the verdict of the flows to it.

| device        | address                      | MAC               | vendor    | expected     |
|---------------|------------------------------|-------------------|-----------|--------------|
| gateway       | 192.168.10.1                 | 24:5a:4c:0a:10:01 | Ubiquiti  | allowed      |
| nvr-01        | 192.168.10.2                 | 44:19:b6:3c:52:8e | Hikvision | allowed      |
| cam-lobby     | 192.168.10.11                | 98:8b:0a:5d:21:4f | Hikvision | vendor-cloud |
| cam-parking   | 192.168.10.12                | bc:ad:28:7e:90:13 | Hikvision | vendor-cloud |
| cam-entrance  | 192.168.10.13                | 4c:11:bf:2a:6d:c3 | Dahua     | vendor-cloud |
| cam-warehouse | 192.168.10.14, fd00:10::14   | e0:50:8b:14:77:0a | Dahua     | allowed      |
| cam-gate      | 192.168.10.15                | 00:12:14:6b:3e:91 | Xiongmai  | direct-ip    |
| cam-dock      | 192.168.10.16                | 48:ea:63:59:0c:27 | Uniview   | allowed      |
| cam-office    | 192.168.10.17                | 0c:8c:24:41:8e:5b | generic   | unexpected   |
| admin-pc      | 192.168.10.100, fd00:10::100 | 00:1b:21:9a:4c:e2 | Intel     | allowed      |

* gateway: router, DNS resolver, DHCP server, IPv6 router advertisements (Ubiquiti OUI).
* nvr-01: Hikvision NVR; pulls RTSP/RTP from every camera; local only.
* cam-lobby: Hikvision camera; EZVIZ bootstrap, Hik-Connect MQTT, S3 snapshot uploads; HTTP
  `Server: App-webs/` and ISAPI deviceInfo (model, firmware) to the PC.
* cam-parking: Hikvision camera; NTP from time.ys7.com; HTTP `Server: webserver`; the NVR tears its
  RTSP session down at 540 s.
* cam-entrance: Dahua camera; Easy4IP P2P on udp/8800; its RTSP 401 realm names its serial.
* cam-warehouse: Dahua camera; NTP pool; IPv6 (DAD, neighbour discovery, HTTP over ULA).
* cam-gate: Xiongmai OEM camera (borrowed 00:12:1x OUI, Koenig & Bauer); XMeye cfg and capability
  report; a cleartext `POST /list` update check to an address it never resolved; HTTP
  `Server: uc-httpd 1.0.0`, "NETSurveillance WEB".
* cam-dock: Uniview camera; DHCP MUD URL (option 161); NTP pool.
* cam-office: cheap Wi-Fi camera (Shenzhen Bilian module OUI); CS2/PPPP hellos by address and a LAN
  broadcast on udp/32108; a DDNS update with the credentials in the URL (cleartext).
* admin-pc: Windows management PC; HTTP to cameras (IPv4 and IPv6), ping, ARP.

| destination               | address                      | cc | port      | from          | expected     |
|---------------------------|------------------------------|----|-----------|---------------|--------------|
| litedev.ezvizlife.com     | 198.51.100.10                | -- | tcp/8666  | cam-lobby     | vendor-cloud |
| dev.hik-connect.com       | 198.51.100.20                | -- | tcp/31006 | cam-lobby     | vendor-cloud |
| alarm.eu.s3.amazonaws.com | 52.218.48.10                 | IE | tcp/443   | cam-lobby     | vendor-cloud |
| time.ys7.com              | 198.51.100.30                | -- | udp/123   | cam-parking   | vendor-cloud |
| www.easy4ipcloud.com      | 198.51.100.40                | -- | udp/8800  | cam-entrance  | vendor-cloud |
| pub-cfg.secu100.net       | 198.51.100.50                | -- | tcp/8086  | cam-gate      | vendor-cloud |
| caps.xmcsrv.net           | 198.51.100.51                | -- | tcp/80    | cam-gate      | vendor-cloud |
| xm-update-server (no DNS) | 120.92.92.241                | CN | tcp/80    | cam-gate      | direct-ip    |
| pool.ntp.org              | 203.0.113.123, 203.0.113.124 | -- | udp/123   | cam-warehouse | allowed      |
| cs2-server-1 (no DNS)     | 39.108.103.17                | CN | udp/32100 | cam-office    | vendor-cloud |
| cs2-server-2 (no DNS)     | 47.91.16.126                 | JP | udp/32100 | cam-office    | vendor-cloud |
| cs2-server-3 (no DNS)     | 161.117.51.203               | SG | udp/32100 | cam-office    | vendor-cloud |
| www.88safce.com           | 203.0.113.88                 | -- | tcp/80    | cam-office    | unexpected   |

(cc: country per geoip2fast; pool.ntp.org is also used by cam-dock and cam-gate;
alarm.eu.s3.amazonaws.com is reached through
the CNAME s3-r-w.eu-west-1.amazonaws.com.)

Notes on the expectations:
* "--" means geoip2fast has no country: documentation ranges (RFC 5737) stand in for hosts whose
  real addresses the reference does not give. The real addresses come from the reference: the
  XMeye update server (BESDER), S3 eu-west-1, and Alibaba Cloud for CS2 servers (the YI capture
  used Alibaba Cloud); their countries are geoip2fast's (checked by tests/unit/test_samplegen.py).
* The CS2 servers are contacted by address only, as in the YI capture; the catalogue still names
  them by their distinctive port (service cs2-p2p, weak evidence), so they are vendor-cloud.
* cam-gate's update check is the one direct-ip case: tcp/80 to 120.92.92.241 with no DNS answer.
* www.88safce.com is a third-party DDNS found in a real camera firmware (indicators.md, GEN-12);
  it is in no catalogue, so the flow is unexpected / not_in_policy.
* The EZVIZ bootstrap payload on tcp/8666 is not documented: the sample sends opaque bytes of the
  sizes BLAN describes. RTSP paths other than Hikvision's and Dahua's are generic.

Size: the default (--packets 2500) is under 1 MB. `--packets 1000000` keeps the same hosts and mix
for benchmarks: periodic activities (DNS, NTP, DHCP renewals, keep-alives, RTCP, P2P hellos) run
about sqrt(packets / 2500) times as often, and RTP fills the rest (about 97 % of packets);
`--snaplen 256` keeps such a file small. Generation streams: RTP packets are built from templates
with struct-patched fields while being merged in time order, never held in memory.
"""

from __future__ import annotations

import argparse
import heapq
import random
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.capture.writer import PcapWriter

DEFAULT_PACKETS = 2500
DEFAULT_SEED = 1
DEFAULT_OUT = Path(__file__).resolve().parent / "sample" / "camera_vlan.pcap"
BASE_TIME = 1_715_673_600  # 2024-05-14 08:00:00 UTC
DURATION = 600.0
VLAN_ID = 10
S_VLAN_ID = 100
_MIN_RTP = 200

ETH_IP4, ETH_ARP, ETH_IP6 = 0x0800, 0x0806, 0x86DD
TPID_C, TPID_S = 0x8100, 0x88A8
TCP_FIN, TCP_SYN, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x08, 0x10
BROADCAST_MAC = b"\xff" * 6
NTP_EPOCH_OFFSET = 2_208_988_800

# fmt: off
SAMPLE_HOSTS: list[dict[str, Any]] = [
    # -- devices on the VLAN
    {"name": "gateway", "kind": "device", "ip": "192.168.10.1", "ipv6": "fe80::265a:4cff:fe0a:1001",
     "mac": "24:5a:4c:0a:10:01", "vendor": "Ubiquiti", "role": "router",
     "expected": "allowed", "notes": "DNS resolver, DHCP server, IPv6 router advertisements"},
    {"name": "nvr-01", "kind": "device", "ip": "192.168.10.2", "ipv6": None,
     "mac": "44:19:b6:3c:52:8e", "vendor": "Hikvision", "role": "nvr",
     "expected": "allowed", "notes": "pulls RTSP/RTP from every camera"},
    {"name": "cam-lobby", "kind": "device", "ip": "192.168.10.11", "ipv6": None,
     "mac": "98:8b:0a:5d:21:4f", "vendor": "Hikvision", "role": "camera",
     "expected": "vendor-cloud", "notes": "EZVIZ/Hik-Connect cloud, S3 snapshot upload, HTTP App-webs/"},
    {"name": "cam-parking", "kind": "device", "ip": "192.168.10.12", "ipv6": None,
     "mac": "bc:ad:28:7e:90:13", "vendor": "Hikvision", "role": "camera",
     "expected": "vendor-cloud", "notes": "NTP time.ys7.com, HTTP webserver, RTSP torn down"},
    {"name": "cam-entrance", "kind": "device", "ip": "192.168.10.13", "ipv6": None,
     "mac": "4c:11:bf:2a:6d:c3", "vendor": "Dahua", "role": "camera",
     "expected": "vendor-cloud", "notes": "Easy4IP P2P udp/8800, RTSP realm names the serial"},
    {"name": "cam-warehouse", "kind": "device", "ip": "192.168.10.14", "ipv6": "fd00:10::14",
     "mac": "e0:50:8b:14:77:0a", "vendor": "Dahua", "role": "camera",
     "expected": "allowed", "notes": "NTP pool, IPv6 HTTP from admin-pc"},
    {"name": "cam-gate", "kind": "device", "ip": "192.168.10.15", "ipv6": None,
     "mac": "00:12:14:6b:3e:91", "vendor": "Xiongmai", "role": "camera",
     "expected": "direct-ip", "notes": "XMeye cfg/caps, cleartext update check by address, HTTP uc-httpd"},
    {"name": "cam-dock", "kind": "device", "ip": "192.168.10.16", "ipv6": None,
     "mac": "48:ea:63:59:0c:27", "vendor": "Uniview", "role": "camera",
     "expected": "allowed", "notes": "DHCP MUD URL (option 161), NTP pool"},
    {"name": "cam-office", "kind": "device", "ip": "192.168.10.17", "ipv6": None,
     "mac": "0c:8c:24:41:8e:5b", "vendor": "generic", "role": "camera",
     "expected": "unexpected", "notes": "CS2/PPPP hellos by address, DDNS update with credentials"},
    {"name": "admin-pc", "kind": "device", "ip": "192.168.10.100", "ipv6": "fd00:10::100",
     "mac": "00:1b:21:9a:4c:e2", "vendor": "Intel", "role": "pc",
     "expected": "allowed", "notes": "HTTP to cameras, ping, IPv6"},
    # -- destinations outside the VLAN
    {"name": "litedev.ezvizlife.com", "kind": "internet", "ip": "198.51.100.10",
     "dns_name": "litedev.ezvizlife.com", "ports": ["tcp/8666"], "contacted_by": ["cam-lobby"],
     "country": None, "expected": "vendor-cloud", "service": "ezviz-cloud"},
    {"name": "dev.hik-connect.com", "kind": "internet", "ip": "198.51.100.20",
     "dns_name": "dev.hik-connect.com", "ports": ["tcp/31006"], "contacted_by": ["cam-lobby"],
     "country": None, "expected": "vendor-cloud", "service": "hik-connect"},
    {"name": "alarm.eu.s3.amazonaws.com", "kind": "internet", "ip": "52.218.48.10",
     "dns_name": "alarm.eu.s3.amazonaws.com", "ports": ["tcp/443"], "contacted_by": ["cam-lobby"],
     "country": "IE", "expected": "vendor-cloud", "service": "ezviz-alarm-upload"},
    {"name": "time.ys7.com", "kind": "internet", "ip": "198.51.100.30",
     "dns_name": "time.ys7.com", "ports": ["udp/123"], "contacted_by": ["cam-parking"],
     "country": None, "expected": "vendor-cloud", "service": "hik-ntp"},
    {"name": "www.easy4ipcloud.com", "kind": "internet", "ip": "198.51.100.40",
     "dns_name": "www.easy4ipcloud.com", "ports": ["udp/8800"], "contacted_by": ["cam-entrance"],
     "country": None, "expected": "vendor-cloud", "service": "easy4ip"},
    {"name": "pub-cfg.secu100.net", "kind": "internet", "ip": "198.51.100.50",
     "dns_name": "pub-cfg.secu100.net", "ports": ["tcp/8086"], "contacted_by": ["cam-gate"],
     "country": None, "expected": "vendor-cloud", "service": "xmeye-cloud"},
    {"name": "caps.xmcsrv.net", "kind": "internet", "ip": "198.51.100.51",
     "dns_name": "caps.xmcsrv.net", "ports": ["tcp/80"], "contacted_by": ["cam-gate"],
     "country": None, "expected": "vendor-cloud", "service": "xmeye-telemetry"},
    {"name": "xm-update-server", "kind": "internet", "ip": "120.92.92.241",
     "dns_name": None, "ports": ["tcp/80"], "contacted_by": ["cam-gate"],
     "country": "CN", "expected": "direct-ip", "service": None},
    {"name": "pool.ntp.org", "kind": "internet", "ip": "203.0.113.123",
     "dns_name": "pool.ntp.org", "ports": ["udp/123"],
     "contacted_by": ["cam-warehouse", "cam-dock", "cam-gate"],
     "country": None, "expected": "allowed", "service": None},
    {"name": "pool.ntp.org", "kind": "internet", "ip": "203.0.113.124",
     "dns_name": "pool.ntp.org", "ports": ["udp/123"],
     "contacted_by": ["cam-warehouse", "cam-dock", "cam-gate"],
     "country": None, "expected": "allowed", "service": None},
    {"name": "cs2-server-1", "kind": "internet", "ip": "39.108.103.17",
     "dns_name": None, "ports": ["udp/32100"], "contacted_by": ["cam-office"],
     "country": "CN", "expected": "vendor-cloud", "service": "cs2-p2p"},
    {"name": "cs2-server-2", "kind": "internet", "ip": "47.91.16.126",
     "dns_name": None, "ports": ["udp/32100"], "contacted_by": ["cam-office"],
     "country": "JP", "expected": "vendor-cloud", "service": "cs2-p2p"},
    {"name": "cs2-server-3", "kind": "internet", "ip": "161.117.51.203",
     "dns_name": None, "ports": ["udp/32100"], "contacted_by": ["cam-office"],
     "country": "SG", "expected": "vendor-cloud", "service": "cs2-p2p"},
    {"name": "www.88safce.com", "kind": "internet", "ip": "203.0.113.88",
     "dns_name": "www.88safce.com", "ports": ["tcp/80"], "contacted_by": ["cam-office"],
     "country": None, "expected": "unexpected", "service": None},
]
# fmt: on


# -- checksums and headers ------------------------------------------------------------------------

_IP4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
_TCP = struct.Struct("!HHIIBBHHH")
_RTP = struct.Struct("!BBHII")


def _sum(data: bytes) -> int:
    """Value of `data` as a big-endian number: congruent to its 16-bit one's-complement sum
    modulo 0xFFFF (2**16 is 1 there), so sums of parts simply add. Odd lengths are padded."""
    if len(data) & 1:
        data += b"\0"
    return int.from_bytes(data, "big")


def _checksum(total: int) -> int:
    """Internet checksum from a `_sum` total (RFC 1071), one big-number modulo instead of a loop."""
    folded = total % 0xFFFF
    if folded == 0 and total:
        folded = 0xFFFF  # one's complement "negative zero": the sum of non-zero data is never +0
    return 0xFFFF - folded


def _ip4_header(src: bytes, dst: bytes, proto: int, length: int, ident: int, ttl: int, tos: int = 0) -> bytes:
    hdr = _IP4.pack(0x45, tos, 20 + length, ident, 0x4000, ttl, proto, 0, src, dst)
    return hdr[:10] + struct.pack("!H", _checksum(_sum(hdr))) + hdr[12:]


def _l4_checksum(src: bytes, dst: bytes, proto: int, segment: bytes) -> int:
    return _checksum(_sum(src + dst) + proto + len(segment) + _sum(segment))


def _ip4(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def _ip6(text: str) -> bytes:
    import ipaddress

    return ipaddress.IPv6Address(text).packed


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _qname(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"


# -- nodes ------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Node:
    """A host as the capture sees it: its own MAC if on the VLAN, the router's if remote."""

    name: str
    ip: bytes
    mac: bytes
    local: bool
    ttl: int
    ip6: bytes | None = None
    ll6: bytes | None = None
    ipid: int = 0
    dns_name: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Stream:
    """One RTP stream from a camera to the NVR (RTCP on the next ports)."""

    cam: _Node
    nvr: _Node
    cam_port: int
    nvr_port: int
    ssrc: int
    payload_type: int
    clock: int
    video: bool
    start: float
    end: float
    seq0: int
    ts0: int
    cname: str


# -- the scenario -----------------------------------------------------------------------------------


class _Builder:
    """Builds the control-plane events in memory and describes the RTP streams (built lazily)."""

    def __init__(self, seed: int, packets: int) -> None:
        self.rng = random.Random(seed)
        # periodic activities run `scale` times as often for bigger files
        self.scale = max(1.0, (packets / DEFAULT_PACKETS) ** 0.5)
        self.events: list[tuple[float, int, bytes]] = []
        self.streams: list[_Stream] = []
        self.nodes: dict[str, _Node] = {}
        for host in SAMPLE_HOSTS:
            if host["kind"] == "device":
                node = _Node(
                    host["name"],
                    _ip4(host["ip"]),
                    _mac(host["mac"]),
                    True,
                    128 if host["role"] == "pc" else 64,
                    info=host,
                )
                if host["ipv6"]:
                    node.ip6 = _ip6(host["ipv6"])
                self.nodes[host["name"]] = node
        gw = self.nodes["gateway"]
        for host in SAMPLE_HOSTS:
            if host["kind"] == "internet":
                key = host["ip"]
                self.nodes[key] = _Node(
                    host["name"],
                    _ip4(host["ip"]),
                    gw.mac,
                    False,
                    self.rng.randrange(44, 56),
                    dns_name=host["dns_name"],
                    info=host,
                )
        for node in self.nodes.values():
            node.ipid = self.rng.randrange(0x10000)
            if node.local:
                # EUI-64 link-local address from the MAC
                m = node.mac
                node.ll6 = b"\xfe\x80" + b"\0" * 6 + bytes([m[0] ^ 2]) + m[1:3] + b"\xff\xfe" + m[3:6]
        self.gw = gw
        self.nvr = self.nodes["nvr-01"]
        self.pc = self.nodes["admin-pc"]
        self.bcast = _Node("broadcast", b"\xff\xff\xff\xff", BROADCAST_MAC, True, 64)
        self.cameras = [n for n in self.nodes.values() if n.info.get("role") == "camera"]
        self.pool = self.rng.randbytes(1 << 16)

    # -- emitting -------------------------------------------------------------------------------

    def emit(self, t: float, frame: bytes) -> None:
        self.events.append((t, len(self.events), frame))

    def tags(self, a: _Node, b: _Node) -> tuple[int, ...]:
        """802.1Q / QinQ tags of a conversation between a and b (same in both directions)."""
        if self.pc in (a, b):
            return (S_VLAN_ID, VLAN_ID)
        if self.gw in (a, b) or not a.local or not b.local:
            return (VLAN_ID,)
        return ()

    def eth(
        self, dst_mac: bytes, src_mac: bytes, ethertype: int, payload: bytes, tags: tuple[int, ...]
    ) -> bytes:
        if len(tags) == 2:
            head = dst_mac + src_mac + struct.pack("!HHHH", TPID_S, tags[0], TPID_C, tags[1])
        elif tags:
            head = dst_mac + src_mac + struct.pack("!HH", TPID_C, tags[0])
        else:
            head = dst_mac + src_mac
        frame = head + struct.pack("!H", ethertype) + payload
        if len(frame) < 60:
            frame += b"\0" * (60 - len(frame))  # Ethernet minimum (the capture has no FCS)
        return frame

    def ip(
        self,
        t: float,
        src: _Node,
        dst: _Node,
        proto: int,
        segment: bytes,
        *,
        tags: tuple[int, ...] | None = None,
        dst_mac: bytes | None = None,
        src_ip: bytes | None = None,
        tos: int = 0,
    ) -> None:
        src.ipid = (src.ipid + 1) & 0xFFFF
        hdr = _ip4_header(
            src.ip if src_ip is None else src_ip, dst.ip, proto, len(segment), src.ipid, src.ttl, tos
        )
        frame = self.eth(
            dst.mac if dst_mac is None else dst_mac,
            src.mac,
            ETH_IP4,
            hdr + segment,
            self.tags(src, dst) if tags is None else tags,
        )
        self.emit(t, frame)

    def udp(
        self, t: float, src: _Node, sport: int, dst: _Node, dport: int, payload: bytes, **kw: Any
    ) -> None:
        src_ip = kw.get("src_ip") or src.ip
        seg = _UDP.pack(sport, dport, 8 + len(payload), 0) + payload
        csum = _l4_checksum(src_ip, dst.ip, 17, seg) or 0xFFFF
        self.ip(t, src, dst, 17, seg[:6] + struct.pack("!H", csum) + seg[8:], **kw)

    def tcp(
        self,
        t: float,
        src: _Node,
        sport: int,
        dst: _Node,
        dport: int,
        seq: int,
        ack: int,
        flags: int,
        payload: bytes = b"",
        opts: bytes = b"",
        window: int = 64240,
    ) -> None:
        hdr = (
            _TCP.pack(
                sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (20 + len(opts)) << 2, flags, window, 0, 0
            )
            + opts
        )
        csum = _l4_checksum(src.ip, dst.ip, 6, hdr + payload)
        self.ip(t, src, dst, 6, hdr[:16] + struct.pack("!H", csum) + hdr[18:] + payload)

    def ip6(
        self,
        t: float,
        src_mac: bytes,
        dst_mac: bytes,
        src: bytes,
        dst: bytes,
        nxt: int,
        payload: bytes,
        tags: tuple[int, ...],
        hops: int = 64,
    ) -> None:
        hdr = struct.pack("!IHBB", 0x60000000, len(payload), nxt, hops) + src + dst
        self.emit(t, self.eth(dst_mac, src_mac, ETH_IP6, hdr + payload, tags))

    def icmp6(
        self,
        t: float,
        src_mac: bytes,
        dst_mac: bytes,
        src: bytes,
        dst: bytes,
        body: bytes,
        tags: tuple[int, ...],
    ) -> None:
        csum = _checksum(_sum(src + dst) + 58 + len(body) + _sum(body))
        body = body[:2] + struct.pack("!H", csum) + body[4:]
        self.ip6(t, src_mac, dst_mac, src, dst, 58, body, tags, hops=255)

    def arp(
        self,
        t: float,
        op: int,
        sender: _Node,
        target_mac: bytes,
        target_ip: bytes,
        *,
        dst_mac: bytes,
        tags: tuple[int, ...],
        sender_ip: bytes | None = None,
    ) -> None:
        body = struct.pack(
            "!HHBBH6s4s6s4s",
            1,
            ETH_IP4,
            6,
            4,
            op,
            sender.mac,
            sender.ip if sender_ip is None else sender_ip,
            target_mac,
            target_ip,
        )
        self.emit(t, self.eth(dst_mac, sender.mac, ETH_ARP, body, tags))

    def arp_exchange(self, t: float, asker: _Node, target: _Node) -> float:
        tags = self.tags(asker, target)
        self.arp(t, 1, asker, b"\0" * 6, target.ip, dst_mac=BROADCAST_MAC, tags=tags)
        t += 0.0002 + self.rng.random() * 0.0004
        self.arp(t, 2, target, asker.mac, asker.ip, dst_mac=asker.mac, tags=tags)
        return t

    def every(
        self, start: float, period: float, end: float = DURATION, minimum: float = 1.0
    ) -> Iterator[float]:
        """Times of a periodic activity from `start`: `period` shrinks with the scale, with +-10 % jitter."""
        step = max(minimum, period / self.scale)
        t = start
        while t < end:
            yield t
            t += step * (0.9 + 0.2 * self.rng.random())

    def port(self) -> int:
        return self.rng.randrange(32768, 61000)

    # -- DHCP -----------------------------------------------------------------------------------------

    def dhcp_message(
        self,
        op: int,
        xid: int,
        chaddr: bytes,
        options: list[tuple[int, bytes]],
        *,
        ciaddr: bytes = b"\0" * 4,
        yiaddr: bytes = b"\0" * 4,
        siaddr: bytes = b"\0" * 4,
        secs: int = 0,
    ) -> bytes:
        fixed = struct.pack(
            "!BBBBIHH4s4s4s4s16s64s128s",
            op,
            1,
            6,
            0,
            xid,
            secs,
            0,
            ciaddr,
            yiaddr,
            siaddr,
            b"\0" * 4,
            chaddr + b"\0" * 10,
            b"",
            b"",
        )
        opts = b"".join(bytes([code, len(value)]) + value for code, value in options) + b"\xff"
        msg = fixed + b"\x63\x82\x53\x63" + opts
        return msg + b"\0" * max(0, 300 - len(msg))

    def dhcp_client_options(
        self, dev: _Node, msg_type: int, extra: list[tuple[int, bytes]]
    ) -> list[tuple[int, bytes]]:
        d = dev.info["dhcp"]
        opts = [
            (53, bytes([msg_type])),
            (61, b"\x01" + dev.mac),
            *extra,
            (57, struct.pack("!H", 1500)),
            (12, d["hostname"].encode()),
            (60, d["vendor_class"].encode()),
            (55, bytes(d["prl"])),
        ]
        if d.get("mud_url"):
            opts.append((161, d["mud_url"].encode()))
        return opts

    def dhcp_server_options(self, msg_type: int, lease: int) -> list[tuple[int, bytes]]:
        gw = self.gw.ip
        return [
            (53, bytes([msg_type])),
            (54, gw),
            (51, struct.pack("!I", lease)),
            (58, struct.pack("!I", lease // 2)),
            (59, struct.pack("!I", lease * 7 // 8)),
            (1, b"\xff\xff\xff\x00"),
            (28, b"\xc0\xa8\x0a\xff"),
            (3, gw),
            (6, gw),
            (15, b"cams.lan"),
        ]

    def dhcp_dora(self, t: float, dev: _Node, lease: int) -> float:
        xid = self.rng.getrandbits(32)
        tags = (VLAN_ID,) if dev is not self.pc else (S_VLAN_ID, VLAN_ID)
        discover = self.dhcp_message(1, xid, dev.mac, self.dhcp_client_options(dev, 1, []))
        self.udp(t, dev, 68, self.bcast, 67, discover, tags=tags, src_ip=b"\0" * 4)
        t += 0.004 + self.rng.random() * 0.01
        offer = self.dhcp_message(
            2, xid, dev.mac, self.dhcp_server_options(2, lease), yiaddr=dev.ip, siaddr=self.gw.ip
        )
        self.udp(t, self.gw, 67, dev, 68, offer, tags=tags)
        t += 0.002 + self.rng.random() * 0.01
        request = self.dhcp_message(
            1, xid, dev.mac, self.dhcp_client_options(dev, 3, [(50, dev.ip), (54, self.gw.ip)])
        )
        self.udp(t, dev, 68, self.bcast, 67, request, tags=tags, src_ip=b"\0" * 4)
        t += 0.003 + self.rng.random() * 0.01
        ack = self.dhcp_message(
            2, xid, dev.mac, self.dhcp_server_options(5, lease), yiaddr=dev.ip, siaddr=self.gw.ip
        )
        self.udp(t, self.gw, 67, dev, 68, ack, tags=tags)
        return t

    def dhcp_renew(self, t: float, dev: _Node, lease: int) -> None:
        xid = self.rng.getrandbits(32)
        request = self.dhcp_message(1, xid, dev.mac, self.dhcp_client_options(dev, 3, []), ciaddr=dev.ip)
        self.udp(t, dev, 68, self.gw, 67, request)
        ack = self.dhcp_message(
            2, xid, dev.mac, self.dhcp_server_options(5, lease), ciaddr=dev.ip, yiaddr=dev.ip
        )
        self.udp(t + 0.003 + self.rng.random() * 0.005, self.gw, 67, dev, 68, ack)

    # -- DNS ------------------------------------------------------------------------------------------

    def dns(
        self, t: float, client: _Node, name: str, answers: list[tuple[str, str]], ttl: int, qtype: int = 1
    ) -> float:
        """A query to the router and its answer; `answers` are ("A", address) or ("CNAME", name)."""
        qid = self.rng.getrandbits(16)
        sport = self.port()
        question = _qname(name) + struct.pack("!HH", qtype, 1)
        query = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question
        self.udp(t, client, sport, self.gw, 53, query)
        body = struct.pack("!HHHHHH", qid, 0x8180, 1, len(answers), 0, 0) + question
        owner = 0xC00C  # the question name
        for rtype, value in answers:
            if rtype == "CNAME":
                rdata = _qname(value)
                body += struct.pack("!HHHIH", owner, 5, 1, ttl, len(rdata))
                owner = 0xC000 | len(body)  # the next record's owner is this CNAME's target
                body += rdata
            else:
                rdata = _ip4(value)
                body += struct.pack("!HHHIH", owner, 1, 1, ttl, 4) + rdata
        # a cache miss goes upstream first
        t += 0.0008 + self.rng.random() * (0.002 if self.rng.random() < 0.5 else 0.04)
        self.udp(t, self.gw, 53, client, sport, body)
        return t

    def ttl(self, seconds: int) -> int:
        """Answer TTLs shrink with the scale, so bigger files look names up more often."""
        return max(10, int(seconds / self.scale))

    def resolve(self, t: float, client: _Node, remote: _Node, ttl: int) -> float:
        assert remote.dns_name is not None
        ttl = self.ttl(ttl)
        addrs = [h["ip"] for h in SAMPLE_HOSTS if h.get("dns_name") == remote.dns_name]
        answers = [("A", a) for a in addrs]
        if remote.dns_name == "alarm.eu.s3.amazonaws.com":
            answers = [("CNAME", "s3-r-w.eu-west-1.amazonaws.com"), *answers]
        return self.dns(t, client, remote.dns_name, answers, ttl)

    # -- NTP ------------------------------------------------------------------------------------------

    @staticmethod
    def ntp_ts(t: float) -> int:
        sec = int(t)
        return ((sec + NTP_EPOCH_OFFSET) << 32) | int((t - sec) * 4294967296.0)

    def ntp(self, t: float, client: _Node, server: _Node, rtt: float) -> None:
        now = BASE_TIME + t
        sport = self.port() if self.rng.random() < 0.5 else 123
        req = struct.pack("!BBbbII4sQQQQ", 0x23, 0, 6, -20, 0, 0, b"\0" * 4, 0, 0, 0, self.ntp_ts(now))
        self.udp(t, client, sport, server, 123, req)
        rx = now + rtt / 2
        resp = struct.pack(
            "!BBbbII4sQQQQ",
            0x24,
            2,
            6,
            -23,
            0x00000120,
            0x00000350,
            b"\xc0\x00\x02\x7b",
            self.ntp_ts(now - 32.5),
            self.ntp_ts(now),
            self.ntp_ts(rx),
            self.ntp_ts(rx + 0.00004),
        )
        self.udp(t + rtt, server, 123, client, sport, resp)


class _Tcp:
    """One TCP connection with believable sequence numbers, ACKs and timing.

    The capture point is next to the client (a device on the VLAN): its segments appear at once,
    the server's one round trip later.
    """

    MSS = 1460

    def __init__(self, b: _Builder, t: float, client: _Node, server: _Node, sport: int, rtt: float) -> None:
        self.b, self.c, self.s = b, client, server
        self.cport, self.sport = b.port(), sport
        self.t, self.rtt = t, rtt
        self.cseq = b.rng.getrandbits(32)
        self.sseq = b.rng.getrandbits(32)
        self.cwin = 64240 if client.ttl != 128 else 65535
        self.swin = 28960

    def _seg(self, at: float, from_client: bool, flags: int, payload: bytes = b"", opts: bytes = b"") -> None:
        b = self.b
        if from_client:
            b.tcp(
                at,
                self.c,
                self.cport,
                self.s,
                self.sport,
                self.cseq,
                self.sseq if flags & TCP_ACK else 0,
                flags,
                payload,
                opts,
                self.cwin,
            )
            self.cseq += len(payload) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)
        else:
            b.tcp(
                at,
                self.s,
                self.sport,
                self.c,
                self.cport,
                self.sseq,
                self.cseq,
                flags,
                payload,
                opts,
                self.swin,
            )
            self.sseq += len(payload) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)

    def _gap(self) -> float:
        return 0.00002 + self.b.rng.random() * 0.00008

    def _ack_delay(self, from_client: bool) -> float:
        # the receiver's ACK: a round trip later if the receiver is the remote side
        return self.rtt if from_client else 0.0002 + self.b.rng.random() * 0.004

    def open(self) -> _Tcp:
        # MSS 1460, SACK permitted, window scale 7
        self._seg(self.t, True, TCP_SYN, opts=b"\x02\x04\x05\xb4\x04\x02\x01\x03\x03\x07\x01\x01")
        self.t += self.rtt
        self._seg(self.t, False, TCP_SYN | TCP_ACK, opts=b"\x02\x04\x05\xb4\x01\x01\x04\x02\x01\x03\x03\x07")
        self.t += self._gap()
        self._seg(self.t, True, TCP_ACK)
        return self

    def send(self, from_client: bool, data: bytes, *, ack_last: bool = True) -> None:
        """Data in MSS-sized segments; the receiver ACKs every second one and (if asked) the last.

        ACKs are emitted at their own (later) times; the events are sorted before writing."""
        chunks = [data[i : i + self.MSS] for i in range(0, len(data), self.MSS)]
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            self._seg(self.t, from_client, TCP_ACK | (TCP_PSH if last else 0), chunk)
            if (i % 2 == 1 and not last) or (last and ack_last):
                delay = self._ack_delay(from_client)
                self._seg(self.t + delay, not from_client, TCP_ACK)
                if last:
                    self.t += delay
            if not last:
                self.t += self._gap()

    def request(self, data: bytes, response: bytes, think: float = 0.002) -> _Tcp:
        """Client sends `data`; the server answers `response` (its first segment carries the ACK)."""
        self.send(True, data, ack_last=False)
        self.t += self.rtt + think
        if response:
            self.send(False, response)
        else:
            self._seg(self.t, False, TCP_ACK)
        self.t += self._gap()
        return self

    def wait(self, seconds: float) -> _Tcp:
        self.t += seconds
        return self

    def close(self, from_client: bool = True) -> float:
        self._seg(self.t, from_client, TCP_FIN | TCP_ACK)
        self.t += self.rtt if from_client else 0.0003
        self._seg(self.t, not from_client, TCP_FIN | TCP_ACK)
        self.t += self._gap() if from_client else self.rtt
        self._seg(self.t, from_client, TCP_ACK)
        return self.t


# -- device profiles --------------------------------------------------------------------------------

_PRL_LINUX = [1, 3, 6, 12, 15, 28, 42, 51, 54, 58, 59]
_PRL_SHORT = [1, 3, 6, 12, 15, 28, 42]
_PRL_WINDOWS = [1, 3, 6, 15, 31, 33, 43, 44, 46, 47, 119, 121, 249, 252]
_DHCP_PROFILES = {
    "cam-lobby": {"hostname": "DS-2CD2143G2-I", "vendor_class": "udhcp 1.20.2", "prl": _PRL_LINUX},
    "cam-parking": {"hostname": "DS-2CD2347G2-L", "vendor_class": "udhcp 1.20.2", "prl": _PRL_LINUX},
    "cam-entrance": {"hostname": "IPC-HDW2431T", "vendor_class": "udhcp 1.19.4", "prl": _PRL_SHORT},
    "cam-warehouse": {"hostname": "IPC-HFW2431S", "vendor_class": "udhcp 1.19.4", "prl": _PRL_SHORT},
    "cam-gate": {"hostname": "IPC", "vendor_class": "udhcp 1.20.2", "prl": _PRL_SHORT},
    "cam-dock": {"hostname": "IPC2124LB-SF28KM", "vendor_class": "udhcp 1.22.1", "prl": _PRL_LINUX,
                 "mud_url": "https://mud.example.com/.well-known/mud/v1/uniview-ipc2124"},
    "cam-office": {"hostname": "IPCAM", "vendor_class": "udhcp 1.20.2", "prl": _PRL_SHORT},
    "admin-pc": {"hostname": "SEC-WS01", "vendor_class": "MSFT 5.0", "prl": _PRL_WINDOWS},
}  # fmt: skip

# RTSP details per camera: path, Server header (None: none sent), audio track, Digest realm (401 first)
_DAHUA_PATH = "/cam/realmonitor?channel=1&subtype=1"
_RTSP_PROFILES: dict[str, dict[str, Any]] = {
    "cam-lobby": {"path": "/Streaming/Channels/102", "server": None, "audio": True, "realm": None},
    "cam-parking": {"path": "/Streaming/Channels/102", "server": None, "audio": False, "realm": None},
    "cam-entrance": {"path": _DAHUA_PATH, "server": "Rtsp Server/3.0", "audio": True,
                     "realm": "Login to 7K0A2C3PAZ4F1B9"},
    "cam-warehouse": {"path": _DAHUA_PATH, "server": "Rtsp Server/3.0", "audio": False, "realm": None},
    "cam-gate": {"path": "/stream1", "server": "H264DVR rtspd 1.0", "audio": False, "realm": None},
    "cam-dock": {"path": "/media/video2", "server": None, "audio": False, "realm": None},
    "cam-office": {"path": "/live/ch1", "server": None, "audio": False, "realm": None},
}  # fmt: skip


def _http_response(status: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status}", *[f"{k}: {v}" for k, v in headers], f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


def _http_request(
    method: str, path: str, host: str, headers: list[tuple[str, str]], body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *[f"{k}: {v}" for k, v in headers]]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join([*lines, "", ""])).encode() + body


def _rtsp(first: str, cseq: int, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [first, f"CSeq: {cseq}", *[f"{k}: {v}" for k, v in headers]]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join([*lines, "", ""])).encode() + body


class _Scenario(_Builder):
    """The ten minutes of the sample, activity by activity."""

    def build(self) -> None:
        for name, profile in _DHCP_PROFILES.items():
            self.nodes[name].info = {**self.nodes[name].info, "dhcp": profile}
        self.router()
        boot = 1.0
        for cam in self.cameras:
            self.camera_boot(boot + self.rng.random() * 0.5, cam)
            boot += 3.0
        t = 26.0
        for cam in self.cameras:
            self.rtsp_session(t + self.rng.random() * 0.4, cam)
            t += 1.7
        self.hik_cloud(self.nodes["cam-lobby"], 40.0)
        self.dahua_p2p(self.nodes["cam-entrance"], 45.0)
        self.xmeye(self.nodes["cam-gate"], 50.0)
        self.cheap_camera(self.nodes["cam-office"], 55.0)
        self.admin_pc(62.0)

    # -- infrastructure ---------------------------------------------------------------------------

    def router(self) -> None:
        gw = self.gw
        assert gw.ll6 is not None
        for t in self.every(0.4, 200.0, minimum=10.0):
            # Router advertisement: managed/other flags off, prefix fd00:10::/64, source link-layer address
            prefix = struct.pack("!BBBBIII16s", 3, 4, 64, 0xC0, 86400, 14400, 0, _ip6("fd00:10::"))
            body = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0) + prefix + b"\x01\x01" + gw.mac
            self.icmp6(t, gw.mac, b"\x33\x33\x00\x00\x00\x01", gw.ll6, _ip6("ff02::1"), body, (VLAN_ID,))
        # the NVR refreshes its ARP entries for the cameras
        for t in self.every(20.0, 240.0, minimum=5.0):
            for cam in self.cameras:
                t = self.arp_exchange(t + 0.05 + self.rng.random() * 0.2, self.nvr, cam)

    def lease(self) -> int:
        # renew (at lease/2) only in big files: 86400 s normally, shorter as the scale grows
        return 86400 if self.scale < 2 else max(240, int(1200 / self.scale) * 2)

    def camera_boot(self, t: float, cam: _Node) -> None:
        lease = self.lease()
        t = self.dhcp_dora(t, cam, lease)
        t += 0.01
        # gratuitous ARP announcing the new address, then the gateway's MAC
        self.arp(t, 1, cam, b"\0" * 6, cam.ip, dst_mac=BROADCAST_MAC, tags=())
        t = self.arp_exchange(t + 0.3, cam, self.gw)
        if cam.ip6 is not None:
            self.ipv6_bringup(t + 0.2, cam)
        for tr in self.every(t + lease / 2, lease / 2 * self.scale, minimum=60.0):
            self.dhcp_renew(tr, cam, lease)
        # NTP: the Hikvision default, or the pool
        ntp_name = "time.ys7.com" if cam.name == "cam-parking" else "pool.ntp.org"
        if cam.name in ("cam-parking", "cam-warehouse", "cam-dock", "cam-gate"):
            servers = [n for n in self.nodes.values() if n.dns_name == ntp_name]
            resolved_at = -1e9
            for i, tn in enumerate(self.every(t + 1.5, 300.0, minimum=4.0)):
                server = servers[i % len(servers)]
                if tn - resolved_at >= self.ttl(300):  # look the name up again once the TTL ran out
                    resolved_at = tn
                    if cam.name == "cam-dock":
                        # dual-stack resolver library: AAAA first, answered with no records
                        tn = self.dns(tn, cam, ntp_name, [], self.ttl(300), qtype=28) + 0.0005
                    tn = self.resolve(tn, cam, server, 300)
                self.ntp(tn + 0.001, cam, server, 0.03 + self.rng.random() * 0.02)
                if i < 2:
                    # NTP clients send a quick burst at start-up
                    self.ntp(tn + 2.0, cam, server, 0.03 + self.rng.random() * 0.02)

    def ipv6_bringup(self, t: float, dev: _Node) -> None:
        """Duplicate address detection for the link-local and the ULA address."""
        assert dev.ll6 is not None and dev.ip6 is not None
        for target in (dev.ll6, dev.ip6):
            sol = _ip6("ff02::1:ff00:0")[:13] + target[13:]
            mmac = b"\x33\x33" + sol[12:]
            body = struct.pack("!BBHI", 135, 0, 0, 0) + target
            self.icmp6(t, dev.mac, mmac, b"\0" * 16, sol, body, ())
            t += 1.0

    # -- RTSP / RTP -------------------------------------------------------------------------------

    def rtsp_session(self, t: float, cam: _Node) -> None:
        prof = _RTSP_PROFILES[cam.name]
        nvr = self.nvr
        url = f"rtsp://{cam.info['ip']}:554{prof['path']}"
        server = [("Server", prof["server"])] if prof["server"] else []
        conn = _Tcp(self, t, nvr, cam, 554, 0.0003 + self.rng.random() * 0.0003).open()
        ua = [("User-Agent", "NVR RTSP client")]
        cseq = 1
        conn.request(
            _rtsp(f"OPTIONS {url} RTSP/1.0", cseq, ua),
            _rtsp(
                "RTSP/1.0 200 OK",
                cseq,
                [
                    *server,
                    ("Public", "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER, SET_PARAMETER"),
                ],
            ),
        )
        nonce = f"{self.rng.getrandbits(128):032x}"
        realm = prof["realm"] or "IP Camera"
        if prof["realm"]:
            cseq += 1
            conn.request(
                _rtsp(f"DESCRIBE {url} RTSP/1.0", cseq, [*ua, ("Accept", "application/sdp")]),
                _rtsp(
                    "RTSP/1.0 401 Unauthorized",
                    cseq,
                    [*server, ("WWW-Authenticate", f'Digest realm="{realm}", nonce="{nonce}"')],
                ),
            )
        auth = (
            f'Digest username="admin", realm="{realm}", nonce="{nonce}", uri="{url}", '
            f'response="{self.rng.getrandbits(128):032x}"'
        )
        session = f"{self.rng.getrandbits(32):08X}"
        sdp_lines = [
            "v=0",
            f"o=- {self.rng.getrandbits(40)} 1 IN IP4 {cam.info['ip']}",
            "s=Media Presentation",
            "c=IN IP4 0.0.0.0",
            "t=0 0",
            "a=control:*",
            "m=video 0 RTP/AVP 96",
            "a=rtpmap:96 H264/90000",
            "a=fmtp:96 packetization-mode=1;profile-level-id=4D001F",
            "a=control:trackID=1",
        ]
        if prof["audio"]:
            sdp_lines += ["m=audio 0 RTP/AVP 8", "a=rtpmap:8 PCMA/8000", "a=control:trackID=2"]
        sdp = ("\r\n".join(sdp_lines) + "\r\n").encode()
        cseq += 1
        conn.request(
            _rtsp(
                f"DESCRIBE {url} RTSP/1.0",
                cseq,
                [*ua, ("Accept", "application/sdp"), ("Authorization", auth)],
            ),
            _rtsp(
                "RTSP/1.0 200 OK",
                cseq,
                [*server, ("Content-Base", url + "/"), ("Content-Type", "application/sdp")],
                sdp,
            ),
        )
        tracks = [(True, 1)] + ([(False, 2)] if prof["audio"] else [])
        new_streams = []
        for video, track in tracks:
            stream = _Stream(
                cam=cam,
                nvr=nvr,
                cam_port=self.rng.randrange(8000, 9000) & ~1,
                nvr_port=self.rng.randrange(20000, 30000) & ~1,
                ssrc=self.rng.getrandbits(32),
                payload_type=96 if video else 8,
                clock=90000 if video else 8000,
                video=video,
                start=0.0,
                end=DURATION,
                seq0=self.rng.getrandbits(16),
                ts0=self.rng.getrandbits(32),
                cname=f"{cam.name}@{cam.info['ip']}",
            )
            cseq += 1
            transport = f"RTP/AVP;unicast;client_port={stream.nvr_port}-{stream.nvr_port + 1}"
            hdrs = [*ua, ("Transport", transport), ("Authorization", auth)]
            if track > 1:
                hdrs.append(("Session", session))
            reply_transport = (
                f"{transport};server_port={stream.cam_port}-{stream.cam_port + 1};ssrc={stream.ssrc:08X}"
            )
            conn.request(
                _rtsp(f"SETUP {url}/trackID={track} RTSP/1.0", cseq, hdrs),
                _rtsp(
                    "RTSP/1.0 200 OK",
                    cseq,
                    [*server, ("Session", f"{session};timeout=60"), ("Transport", reply_transport)],
                ),
            )
            new_streams.append(stream)
        cseq += 1
        conn.request(
            _rtsp(
                f"PLAY {url}/ RTSP/1.0",
                cseq,
                [*ua, ("Session", session), ("Range", "npt=0.000-"), ("Authorization", auth)],
            ),
            _rtsp("RTSP/1.0 200 OK", cseq, [*server, ("Session", session), ("Range", "npt=0.000-")]),
        )
        start = conn.t + 0.02
        teardown_at = 540.0 if cam.name == "cam-parking" else None
        end = teardown_at if teardown_at is not None else DURATION
        for s in new_streams:
            s.start, s.end = start, end
        self.streams.extend(new_streams)
        for s in new_streams:
            self.rtcp(s)
        # keep-alives on the RTSP connection
        for tk in self.every(start + 50.0, 50.0, end=end - 1.0, minimum=5.0):
            conn.t = tk
            cseq += 1
            conn.request(
                _rtsp(f"GET_PARAMETER {url}/ RTSP/1.0", cseq, [*ua, ("Session", session)]),
                _rtsp("RTSP/1.0 200 OK", cseq, [*server, ("Session", session)]),
            )
        if teardown_at is not None:
            conn.t = teardown_at
            cseq += 1
            conn.request(
                _rtsp(f"TEARDOWN {url}/ RTSP/1.0", cseq, [*ua, ("Session", session)]),
                _rtsp("RTSP/1.0 200 OK", cseq, [*server, ("Session", session)]),
            )
            conn.close(from_client=True)

    def rtcp(self, s: _Stream) -> None:
        """Sender reports from the camera and receiver reports from the NVR, with SDES CNAMEs."""

        def sdes(ssrc: int, cname: str) -> bytes:
            item = b"\x01" + bytes([len(cname)]) + cname.encode() + b"\0"
            item += b"\0" * (-(len(item) + 4) % 4)
            return struct.pack("!BBHI", 0x81, 202, (4 + len(item)) // 4, ssrc) + item

        nvr_ssrc = self.rng.getrandbits(32)
        for t in self.every(s.start + 5.0, 60.0, end=s.end, minimum=1.0):
            elapsed = t - s.start
            sent = int(elapsed * (25 if s.video else 50))
            sr = struct.pack(
                "!BBHIQIII",
                0x80,
                200,
                6,
                s.ssrc,
                self.ntp_ts(BASE_TIME + t),
                (s.ts0 + int(elapsed * s.clock)) & 0xFFFFFFFF,
                sent,
                sent * (700 if s.video else 160),
            )
            self.udp(t, s.cam, s.cam_port + 1, s.nvr, s.nvr_port + 1, sr + sdes(s.ssrc, s.cname))
            rr = struct.pack("!BBHI", 0x81, 201, 7, nvr_ssrc) + struct.pack(
                "!IIIIII", s.ssrc, 0, (s.seq0 + sent) & 0xFFFF, self.rng.randrange(10, 400), 0, 0
            )
            self.udp(
                t + 0.2 + self.rng.random(),
                s.nvr,
                s.nvr_port + 1,
                s.cam,
                s.cam_port + 1,
                rr + sdes(nvr_ssrc, "nvr-01@192.168.10.2"),
            )

    # -- vendor clouds ------------------------------------------------------------------------------

    def remote(self, ip: str) -> _Node:
        return self.nodes[ip]

    def hik_cloud(self, cam: _Node, t: float) -> None:
        serial = "DS-2CD2143G2-I20230512AAWRG12345678"
        # EZVIZ bootstrap on tcp/8666: opaque binary, about 200 bytes back (BLAN)
        boot = self.remote("198.51.100.10")
        t = self.resolve(t, cam, boot, 60)
        rng = self.rng
        conn = _Tcp(self, t + 0.001, cam, boot, 8666, 0.045).open()
        conn.request(b"\x9e\xba\xac\xe9" + rng.randbytes(156), b"\x9e\xba\xac\xe9" + rng.randbytes(204), 0.01)
        t = conn.close()
        # MQTT events on tcp/31006: username = serial, password "test" (BLAN)
        mqtt_host = self.remote("198.51.100.20")
        t = self.resolve(t + 0.5, cam, mqtt_host, 300)
        mq = _Tcp(self, t + 0.001, cam, mqtt_host, 31006, 0.05).open()
        payload = b"".join(struct.pack("!H", len(x)) + x for x in (serial.encode(), serial.encode(), b"test"))
        var = b"\x00\x04MQTT\x04\xc2\x00\x3c"
        mq.request(b"\x10" + bytes([len(var) + len(payload)]) + var + payload, b"\x20\x02\x00\x00")
        topic = f"{serial}/3100/1".encode()
        sub = struct.pack("!H", 1) + struct.pack("!H", len(topic)) + topic + b"\x01"
        mq.request(b"\x82" + bytes([len(sub)]) + sub, b"\x90\x03\x00\x01\x01")
        for tp in self.every(mq.t + 60.0, 60.0, end=DURATION - 1.0, minimum=2.0):
            mq.t = tp
            mq.request(b"\xc0\x00", b"\xd0\x00")
        # event snapshot upload to S3 over TLS (name via a CNAME chain)
        s3 = self.remote("52.218.48.10")
        for i, tu in enumerate(self.every(150.0, 300.0, end=DURATION - 5.0, minimum=8.0)):
            if i % 4 == 0:
                tu = self.resolve(tu, cam, s3, 60)
            self.tls_upload(
                tu + 0.001, cam, s3, "alarm.eu.s3.amazonaws.com", 0.025, 12000 + self.rng.randrange(8000)
            )

    def tls_upload(self, t: float, client: _Node, server: _Node, sni: str, rtt: float, size: int) -> None:
        rng = self.rng
        conn = _Tcp(self, t, client, server, 443, rtt).open()
        name = sni.encode()
        ext = b""
        ext += struct.pack("!HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
        ext += struct.pack("!HHH", 10, 6, 4) + b"\x00\x1d\x00\x17"  # groups x25519, secp256r1
        ext += struct.pack("!HHB", 11, 2, 1) + b"\x00"
        algs = b"\x04\x03\x08\x04\x04\x01\x05\x03\x08\x05\x05\x01\x08\x06\x06\x01"
        ext += struct.pack("!HHH", 13, len(algs) + 2, len(algs)) + algs
        ext += struct.pack("!HHB", 43, 5, 4) + b"\x03\x04\x03\x03"
        ext += struct.pack("!HHB", 45, 2, 1) + b"\x01"
        ext += struct.pack("!HHHHH", 51, 38, 36, 0x001D, 32) + rng.randbytes(32)
        suites = b"\x13\x01\x13\x02\x13\x03\xc0\x2b\xc0\x2f\xc0\x2c\xc0\x30"
        hello = (
            b"\x03\x03"
            + rng.randbytes(32)
            + b"\x20"
            + rng.randbytes(32)
            + struct.pack("!H", len(suites))
            + suites
            + b"\x01\x00"
            + struct.pack("!H", len(ext))
            + ext
        )
        hs = b"\x01" + len(hello).to_bytes(3, "big") + hello
        client_hello = b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs
        sext = (
            struct.pack("!HHH", 43, 2, 0x0304) + struct.pack("!HHHH", 51, 36, 0x001D, 32) + rng.randbytes(32)
        )
        shello = (
            b"\x03\x03"
            + rng.randbytes(32)
            + b"\x20"
            + hello[35:67]
            + b"\x13\x01\x00"
            + struct.pack("!H", len(sext))
            + sext
        )
        shs = b"\x02" + len(shello).to_bytes(3, "big") + shello
        server_flight = (
            b"\x16\x03\x03"
            + struct.pack("!H", len(shs))
            + shs
            + b"\x14\x03\x03\x00\x01\x01"
            + self.app_data(2900)
        )
        conn.request(client_hello, server_flight, 0.003)
        conn.send(True, b"\x14\x03\x03\x00\x01\x01" + self.app_data(74))
        body = b"".join(self.app_data(min(4000, size - i)) for i in range(0, size, 4000))
        conn.request(body, self.app_data(420), 0.08)
        conn.close()

    def app_data(self, n: int) -> bytes:
        return b"\x17\x03\x03" + struct.pack("!H", n) + self.rng.randbytes(n)

    def dahua_p2p(self, cam: _Node, t: float) -> None:
        """Easy4IP rendezvous: DHGET / DHPOST text over UDP 8800 (DHP2P)."""
        server = self.remote("198.51.100.40")
        serial = "7K0A2C3PAZ4F1B9"
        sport = self.port()
        for i, tp in enumerate(self.every(t, 60.0, end=DURATION - 1.0, minimum=2.0)):
            if i % 5 == 0:
                tp = self.resolve(tp, cam, server, 300)
            seq = i + 1
            minute, second = divmod(int(tp) % 3600, 60)
            created = f"2024-05-14T08:{minute:02d}:{second:02d}Z"
            wsse = (
                f'UsernameToken Username="P2PClient", PasswordDigest="{self.rng.randbytes(20).hex()}", '
                f'Nonce="{self.rng.getrandbits(31)}", Created="{created}"'
            )
            path = "/probe/p2psrv" if i == 0 else f"/online/p2psrv/{serial}"
            method = "DHGET" if i == 0 else "DHPOST"
            body = b"" if i == 0 else f"<body><DevSN>{serial}</DevSN><Version>5.1.0</Version></body>".encode()
            req = (
                f"{method} {path} HTTP/1.1\r\nCSeq: {seq}\r\nX-WSSE: {wsse}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            self.udp(tp + 0.001, cam, sport, server, 8800, req)
            rbody = b"<body><US>198.51.100.41:8800</US><RS>198.51.100.42:8900</RS></body>"
            resp = (
                f"HTTP/1.1 200 OK\r\nCSeq: {seq}\r\nContent-Length: {len(rbody)}\r\n\r\n"
            ).encode() + rbody
            self.udp(tp + 0.062 + self.rng.random() * 0.01, server, 8800, cam, sport, resp)

    def xmeye(self, cam: _Node, t: float) -> None:
        serial = "5f7a1c9e3b2d4a68"
        cfg = self.remote("198.51.100.50")
        t = self.resolve(t, cam, cfg, 600)
        body = (
            '{"CfgProtocol":{"Header":{"Version":"1.0","CSeq":"1","MessageType":"MSG_DSS_CFG_QUERY_REQ"},'
            f'"Body":{{"SerialNumber":"{serial}","AuthCode":"{self.rng.randbytes(8).hex()}",'
            '"ProductID":"XM530_80X20_8M","OtherInfo":"V5.00.R02.000529B6.10010.346832.0000000"}}}'
        ).encode()
        answer = b'{"CfgProtocol":{"Header":{"MessageType":"MSG_DSS_CFG_QUERY_RSP","ErrorNum":"200"}}}'
        conn = _Tcp(self, t + 0.001, cam, cfg, 8086, 0.21).open()
        conn.request(
            _http_request(
                "POST", "/", "pub-cfg.secu100.net:8086", [("Content-Type", "application/json")], body
            ),
            _http_response("200 OK", [("Server", "openresty"), ("Content-Type", "application/json")], answer),
            0.02,
        )
        t = conn.close()
        caps = self.remote("198.51.100.51")
        t = self.resolve(t + 1.0, cam, caps, 600)
        body = (
            '{"CapsCenter":{"Header":{"MessageType":"REPORT_CAPS_DEV_INFO_REQ"},'
            f'"Body":{{"MAC":"{cam.info["mac"]}","SerialNumber":"{serial}","HardWare":"XM530_50H20_AE_S38",'
            '"SoftWareVersion":"V5.00.R02.000529B6.10010.346832.0000000"}}}'
        ).encode()
        conn = _Tcp(self, t + 0.001, cam, caps, 80, 0.22).open()
        conn.request(
            _http_request(
                "POST", "/dev/upload", "caps.xmcsrv.net", [("Content-Type", "application/json")], body
            ),
            _http_response(
                "200 OK", [("Server", "openresty"), ("Content-Type", "application/json")], b'{"Ret":100}'
            ),
            0.02,
        )
        conn.close()
        # the cleartext update check goes to an address the camera never resolved (BESDER)
        upd = self.remote("120.92.92.241")
        for tu in self.every(150.0, 600.0, end=DURATION - 5.0, minimum=20.0):
            body = (
                f'{{"UUID":"{serial}","DevID":"XM530_80X20_8M","DevType":"IPC","CurVersion":"2019-05-29",'
                '"Expect":"Latest","Language":"English"}'
            ).encode()
            conn = _Tcp(self, tu, cam, upd, 80, 0.23).open()
            conn.request(
                _http_request("POST", "/list", "120.92.92.241", [("Content-Type", "application/json")], body),
                _http_response("204 No Content", [("Server", "nginx")], b""),
                0.01,
            )
            conn.close()

    def cheap_camera(self, cam: _Node, t: float) -> None:
        """CS2/PPPP hellos to three servers by address, a LAN announcement, and a DDNS update."""
        servers = [self.remote(ip) for ip in ("39.108.103.17", "47.91.16.126", "161.117.51.203")]
        sport = self.port()
        for tb in self.every(t, 300.0, end=DURATION - 16.0, minimum=16.0):
            for k in range(15):
                for j, server in enumerate(servers):
                    self.udp(tb + k * 1.0 + j * 0.0004, cam, sport, server, 32100, b"\xf1\x00\x00\x00")
            announce = b"\xf1\x31\x00\x14" + b"TNPUSAF\0" + struct.pack("!I", 418305) + b"RXKTA\0\0\0"
            self.udp(tb + 0.5, cam, 32108, self.bcast, 32108, announce, tags=(), dst_mac=BROADCAST_MAC)
        ddns = self.remote("203.0.113.88")
        for i, td in enumerate(self.every(t + 35.0, 300.0, end=DURATION - 5.0, minimum=10.0)):
            if i % 2 == 0:
                td = self.resolve(td, cam, ddns, 600)
            conn = _Tcp(self, td + 0.001, cam, ddns, 80, 0.19).open()
            path = "/vipddns/upgengxin.asp?username=cam418305&userpwd=123456"
            conn.request(
                _http_request(
                    "GET", path, "www.88safce.com", [("User-Agent", "Mozilla/4.0"), ("Connection", "close")]
                ),
                _http_response(
                    "200 OK",
                    [("Server", "Microsoft-IIS/6.0"), ("Content-Type", "text/html")],
                    b"good 203.0.113.200",
                ),
                0.03,
            )
            conn.close(from_client=False)

    # -- the management PC --------------------------------------------------------------------------

    def admin_pc(self, t: float) -> None:
        pc = self.pc
        t = self.dhcp_dora(t, pc, self.lease())
        t = self.arp_exchange(t + 0.5, pc, self.gw)
        pages = [
            (
                "cam-lobby",
                120.0,
                [
                    (
                        "/",
                        "200 OK",
                        [("Server", "App-webs/"), ("Content-Type", "text/html")],
                        b'<!DOCTYPE html><html><head><meta http-equiv="Refresh" '
                        b'content="0;url=/doc/page/login.asp"></head></html>',
                    ),
                    (
                        "/ISAPI/System/deviceInfo",
                        "200 OK",
                        [("Server", "App-webs/"), ("Content-Type", "application/xml")],
                        b'<?xml version="1.0" encoding="UTF-8"?>\n<DeviceInfo version="2.0" '
                        b'xmlns="http://www.hikvision.com/ver20/XMLSchema">\n'
                        b"<deviceName>cam-lobby</deviceName>\n<model>DS-2CD2143G2-I</model>\n"
                        b"<serialNumber>DS-2CD2143G2-I20230512AAWRG12345678</serialNumber>\n"
                        b"<macAddress>98:8b:0a:5d:21:4f</macAddress>\n"
                        b"<firmwareVersion>V5.7.3</firmwareVersion>\n"
                        b"<firmwareReleasedDate>build 220112</firmwareReleasedDate>\n"
                        b"<deviceType>IPCamera</deviceType>\n</DeviceInfo>\n",
                    ),
                ],
            ),
            (
                "cam-parking",
                150.0,
                [
                    (
                        "/",
                        "200 OK",
                        [("Server", "webserver"), ("Content-Type", "text/html")],
                        b"<html><head><title>Hikvision</title></head><body></body></html>",
                    )
                ],
            ),
            (
                "cam-gate",
                180.0,
                [
                    (
                        "/",
                        "200 OK",
                        [("Server", "uc-httpd 1.0.0"), ("Content-Type", "text/html")],
                        b"<html><head><title>NETSurveillance WEB</title></head><body></body></html>",
                    )
                ],
            ),
        ]
        ua = [("User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"), ("Accept", "*/*")]
        for name, start, requests in pages:
            cam = self.nodes[name]
            ta = self.arp_exchange(start, pc, cam)
            conn = _Tcp(self, ta + 0.001, pc, cam, 80, 0.0004).open()
            for path, status, headers, body in requests:
                conn.request(
                    _http_request("GET", path, cam.info["ip"], ua),
                    _http_response(status, headers, body),
                    0.015,
                )
                conn.wait(0.8 + self.rng.random())
            conn.close()
        # ICMP echo to every camera
        tp = 300.0
        for cam in self.cameras:
            for k in range(4):
                ident, seq = 1, 40 + k
                payload = b"abcdefghijklmnopqrstuvwabcdefghi"
                msg = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
                msg = msg[:2] + struct.pack("!H", _checksum(_sum(msg))) + msg[4:]
                self.ip(tp, pc, cam, 1, msg)
                rep = b"\x00" + msg[1:2] + b"\0\0" + msg[4:]
                rep = rep[:2] + struct.pack("!H", _checksum(_sum(rep))) + rep[4:]
                self.ip(tp + 0.0004 + self.rng.random() * 0.0004, cam, pc, 1, rep)
                tp += 1.0
            tp += 0.5
        self.ipv6_http(240.0)

    def ipv6_http(self, t: float) -> None:
        """Neighbour discovery, then HTTP over the ULA addresses from the PC to cam-warehouse."""
        pc, cam = self.pc, self.nodes["cam-warehouse"]
        assert pc.ip6 is not None and cam.ip6 is not None
        tags = self.tags(pc, cam)
        sol = _ip6("ff02::1:ff00:0")[:13] + cam.ip6[13:]
        ns = struct.pack("!BBHI", 135, 0, 0, 0) + cam.ip6 + b"\x01\x01" + pc.mac
        self.icmp6(t, pc.mac, b"\x33\x33" + sol[12:], pc.ip6, sol, ns, tags)
        na = struct.pack("!BBHI", 136, 0, 0, 0x60000000) + cam.ip6 + b"\x02\x01" + cam.mac
        self.icmp6(t + 0.0005, cam.mac, pc.mac, cam.ip6, pc.ip6, na, tags)
        # a small TCP exchange, built by hand because _Tcp speaks IPv4
        rng = self.rng
        cport = self.port()
        cseq, sseq = rng.getrandbits(32), rng.getrandbits(32)
        t += 0.002

        def seg(
            t: float, from_pc: bool, seq: int, ack: int, flags: int, payload: bytes = b"", opts: bytes = b""
        ) -> None:
            src, dst = (pc, cam) if from_pc else (cam, pc)
            assert src.ip6 is not None and dst.ip6 is not None
            sport, dport = (cport, 80) if from_pc else (80, cport)
            hdr = (
                _TCP.pack(
                    sport,
                    dport,
                    seq & 0xFFFFFFFF,
                    ack & 0xFFFFFFFF,
                    (20 + len(opts)) << 2,
                    flags,
                    65535 if from_pc else 28800,
                    0,
                    0,
                )
                + opts
            )
            csum = _checksum(_sum(src.ip6 + dst.ip6) + 6 + len(hdr) + len(payload) + _sum(hdr + payload))
            hdr = hdr[:16] + struct.pack("!H", csum) + hdr[18:]
            self.ip6(
                t, src.mac, dst.mac, src.ip6, dst.ip6, 6, hdr + payload, tags, hops=128 if from_pc else 64
            )

        seg(t, True, cseq, 0, TCP_SYN, opts=b"\x02\x04\x05\xa0\x01\x03\x03\x08\x01\x01\x04\x02")
        seg(t + 0.0004, False, sseq, cseq + 1, TCP_SYN | TCP_ACK, opts=b"\x02\x04\x05\xa0\x01\x01\x04\x02")
        seg(t + 0.0005, True, cseq + 1, sseq + 1, TCP_ACK)
        req = _http_request(
            "GET", "/", "[fd00:10::14]", [("User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64)")]
        )
        seg(t + 0.0006, True, cseq + 1, sseq + 1, TCP_ACK | TCP_PSH, req)
        resp = _http_response(
            "200 OK", [("Content-Type", "text/html")], b"<html><head><title>WEB SERVICE</title></head></html>"
        )
        seg(t + 0.012, False, sseq + 1, cseq + 1 + len(req), TCP_ACK | TCP_PSH, resp)
        seg(t + 0.0125, True, cseq + 1 + len(req), sseq + 1 + len(resp), TCP_ACK)
        seg(t + 2.0, True, cseq + 1 + len(req), sseq + 1 + len(resp), TCP_FIN | TCP_ACK)
        seg(t + 2.0004, False, sseq + 1 + len(resp), cseq + 2 + len(req), TCP_FIN | TCP_ACK)
        seg(t + 2.0005, True, cseq + 2 + len(req), sseq + 2 + len(resp), TCP_ACK)


# -- RTP, built lazily -------------------------------------------------------------------------------


def _rtp_frames(
    s: _Stream, count: int, seed: int, pool: bytes, order_base: int
) -> Iterator[tuple[float, int, bytes]]:
    """`count` RTP packets of stream `s`, evenly spread with jitter, as (time, order, frame).

    Fast path: headers are packed with precompiled structs, payloads are slices of a random pool,
    checksums are one big-number modulo each.
    """
    rng = random.Random(seed)
    eth = s.nvr.mac + s.cam.mac + b"\x08\x00"
    src, dst = s.cam.ip, s.nvr.ip
    pseudo = _sum(src + dst) + 17
    ports = struct.pack("!HH", s.cam_port, s.nvr_port)
    ip_pack = _IP4.pack
    rtp_pack = _RTP.pack
    span = (s.end - s.start) / max(1, count)
    ident = rng.randrange(0x10000)
    pool_len = len(pool)
    pt = s.payload_type
    for j in range(count):
        t = s.start + (j + 0.2 + 0.6 * rng.random()) * span
        if s.video:
            r = rng.random()
            if r < 0.15:
                size, nal = 1398, (b"\x7c\x85" if r < 0.02 else b"\x7c\x05")  # FU-A fragments of a key frame
            else:
                size, nal = 60 + int(rng.random() * 500), b"\x41\x9a"  # a whole non-IDR slice
            marker = 0x80 if r >= 0.15 or r < 0.01 else 0
        else:
            size, nal, marker = 158, b"\xd5\xd5", 0
        off = rng.randrange(0, pool_len - size) & ~1
        payload = nal + pool[off : off + size]
        rtp = rtp_pack(
            0x80,
            marker | pt,
            (s.seq0 + j) & 0xFFFF,
            (s.ts0 + int((t - s.start) * s.clock)) & 0xFFFFFFFF,
            s.ssrc,
        )
        length = 8 + 12 + len(payload)
        udp_hdr = ports + struct.pack("!H", length)
        csum = _checksum(pseudo + length + _sum(udp_hdr + b"\0\0" + rtp + payload)) or 0xFFFF
        ident = (ident + 1) & 0xFFFF
        hdr = ip_pack(0x45, 0, 20 + length, ident, 0x4000, 64, 17, 0, src, dst)
        hdr = hdr[:10] + struct.pack("!H", _checksum(_sum(hdr))) + hdr[12:]
        yield t, order_base + j, eth + hdr + udp_hdr + struct.pack("!H", csum) + rtp + payload


def _split(total: int, weights: list[float]) -> list[int]:
    """`total` split in proportion to `weights` (largest remainder; the parts sum to `total`)."""
    whole = sum(weights)
    raw = [total * w / whole for w in weights]
    parts = [int(x) for x in raw]
    by_rest = sorted(range(len(raw)), key=lambda i: (raw[i] - parts[i], -i), reverse=True)
    for i in by_rest[: total - sum(parts)]:
        parts[i] += 1
    return parts


def generate(
    out: str | Path, packets: int = DEFAULT_PACKETS, seed: int = DEFAULT_SEED, snaplen: int = 262_144
) -> int:
    """Write the sample capture to `out`; returns the number of packets written (== `packets`)."""
    scenario = _Scenario(seed, packets)
    scenario.build()
    control = scenario.events
    control.sort()
    rtp_total = packets - len(control)
    if rtp_total < _MIN_RTP:
        raise ValueError(
            f"--packets must be at least {len(control) + _MIN_RTP} for seed {seed} "
            f"(the control traffic alone is {len(control)} packets)"
        )
    streams = scenario.streams
    weights = [(s.end - s.start) * (1.0 if s.video else 0.6) for s in streams]
    counts = _split(rtp_total, weights)
    sources: list[Iterator[tuple[float, int, bytes]]] = [iter(control)]
    for i, (s, n) in enumerate(zip(streams, counts, strict=True)):
        sources.append(_rtp_frames(s, n, scenario.rng.getrandbits(64), scenario.pool, (i + 1) << 40))
    written = 0
    with PcapWriter(out, snaplen=snaplen) as writer:
        for t, _order, frame in heapq.merge(*sources):
            writer.write(BASE_TIME + t, frame)
            written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.samplegen", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="pcap file to write")
    parser.add_argument(
        "--packets", type=int, default=DEFAULT_PACKETS, help=f"packets (default {DEFAULT_PACKETS})"
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})"
    )
    parser.add_argument(
        "--snaplen",
        type=int,
        default=262_144,
        help="cut frames to this many bytes (e.g. 256 for small benchmark files)",
    )
    args = parser.parse_args(argv)
    if args.snaplen < 64:
        parser.error("--snaplen must be at least 64")
    try:
        n = generate(args.out, args.packets, args.seed, args.snaplen)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"wrote {n} packets to {args.out} ({Path(args.out).stat().st_size:,} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
