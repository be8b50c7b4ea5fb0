"""Test harness for the core-detection tests: a Context implementation, an in-memory store, frame
builders and a minimal capture driver (dpkt-decoded frames -> Packet / Flow -> analyzer hooks).

This is scaffolding around the code under test, not a mock of it: the analyzers, inventory, passive
DNS, policy and catalogues used with it are the real ones. The driver mirrors the hook order of
agent.pipeline (flow_start on a flow's first packet, before that packet's subscribed `packet()`
calls; `tick` once per capture second; `flow_end` for every flow and then `done` at the end).
The tests at the bottom check the harness itself against dpkt.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import dpkt

from agent.catalogue import EndpointCatalogue
from agent.config import ALWAYS_LOCAL_CIDRS, Config
from agent.dnscache import PassiveDNS
from agent.inventory import Inventory
from agent.model import LINKTYPE_ETHERNET, Flow, Packet
from agent.policy import Policy
from agent.stats import Counters

TCP_SYN, TCP_ACK = 0x02, 0x10


class FakeStore:
    """In-memory implementation of the state-store calls the core detection uses."""

    def __init__(self) -> None:
        self.devices: dict[str, dict[str, Any]] = {}
        self.destinations: dict[tuple[str, str, int, str], dict[str, Any]] = {}
        self.baseline: dict[str, set[tuple[str, str]]] = {}
        self.meta: dict[str, str] = {}
        self.names: dict[tuple[str, str, str], list[float]] = {}
        self.calls: Counter[str] = Counter()

    def upsert_device(self, mac: str, record: dict[str, Any]) -> None:
        self.calls["upsert_device"] += 1
        self.devices[mac] = {**self.devices.get(mac, {}), **record}

    def load_devices(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self.devices.items()}

    def record_destination(
        self, device: str, dest_ip: str, dest_port: int, proto: str, info: dict[str, Any], ts: float
    ) -> bool:
        self.calls["record_destination"] += 1
        key = (device, dest_ip, int(dest_port), proto)
        row = self.destinations.get(key)
        if row is None:
            self.destinations[key] = {"first_seen": ts, "last_seen": ts, "count": 1, "info": dict(info)}
            return True
        row["first_seen"] = min(row["first_seen"], ts)
        row["last_seen"] = max(row["last_seen"], ts)
        row["count"] += 1
        row["info"].update(info)
        return False

    def load_destination_keys(self) -> set[tuple[str, str, int, str]]:
        return set(self.destinations)

    def add_baseline(self, device: str, kind: str, value: str, ts: float) -> None:
        self.calls["add_baseline"] += 1
        self.baseline.setdefault(device, set()).add((kind, value))

    def load_baseline(self) -> dict[str, set[tuple[str, str]]]:
        return {k: set(v) for k, v in self.baseline.items()}

    def get_meta(self, key: str) -> str | None:
        return self.meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self.meta[key] = str(value)

    def record_name(self, device: str, ip: str, name: str, ts: float) -> None:
        self.calls["record_name"] += 1
        seen = self.names.setdefault((device, ip, name), [ts, ts])
        seen[0], seen[1] = min(seen[0], ts), max(seen[1], ts)

    def load_names(self) -> list[tuple[str, str, str, float, float]]:
        rows = [(d, ip, n, f, last) for (d, ip, n), (f, last) in self.names.items()]
        return sorted(rows, key=lambda r: r[4])


class NoGeo:
    """Geo stand-in answering from a fixed table (keeps tests independent of the bundled data)."""

    def __init__(self, countries: dict[str, str] | None = None) -> None:
        self.countries = countries or {}

    def country(self, ip: str) -> str | None:
        return self.countries.get(ip)

    def asn(self, ip: str) -> None:
        return None


class FakeContext:
    """Implements analyzers.base.Context with the real shared objects; records emitted events."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        policy_doc: Any = None,
        store: Any = None,
        geo: Any = None,
        catalogue: EndpointCatalogue | None = None,
        local_all: bool = False,
    ) -> None:
        self.config = config or Config()
        self.catalogue = catalogue or EndpointCatalogue(self.config)
        self.inventory = Inventory(self.config, self.catalogue)
        self.dns = PassiveDNS(self.config)
        if policy_doc is None:
            self.policy = Policy(self.config, self.catalogue)
        else:
            self.policy = Policy.from_dict(policy_doc, catalogue=self.catalogue, config=self.config)
        self.geo = geo if geo is not None else NoGeo()
        self.counters = Counters()
        self.store = store
        self.events: list[tuple[str, dict[str, Any], float, Flow | None, Packet | None]] = []
        self.local_all = local_all
        self._nets = list(self.config.local_cidrs) + [ipaddress.ip_network(c) for c in ALWAYS_LOCAL_CIDRS]

    def emit(
        self,
        event_type: str,
        body: dict[str, Any],
        *,
        ts: float,
        flow: Flow | None = None,
        pkt: Packet | None = None,
    ) -> None:
        self.events.append((event_type, body, ts, flow, pkt))

    def is_local(self, ip: str, vlan: tuple[int, ...] = ()) -> bool:
        if self.local_all:
            return True
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in n for n in self._nets if n.version == addr.version)

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [body for t, body, *_ in self.events if t == event_type]


