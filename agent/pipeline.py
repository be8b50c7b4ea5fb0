"""The packet pipeline: batches of capture records in, flows and analyzer hooks out.

Hot path rules (see docs/architecture.md): headers are sliced with precompiled `struct.Struct`
objects straight from the batch buffer; the only per-packet allocations are the flow-key tuple
and two address slices; a `Packet` object (and a dpkt object, on demand) is built only for the
packets some analyzer subscribed to.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable
from typing import Any

from agent.flowid import flow_id_for
from agent.flows import TCP_ACK, TCP_SYN, FlowTable
from agent.model import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    Flow,
    Packet,
    ip_text,
    mac_text,
)
from agent.stats import Counters
from analyzers.base import Analyzer, defines

_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_PORTS = struct.Struct("!HH")
_ETHERTYPE = struct.Struct("!H")
# Ethernet + IPv4 (IHL 5) + ports in one call: vihl, total length, flags/fragment, proto, src, dst, ports
_FAST_UNTAGGED = struct.Struct("!14xBxH2xHxBxx4s4sHH")
_FAST_TAGGED = struct.Struct("!14xH2xBxH2xHxBxx4s4sHH")  # same behind one 802.1Q tag (TCI first)

ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100, 0x9200))
# IPv6 extension headers whose length byte counts 8-octet units beyond the first 8 octets.
IPV6_GENERIC_EXT = frozenset((0, 43, 60, 135, 139, 140))
IPV6_FRAGMENT, IPV6_AH = 44, 51
PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_ICMP6 = 6, 17, 1, 58

# ICMP request/reply types that belong to one conversation: key both on the request type.
ICMP_PAIRS = {0: 8, 14: 13, 16: 15, 18: 17, 10: 9}
ICMP6_PAIRS = {129: 128, 131: 130, 134: 133, 136: 135}

# A first packet *from* one of these ports (to a port not in the set) is taken as a reply, so the
# other side becomes the flow's originator. Matters when a capture starts mid-conversation.
LIKELY_SERVER_PORTS = frozenset(range(1, 1024)) | frozenset(
    (
        1883,
        3702,
        5353,
        5683,
        8000,
        8080,
        8443,
        8554,
        8666,
        8800,
        31006,
        32100,
        32108,
        34567,
        34568,
        34569,
        37020,
        37777,
        37810,
        9527,
        9530,
        1900,
        5060,
    )
)

# Lowest ephemeral (client) port on Linux; Windows and BSD start higher (49152).
EPHEMERAL_PORT_MIN = 32768

SWEEP_INTERVAL = 10.0  # seconds of capture time between flow-timeout sweeps


class Dispatch:
    """Dispatch tables derived once from the analyzers' declarations."""

    def __init__(self, analyzers: Iterable[Analyzer]) -> None:
        self.analyzers = list(analyzers)
        self.udp: dict[int, list[Analyzer]] = {}
        self.tcp: dict[int, list[Analyzer]] = {}
        self.ether: dict[int, list[Analyzer]] = {}
        self.tcp_payload: list[tuple[int, Analyzer]] = []
        self.udp_payload: list[tuple[int, Analyzer]] = []
        self.flow_start: list[Analyzer] = []
        self.flow_end: list[Analyzer] = []
        self.tick: list[Analyzer] = []
        self.done: list[Analyzer] = []
        names: set[str] = set()
        for a in self.analyzers:
            if not a.NAME or a.NAME in names:
                raise ValueError(f"analyzer {type(a).__name__} needs a unique NAME (got {a.NAME!r})")
            names.add(a.NAME)
            wants_packets = defines(a, "packet")
            if wants_packets:
                for port in a.UDP_PORTS:
                    self.udp.setdefault(port, []).append(a)
                for port in a.TCP_PORTS:
                    self.tcp.setdefault(port, []).append(a)
                for et in a.ETHERTYPES:
                    self.ether.setdefault(et, []).append(a)
                if a.TCP_PAYLOAD_PACKETS:
                    self.tcp_payload.append((a.TCP_PAYLOAD_PACKETS, a))
                if a.UDP_PAYLOAD_PACKETS:
                    self.udp_payload.append((a.UDP_PAYLOAD_PACKETS, a))
            if a.FLOW_EVENTS and defines(a, "flow_start"):
                self.flow_start.append(a)
            if a.FLOW_EVENTS and defines(a, "flow_end"):
                self.flow_end.append(a)
            if defines(a, "tick"):
                self.tick.append(a)
            if defines(a, "done"):
                self.done.append(a)
        self.udp_ports = frozenset(self.udp)
        self.tcp_ports = frozenset(self.tcp)
        self.max_tcp_payload = max((n for n, _ in self.tcp_payload), default=0)
        self.max_udp_payload = max((n for n, _ in self.udp_payload), default=0)


