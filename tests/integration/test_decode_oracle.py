"""Oracle test: camwatch's hot-path decode agrees with tshark (driven through pyshark) on every
real capture in ../shared/corpus/pcaps — per-packet addresses, ports, protocol and VLAN tags for
every TCP/UDP packet, total packet counts, and the set of TCP/UDP conversations."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from agent.capture.pcapfile import open_capture
from agent.model import Flow, Packet
from agent.pipeline import Pipeline
from agent.stats import Counters
from analyzers.base import Analyzer
from tests.conftest import CORPUS, require_tool

pyshark = pytest.importorskip("pyshark")

ALL_PORTS = frozenset(range(65536))
PCAPS = sorted((CORPUS / "pcaps").glob("*.pcap*")) if (CORPUS / "pcaps").is_dir() else []

Row = tuple[str, str, str, int, int, tuple[int, ...]]


class Tap(Analyzer):
    """Sees every TCP/UDP packet and every flow (a test-only analyzer)."""

    NAME = "tap"
    UDP_PORTS = ALL_PORTS
    TCP_PORTS = ALL_PORTS
    FLOW_EVENTS = True

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.flows: list[Flow] = []

    def packet(self, pkt: Packet) -> None:
        proto = "tcp" if pkt.proto == 6 else "udp"
        self.rows.append((proto, pkt.src_ip, pkt.dest_ip, pkt.src_port, pkt.dest_port, pkt.vlan))

    def flow_start(self, flow: Flow, pkt: Packet) -> None:
        self.flows.append(flow)


def camwatch_view(path: Path) -> tuple[list[Row], Counters, list[Flow]]:
    tap = Tap()
    counters = Counters()
    pipeline = Pipeline([tap], counters)
    with open_capture(path) as reader:
        for batch in reader.batches():
            pipeline.run_batch(batch)
    pipeline.finish()
    return tap.rows, counters, tap.flows


def tshark_view(path: Path) -> tuple[list[Row], int]:
    """Per-packet rows for frames whose outermost transport is TCP or UDP (no fragments)."""
    rows: list[Row] = []
    frames = 0
    vlans_by_frame = tshark_vlans(path)
    cap = pyshark.FileCapture(str(path), keep_packets=False, use_json=True, disable_protocol="http,rtp,rtcp")
    try:
        for pkt in cap:
            frames += 1
            names = [layer.layer_name for layer in pkt.layers]
            transport = next((n for n in names if n in ("tcp", "udp", "icmp", "icmpv6")), None)
            if transport not in ("tcp", "udp"):
                continue
            # the network layer carrying that transport (tshark shows a bogus "ip" layer before
            # "ipv6" when an IPv6 packet travels in a frame labelled IPv4)
            before = names[: names.index(transport)]
            net = next((n for n in reversed(before) if n in ("ip", "ipv6")), None)
            if net is None:
                continue
            layer = pkt[net]
            if net == "ip" and _is_fragment(layer):
                continue
            src, dst = layer.src, layer.dst
            t = pkt[transport]
            rows.append(
                (transport, src, dst, int(t.srcport), int(t.dstport), vlans_by_frame[int(pkt.number)])
            )
    finally:
        cap.close()
    return rows, frames


def tshark_vlans(path: Path) -> dict[int, tuple[int, ...]]:
    """VLAN ids per frame, outer first, from tshark's fields (pyshark's JSON mode merges stacked
    802.1Q layers into one, so it cannot report QinQ tags)."""
    out = subprocess.run(
        [
            require_tool("tshark"),
            "-n",
            "-r",
            str(path),
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "vlan.id",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    vlans: dict[int, tuple[int, ...]] = {}
    for line in out.splitlines():
        number, _, ids = line.partition("\t")
        vlans[int(number)] = tuple(int(v) for v in ids.split(",") if v)
    return vlans


def _is_fragment(ip_layer: object) -> bool:
    if int(getattr(ip_layer, "frag_offset", 0) or 0):
        return True
    try:
        return bool(int(ip_layer.flags_tree.mf))  # type: ignore[attr-defined]
    except AttributeError:  # pyshark omits the flags tree on some frames
        return False


@pytest.mark.parametrize("path", PCAPS, ids=[p.name for p in PCAPS])
def test_decode_agrees_with_tshark(path: Path) -> None:
    ours, counters, flows = camwatch_view(path)
    theirs, frames = tshark_view(path)
    assert counters.packets == frames
    assert not counters.decode_errors.get("unsupported_linktype")
    assert len(ours) == len(theirs)
    # Row by row, so a mismatch names the first differing packet.
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == b, f"packet #{i} of the TCP/UDP packets differs: camwatch {a} vs tshark {b}"
    # Conversations: every (vlan, proto, endpoint pair) we keyed as a flow appears in tshark's packets,
    # and each of our flows holds exactly the packets tshark shows for that pair.
    pair_counts = Counter((r[5], r[0], frozenset({(r[1], r[3]), (r[2], r[4])})) for r in theirs)
    flow_counts: Counter[tuple[tuple[int, ...], str, frozenset[tuple[str, int]]]] = Counter()
    for f in flows:
        if f.proto in (6, 17):
            key = (
                f.vlan,
                "tcp" if f.proto == 6 else "udp",
                frozenset({(f.src_ip, f.src_port), (f.dest_ip, f.dest_port)}),
            )
            flow_counts[key] += f.pkts_toserver + f.pkts_toclient
    assert flow_counts == pair_counts


def test_vlan_collisions_are_separate_flows() -> None:
    path = CORPUS / "pcaps" / "zeek_vlan-collisions.pcap"
    if not path.exists():
        pytest.skip(f"corpus file {path} absent")
    _, _, flows = camwatch_view(path)
    tcp_flows = [f for f in flows if f.proto == 6]
    # The same TCP 5-tuple untagged, on VLAN 42 and on QinQ 10/20: three flows.
    assert sorted(f.vlan for f in tcp_flows) == [(), (10, 20), (42,)]