# ------------------------------------------------------------------------------------------------
# frames


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def udp_frame(
    src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, sport: int, dport: int, payload: bytes = b""
) -> bytes:
    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    udp.ulen = len(udp)
    return _eth(src_mac, dst_mac, src_ip, dst_ip, 17, udp)


def tcp_frame(
    src_mac: str,
    dst_mac: str,
    src_ip: str,
    dst_ip: str,
    sport: int,
    dport: int,
    flags: int = TCP_SYN,
    payload: bytes = b"",
) -> bytes:
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, data=payload)
    return _eth(src_mac, dst_mac, src_ip, dst_ip, 6, tcp)


def icmp_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, icmp_type: int, code: int = 0) -> bytes:
    icmp = dpkt.icmp.ICMP(type=icmp_type, code=code, data=dpkt.icmp.ICMP.Echo(id=1, seq=1, data=b"x"))
    return _eth(src_mac, dst_mac, src_ip, dst_ip, 1, icmp)


def _eth(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, proto: int, l4: Any) -> bytes:
    if ":" in src_ip:
        ip: Any = dpkt.ip6.IP6(
            src=socket.inet_pton(socket.AF_INET6, src_ip),
            dst=socket.inet_pton(socket.AF_INET6, dst_ip),
            nxt=proto,
            hlim=64,
            data=l4,
            plen=len(bytes(l4)),
        )
        etype = dpkt.ethernet.ETH_TYPE_IP6
    else:
        ip = dpkt.ip.IP(src=socket.inet_aton(src_ip), dst=socket.inet_aton(dst_ip), p=proto, ttl=64, data=l4)
        ip.len = len(ip)
        etype = dpkt.ethernet.ETH_TYPE_IP
    eth = dpkt.ethernet.Ethernet(src=_mac(src_mac), dst=_mac(dst_mac), type=etype, data=ip)
    return bytes(eth)


def dns_response(
    qname: str, answers: Iterable[tuple[str, str, Any, int]], *, rcode: int = 0, ident: int = 7
) -> bytes:
    """Wire-format DNS response. answers: (owner, 'A'|'AAAA'|'CNAME', value, ttl)."""
    d = dpkt.dns.DNS(id=ident, qr=1, opcode=0, rcode=rcode)
    d.qd = [dpkt.dns.DNS.Q(name=qname, type=dpkt.dns.DNS_A, cls=dpkt.dns.DNS_IN)]
    rrs = []
    for owner, rtype, value, ttl in answers:
        rr = dpkt.dns.DNS.RR(name=owner, cls=dpkt.dns.DNS_IN, ttl=ttl)
        if rtype == "A":
            rr.type, rr.ip = dpkt.dns.DNS_A, socket.inet_aton(value)
            rr.rdata = rr.ip
        elif rtype == "AAAA":
            rr.type, rr.ip6 = dpkt.dns.DNS_AAAA, socket.inet_pton(socket.AF_INET6, value)
            rr.rdata = rr.ip6
        else:
            rr.type, rr.cname = dpkt.dns.DNS_CNAME, value
        rrs.append(rr)
    d.an = rrs
    return bytes(d)