class Pipeline:
    """Feeds record batches through decode, the flow table and the analyzers."""

    def __init__(
        self,
        analyzers: Iterable[Analyzer],
        counters: Counters,
        *,
        idle_timeout: float = 120.0,
        active_timeout: float = 3600.0,
        max_flows: int = 200_000,
        in_iface: str | None = None,
    ) -> None:
        self.dispatch = Dispatch(analyzers)
        self.counters = counters
        self.flows = FlowTable(
            idle_timeout=idle_timeout,
            active_timeout=active_timeout,
            max_flows=max_flows,
            counters=counters,
            on_end=self._flow_ended,
        )
        self.in_iface = in_iface
        self.next_sweep = 0.0
        self.next_tick = 0.0
        self.now = 0.0
        self.expected: dict[tuple[int, str, int], tuple[Analyzer, float]] = {}

    # -- dynamic subscriptions ------------------------------------------------------------------
    def follow(self, flow: Flow, analyzer: Analyzer) -> None:
        """Deliver every later packet of `flow` to `analyzer` (e.g. an update download to carve)."""
        if flow.followers is None:
            flow.followers = [analyzer]
        elif analyzer not in flow.followers:
            flow.followers = [*flow.followers, analyzer]

    def unfollow(self, flow: Flow, analyzer: Analyzer) -> None:
        if flow.followers and analyzer in flow.followers:
            rest = [a for a in flow.followers if a is not analyzer]
            flow.followers = rest or None

    def expect(self, proto: int, ip: str, port: int, analyzer: Analyzer, until: float) -> None:
        """A flow to or from `ip`:`port` that starts before capture time `until` is followed by
        `analyzer` (FTP data connections, TFTP transfers on a new server port)."""
        self.expected[(proto, ip, port)] = (analyzer, until)

    def _match_expected(self, flow: Flow) -> None:
        for ip, port in ((flow.dest_ip, flow.dest_port), (flow.src_ip, flow.src_port)):
            hit = self.expected.get((flow.proto, ip, port))
            if hit is not None:
                analyzer, until = hit
                del self.expected[(flow.proto, ip, port)]
                if flow.first_ts <= until:
                    self.follow(flow, analyzer)
                return

    # -- analyzer callbacks -------------------------------------------------------------------
    def _flow_ended(self, flow: Flow) -> None:
        for a in self.dispatch.flow_end:
            a.flow_end(flow)

    def _deliver(self, targets: Iterable[Analyzer], pkt: Packet) -> None:
        for a in targets:
            a.packet(pkt)

    def _clock(self, ts: float) -> None:
        """Timers driven by capture time: flow sweeps and analyzer ticks."""
        if ts >= self.next_sweep:
            if self.next_sweep:
                self.flows.sweep(ts)
                if self.expected:
                    self.expected = {k: v for k, v in self.expected.items() if v[1] >= ts}
            self.next_sweep = ts + SWEEP_INTERVAL
        if ts >= self.next_tick:
            for a in self.dispatch.tick:
                a.tick(ts)
            self.next_tick = ts + 1.0

    def advance(self, now: float) -> None:
        """Move capture time forward without a packet (a quiet live link): flows still time out
        and analyzers still tick."""
        self._clock(now)

    def finish(self) -> None:
        """End of input: end all flows, then let analyzers flush."""
        self.flows.drain()
        for a in self.dispatch.done:
            a.done()
        self.counters.flows_active = 0

    # -- the hot path -------------------------------------------------------------------------
    def run_batch(self, batch: Any) -> None:
        """Process one RecordBatch (see agent.capture.pcapfile). One long loop on purpose: hot path."""
        data = batch.data
        if not isinstance(data, bytes):
            data = bytes(data)
        linktype = batch.linktype
        counters = self.counters
        decode_errors = counters.decode_errors
        by_key = self.flows.by_key
        dispatch = self.dispatch
        udp_ports, tcp_ports, ether_subs = dispatch.udp_ports, dispatch.tcp_ports, dispatch.ether
        max_tcp_payload, max_udp_payload = dispatch.max_tcp_payload, dispatch.max_udp_payload
        ipv4_unpack, ipv6_unpack, ports_unpack = _IPV4.unpack_from, _IPV6.unpack_from, _PORTS.unpack_from
        fast_untagged, fast_tagged = _FAST_UNTAGGED.unpack_from, _FAST_TAGGED.unpack_from
        next_clock = min(self.next_sweep, self.next_tick)
        npkts = 0
        nbytes = 0
        ts = self.now
        for ts, off, caplen, origlen in zip(
            batch.ts, batch.offsets, batch.caplens, batch.origlens, strict=True
        ):
            npkts += 1
            nbytes += origlen
            if ts >= next_clock:
                self._clock(ts)
                next_clock = min(self.next_sweep, self.next_tick)
            end = off + caplen
            # MAC offsets only; the 6-byte slices are taken for new flows and subscribed packets.
            src_mo = dst_mo = -1
            vlan: tuple[int, ...] = ()
            # ---- fast path: Ethernet, untagged or one 802.1Q tag, IPv4 without options, TCP/UDP,
            # not a fragment. One unpack_from covers Ethernet type through the ports.
            fast = False
            if linktype == LINKTYPE_ETHERNET and caplen >= 42:
                if data[off + 12] == 8 and data[off + 13] == 0:
                    vihl, tlen, frag, proto, sip, dip, sport, dport = fast_untagged(data, off)
                    p = off + 14
                    vlan = ()
                    fast = vihl == 0x45 and not frag & 0x1FFF and (proto in (PROTO_UDP, PROTO_TCP))
                elif (
                    data[off + 12] == 0x81
                    and data[off + 13] == 0
                    and data[off + 16] == 8
                    and data[off + 17] == 0
                ):
                    tci, vihl, tlen, frag, proto, sip, dip, sport, dport = fast_tagged(data, off)
                    p = off + 18
                    vlan = (tci & 0x0FFF,)
                    fast = vihl == 0x45 and not frag & 0x1FFF and (proto in (PROTO_UDP, PROTO_TCP))
            if fast:
                dst_mo = off
                src_mo = off + 6
                etype = ETH_IPV4
                ipver = 4
                l4 = p + 20
                if 20 <= tlen < end - p:
                    end = p + tlen  # drop Ethernet padding after short packets
                if proto == PROTO_TCP:
                    if l4 + 20 > end:
                        decode_errors["truncated_l4_header"] += 1
                        continue
                    flags = data[l4 + 13]
                    pay = l4 + ((data[l4 + 12] >> 4) << 2)
                else:
                    if l4 + 8 > end:
                        decode_errors["truncated_l4_header"] += 1
                        continue
                    flags = 0
                    pay = l4 + 8
            else:
                # ---- link layer
                if linktype == LINKTYPE_ETHERNET:
                    if caplen < 14:
                        decode_errors["truncated_frame"] += 1
                        continue
                    etype = (data[off + 12] << 8) | data[off + 13]
                    p = off + 14
                    if etype in VLAN_TPIDS:
                        tags = []
                        while etype in VLAN_TPIDS:
                            if p + 4 > end:
                                break
                            tags.append(((data[p] << 8) | data[p + 1]) & 0x0FFF)
                            etype = (data[p + 2] << 8) | data[p + 3]
                            p += 4
                        else:
                            vlan = tuple(tags)
                        if etype in VLAN_TPIDS:
                            decode_errors["truncated_frame"] += 1
                            continue
                    dst_mo = off
                    src_mo = off + 6
                elif linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
                    if caplen < 1:
                        decode_errors["truncated_frame"] += 1
                        continue
                    etype = ETH_IPV4 if data[off] >> 4 == 4 else ETH_IPV6
                    p = off
                elif linktype == LINKTYPE_LINUX_SLL:
                    if caplen < 16:
                        decode_errors["truncated_frame"] += 1
                        continue
                    etype = (data[off + 14] << 8) | data[off + 15]
                    if ((data[off + 4] << 8) | data[off + 5]) == 6:
                        src_mo = off + 6
                    p = off + 16
                elif linktype == LINKTYPE_LINUX_SLL2:
                    if caplen < 20:
                        decode_errors["truncated_frame"] += 1
                        continue
                    etype = (data[off] << 8) | data[off + 1]
                    if data[off + 11] == 6:
                        src_mo = off + 12
                    p = off + 20
                else:
                    decode_errors["unsupported_linktype"] += 1
                    continue
                # ---- network layer
                if etype == ETH_IPV4:
                    if p + 20 > end:
                        decode_errors["bad_ip_header"] += 1
                        continue
                    vihl, _tos, tlen, _ident, frag, _ttl, proto, _csum, sip, dip = ipv4_unpack(data, p)
                    ihl = (vihl & 0x0F) << 2
                    if vihl >> 4 == 4 and ihl >= 20:
                        l4 = p + ihl
                        if ihl <= tlen < end - p:
                            end = p + tlen  # drop Ethernet padding after short packets
                        ipver = 4
                        if frag & 0x1FFF:
                            # Non-first fragment: no L4 header; the flow is found by the first fragment.
                            decode_errors["ip_fragment"] += 1
                            continue
                    elif vihl >> 4 == 6:
                        # IPv6 in a frame labelled IPv4: some phone stacks send these; tshark decodes
                        # them as IPv6 too, and the device's lookups must not vanish.
                        etype = ETH_IPV6
                    else:
                        decode_errors["bad_ip_header"] += 1
                        continue
                if etype == ETH_IPV6:
                    if p + 40 > end:
                        decode_errors["bad_ip_header"] += 1
                        continue
                    vtcfl, plen, proto, _hlim, sip, dip = ipv6_unpack(data, p)
                    if vtcfl >> 28 != 6:
                        decode_errors["bad_ip_header"] += 1
                        continue
                    l4 = p + 40
                    if 0 < plen < end - l4:
                        end = l4 + plen  # drop link-layer padding (plen 0 = jumbogram: keep all)
                    ipver = 6
                    while proto in IPV6_GENERIC_EXT or proto in (IPV6_FRAGMENT, IPV6_AH):
                        if l4 + 8 > end:
                            proto = -1
                            break
                        nxt = data[l4]
                        if proto == IPV6_FRAGMENT:
                            if ((data[l4 + 2] << 8) | data[l4 + 3]) & 0xFFF8:
                                proto = -2  # non-first fragment
                                break
                            l4 += 8
                        elif proto == IPV6_AH:
                            l4 += (data[l4 + 1] + 2) << 2
                        else:
                            l4 += (data[l4 + 1] + 1) << 3
                        proto = nxt
                    if proto < 0:
                        decode_errors["ip_fragment" if proto == -2 else "bad_ipv6_extension"] += 1
                        continue
                elif etype != ETH_IPV4:
                    # Non-IP frame (ARP, LLDP, SADP L2...): only subscribed analyzers care.
                    targets = ether_subs.get(etype)
                    if targets:
                        self._deliver(
                            targets,
                            Packet(
                                ts,
                                linktype,
                                memoryview(data)[off:end],
                                vlan,
                                _mac(data, src_mo),
                                _mac(data, dst_mo),
                                etype,
                                p - off,
                                0,
                                b"",
                                b"",
                                0,
                                0,
                                0,
                                0,
                                end - off,
                                0,
                                None,
                            ),
                        )
                    continue
                # ---- transport layer
                flags = 0
                if proto == PROTO_TCP:
                    if l4 + 20 > end:
                        decode_errors["truncated_l4_header"] += 1
                        continue
                    sport, dport = ports_unpack(data, l4)
                    flags = data[l4 + 13]
                    pay = l4 + ((data[l4 + 12] >> 4) << 2)
                elif proto == PROTO_UDP:
                    if l4 + 8 > end:
                        decode_errors["truncated_l4_header"] += 1
                        continue
                    sport, dport = ports_unpack(data, l4)
                    pay = l4 + 8
                elif proto in (PROTO_ICMP, PROTO_ICMP6):
                    if l4 + 4 > end:
                        decode_errors["truncated_l4_header"] += 1
                        continue
                    sport = data[l4]
                    dport = data[l4 + 1]
                    pay = l4 + 4
                else:
                    sport = dport = 0
                    pay = l4
            if pay > end:
                pay = end
            paylen = end - pay
            # ---- flow lookup: one dict access finds the flow and the direction
            if proto in (PROTO_ICMP, PROTO_ICMP6):
                # Both directions key on the request type, so an echo reply finds its request's flow.
                itype = (ICMP_PAIRS if proto == PROTO_ICMP else ICMP6_PAIRS).get(sport, sport)
                key = (vlan, proto, sip, itype, dip, itype)
            else:
                key = (vlan, proto, sip, sport, dip, dport)
            entry = by_key.get(key)
            if entry is None:
                flow, forward = self._new_flow(
                    key,
                    ts,
                    vlan,
                    proto,
                    sip,
                    sport,
                    dip,
                    dport,
                    flags,
                    _mac(data, src_mo),
                    _mac(data, dst_mo),
                )
                if self.expected:
                    self._match_expected(flow)
                fresh = True
            else:
                flow, forward = entry
                fresh = False
            flow.last_ts = ts
            flow.tcp_flags_seen |= flags
            if forward:
                flow.pkts_toserver += 1
                flow.bytes_toserver += origlen
            else:
                flow.pkts_toclient += 1
                flow.bytes_toclient += origlen
            # ---- analyzer subscriptions
            targets_list: list[Analyzer] | None = flow.followers
            if proto == PROTO_UDP:
                if sport in udp_ports or dport in udp_ports:
                    targets_list = _merge(
                        targets_list, _merge(dispatch.udp.get(sport), dispatch.udp.get(dport))
                    )
                if (
                    paylen
                    and (flow.payload_pkts_toserver if forward else flow.payload_pkts_toclient)
                    < max_udp_payload
                ):
                    targets_list = self._payload_targets(flow, forward, dispatch.udp_payload, targets_list)
            elif proto == PROTO_TCP:
                if sport in tcp_ports or dport in tcp_ports:
                    targets_list = _merge(
                        targets_list, _merge(dispatch.tcp.get(sport), dispatch.tcp.get(dport))
                    )
                if (
                    paylen
                    and (flow.payload_pkts_toserver if forward else flow.payload_pkts_toclient)
                    < max_tcp_payload
                ):
                    targets_list = self._payload_targets(flow, forward, dispatch.tcp_payload, targets_list)
            if fresh or targets_list:
                pkt = Packet(
                    ts,
                    linktype,
                    memoryview(data)[off:end],
                    vlan,
                    _mac(data, src_mo),
                    _mac(data, dst_mo),
                    etype,
                    p - off,
                    ipver,
                    sip,
                    dip,
                    proto,
                    sport,
                    dport,
                    flags,
                    pay - off,
                    paylen,
                    flow,
                    forward,
                )
                if fresh:
                    for a in dispatch.flow_start:
                        a.flow_start(flow, pkt)
                if targets_list:
                    for a in targets_list:
                        a.packet(pkt)
        self.now = ts
        counters.packets += npkts
        counters.bytes += nbytes
        counters.flows_active = len(self.flows)
        counters.last_packet_ts = ts
        counters.last_processed_wall = time.time()

    def _payload_targets(
        self, flow: Flow, forward: bool, subs: list[tuple[int, Analyzer]], targets: list[Analyzer] | None
    ) -> list[Analyzer] | None:
        """Analyzers that asked for the first N payload packets of every flow, per direction."""
        if forward:
            flow.payload_pkts_toserver += 1
            seen = flow.payload_pkts_toserver
        else:
            flow.payload_pkts_toclient += 1
            seen = flow.payload_pkts_toclient
        extra = [a for n, a in subs if seen <= n and (targets is None or a not in targets)]
        if not extra:
            return targets
        return extra if targets is None else targets + extra

    def _new_flow(
        self,
        key: tuple[Any, ...],
        ts: float,
        vlan: tuple[int, ...],
        proto: int,
        sip: bytes,
        sport: int,
        dip: bytes,
        dport: int,
        flags: int,
        src_mac: bytes | None,
        dst_mac: bytes | None,
    ) -> tuple[Flow, bool]:
        """Create a flow; decide who the originator is (the first sender, unless it looks like a reply)."""
        reply = False
        icmp = proto in (PROTO_ICMP, PROTO_ICMP6)
        if icmp:
            reply = sport in (ICMP_PAIRS if proto == PROTO_ICMP else ICMP6_PAIRS)
            # Community ID convention: ICMP type in the source port, code in the destination port.
            sport, dport = key[3], dport
        elif proto == PROTO_TCP:
            if flags & (TCP_SYN | TCP_ACK) == (TCP_SYN | TCP_ACK):
                reply = True
            elif not flags & TCP_SYN:
                # Mid-stream (capture started after the handshake): a packet from a service port,
                # or from a fixed port to an ephemeral one, is the server's reply.
                reply = dport not in LIKELY_SERVER_PORTS and (
                    sport in LIKELY_SERVER_PORTS or sport < EPHEMERAL_PORT_MIN <= dport
                )
        elif proto == PROTO_UDP:
            reply = sport in LIKELY_SERVER_PORTS and dport not in LIKELY_SERVER_PORTS
        rev = (key[0], key[1], key[4], key[5], key[2], key[3])
        if reply:
            key, rev = rev, key
            sip, dip, src_mac, dst_mac = dip, sip, dst_mac, src_mac
            if not icmp:
                sport, dport = dport, sport
        flow = Flow(
            flow_id=flow_id_for(key, ts),
            vlan=vlan,
            proto=proto,
            src_ip=ip_text(sip),
            src_port=sport,
            dest_ip=ip_text(dip),
            dest_port=dport,
            src_mac=mac_text(src_mac),
            dest_mac=mac_text(dst_mac),
            first_ts=ts,
            last_ts=ts,
            key=key,
            in_iface=self.in_iface,
        )
        self.flows.insert(flow, rev)
        return flow, not reply


def _mac(data: bytes, offset: int) -> bytes | None:
    return data[offset : offset + 6] if offset >= 0 else None


def _merge(a: list[Analyzer] | None, b: list[Analyzer] | None) -> list[Analyzer] | None:
    if a is None or a is b:
        return b
    if b is None:
        return a
    return a + [x for x in b if x not in a]
