"""The packet pipeline: batches of capture records in, flows and analyzer hooks out.

Hot path rules (see docs/architecture.md): headers are sliced with precompiled `struct.Struct`
objects straight from the batch buffer; the only per-packet allocations are the flow-key tuple
and two address slices; a `Packet` object (and a dpkt object, on demand) is built only for the
packets some analyzer subscribed to.
"""

from __future__ import annotations

import logging
import struct
import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

import numpy as np

from agent.capture.pcapfile import RecordBatch
from agent.errors import CamwatchError
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
from agent.vectordecode import decode_fast
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

log = logging.getLogger("camwatch.pipeline")
# An analyzer that raises is logged this many times, then every ANALYZER_ERROR_LOG_EVERY-th time.
ANALYZER_ERROR_LOG_FIRST = 3
ANALYZER_ERROR_LOG_EVERY = 1000

SWEEP_INTERVAL = 10.0  # seconds of capture time between flow-timeout sweeps
SHARED_OBJECTS_MAX = 200_000  # interned flow-key parts; cleared (not evicted) when full
# Below this many records (or fast-path records in a span) the NumPy set-up costs more than it saves.
VECTOR_MIN_RECORDS = 64


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

    # An exception from an analyzer hook is counted (camwatch_analyzer_errors_total) and logged, and
    # capture goes on: one packet that trips one analyzer must not stop the sensor. The fuzz
    # harness and tests that want to see the exception set this to False. CamwatchError (a full
    # disk, say) always propagates.
    isolate_analyzers = True

    def __init__(
        self,
        analyzers: Iterable[Analyzer],
        counters: Counters,
        *,
        idle_timeout: float = 120.0,
        active_timeout: float = 3600.0,
        max_flows: int = 200_000,
        in_iface: str | None = None,
        vectorised: bool = True,
    ) -> None:
        self.dispatch = Dispatch(analyzers)
        for a in self.dispatch.analyzers:
            counters.analyzer_errors.setdefault(a.NAME, 0)
        # Batch (NumPy) decode for Ethernet batches; False forces the per-packet reference path.
        self.vectorised = vectorised
        self._span: _Span | None = None  # the vectorised span being processed, if any
        self._replan = False  # an analyzer followed a flow whose packets the span counts in bulk
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
        self._shared: dict[Any, Any] = {}  # interned addresses and VLAN tuples of live flows

    # -- dynamic subscriptions ------------------------------------------------------------------
    def follow(self, flow: Flow, analyzer: Analyzer) -> None:
        """Deliver every later packet of `flow` to `analyzer` (e.g. an update download to carve)."""
        if self._span is not None and flow in self._span.by_flow:
            # Its later packets in this span were planned as count-only: stop and re-plan.
            self._replan = True
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
    def analyzer_failed(self, analyzer: Analyzer, hook: str, exc: Exception) -> None:
        """An analyzer hook raised: count it, log one line (rate-limited), carry on."""
        if not self.isolate_analyzers or isinstance(exc, CamwatchError):
            raise exc
        errors = self.counters.analyzer_errors
        errors[analyzer.NAME] += 1
        n = errors[analyzer.NAME]
        if n <= ANALYZER_ERROR_LOG_FIRST or n % ANALYZER_ERROR_LOG_EVERY == 0:
            log.error(
                "analyzer %s failed in %s (%s: %s); error %d of this analyzer, capture continues",
                analyzer.NAME,
                hook,
                type(exc).__name__,
                exc,
                n,
            )

    def _flow_ended(self, flow: Flow) -> None:
        for a in self.dispatch.flow_end:
            try:
                a.flow_end(flow)
            except Exception as exc:
                self.analyzer_failed(a, "flow_end", exc)

    def _deliver(self, targets: Iterable[Analyzer], pkt: Packet) -> None:
        for a in targets:
            try:
                a.packet(pkt)
            except Exception as exc:
                self.analyzer_failed(a, "packet", exc)

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
                try:
                    a.tick(ts)
                except Exception as exc:
                    self.analyzer_failed(a, "tick", exc)
            self.next_tick = ts + 1.0

    def advance(self, now: float) -> None:
        """Move capture time forward without a packet (a quiet live link): flows still time out
        and analyzers still tick."""
        self._clock(now)

    def finish(self) -> None:
        """End of input: end all flows, then let analyzers flush."""
        self.flows.drain()
        for a in self.dispatch.done:
            try:
                a.done()
            except Exception as exc:
                self.analyzer_failed(a, "done", exc)
        self.counters.flows_active = 0

    # -- the hot path -------------------------------------------------------------------------
    def run_batch(self, batch: Any) -> None:
        """Process one RecordBatch (see agent.capture.pcapfile)."""
        data = batch.data
        if not isinstance(data, bytes):
            data = bytes(data)
        size = len(batch) if isinstance(batch, RecordBatch) else len(batch.offsets)
        if self.vectorised and batch.linktype == LINKTYPE_ETHERNET and size >= VECTOR_MIN_RECORDS:
            self._run_vector(data, batch)
        else:
            self._run_records(
                data,
                batch.linktype,
                range(size),
                batch.ts,
                batch.offsets,
                batch.caplens,
                batch.origlens,
                None,
            )
        self.counters.flows_active = len(self.flows)
        self.counters.last_processed_wall = time.time()

    def _run_records(
        self,
        data: bytes,
        linktype: int,
        positions: Iterable[int],
        ts_list: list[float],
        offsets: list[int],
        caplens: list[int],
        origlens: list[int],
        span: _Span | None,
    ) -> int | None:
        """The per-packet path: decode, flow lookup and dispatch, one record at a time. One long
        loop on purpose (hot path). `positions` number the records for `span` (the vectorised
        path's bookkeeping of count-only packets, None when every record comes through here).
        Returns the position after which an analyzer's `follow` asked for a re-plan, else None."""
        counters = self.counters
        decode_errors = counters.decode_errors
        by_key = self.flows.by_key
        dispatch = self.dispatch
        udp_ports, tcp_ports, ether_subs = dispatch.udp_ports, dispatch.tcp_ports, dispatch.ether
        max_tcp_payload, max_udp_payload = dispatch.max_tcp_payload, dispatch.max_udp_payload
        ipv4_unpack, ipv6_unpack, ports_unpack = _IPV4.unpack_from, _IPV6.unpack_from, _PORTS.unpack_from
        fast_untagged, fast_tagged = _FAST_UNTAGGED.unpack_from, _FAST_TAGGED.unpack_from
        by_flow = span.by_flow if span is not None else None
        stopped_at: int | None = None
        next_clock = min(self.next_sweep, self.next_tick)
        npkts = 0
        nbytes = 0
        ts = self.now
        for pos, ts, off, caplen, origlen in zip(positions, ts_list, offsets, caplens, origlens, strict=True):
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
                        if self._replan:
                            stopped_at = pos
                            break
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
            found = by_key.get(key)
            if found is None:
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
                flow, forward = found, key == found.key
                fresh = False
                if by_flow is not None and flow in by_flow:
                    # Bring the count-only packets before this one into the flow's counters.
                    span.sync(flow, pos)  # type: ignore[union-attr]
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
                        try:
                            a.flow_start(flow, pkt)
                        except Exception as exc:
                            self.analyzer_failed(a, "flow_start", exc)
                if targets_list:
                    for a in targets_list:
                        try:
                            a.packet(pkt)
                        except Exception as exc:
                            self.analyzer_failed(a, "packet", exc)
                if self._replan:
                    stopped_at = pos
                    break
        self.now = ts
        counters.packets += npkts
        counters.bytes += nbytes
        counters.last_packet_ts = ts
        return stopped_at

    # -- the vectorised path ------------------------------------------------------------------
    def _run_vector(self, data: bytes, batch: Any) -> None:
        """Decode the whole batch with NumPy; count the packets nobody needs in bulk and send the
        rest through `_run_records` in capture order.

        Timers (flow sweeps, analyzer ticks) fire between the same two records as on the per-packet
        path, after every earlier packet has been counted, so they see exactly the same flow state.
        """
        if isinstance(batch, RecordBatch):
            arrays = batch.arrays()
        else:
            arrays = (
                np.array(batch.ts, dtype=np.float64),
                np.array(batch.offsets, dtype=np.int64),
                np.array(batch.caplens, dtype=np.int64),
                np.array(batch.origlens, dtype=np.int64),
            )
        ts_a, off_a, cap_a, _orig_a = arrays
        fields = decode_fast(data, off_a, cap_a)
        n = len(off_a)
        start = 0
        while start < n:
            start = self._vector_span(data, fields, arrays, start, n)
        last = float(ts_a[-1])
        self.now = last
        self.counters.last_packet_ts = last

    def _vector_span(self, data: bytes, f: Any, arrays: tuple[Any, ...], start: int, stop: int) -> int:
        """Plan records [start, stop) once, then run them up to each timer in turn: the packets
        before a timer go through the per-packet path and the bulk counts, then the timer fires.
        Returns where processing got to: `stop`, or earlier when the plan went stale (an analyzer
        started following a flow counted in bulk, or a sweep ended one): re-plan from there."""
        ts_a, off_a, cap_a, orig_a = arrays
        fast_idx = np.flatnonzero(f.fast[start:stop]) + start
        span: _Span | None = None
        if len(fast_idx) >= VECTOR_MIN_RECORDS:
            span = self._plan(data, f, arrays, fast_idx, stop - start)
        if span is None:
            rows = np.arange(start, stop)
            self._run_records(
                data,
                LINKTYPE_ETHERNET,
                range(start, stop),
                ts_a[rows].tolist(),
                off_a[rows].tolist(),
                cap_a[rows].tolist(),
                orig_a[rows].tolist(),
                None,
            )
            return stop
        keep = np.ones(stop - start, dtype=bool)
        keep[span.rows - start] = False
        singles = np.flatnonzero(keep) + start  # records for the per-packet path
        done = 0  # of `singles`
        at = start
        counters = self.counters
        self._span = span
        self._replan = False
        try:
            while True:
                next_clock = min(self.next_sweep, self.next_tick)
                due = np.flatnonzero(ts_a[at:stop] >= next_clock)
                until = at + int(due[0]) if len(due) else stop
                upto = int(np.searchsorted(singles, until))
                if upto > done:
                    rows = singles[done:upto]
                    stopped = self._run_records(
                        data,
                        LINKTYPE_ETHERNET,
                        rows.tolist(),
                        ts_a[rows].tolist(),
                        off_a[rows].tolist(),
                        cap_a[rows].tolist(),
                        orig_a[rows].tolist(),
                        span,
                    )
                    if stopped is not None:
                        span.apply(stopped + 1, ts_a, counters)
                        return stopped + 1
                    done = upto
                span.apply(until, ts_a, counters)
                if until == stop:
                    return stop
                self._clock(float(ts_a[until]))  # moves the timers past this record's time
                if self._replan or span.stale():
                    return until
                at = until
        finally:
            self._span = None
            self._replan = False

    def _plan(self, data: bytes, f: Any, arrays: tuple[Any, ...], idx: Any, span_len: int) -> _Span | None:
        """Group the span's fast-path packets by flow key and pick the ones that only need counting:
        packets of an existing flow that nobody follows, on no subscribed port, and not among the
        first payload packets some analyzer asked for. None: process the whole span per packet."""
        _ts_a, off_a, _cap_a, orig_a = arrays
        k1 = f.key_hi[idx]
        k2 = f.key_lo[idx]
        mixed = k1 * np.uint64(0x9E3779B97F4A7C15) ^ k2
        _uniq, first, inv = np.unique(mixed, return_index=True, return_inverse=True)
        if not (np.array_equal(k1[first][inv], k1) and np.array_equal(k2[first][inv], k2)):
            return None  # a 64-bit hash collision inside one batch: let the reference path do it
        groups = len(first)
        by_key = self.flows.by_key
        dispatch = self.dispatch
        udp_ports, tcp_ports = dispatch.udp_ports, dispatch.tcp_ports
        max_udp, max_tcp = dispatch.max_udp_payload, dispatch.max_tcp_payload
        rows0 = idx[first]
        boring = np.zeros(groups, dtype=bool)
        unsaturated = np.zeros(groups, dtype=bool)
        entries: list[tuple[Flow, bool] | None] = [None] * groups
        new_groups = 0
        for g, (row, is_tagged, tci, proto, sport, dport) in enumerate(
            zip(
                off_a[rows0].tolist(),
                f.tagged[rows0].tolist(),
                f.tci[rows0].tolist(),
                f.proto[rows0].tolist(),
                f.sport[rows0].tolist(),
                f.dport[rows0].tolist(),
                strict=True,
            )
        ):
            b = row + 4 if is_tagged else row
            key = (
                (tci & 0x0FFF,) if is_tagged else (),
                proto,
                data[b + 26 : b + 30],
                sport,
                data[b + 30 : b + 34],
                dport,
            )
            flow = by_key.get(key)
            if flow is None:
                new_groups += 1
                continue
            forward = key == flow.key
            if flow.followers is not None:
                continue
            if proto == PROTO_UDP:
                if sport in udp_ports or dport in udp_ports:
                    continue
                limit = max_udp
            else:
                if sport in tcp_ports or dport in tcp_ports:
                    continue
                limit = max_tcp
            boring[g] = True
            entries[g] = (flow, forward)
            if (flow.payload_pkts_toserver if forward else flow.payload_pkts_toclient) < limit:
                unsaturated[g] = True
        # A new flow can evict the oldest one when the table is full; that flow might be one being
        # counted in bulk, so near the cap the whole span goes through the reference path.
        if len(self.flows) + new_groups + (span_len - len(idx)) >= self.flows.max_flows:
            return None
        count_only = boring[inv] & ~(unsaturated[inv] & (f.paylen[idx] > 0))
        if not count_only.any():
            return None
        rows = idx[count_only]
        return _Span(rows, inv[count_only], orig_a[rows], f.flags[rows], entries)

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
        # Flows outlive packets: share one object per address and VLAN stack among all the flows
        # that use it (a fleet has few addresses and many flows; about 150 bytes a flow saved).
        shared = self._shared
        if len(shared) > SHARED_OBJECTS_MAX:
            shared.clear()
        vlan = shared.setdefault(vlan, vlan)
        sip = shared.setdefault(sip, sip)
        dip = shared.setdefault(dip, dip)
        key = (vlan, key[1], sip, key[3], dip, key[5])
        rev = (vlan, key[1], dip, key[5], sip, key[3])
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