def dns_query(qname: str, ident: int = 7) -> bytes:
    d = dpkt.dns.DNS(id=ident, qr=0, opcode=0)
    d.qd = [dpkt.dns.DNS.Q(name=qname, type=dpkt.dns.DNS_A, cls=dpkt.dns.DNS_IN)]
    return bytes(d)


# ------------------------------------------------------------------------------------------------
# decoding and driving


def decode(frame: bytes, ts: float) -> Packet | None:
    """Build a Packet (offsets into the frame) from an Ethernet frame, as the pipeline would;
    None for frames the pipeline would count as decode errors."""
    try:
        return _decode(frame, ts)
    except (dpkt.UnpackError, struct.error, IndexError):
        return None


def _decode(frame: bytes, ts: float) -> Packet | None:
    off = 14
    etype = struct.unpack_from("!H", frame, 12)[0]
    vlan: list[int] = []
    while etype in (0x8100, 0x88A8):
        vlan.append(struct.unpack_from("!H", frame, off)[0] & 0x0FFF)
        etype = struct.unpack_from("!H", frame, off + 2)[0]
        off += 4
    src_mac, dst_mac = frame[6:12], frame[0:6]
    view = memoryview(frame)
    if etype == 0x0800:
        ip = dpkt.ip.IP(frame[off:])
        ver, sip, dip, proto, l4_off = 4, ip.src, ip.dst, ip.p, off + ip.hl * 4
    elif etype == 0x86DD:
        ip = dpkt.ip6.IP6(frame[off:])
        ver, sip, dip, proto, l4_off = 6, ip.src, ip.dst, ip.nxt, off + 40
    else:
        return Packet(
            ts,
            LINKTYPE_ETHERNET,
            view,
            tuple(vlan),
            src_mac,
            dst_mac,
            etype,
            off,
            0,
            b"",
            b"",
            0,
            0,
            0,
            0,
            off,
            0,
            None,
        )
    sport = dport = flags = 0
    pay = l4_off
    if proto == 17 and len(frame) >= l4_off + 8:
        sport, dport = struct.unpack_from("!HH", frame, l4_off)
        pay = l4_off + 8
    elif proto == 6 and len(frame) >= l4_off + 20:
        sport, dport = struct.unpack_from("!HH", frame, l4_off)
        flags = frame[l4_off + 13]
        pay = l4_off + (frame[l4_off + 12] >> 4) * 4
    elif proto in (1, 58) and len(frame) >= l4_off + 2:
        sport, dport = frame[l4_off], frame[l4_off + 1]  # type, code (as the pipeline keys ICMP)
        pay = l4_off + 4
    end = off + ip.len if ver == 4 else off + 40 + ip.plen
    paylen = max(0, min(end, len(frame)) - pay)
    return Packet(
        ts,
        LINKTYPE_ETHERNET,
        view,
        tuple(vlan),
        src_mac,
        dst_mac,
        etype,
        off,
        ver,
        sip,
        dip,
        proto,
        sport,
        dport,
        flags,
        pay,
        paylen,
        None,
    )


