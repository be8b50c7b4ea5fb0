"""DHCPv4 and DHCPv6: identity facts for the inventory (no events of its own; the inventory emits
`device` events when the facts change).

DHCPv4 (UDP 67/68), client messages (BOOTREQUEST): the client is `chaddr` (not the frame's source
MAC, which is the relay's when relayed). Facts: host name (option 12), vendor class (60), parameter
request list (55, rendered "1,3,6,15" as a fingerprint), requested address (50), client identifier
(61, hex), MUD URL (161, RFC 8520). Server DHCPACKs add the assigned address (`yiaddr`).

DHCPv6 (UDP 546/547, RFC 8415), relay messages unwrapped: client DUID (the MAC inside DUID-LL / LLT,
or the relay's client link-layer address option 79), FQDN (39), vendor class (16), option request
list (6, fingerprint "v6:23,24"), MUD URL (112). Without a MAC in the message, the frame's source MAC
is used only when the message was not relayed. Replies add IA_NA addresses to the client.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any, ClassVar

from analyzers.base import Analyzer

_BOOTP = struct.Struct("!BBBBIHH4s4s4s4s16s")  # op .. chaddr (44 bytes)
_MAGIC = b"\x63\x82\x53\x63"
_OPTIONS_AT = 240
DHCPACK = 5
DHCP6_RELAY_FORW, DHCP6_RELAY_REPL = 12, 13
DHCP6_CLIENT_TYPES = frozenset({1, 3, 4, 5, 6, 8, 9, 11})  # solicit, request, confirm, renew...
DHCP6_REPLY_TYPES = frozenset({2, 7})  # advertise, reply


def parse_dhcp4_options(buf: bytes) -> dict[int, bytes]:
    """Options after the magic cookie; the first occurrence of each code wins (RFC 3396 concatenation
    of split long options is applied for repeated codes)."""
    opts: dict[int, bytes] = {}
    off = _OPTIONS_AT
    n = len(buf)
    while off < n:
        code = buf[off]
        if code == 0:
            off += 1
            continue
        if code == 255 or off + 1 >= n:
            break
        length = buf[off + 1]
        value = buf[off + 2 : off + 2 + length]
        if len(value) != length:
            break
        opts[code] = opts.get(code, b"") + value
        off += 2 + length
    return opts


def _text(value: bytes | None) -> str | None:
    if not value:
        return None
    text = value.rstrip(b"\x00").decode("utf-8", "backslashreplace").strip()
    return text[:255] or None


def parse_dhcp4(buf: bytes) -> dict[str, Any] | None:
    """Client facts from a DHCPv4 message, or None when it is not DHCP."""
    if len(buf) < _OPTIONS_AT or buf[236:240] != _MAGIC:
        return None
    op, htype, hlen, _hops, _xid, _secs, _flags, ciaddr, yiaddr, _siaddr, _giaddr, chaddr = (
        _BOOTP.unpack_from(buf)
    )
    opts = parse_dhcp4_options(buf)
    msg_type = opts.get(53, b"\x00")[0] if opts.get(53) else 0
    mac = chaddr[:6].hex(":") if htype == 1 and hlen == 6 else None
    facts: dict[str, Any] = {"op": op, "msg_type": msg_type, "mac": mac}
    if op == 1:
        facts["ciaddr"] = str(ipaddress.IPv4Address(ciaddr))
        facts["hostname"] = _text(opts.get(12))
        facts["vendor_class"] = _text(opts.get(60))
        if opts.get(55):
            facts["dhcp_fingerprint"] = ",".join(str(b) for b in opts[55])
        if len(opts.get(50, b"")) == 4:
            facts["requested_ip"] = str(ipaddress.IPv4Address(opts[50]))
        if opts.get(61):
            facts["client_id"] = opts[61].hex()
        facts["mud_url"] = _text(opts.get(161))
    else:
        facts["yiaddr"] = str(ipaddress.IPv4Address(yiaddr))
    return facts


def _dhcp6_options(buf: bytes, off: int) -> list[tuple[int, bytes]]:
    out = []
    n = len(buf)
    while off + 4 <= n:
        code, length = struct.unpack_from("!HH", buf, off)
        value = buf[off + 4 : off + 4 + length]
        if len(value) != length:
            break
        out.append((code, value))
        off += 4 + length
    return out


def _duid_mac(duid: bytes) -> str | None:
    """Link-layer address inside a DUID-LLT (type 1) or DUID-LL (type 3) with Ethernet hardware."""
    if len(duid) >= 14 and duid[:4] == b"\x00\x01\x00\x01":
        return duid[8:14].hex(":")
    if len(duid) >= 10 and duid[:4] == b"\x00\x03\x00\x01":
        return duid[4:10].hex(":")
    return None


def _dns_wire_name(value: bytes) -> str | None:
    labels = []
    off = 0
    while off < len(value):
        length = value[off]
        if length == 0 or off + 1 + length > len(value):
            break
        labels.append(value[off + 1 : off + 1 + length].decode("ascii", "backslashreplace"))
        off += 1 + length
    return ".".join(labels) or None


def parse_dhcp6(buf: bytes) -> dict[str, Any] | None:
    """Client facts from a DHCPv6 message (relay envelopes unwrapped), or None."""
    relayed = False
    link_mac: str | None = None
    for _ in range(8):  # relay nesting limit (RFC 8415 HOP_COUNT_LIMIT is 8)
        if len(buf) < 4:
            return None
        if buf[0] not in (DHCP6_RELAY_FORW, DHCP6_RELAY_REPL):
            break
        if len(buf) < 34:
            return None
        relayed = True
        inner = None
        for code, value in _dhcp6_options(buf, 34):
            if code == 9:
                inner = value
            elif code == 79 and len(value) >= 8 and value[:2] == b"\x00\x01":
                link_mac = value[2:8].hex(":")
        if inner is None:
            return None
        buf = inner
    else:
        return None
    msg_type = buf[0]
    facts: dict[str, Any] = {"msg_type": msg_type, "relayed": relayed, "mac": link_mac, "addresses": []}
    for code, value in _dhcp6_options(buf, 4):
        if code == 1:
            facts["client_id"] = value.hex()
            facts["mac"] = facts["mac"] or _duid_mac(value)
        elif code == 39 and len(value) > 1:
            facts["hostname"] = _dns_wire_name(value[1:])
        elif code == 16 and len(value) > 6:
            n = int.from_bytes(value[4:6], "big")
            facts["vendor_class"] = _text(value[6 : 6 + n])
        elif code == 6 and len(value) >= 2:
            facts["dhcpv6_fingerprint"] = "v6:" + ",".join(
                str(int.from_bytes(value[i : i + 2], "big")) for i in range(0, len(value) - 1, 2)
            )
        elif code == 112:
            facts["mud_url"] = _text(value)
        elif code == 3 and len(value) > 12:  # IA_NA: iaid, t1, t2, then options (IAADDR = 5)
            for sub, sv in _dhcp6_options(value, 12):
                if sub == 5 and len(sv) >= 16:
                    facts["addresses"].append(str(ipaddress.IPv6Address(sv[:16])))
    return facts


class DhcpAnalyzer(Analyzer):
    NAME = "dhcp"
    UDP_PORTS: ClassVar[frozenset[int]] = frozenset({67, 68, 546, 547})

    def setup(self, ctx: Any) -> None:
        super().setup(ctx)
        self.messages = 0
        self.parse_errors = 0

    def packet(self, pkt: Any) -> None:
        if pkt.payload_len == 0 or self.ctx.inventory is None:
            return
        buf = bytes(pkt.payload)
        try:
            if pkt.src_port in (546, 547) or pkt.dest_port in (546, 547):
                self._v6(pkt, buf)
            else:
                self._v4(pkt, buf)
        except (ValueError, IndexError, struct.error):
            self.parse_errors += 1

    def _local(self, pkt: Any, *ips: str | None) -> bool:
        """DHCP seen on the camera network: any address involved is local (broadcast counts)."""
        return any(ip and self.ctx.is_local(ip) for ip in (*ips, pkt.src_ip, pkt.dest_ip))

    def _v4(self, pkt: Any, buf: bytes) -> None:
        facts = parse_dhcp4(buf)
        if facts is None or not facts.get("mac"):
            return
        self.messages += 1
        inv = self.ctx.inventory
        mac = facts["mac"]
        if facts["op"] == 1:
            ip = facts.get("ciaddr")
            ip = ip if ip and ip != "0.0.0.0" else None  # noqa: S104 - the unspecified address, not a bind
            if not self._local(pkt, ip, facts.get("requested_ip")):
                return
            dev = inv.observe(mac, ip, pkt.ts, pkt.vlan)
            if dev is None:
                return
            inv.set_dhcp(
                dev.key,
                hostname=facts.get("hostname"),
                vendor_class=facts.get("vendor_class"),
                dhcp_fingerprint=facts.get("dhcp_fingerprint"),
                requested_ip=facts.get("requested_ip"),
                client_id=facts.get("client_id"),
                mud_url=facts.get("mud_url"),
            )
        elif facts["msg_type"] == DHCPACK:
            ip = facts.get("yiaddr")
            if not ip or ip == "0.0.0.0" or not self.ctx.is_local(ip):  # noqa: S104
                return
            inv.observe(mac, ip, pkt.ts, pkt.vlan)
        else:
            return
        inv.publish(self.ctx, ts=pkt.ts, pkt=pkt, flow=pkt.flow)

    def _v6(self, pkt: Any, buf: bytes) -> None:
        facts = parse_dhcp6(buf)
        if facts is None:
            return
        self.messages += 1
        inv = self.ctx.inventory
        mac = facts.get("mac")
        msg_type = facts["msg_type"]
        if msg_type in DHCP6_CLIENT_TYPES:
            if mac is None and not facts["relayed"]:
                mac = pkt.src_mac_text
            if mac is None or not self._local(pkt):
                return
            src = pkt.src_ip if not facts["relayed"] else None
            dev = inv.observe(mac, src, pkt.ts, pkt.vlan)
            if dev is None:
                return
            inv.set_dhcp(
                dev.key,
                hostname=facts.get("hostname"),
                vendor_class=facts.get("vendor_class"),
                dhcpv6_fingerprint=facts.get("dhcpv6_fingerprint"),
                mud_url=facts.get("mud_url"),
            )
        elif msg_type in DHCP6_REPLY_TYPES and mac and facts["addresses"]:
            for addr in facts["addresses"]:
                if self.ctx.is_local(addr):
                    inv.observe(mac, addr, pkt.ts, pkt.vlan)
        else:
            return
        inv.publish(self.ctx, ts=pkt.ts, pkt=pkt, flow=pkt.flow)
