"""DNS and mDNS: passive DNS for destination naming, names asked per device, `dns` events.

* Unicast DNS (UDP 53, and TCP 53 when a segment holds whole length-prefixed messages; no stream
  reassembly): a *response* fills agent.dnscache.PassiveDNS for the device it is addressed to (the
  querying device: the response's destination MAC, or its IP without a link layer), records the
  question name in that device's inventory entry, and emits one `dns` event per response. Queries
  only record the asked name (so names are known even when no answer comes back).
* mDNS (UDP 5353): names a local device *announces* about itself (host names, service instances)
  go to its inventory entry (`mdns_names`); a Hikvision instance name ("HIKVISION <model> - <serial>")
  also sets vendor and model. mDNS never feeds the passive DNS used to name destinations, and emits
  no `dns` events (it is chatty and says nothing about where a device connects).

Messages are parsed by a small tolerant parser here rather than dpkt.dns, which rejects a whole
message when one record has a type it does not know (NSEC in mDNS, HTTPS/SVCB from modern resolvers).
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

from agent.inventory import device_key
from analyzers.base import Analyzer

RRTYPES = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    12: "PTR",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    41: "OPT",
    47: "NSEC",
    64: "SVCB",
    65: "HTTPS",
    255: "ANY",
}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
_NAME_TYPES = frozenset({2, 5, 12})  # rdata is a (possibly compressed) domain name
_HDR = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_MAX_RECORDS = 256
_FLUSH_INTERVAL = 30.0  # capture seconds between writes of learnt names to the state store
_HIK_MDNS = re.compile(r"^HIKVISION\s+(\S+)\s+-\s+(\w+)", re.IGNORECASE)


class DnsParseError(ValueError):
    pass


@dataclass(slots=True)
class Record:
    name: str
    rrtype: int
    ttl: int
    data: str  # text form: address, target name, or "" for types not rendered

    @property
    def type_name(self) -> str:
        return RRTYPES.get(self.rrtype, str(self.rrtype))


@dataclass(slots=True)
class Message:
    id: int
    qr: bool
    opcode: int
    rcode: int
    questions: list[tuple[str, int]] = field(default_factory=list)
    answers: list[Record] = field(default_factory=list)
    additional: list[Record] = field(default_factory=list)


def _name(buf: bytes, off: int) -> tuple[str, int]:
    """Read a domain name at `off`; returns (name, offset after the name in the original position)."""
    labels: list[str] = []
    end = -1
    jumps = 0
    n = len(buf)
    while True:
        if off >= n:
            raise DnsParseError("name runs past the end")
        length = buf[off]
        if length == 0:
            off += 1
            break
        if length & 0xC0 == 0xC0:
            if off + 1 >= n:
                raise DnsParseError("truncated compression pointer")
            if end < 0:
                end = off + 2
            jumps += 1
            if jumps > 32:
                raise DnsParseError("compression loop")
            off = ((length & 0x3F) << 8) | buf[off + 1]
            continue
        if length & 0xC0:
            raise DnsParseError("unsupported label type")
        label = buf[off + 1 : off + 1 + length]
        if len(label) != length:
            raise DnsParseError("truncated label")
        labels.append(label.decode("ascii", "backslashreplace"))
        off += 1 + length
    return ".".join(labels), (end if end >= 0 else off)


def parse_dns(buf: bytes) -> Message:
    """Parse a DNS/mDNS message (header, questions, answer/authority/additional records)."""
    if len(buf) < _HDR.size:
        raise DnsParseError("shorter than a DNS header")
    ident, flags, qd, an, ns, ar = _HDR.unpack_from(buf, 0)
    if qd + an + ns + ar > _MAX_RECORDS:
        raise DnsParseError("implausible record counts")
    msg = Message(ident, bool(flags & 0x8000), (flags >> 11) & 0xF, flags & 0xF)
    off = _HDR.size
    for _ in range(qd):
        name, off = _name(buf, off)
        if off + 4 > len(buf):
            raise DnsParseError("truncated question")
        qtype = struct.unpack_from("!H", buf, off)[0]
        off += 4
        msg.questions.append((name, qtype))
    for section, count in ((msg.answers, an), (None, ns), (msg.additional, ar)):
        for _ in range(count):
            name, off = _name(buf, off)
            if off + _RR.size > len(buf):
                raise DnsParseError("truncated record header")
            rrtype, _cls, ttl, rdlen = _RR.unpack_from(buf, off)
            off += _RR.size
            rdata_end = off + rdlen
            if rdata_end > len(buf):
                raise DnsParseError("truncated rdata")
            data = ""
            if rrtype == 1 and rdlen == 4:
                data = ".".join(str(b) for b in buf[off:rdata_end])
            elif rrtype == 28 and rdlen == 16:
                data = str(ipaddress.IPv6Address(bytes(buf[off:rdata_end])))
            elif rrtype in _NAME_TYPES:
                data = _name(buf, off)[0]
            elif rrtype == 33 and rdlen > 6:
                data = _name(buf, off + 6)[0]
            if section is not None:
                section.append(Record(name, rrtype, ttl, data))
            off = rdata_end
    return msg


def _tcp_messages(payload: bytes) -> list[bytes]:
    """Whole length-prefixed DNS messages contained in one TCP segment (no reassembly)."""
    out = []
    off = 0
    while off + 2 <= len(payload):
        length = int.from_bytes(payload[off : off + 2], "big")
        if length == 0 or off + 2 + length > len(payload):
            break
        out.append(payload[off + 2 : off + 2 + length])
        off += 2 + length
    return out


class DnsAnalyzer(Analyzer):
    NAME = "dns"
    UDP_PORTS: ClassVar[frozenset[int]] = frozenset({53, 5353})
    TCP_PORTS: ClassVar[frozenset[int]] = frozenset({53})

    def setup(self, ctx: Any) -> None:
        super().setup(ctx)
        self.store = getattr(ctx, "store", None)
        self.responses = 0
        self.parse_errors = 0
        self._names: dict[tuple[str, str, str], list[float]] = {}  # pending store.record_name
        self._next_flush = 0.0
        if (
            self.store is not None
            and hasattr(self.store, "load_names")
            and getattr(ctx, "dns", None) is not None
        ):
            load = getattr(ctx.dns, "load", None)
            if load is not None:
                load(self.store)

    def packet(self, pkt: Any) -> None:
        if pkt.payload_len == 0:
            return
        raw = bytes(pkt.payload)
        messages = _tcp_messages(raw) if pkt.proto == 6 else [raw]
        mdns = pkt.src_port == 5353 or pkt.dest_port == 5353
        for buf in messages:
            try:
                msg = parse_dns(buf)
            except (DnsParseError, UnicodeError, ValueError, IndexError, struct.error):
                self.parse_errors += 1
                continue
            if mdns:
                self._mdns(pkt, msg)
            elif msg.qr and pkt.src_port == 53:
                self._response(pkt, msg)
            elif not msg.qr and pkt.dest_port == 53:
                self._query(pkt, msg)

    def _device(self, mac: str | None, ip: str, pkt: Any) -> str | None:
        """Inventory key of a local endpoint (creating the device), or None when not local."""
        if not self.ctx.is_local(ip):
            return None
        dev = (
            self.ctx.inventory.observe(mac, ip, pkt.ts, pkt.vlan) if self.ctx.inventory is not None else None
        )
        return dev.key if dev is not None else device_key(mac, ip)

    def _query(self, pkt: Any, msg: Message) -> None:
        key = self._device(pkt.src_mac_text, pkt.src_ip, pkt)
        if key is None or not msg.questions:
            return
        inv = self.ctx.inventory
        if inv is not None:
            for qname, _qtype in msg.questions:
                inv.add_dns_name(key, qname.rstrip(".").lower())
            inv.publish(self.ctx, ts=pkt.ts, pkt=pkt, flow=pkt.flow)

    def _response(self, pkt: Any, msg: Message) -> None:
        mac, ip = pkt.dest_mac_text, pkt.dest_ip
        key = self._device(mac, ip, pkt)
        if key is None or not msg.questions:
            return
        qname, qtype = msg.questions[0]
        qname = qname.rstrip(".").lower()
        inv = self.ctx.inventory
        if inv is not None:
            inv.add_dns_name(key, qname)
        answers = [(r.name, r.type_name, r.data, r.ttl) for r in msg.answers]
        recorded: list[str] = []
        if self.ctx.dns is not None and msg.rcode == 0:
            recorded = self.ctx.dns.add_response(key, qname, answers, pkt.ts)
            if self.store is not None:
                for addr in recorded:
                    seen = self._names.setdefault((key, addr, qname), [pkt.ts, pkt.ts])
                    seen[1] = pkt.ts
        self.responses += 1
        body: dict[str, Any] = {}
        dev = inv.get(key) if inv is not None else None
        dev_mac = dev.mac if dev is not None else None
        if dev_mac:
            body["device"] = dev_mac
        else:
            body["device_ip"] = ip
        body.update(
            {
                "type": "answer",
                "id": msg.id,
                "rrname": qname,
                "rrtype": RRTYPES.get(qtype, str(qtype)),
                "rcode": RCODES.get(msg.rcode, str(msg.rcode)),
            }
        )
        if msg.answers:
            body["ttl"] = min(r.ttl for r in msg.answers)
            body["answers"] = [r.data for r in msg.answers if r.data]
            body["records"] = [
                {"rrname": r.name.lower(), "rrtype": r.type_name, "ttl": r.ttl, "rdata": r.data}
                for r in msg.answers
            ]
        self.ctx.emit("dns", body, ts=pkt.ts, pkt=pkt, flow=pkt.flow)
        if inv is not None:
            inv.publish(self.ctx, ts=pkt.ts, pkt=pkt, flow=pkt.flow)

    def _mdns(self, pkt: Any, msg: Message) -> None:
        if not msg.qr:
            return
        key = self._device(pkt.src_mac_text, pkt.src_ip, pkt)
        inv = self.ctx.inventory
        if key is None or inv is None:
            return
        for r in msg.answers + msg.additional:
            name = r.name.rstrip(".")
            if r.rrtype == 12:  # PTR: service type -> instance name, or reverse mapping
                if name.endswith(".arpa") or not r.data or r.data.startswith("_services."):
                    continue
                if name.startswith("_"):
                    self._mdns_name(inv, key, r.data.rstrip("."))
            elif r.rrtype in (1, 28, 33, 16) and not name.endswith(".arpa"):
                self._mdns_name(inv, key, name)
        inv.publish(self.ctx, ts=pkt.ts, pkt=pkt, flow=pkt.flow)

    @staticmethod
    def _mdns_name(inv: Any, key: str, name: str) -> None:
        inv.add_mdns_name(key, name)
        m = _HIK_MDNS.match(name)
        if m:
            inv.update_identity(key, source="mdns", vendor="hikvision", family="hikvision", model=m.group(1))

    def tick(self, now: float) -> None:
        if self._names and now >= self._next_flush:
            self._flush()
            self._next_flush = now + _FLUSH_INTERVAL

    def done(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if self.store is None or not hasattr(self.store, "record_name"):
            self._names.clear()
            return
        for (device, ip, name), (first, last) in self._names.items():
            self.store.record_name(device, ip, name, first)
            if last != first:
                self.store.record_name(device, ip, name, last)
        self._names.clear()
