"""TCP stream reassembly: ordering, duplicates, overlaps, gaps, wrap-around, caps, packets."""

from __future__ import annotations

import itertools
import socket
import struct
import time
from collections.abc import Callable

import dpkt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.carving import HttpCarver, Transfer
from agent.model import Flow, Packet
from agent.pipeline import Pipeline
from agent.reassembly import (
    MAX_WINDOW,
    ConversationTable,
    ReassemblyBudget,
    StreamReassembler,
    TcpConversation,
    tcp_segment,
)
from agent.stats import Counters
from analyzers.base import Analyzer

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
M32 = 1 << 32


class Sink:
    """Records what a reassembler hands over, gaps included, in order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, object]] = []
        self.ended = 0

    def data(self, chunk: memoryview) -> None:
        self.items.append(("d", bytes(chunk)))

    def gap(self, length: int) -> None:
        self.items.append(("g", length))

    def end(self) -> None:
        self.ended += 1

    def stream(self, fill: bytes = b"\0") -> bytes:
        return b"".join(x if k == "d" else fill * x for k, x in self.items)  # type: ignore[operator,misc]


@st.composite
def segmented(draw: st.DrawFn, max_size: int = 4000) -> tuple[bytes, list[tuple[int, int]]]:
    body = draw(st.binary(min_size=1, max_size=max_size))
    cuts = draw(st.sets(st.integers(1, max(1, len(body) - 1)), max_size=40))
    points = [0, *sorted(c for c in cuts if 0 < c < len(body)), len(body)]
    return body, list(itertools.pairwise(points))


def uncovered(total: int, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    holes = []
    pos = 0
    for a, b in sorted(spans):
        if a > pos:
            holes.append((pos, a - pos))
        pos = max(pos, b)
    if pos < total:
        holes.append((pos, total - pos))
    return holes


# -- properties --------------------------------------------------------------------------------
@PROPS
@given(seg=segmented(), isn=st.integers(0, M32 - 1), data=st.data())
def test_any_segmentation_order_duplication_and_agreeing_overlap_reassembles_exactly(
    seg: tuple[bytes, list[tuple[int, int]]], isn: int, data: st.DataObject
) -> None:
    body, spans = seg
    extra = data.draw(
        st.lists(st.tuples(st.integers(0, len(body) - 1), st.integers(1, 3000)), max_size=8), label="overlaps"
    )
    spans = spans + [(a, min(len(body), a + n)) for a, n in extra]  # overlapping copies of the same bytes
    dups = data.draw(st.lists(st.sampled_from(spans), max_size=10), label="duplicates")
    order = data.draw(st.permutations(spans + dups), label="order")
    r = StreamReassembler(isn, max_buffered=1 << 20, max_total=1 << 30)
    r.add(isn, b"", syn=True)
    for a, b in order:
        r.add((isn + 1 + a) % M32, body[a:b])
    r.add((isn + 1 + len(body)) % M32, b"", fin=True)
    assert r.read() == body
    assert r.gaps == [] and r.bytes_missing == 0
    assert r.complete and r.buffered == 0
    assert r.overlap_conflicts == 0


@PROPS
@given(seg=segmented(), isn=st.integers(0, M32 - 1), data=st.data())
def test_dropped_segment_is_reported_as_gap_with_the_rest_intact(
    seg: tuple[bytes, list[tuple[int, int]]], isn: int, data: st.DataObject
) -> None:
    body, spans = seg
    drop = data.draw(st.integers(0, len(spans) - 1), label="drop")
    kept = spans[:drop] + spans[drop + 1 :]
    order = data.draw(st.permutations(kept), label="order")
    sink = Sink()
    r = StreamReassembler(isn, max_buffered=1 << 20, max_total=1 << 30, sink=sink)
    for a, b in order:
        r.add((isn + 1 + a) % M32, body[a:b])
    r.add((isn + 1 + len(body)) % M32, b"", fin=True)  # the FIN tells where the stream ends
    assert not r.ended  # waiting for the retransmission
    r.finish()
    holes = uncovered(len(body), kept)
    assert holes == [(spans[drop][0], spans[drop][1] - spans[drop][0])]
    assert r.gaps == holes
    assert r.bytes_missing == sum(n for _, n in holes)
    # Everything but the hole arrives, in order, with the gap where the hole was.
    assert sink.stream(b"?") == body[: holes[0][0]] + b"?" * holes[0][1] + body[holes[0][0] + holes[0][1] :]
    assert sink.ended == 1 and not r.complete


@PROPS
@given(body=st.binary(min_size=1, max_size=3000), back=st.integers(1, 3000), data=st.data())
def test_sequence_wraparound_near_2_32(body: bytes, back: int, data: st.DataObject) -> None:
    isn = M32 - back  # the data crosses 2^32 somewhere inside (or right at its start)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(body) - 1)), max_size=12)))
    points = [0, *[c for c in cuts if c < len(body)], len(body)]
    spans = list(itertools.pairwise(points))
    order = data.draw(st.permutations(spans))
    r = StreamReassembler(None, 1 << 20, 1 << 30)
    r.add(isn, b"", syn=True)
    for a, b in order:
        r.add((isn + 1 + a) % M32, body[a:b])
    assert r.read() == body and r.gaps == []


@PROPS
@given(seg=segmented(max_size=6000), cap=st.integers(1, 2000), data=st.data())
def test_stream_of_only_out_of_order_data_never_buffers_more_than_the_cap(
    seg: tuple[bytes, list[tuple[int, int]]], cap: int, data: st.DataObject
) -> None:
    body, spans = seg
    later = spans[1:]  # the first segment never arrives: nothing is ever in order by itself
    order = data.draw(st.permutations(later))
    sink = Sink()
    r = StreamReassembler(1000, max_buffered=cap, max_total=1 << 30, sink=sink)
    for a, b in order:
        r.add(1001 + a, body[a:b])
        assert r.buffered <= cap
    assert r.peak_buffered <= cap
    r.add(1001 + len(body), b"", fin=True)
    r.finish()
    # What was delivered is exactly the body with the reported gaps, nothing invented.
    out = sink.stream(b"\0")
    assert len(out) == len(body)
    pos = 0
    for off, n in r.gaps:
        assert out[pos:off] == body[pos:off]
        pos = off + n
    assert out[pos:] == body[pos:]
    assert r.gaps[0][0] == 0 and r.gaps[0][1] >= spans[0][1]  # the never-sent start is a gap


@PROPS
@given(
    bodies=st.lists(st.binary(min_size=200, max_size=3000), min_size=2, max_size=5),
    limit=st.integers(500, 4000),
    data=st.data(),
)
def test_shared_budget_caps_global_buffering_and_flushes_as_gaps(
    bodies: list[bytes], limit: int, data: st.DataObject
) -> None:
    budget = ReassemblyBudget(limit)
    sinks = [Sink() for _ in bodies]
    streams = [StreamReassembler(0, 1 << 20, 1 << 30, sink=k, budget=budget) for k in sinks]
    feeds = []
    for i, body in enumerate(bodies):
        feeds += [(i, a, body[a : a + 100]) for a in range(100, len(body), 100)]  # first 100 bytes lost
    for i, a, chunk in data.draw(st.permutations(feeds)):
        streams[i].add(1 + a, chunk)
        assert budget.used <= limit
        assert budget.used == sum(s.buffered for s in streams)
    assert budget.peak <= limit
    for s, k, body in zip(streams, sinks, bodies, strict=True):
        s.add(1 + len(body), b"", fin=True)
        s.finish()
        assert s.gaps[0][0] == 0 and s.gaps[0][1] >= 100
        out = k.stream(b"\0")
        assert len(out) == len(body)
        holes = {i for off, n in s.gaps for i in range(off, off + n)}
        assert all(out[i] == body[i] for i in range(len(body)) if i not in holes)
    assert budget.used == 0 and budget.streams == 0
    if sum(len(b) - 100 for b in bodies) > limit + 100 * len(bodies):
        assert budget.forced_flushes > 0


# -- unit behaviour -----------------------------------------------------------------------------
def test_first_arrival_wins_for_buffered_and_delivered_overlaps() -> None:
    body = bytes(range(60))
    r = StreamReassembler(0, 1 << 20, 1 << 20)
    r.add(1 + 20, b"X" * 10)  # arrives first, out of order
    r.add(1, body[:40])  # the original covering it comes later: buffered X bytes win
    assert r.read() == body[:20] + b"X" * 10 + body[30:40]
    assert r.overlap_conflicts == 1
    r.add(1 + 30, b"Y" * 20)  # rewrites already delivered bytes: ignored
    assert r.read() == b"Y" * 10  # only the new part [40, 50)
    assert r.duplicate_bytes >= 10


def test_midstream_join_starts_at_first_seen_sequence() -> None:
    r = StreamReassembler(None, 1 << 20, 1 << 20)
    r.add(5000, b"hello ")
    r.add(5006 + 6, b"!!")  # out of order
    r.add(5006, b"world ")
    r.add(4000, b"ignored: before the start")
    assert r.read() == b"hello world !!"
    assert not r.syn_seen and r.duplicate_bytes == len(b"ignored: before the start")


def test_syn_with_data_and_retransmitted_syn() -> None:
    r = StreamReassembler(None, 1 << 20, 1 << 20)
    r.add(99, b"fastopen", syn=True)
    r.add(99, b"", syn=True)
    r.add(108, b"-more")
    assert r.read() == b"fastopen-more"


def test_max_total_truncates_and_stops_buffering() -> None:
    r = StreamReassembler(0, 1 << 20, max_total=10)
    r.add(1 + 8, b"89abcdef")  # buffered
    r.add(1, b"01234567")
    assert r.read() == b"0123456789"
    assert r.truncated and r.buffered == 0 and r.delivered == 10
    r.add(1 + 16, b"more")
    assert r.read() == b""


def test_fin_and_rst_end_the_stream_once() -> None:
    sink = Sink()
    r = StreamReassembler(0, 1 << 20, 1 << 20, sink=sink)
    r.add(1 + 5, b"world", fin=True)
    assert not r.ended
    r.add(1, b"hello")
    assert r.ended and r.complete and sink.ended == 1
    r.add(1 + 10, b"late")
    assert sink.stream() == b"helloworld"

    sink2 = Sink()
    r2 = StreamReassembler(0, 1 << 20, 1 << 20, sink=sink2)
    r2.add(1, b"abc")
    r2.add(1 + 10, b"xyz")
    r2.add(1 + 3, b"", rst=True)
    assert r2.ended and r2.reset and not r2.complete and sink2.ended == 1
    assert r2.gaps == [(3, 7)] and sink2.stream(b"-") == b"abc-------xyz"


def test_data_after_fin_is_dropped_and_far_future_segments_rejected() -> None:
    r = StreamReassembler(0, 1 << 20, 1 << 20)
    r.add(1 + 5, b"", fin=True)
    r.add(1, b"abcdefgh")  # 3 bytes past the FIN do not exist
    assert r.read() == b"abcde" and r.complete
    r2 = StreamReassembler(0, 100, 1 << 20)
    r2.add(1 + MAX_WINDOW + 10, b"spoofed")  # beyond any window: must not force a gap
    assert r2.out_of_window == 1 and r2.gaps == [] and r2.buffered == 0


def test_gap_list_is_bounded_but_counted() -> None:
    r = StreamReassembler(0, max_buffered=1, max_total=1 << 30)
    for i in range(400):
        r.add(1 + 2 * i + 1, b"x")  # every other byte missing
    r.finish()
    assert r.gap_count == 400 and len(r.gaps) == 256 and r.bytes_missing == 400


# -- conversations and real packets ---------------------------------------------------------------
MAC_A, MAC_B = b"\x00\x11\x22\x33\x44\x55", b"\xbc\xad\x28\x00\x00\x01"
CLI, SRV = "192.168.1.20", "192.168.1.64"


def frame4(src: str, dst: str, sport: int, dport: int, seq: int, flags: int, data: bytes = b"") -> bytes:
    seg = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=0, flags=flags, data=data)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=6, data=seg)
    ip.len = len(bytes(ip))
    raw = bytes(dpkt.ethernet.Ethernet(src=MAC_A, dst=MAC_B, type=0x0800, data=ip))
    return raw + b"\0" * max(0, 60 - len(raw))  # Ethernet minimum-size padding, as on the wire


def frame6(src: str, dst: str, sport: int, dport: int, seq: int, flags: int, data: bytes = b"") -> bytes:
    seg = bytes(dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, flags=flags, data=data))
    hop_by_hop = bytes([6, 0]) + b"\x01\x04\0\0\0\0"  # next header TCP, PadN
    ip6 = struct.pack("!IHBB", 6 << 28, len(hop_by_hop) + len(seg), 0, 64)
    ip6 += socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    return MAC_B + MAC_A + b"\x86\xdd" + ip6 + hop_by_hop + seg


class Batch:
    def __init__(self, frames: list[bytes]) -> None:
        self.linktype = 1
        self.data = b"".join(frames)
        self.offsets, self.caplens, self.origlens, self.ts = [], [], [], []
        pos = 0
        for i, f in enumerate(frames):
            self.offsets.append(pos)
            self.caplens.append(len(f))
            self.origlens.append(len(f))
            self.ts.append(1_700_000_000.0 + i * 0.01)
            pos += len(f)
        self.interface = 0
        self.file_offset = 0


class HttpReassembly(Analyzer):
    """A minimal analyzer wiring agent.reassembly + agent.carving, as a real one would."""

    NAME = "test-http-reassembly"
    TCP_PORTS = frozenset({80})
    FLOW_EVENTS = True

    def __init__(self) -> None:
        self.transfers: list[Transfer] = []
        self.table = ConversationTable(self._new)

    def _new(self, flow: Flow | None) -> TcpConversation:
        carver = HttpCarver(self.transfers.append)
        return TcpConversation(carver.requests, carver.responses, flow=flow)

    def packet(self, pkt: Packet) -> None:
        self.table.packet(pkt)

    def flow_end(self, flow: Flow) -> None:
        self.table.end(flow)

    def done(self) -> None:
        self.table.close()


def http_exchange(f: Callable[..., bytes], cli: str, srv: str, body: bytes) -> list[bytes]:
    req = b"GET /digicap.dav HTTP/1.1\r\nHost: x\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    c0, s0 = 1000, M32 - 700  # the server's sequence numbers wrap during the response
    out = [f(cli, srv, 40000, 80, c0, 0x02), f(srv, cli, 80, 40000, s0, 0x12)]
    out.append(f(cli, srv, 40000, 80, c0 + 1, 0x18, req))
    pieces = [resp[i : i + 3] for i in range(0, 30, 3)]  # tiny segments: padded frames
    pieces += [resp[i : i + 1400] for i in range(30, len(resp), 1400)]
    offs = [0]
    for p in pieces:
        offs.append(offs[-1] + len(p))
    segs = [f(srv, cli, 80, 40000, (s0 + 1 + o) % M32, 0x18, p) for o, p in zip(offs, pieces, strict=False)]
    segs[2], segs[5] = segs[5], segs[2]  # a little reordering
    out += [*segs, segs[3]]  # and a retransmission
    out.append(f(srv, cli, 80, 40000, (s0 + 1 + len(resp)) % M32, 0x11))
    out.append(f(cli, srv, 40000, 80, c0 + 1 + len(req), 0x11))
    return out


def test_pipeline_packets_reassemble_ipv4_with_padding_and_wraparound() -> None:
    body = bytes(range(256)) * 40
    a = HttpReassembly()
    pl = Pipeline([a], Counters())
    pl.run_batch(Batch(http_exchange(frame4, CLI, SRV, body)))
    pl.finish()
    resp = [t for t in a.transfers if t.direction == "toclient"]
    assert len(resp) == 1 and resp[0].complete
    assert resp[0].data == body and resp[0].filename == "digicap.dav"
    assert resp[0].firmware == "hikvision-digicap"  # by name: the content is no image


def test_pipeline_packets_reassemble_ipv6_with_extension_header() -> None:
    body = b"firmware!" * 500
    a = HttpReassembly()
    pl = Pipeline([a], Counters())
    pl.run_batch(Batch(http_exchange(frame6, "fd00::20", "fd00::64", body)))
    pl.finish()
    resp = [t for t in a.transfers if t.direction == "toclient"]
    assert len(resp) == 1 and resp[0].complete and resp[0].data == body


def test_tcp_segment_ignores_ethernet_padding() -> None:
    seen: list[tuple[int, int, bytes]] = []

    class Grab(Analyzer):
        NAME = "grab"
        TCP_PORTS = frozenset({80})

        def packet(self, pkt: Packet) -> None:
            seq, flags, payload = tcp_segment(pkt)
            seen.append((seq, flags, bytes(payload)))

    pl = Pipeline([Grab()], Counters())
    pl.run_batch(Batch([frame4(CLI, SRV, 40000, 80, 7, 0x18, b"ab"), frame4(CLI, SRV, 40000, 80, 9, 0x10)]))
    assert seen == [(7, 0x18, b"ab"), (9, 0x10, b"")]


def test_conversation_rst_ends_both_directions_and_table_evicts() -> None:
    sinks = (Sink(), Sink())
    conv = TcpConversation(*sinks)
    conv.add(True, 10, b"", 0x02)
    conv.add(False, 500, b"", 0x12)
    conv.add(True, 11, b"req", 0x18)
    conv.add(False, 501, b"resp", 0x18)
    conv.add(True, 14, b"", 0x04)
    assert conv.ended and sinks[0].stream() == b"req" and sinks[1].stream() == b"resp"


def test_conversation_table_keeps_at_most_n_and_closes_the_evicted() -> None:
    ended: list[int] = []

    class Counting(Sink):
        def end(self) -> None:
            ended.append(1)

    class Table(Analyzer):
        NAME = "table"
        TCP_PORTS = frozenset({80})

        def __init__(self) -> None:
            self.table = ConversationTable(lambda flow: TcpConversation(Counting(), Counting()), 2)

        def packet(self, pkt: Packet) -> None:
            self.table.packet(pkt)

    an = Table()
    pl = Pipeline([an], Counters())
    pl.run_batch(Batch([frame4(CLI, SRV, 40000 + i, 80, 1, 0x18, b"GET") for i in range(3)]))
    assert len(an.table) == 2 and an.table.evicted == 1 and len(ended) == 2  # both directions
    an.table.close()
    assert len(an.table) == 0 and len(ended) == 6


# -- throughput ---------------------------------------------------------------------------------
def test_in_order_throughput_well_above_50_mb_per_s() -> None:
    size = 48 << 20
    body = bytes(range(256)) * (size // 256)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    stream = memoryview(head + body)
    got: list[Transfer] = []
    carver = HttpCarver(got.append)
    carver.pending.append(("GET", "/digicap.dav"))
    r = StreamReassembler(0, max_total=1 << 30, sink=carver.responses)
    mss = 1448
    segs = [(1 + o, stream[o : o + mss]) for o in range(0, len(stream), mss)]
    # Some reordering and retransmission, as on a real link.
    for i in range(100, len(segs) - 2, 997):
        segs[i], segs[i + 1] = segs[i + 1], segs[i]
        segs.insert(i + 2, segs[i])
    # CPU time of this process: other jobs on the shared cores do not count against us.
    t0 = time.process_time()
    for seq, chunk in segs:
        r.add(seq, chunk)
    r.add(1 + len(stream), b"", fin=True)
    elapsed = time.process_time() - t0
    assert len(got) == 1 and got[0].complete and got[0].size == len(body) and got[0].sha256
    rate = size / elapsed / 1e6
    print(f"reassembly + HTTP carving: {rate:.0f} MB/s")
    assert rate > 50


def test_conversation_table_restarts_on_port_reuse_but_not_on_late_packets() -> None:
    made: list[Sink] = []

    def factory(flow: Flow | None) -> TcpConversation:
        made.append(Sink())
        return TcpConversation(made[-1], Sink())

    class Table(Analyzer):
        NAME = "table2"
        TCP_PORTS = frozenset({80})

        def __init__(self) -> None:
            self.table = ConversationTable(factory)

        def packet(self, pkt: Packet) -> None:
            self.table.packet(pkt)

    an = Table()
    pl = Pipeline([an], Counters())
    frames = [
        frame4(CLI, SRV, 40000, 80, 10, 0x02),
        frame4(CLI, SRV, 40000, 80, 11, 0x18, b"one"),
        frame4(CLI, SRV, 40000, 80, 14, 0x04),  # reset: the conversation ends
        frame4(CLI, SRV, 40000, 80, 14, 0x10),  # a late ACK: no new conversation
        frame4(CLI, SRV, 40000, 80, 900, 0x02),  # same ports, new connection
        frame4(CLI, SRV, 40000, 80, 901, 0x18, b"two"),
    ]
    pl.run_batch(Batch(frames))
    an.table.close()
    assert [s.stream() for s in made] == [b"one", b"two"]