class _Span:
    """The count-only packets of one vectorised span: which flows they belong to, and how much of
    each flow's share has been added to its counters so far."""

    __slots__ = (
        "applied",
        "applied_upto",
        "by_flow",
        "entries",
        "flags",
        "groups",
        "orig",
        "pending",
        "rows",
    )

    def __init__(
        self, rows: Any, groups: Any, orig: Any, flags: Any, entries: list[tuple[Flow, bool] | None]
    ) -> None:
        self.rows = rows  # record positions (ascending) of the count-only packets
        self.groups = groups  # flow-key group of each
        self.orig = orig  # original (wire) lengths
        self.flags = flags  # TCP flags
        self.entries = entries  # group -> (flow, forward) from the flow table
        self.by_flow: dict[Flow, list[int]] = {}
        for g in np.flatnonzero(np.bincount(groups, minlength=len(entries))).tolist():
            entry = entries[g]
            assert entry is not None
            self.by_flow.setdefault(entry[0], []).append(g)
        # flow -> [last per-packet position, [group, forward, positions, cumulative bytes,
        #          cumulative flags, packets already added], ...] for flows also seen per packet
        self.pending: dict[Flow, list[Any]] = {}
        self.applied = 0  # rows added by `apply` so far (flows not in `pending`)
        self.applied_upto = -1  # ... which are the rows before this record position

    def stale(self) -> bool:
        """A timer ended a flow this plan counts (a sweep): the rest must be planned again."""
        return any(flow.ended for flow in self.by_flow)

    def _pending(self, flow: Flow) -> list[Any]:
        state: list[Any] = [-1]
        for g in self.by_flow[flow]:
            sel = self.groups == g
            entry = self.entries[g]
            assert entry is not None
            positions = self.rows[sel].tolist()
            state.append(
                [
                    g,
                    entry[1],
                    positions,
                    np.cumsum(self.orig[sel]).tolist(),
                    np.bitwise_or.accumulate(self.flags[sel]).tolist(),
                    bisect_left(positions, self.applied_upto),  # already added in bulk
                ]
            )
        self.pending[flow] = state
        return state

    @staticmethod
    def _add(flow: Flow, part: list[Any], upto: int) -> None:
        """Add the group's count-only packets before position `upto` not yet added."""
        _g, forward, positions, cum_bytes, cum_flags, done = part
        k = bisect_left(positions, upto)
        if k <= done:
            return
        nbytes = cum_bytes[k - 1] - (cum_bytes[done - 1] if done else 0)
        if forward:
            flow.pkts_toserver += k - done
            flow.bytes_toserver += nbytes
        else:
            flow.pkts_toclient += k - done
            flow.bytes_toclient += nbytes
        flow.tcp_flags_seen |= cum_flags[k - 1]
        part[5] = k

    def sync(self, flow: Flow, pos: int) -> None:
        """Called by the per-packet path before it touches `flow` at record `pos`."""
        state = self.pending.get(flow) or self._pending(flow)
        for part in state[1:]:
            self._add(flow, part, pos)
        state[0] = pos

    def apply(self, upto: int, ts_a: Any, counters: Counters) -> None:
        """Add every count-only packet before record `upto` not added yet to its flow and to the
        totals (called once per timer interval, so in several steps for one plan)."""
        lo = self.applied
        hi = int(np.searchsorted(self.rows, upto))  # rows before `upto`
        self.applied, self.applied_upto = max(hi, lo), max(upto, self.applied_upto)
        if hi <= lo:
            for flow, state in self.pending.items():
                for part in state[1:]:
                    self._add(flow, part, upto)
            return
        rows, groups, orig, flags = self.rows[lo:hi], self.groups[lo:hi], self.orig[lo:hi], self.flags[lo:hi]
        k = hi - lo
        counters.packets += k
        counters.bytes += int(orig.sum())
        size = len(self.entries)
        counts = np.bincount(groups, minlength=size)
        nbytes = np.bincount(groups, weights=orig, minlength=size)
        seen_flags = np.zeros(size, dtype=np.int64)
        np.bitwise_or.at(seen_flags, groups, flags)
        last_row = np.full(size, -1, dtype=np.int64)
        np.maximum.at(last_row, groups, rows)
        used = np.flatnonzero(counts)
        # Ascending last position, so when both directions of a flow were counted the later
        # packet's time is the one left in last_ts.
        used = used[np.argsort(last_row[used], kind="stable")]
        last_ts = ts_a[last_row[used]].tolist()
        pending = self.pending
        for g, n, b, fl, t in zip(
            used.tolist(),
            counts[used].tolist(),
            nbytes[used].tolist(),
            seen_flags[used].tolist(),
            last_ts,
            strict=True,
        ):
            flow, forward = self.entries[g]  # type: ignore[misc]
            if flow in pending:
                continue  # added part by part below
            if forward:
                flow.pkts_toserver += n
                flow.bytes_toserver += int(b)
            else:
                flow.pkts_toclient += n
                flow.bytes_toclient += int(b)
            flow.tcp_flags_seen |= fl
            flow.last_ts = t
        for flow, state in pending.items():
            latest = state[0]
            for part in state[1:]:
                self._add(flow, part, upto)
                positions = part[2]
                j = bisect_left(positions, upto)
                if j and positions[j - 1] > latest:
                    latest = positions[j - 1]
            if latest > state[0]:
                flow.last_ts = float(ts_a[latest])


def _mac(data: bytes, offset: int) -> bytes | None:
    return data[offset : offset + 6] if offset >= 0 else None


def _merge(a: list[Analyzer] | None, b: list[Analyzer] | None) -> list[Analyzer] | None:
    if a is None or a is b:
        return b
    if b is None:
        return a
    return a + [x for x in b if x not in a]