class Driver:
    """Feeds frames through flows and analyzer hooks like agent.pipeline does."""

    def __init__(self, ctx: FakeContext, analyzers: Iterable[Any]) -> None:
        self.ctx = ctx
        self.analyzers = list(analyzers)
        for a in self.analyzers:
            a.setup(ctx)
        self.flows: dict[Any, tuple[Flow, tuple[Any, ...]]] = {}
        self.next_tick: float | None = None
        self.next_id = 1

    def feed(self, frame: bytes, ts: float) -> Packet | None:
        pkt = decode(frame, ts)
        if pkt is None or pkt.ip_version == 0:
            return pkt
        self._clock(ts)
        a_end = (pkt.src_ip, pkt.src_port)
        b_end = (pkt.dest_ip, pkt.dest_port)
        key = (pkt.vlan, pkt.proto, frozenset((a_end, b_end)))
        entry = self.flows.get(key)
        fresh = entry is None
        if entry is None:
            reply_first = pkt.proto == 6 and pkt.tcp_flags & (TCP_SYN | TCP_ACK) == (TCP_SYN | TCP_ACK)
            src, dst = (b_end, a_end) if reply_first else (a_end, b_end)
            smac, dmac = (pkt.dest_mac, pkt.src_mac) if reply_first else (pkt.src_mac, pkt.dest_mac)
            flow = Flow(
                self.next_id,
                pkt.vlan,
                pkt.proto,
                src[0],
                src[1],
                dst[0],
                dst[1],
                smac.hex(":") if smac else None,
                dmac.hex(":") if dmac else None,
                ts,
                ts,
            )
            self.next_id += 1
            entry = (flow, src)
            self.flows[key] = entry
        flow, origin = entry
        forward = a_end == origin
        flow.last_ts = ts
        flow.tcp_flags_seen |= pkt.tcp_flags
        if forward:
            flow.pkts_toserver += 1
            flow.bytes_toserver += len(pkt.frame)
        else:
            flow.pkts_toclient += 1
            flow.bytes_toclient += len(pkt.frame)
        pkt.flow, pkt.from_originator = flow, forward
        if fresh:
            for a in self.analyzers:
                if a.FLOW_EVENTS and hasattr(a, "flow_start"):
                    a.flow_start(flow, pkt)
        for a in self.analyzers:
            ports = a.UDP_PORTS if pkt.proto == 17 else a.TCP_PORTS if pkt.proto == 6 else frozenset()
            if (pkt.src_port in ports or pkt.dest_port in ports) and hasattr(a, "packet"):
                a.packet(pkt)
        return pkt

    def _clock(self, ts: float) -> None:
        if self.next_tick is None or ts >= self.next_tick:
            for a in self.analyzers:
                if hasattr(a, "tick"):
                    a.tick(ts)
            self.next_tick = ts + 1.0

    def finish(self) -> None:
        for flow, _origin in self.flows.values():
            flow.ended = True
            for a in self.analyzers:
                if a.FLOW_EVENTS and hasattr(a, "flow_end"):
                    a.flow_end(flow)
        self.flows.clear()
        for a in self.analyzers:
            if hasattr(a, "done"):
                a.done()

    def replay(self, path: Path) -> int:
        n = 0
        for ts, frame in read_frames(path):
            self.feed(frame, ts)
            n += 1
        return n


def read_frames(path: Path) -> Iterator[tuple[float, bytes]]:
    with open(path, "rb") as fh:
        reader: Any = dpkt.pcapng.Reader(fh) if str(path).endswith(".pcapng") else dpkt.pcap.Reader(fh)
        for ts, buf in reader:
            yield float(ts), bytes(buf)


# ------------------------------------------------------------------------------------------------
# self-tests of the harness


def test_decode_offsets_match_dpkt() -> None:
    frame = udp_frame("00:11:22:33:44:55", "66:77:88:99:aa:bb", "10.0.0.2", "8.8.8.8", 40000, 53, b"hello")
    pkt = decode(frame, 1.0)
    assert pkt is not None
    assert (pkt.src_ip, pkt.dest_ip, pkt.src_port, pkt.dest_port) == ("10.0.0.2", "8.8.8.8", 40000, 53)
    assert bytes(pkt.payload) == b"hello"
    assert pkt.l3().data.data == b"hello"
    assert pkt.src_mac_text == "00:11:22:33:44:55"


def test_decode_ipv6_and_tcp_flags() -> None:
    frame = tcp_frame("00:11:22:33:44:55", "66:77:88:99:aa:bb", "fd00::2", "2001:db8::1", 5555, 443, TCP_SYN)
    pkt = decode(frame, 1.0)
    assert pkt is not None and pkt.ip_version == 6
    assert pkt.dest_ip == "2001:db8::1" and pkt.tcp_flags == TCP_SYN and pkt.payload_len == 0


def test_driver_orients_syn_ack_first_flows_like_the_pipeline() -> None:
    ctx = FakeContext()
    drv = Driver(ctx, [])
    drv.feed(tcp_frame("aa:00:00:00:00:02", "aa:00:00:00:00:01", "8.8.8.8", "10.0.0.2", 443, 5555, 0x12), 1.0)
    ((flow, _),) = drv.flows.values()
    assert (flow.src_ip, flow.dest_port) == ("10.0.0.2", 443)
    assert flow.src_mac == "aa:00:00:00:00:01"
