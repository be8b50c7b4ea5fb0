"""Hot-path decode, flow table and analyzer dispatch, on frames built with dpkt."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import dpkt
import pytest

from agent.model import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW, Flow, Packet
from agent.pipeline import Pipeline
from agent.stats import Counters
from analyzers.base import Analyzer

MAC_A = b"\x00\x11\x22\x33\x44\x55"
MAC_B = b"\xbc\xad\x28\x00\x00\x01"


@dataclass
class Batch:
    data: bytes
    linktype: int
    ts: list[float] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    caplens: list[int] = field(default_factory=list)
    origlens: list[int] = field(default_factory=list)
    interface: int = 0
    file_offset: int = 0


def make_batch(frames: list[bytes], linktype: int = LINKTYPE_ETHERNET, t0: float = 1_700_000_000.0) -> Batch:
    buf = bytearray()
    b = Batch(b"", linktype)
    for i, f in enumerate(frames):
        b.offsets.append(len(buf))
        buf += f
        b.caplens.append(len(f))
        b.origlens.append(len(f))
        b.ts.append(t0 + i)
    b.data = bytes(buf)
    return b


def ip4(src: str, dst: str, l4: dpkt.Packet, proto: int) -> dpkt.ip.IP:
    import socket

    pkt = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto, data=l4)
    pkt.len = len(bytes(pkt))
    return pkt


def eth(
    l3: dpkt.Packet, etype: int = 0x0800, src: bytes = MAC_A, dst: bytes = MAC_B, vlans: tuple[int, ...] = ()
) -> bytes:
    raw = bytes(dpkt.ethernet.Ethernet(src=src, dst=dst, type=etype, data=l3))
    for i, vid in enumerate(reversed(vlans)):
        tpid = 0x88A8 if (i == len(vlans) - 1 and len(vlans) > 1) else 0x8100
        raw = raw[:12] + struct.pack("!HH", tpid, vid) + raw[12:]
    return raw


def tcp(sport: int, dport: int, flags: int, data: bytes = b"") -> dpkt.tcp.TCP:
    return dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, data=data)


class Recorder(Analyzer):
    NAME = "recorder"
    UDP_PORTS = frozenset({53})
    TCP_PAYLOAD_PACKETS = 1
    ETHERTYPES = frozenset({0x0806})
    FLOW_EVENTS = True

    def __init__(self) -> None:
        self.packets: list[Packet] = []
        self.started: list[Flow] = []
        self.ended: list[Flow] = []
        self.done_called = False

    def packet(self, pkt: Packet) -> None:
        self.packets.append(pkt)

    def flow_start(self, flow: Flow, pkt: Packet) -> None:
        self.started.append(flow)

    def flow_end(self, flow: Flow) -> None:
        self.ended.append(flow)

    def done(self) -> None:
        self.done_called = True


def run(
    frames: list[bytes], linktype: int = LINKTYPE_ETHERNET, **kw: float
) -> tuple[Recorder, Counters, Pipeline]:
    rec = Recorder()
    counters = Counters()
    pl = Pipeline([rec], counters, **kw)  # type: ignore[arg-type]
    pl.run_batch(make_batch(frames, linktype))
    return rec, counters, pl


def test_tcp_handshake_is_one_flow_with_originator_and_directions() -> None:
    frames = [
        eth(ip4("192.168.10.21", "203.0.113.7", tcp(40122, 8666, dpkt.tcp.TH_SYN), 6)),
        eth(
            ip4("203.0.113.7", "192.168.10.21", tcp(8666, 40122, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK), 6),
            src=MAC_B,
            dst=MAC_A,
        ),
        eth(ip4("192.168.10.21", "203.0.113.7", tcp(40122, 8666, dpkt.tcp.TH_ACK, b"hello"), 6)),
    ]
    rec, counters, pl = run(frames)
    assert counters.packets == 3 and counters.flows_total == 1
    (flow,) = rec.started
    assert (flow.src_ip, flow.src_port, flow.dest_ip, flow.dest_port) == (
        "192.168.10.21",
        40122,
        "203.0.113.7",
        8666,
    )
    assert flow.src_mac == "00:11:22:33:44:55"
    assert (flow.pkts_toserver, flow.pkts_toclient) == (2, 1)
    # TCP_PAYLOAD_PACKETS=1: only the first payload packet is delivered
    assert [bytes(p.payload) for p in rec.packets] == [b"hello"]
    assert rec.packets[0].from_originator
    pl.finish()
    assert rec.ended == [flow] and rec.done_called and flow.ended


def test_first_packet_syn_ack_makes_the_other_side_originator() -> None:
    frames = [eth(ip4("203.0.113.7", "192.168.10.21", tcp(443, 50000, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK), 6))]
    rec, _, _ = run(frames)
    (flow,) = rec.started
    assert (flow.src_ip, flow.src_port, flow.dest_port) == ("192.168.10.21", 50000, 443)
    assert (flow.pkts_toserver, flow.pkts_toclient) == (0, 1)


def test_midstream_udp_reply_from_server_port_is_not_an_originator() -> None:
    dns = dpkt.udp.UDP(sport=53, dport=40000, data=b"\x00" * 12)
    rec, _, _ = run([eth(ip4("192.168.10.1", "192.168.10.21", dns, 17))])
    (flow,) = rec.started
    assert (flow.src_ip, flow.dest_port) == ("192.168.10.21", 53)
    assert len(rec.packets) == 1  # UDP port 53 subscription


def test_vlan_and_qinq_are_kept_and_separate_flows() -> None:
    udp = dpkt.udp.UDP(sport=5000, dport=6000, data=b"rtp")
    frames = [
        eth(ip4("10.0.0.1", "10.0.0.2", udp, 17)),
        eth(ip4("10.0.0.1", "10.0.0.2", udp, 17), etype=0x0800, vlans=(42,)),
        eth(ip4("10.0.0.1", "10.0.0.2", udp, 17), vlans=(10, 20)),
    ]
    rec, counters, _ = run(frames)
    assert counters.flows_total == 3
    assert sorted(f.vlan for f in rec.started) == [(), (10, 20), (42,)]


def test_ipv6_with_extension_headers_reaches_udp() -> None:
    import socket

    udp = dpkt.udp.UDP(sport=40000, dport=53, data=b"\x00" * 12)
    udp.ulen = len(bytes(udp))
    # Hop-by-hop (8 bytes, next=60) then destination options (8 bytes, next=17)
    hop = bytes([60, 0]) + b"\x01\x04\x00\x00\x00\x00"
    dst = bytes([17, 0]) + b"\x01\x04\x00\x00\x00\x00"
    payload = hop + dst + bytes(udp)
    hdr = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        len(payload),
        0,
        64,
        socket.inet_pton(socket.AF_INET6, "fd00::21"),
        socket.inet_pton(socket.AF_INET6, "fd00::1"),
    )
    frame = MAC_B + MAC_A + b"\x86\xdd" + hdr + payload
    rec, counters, _ = run([frame])
    assert not counters.decode_errors
    (flow,) = rec.started
    assert (flow.src_ip, flow.dest_ip, flow.dest_port, flow.proto) == ("fd00::21", "fd00::1", 53, 17)
    assert rec.packets and rec.packets[0].ip_version == 6


def test_icmp_echo_request_and_reply_share_a_flow() -> None:
    echo = dpkt.icmp.ICMP(type=8, code=0, data=dpkt.icmp.ICMP.Echo(id=1, seq=1, data=b"ping"))
    reply = dpkt.icmp.ICMP(type=0, code=0, data=dpkt.icmp.ICMP.Echo(id=1, seq=1, data=b"ping"))
    rec, counters, _ = run(
        [
            eth(ip4("192.168.10.5", "192.168.10.1", echo, 1)),
            eth(ip4("192.168.10.1", "192.168.10.5", reply, 1)),
        ]
    )
    assert counters.flows_total == 1
    (flow,) = rec.started
    assert (flow.src_ip, flow.src_port, flow.dest_port) == ("192.168.10.5", 8, 0)
    assert (flow.pkts_toserver, flow.pkts_toclient) == (1, 1)


@pytest.mark.parametrize("linktype", [LINKTYPE_RAW, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2])
def test_other_link_types(linktype: int) -> None:
    l3 = bytes(ip4("192.168.1.2", "8.8.8.8", dpkt.udp.UDP(sport=3333, dport=53, data=b"\x00" * 12), 17))
    if linktype == LINKTYPE_RAW:
        frame = l3
    elif linktype == LINKTYPE_LINUX_SLL:
        frame = struct.pack("!HHH8sH", 4, 1, 6, MAC_A + b"\x00\x00", 0x0800) + l3
    else:
        frame = struct.pack("!HHIHBB8s", 0x0800, 0, 2, 1, 4, 6, MAC_A + b"\x00\x00") + l3
    rec, counters, _ = run([frame], linktype)
    assert not counters.decode_errors
    (flow,) = rec.started
    assert (flow.src_ip, flow.dest_ip, flow.dest_port) == ("192.168.1.2", "8.8.8.8", 53)
    if linktype != LINKTYPE_RAW:
        assert flow.src_mac == "00:11:22:33:44:55"


def test_non_ip_frames_go_to_ethertype_subscribers_only() -> None:
    arp = dpkt.arp.ARP(sha=MAC_A, spa=b"\xc0\xa8\x0a\x15", tha=b"\x00" * 6, tpa=b"\xc0\xa8\x0a\x01")
    lldp = MAC_B + MAC_A + b"\x88\xcc" + b"\x02\x07\x04" + MAC_A + b"\x00\x00"
    rec, counters, _ = run([eth(arp, etype=0x0806), lldp])
    assert counters.packets == 2 and counters.flows_total == 0
    assert [p.ethertype for p in rec.packets] == [0x0806]
    assert rec.packets[0].src_mac == MAC_A


def test_truncated_frames_are_counted_not_fatal() -> None:
    good = eth(ip4("10.0.0.1", "10.0.0.2", dpkt.udp.UDP(sport=1, dport=2), 17))
    _rec, counters, _ = run([good[:10], good[:20], good[:36], good])
    assert counters.decode_errors["truncated_frame"] == 1
    assert counters.decode_errors["bad_ip_header"] == 1
    assert counters.decode_errors["truncated_l4_header"] == 1
    assert counters.flows_total == 1 and counters.packets == 4


def test_idle_timeout_and_capacity_evictions() -> None:
    frames = [
        eth(ip4("10.0.0.1", "10.0.0.2", dpkt.udp.UDP(sport=40000 + i, dport=2000), 17)) for i in range(5)
    ]
    # timestamps t0..t0+4, max_flows=3 -> two capacity evictions
    rec, counters, pl = run(frames, max_flows=3)
    assert counters.flows_evicted["capacity"] == 2
    assert [f.src_port for f in rec.ended] == [40000, 40001]
    # a packet 200 s later triggers a sweep: the rest go idle
    late = make_batch(
        [eth(ip4("10.0.0.9", "10.0.0.2", dpkt.udp.UDP(sport=9, dport=9), 17))], t0=1_700_000_300.0
    )
    pl.run_batch(late)
    assert counters.flows_evicted["idle"] == 3
    assert len(pl.flows) == 1


def test_ipv6_packet_in_frame_labelled_ipv4_is_decoded_as_ipv6() -> None:
    import socket

    udp = dpkt.udp.UDP(sport=14606, dport=53, data=b"\x00" * 12)
    udp.ulen = len(bytes(udp))
    payload = bytes(udp)
    hdr = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        len(payload),
        17,
        255,
        socket.inet_pton(socket.AF_INET6, "fd2b::24"),
        socket.inet_pton(socket.AF_INET6, "fd2b::1"),
    )
    rec, counters, _ = run([MAC_B + MAC_A + b"\x08\x00" + hdr + payload])
    assert not counters.decode_errors
    (flow,) = rec.started
    assert (flow.src_ip, flow.dest_ip, flow.dest_port) == ("fd2b::24", "fd2b::1", 53)


def test_bad_ip_version_is_a_decode_error() -> None:
    frame = MAC_B + MAC_A + b"\x08\x00" + bytes([0x75]) + b"\x00" * 39
    _, counters, _ = run([frame])
    assert counters.decode_errors["bad_ip_header"] == 1 and counters.flows_total == 0


def test_ethernet_padding_is_not_payload() -> None:
    frame = eth(ip4("192.168.10.21", "203.0.113.7", tcp(40122, 80, dpkt.tcp.TH_ACK, b"GET"), 6))
    padded = frame + b"\x00" * (60 - len(frame))  # minimum Ethernet frame size
    rec, _, _ = run([padded])
    assert bytes(rec.packets[0].payload) == b"GET"


def test_midstream_tcp_from_fixed_port_to_ephemeral_port_is_a_reply() -> None:
    seg = tcp(5222, 45109, dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, b"<xml/>")
    rec, _, _ = run([eth(ip4("18.185.207.217", "192.168.1.138", seg, 6), src=MAC_B, dst=MAC_A)])
    (flow,) = rec.started
    assert (flow.src_ip, flow.src_port, flow.dest_port) == ("192.168.1.138", 45109, 5222)


def test_midstream_udp_keeps_first_sender_as_originator() -> None:
    rtp = dpkt.udp.UDP(sport=6000, dport=40000, data=b"\x80" * 20)
    rec, _, _ = run([eth(ip4("192.168.10.2", "192.168.10.21", rtp, 17))])
    (flow,) = rec.started
    assert (flow.src_ip, flow.src_port) == ("192.168.10.2", 6000)


class Follower(Analyzer):
    """Follows every flow to port 21 from its first packet; expects a data flow to port 2000."""

    NAME = "follower"
    FLOW_EVENTS = True

    def __init__(self, pipeline_box: list[Pipeline]) -> None:
        self.box = pipeline_box
        self.seen: list[tuple[int, bytes]] = []

    def flow_start(self, flow: Flow, pkt: Packet) -> None:
        if flow.dest_port == 21:
            self.box[0].follow(flow, self)
            self.box[0].expect(6, "192.168.10.50", 2000, self, until=pkt.ts + 30)

    def packet(self, pkt: Packet) -> None:
        self.seen.append((pkt.dest_port, bytes(pkt.payload)))


def test_follow_and_expect_deliver_every_packet_of_chosen_flows() -> None:
    box: list[Pipeline] = []
    fol = Follower(box)
    pl = Pipeline([fol], Counters())
    box.append(pl)
    frames = [
        eth(ip4("192.168.10.21", "192.168.10.50", tcp(40000, 21, dpkt.tcp.TH_SYN), 6)),
        eth(ip4("192.168.10.21", "192.168.10.50", tcp(40000, 21, dpkt.tcp.TH_ACK, b"RETR fw.bin\r\n"), 6)),
        eth(ip4("192.168.10.21", "192.168.10.50", tcp(40000, 21, dpkt.tcp.TH_ACK, b"QUIT\r\n"), 6)),
        eth(ip4("192.168.10.21", "192.168.10.50", tcp(40001, 2000, dpkt.tcp.TH_SYN), 6)),
        eth(ip4("192.168.10.50", "192.168.10.21", tcp(2000, 40001, dpkt.tcp.TH_ACK, b"DATA"), 6)),
        eth(ip4("192.168.10.21", "192.168.10.50", tcp(40002, 80, dpkt.tcp.TH_SYN), 6)),  # not followed
    ]
    pl.run_batch(make_batch(frames))
    # follow() from flow_start takes effect from the next packet; an expected flow is followed
    # from its very first packet
    assert fol.seen == [(21, b"RETR fw.bin\r\n"), (21, b"QUIT\r\n"), (2000, b""), (40001, b"DATA")]
    assert not pl.expected  # an expectation is used once


class Exploding(Analyzer):
    """Raises on every other packet, flow start, tick and done."""

    NAME = "exploding"
    UDP_PORTS = frozenset({53})
    FLOW_EVENTS = True

    def __init__(self) -> None:
        self.calls = 0

    def packet(self, pkt: Packet) -> None:
        self.calls += 1
        if self.calls % 2:
            raise ValueError("bad day")

    def flow_start(self, flow: Flow, pkt: Packet) -> None:
        raise KeyError("no such thing")

    def tick(self, now: float) -> None:
        raise RuntimeError("tick")


def test_a_failing_analyzer_is_counted_and_the_others_go_on(caplog: pytest.LogCaptureFixture) -> None:
    frames = [
        eth(ip4("10.0.0.2", "10.0.0.1", dpkt.udp.UDP(sport=40000 + i, dport=53, data=b"q" * 12), 17))
        for i in range(10)
    ]
    rec, bad = Recorder(), Exploding()
    counters = Counters()
    pl = Pipeline([bad, rec], counters)
    with caplog.at_level("ERROR", logger="camwatch.pipeline"):
        pl.run_batch(make_batch(frames))
        pl.finish()
    assert len(rec.packets) == 10  # the analyzer after the failing one saw every packet
    assert counters.packets == 10
    # 5 packet failures, 10 flow_start failures, one tick per second of capture time (10 s)
    assert counters.analyzer_errors["exploding"] == 5 + 10 + 10
    assert counters.analyzer_errors["recorder"] == 0
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and all("analyzer exploding failed" in m for m in lines)


def test_analyzer_errors_propagate_when_isolation_is_off() -> None:
    frame = eth(ip4("10.0.0.2", "10.0.0.1", dpkt.udp.UDP(sport=40000, dport=53, data=b"q"), 17))
    pl = Pipeline([Exploding()], Counters())
    pl.isolate_analyzers = False
    with pytest.raises(RuntimeError, match="tick"):  # the first timer fires before the packet
        pl.run_batch(make_batch([frame]))
