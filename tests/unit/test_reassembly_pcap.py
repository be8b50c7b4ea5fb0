"""Real captures: reassembled TCP streams and HTTP bodies against tshark's own reassembly."""

from __future__ import annotations

import functools
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import dpkt
import pytest

from agent.capture.pcapfile import CaptureReader
from agent.carving import HttpCarver, Transfer
from agent.model import Flow, Packet, ip_text
from agent.pipeline import Pipeline
from agent.reassembly import ConversationTable, TcpConversation
from agent.stats import Counters
from analyzers.base import Analyzer
from tests.conftest import corpus_path, require_tool

Endpoint = tuple[str, int]


class Collect:
    """StreamSink keeping one direction's bytes (gaps marked) for comparison with tshark."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.gaps = 0

    def data(self, chunk: memoryview) -> None:
        self.buf += chunk

    def gap(self, length: int) -> None:
        self.gaps += length

    def end(self) -> None:
        pass


class Tee:
    """Feeds two sinks: the raw collector and the HTTP carver."""

    def __init__(self, *sinks: Any) -> None:
        self.sinks = sinks

    def data(self, chunk: memoryview) -> None:
        for s in self.sinks:
            s.data(chunk)

    def gap(self, length: int) -> None:
        for s in self.sinks:
            s.gap(length)

    def end(self) -> None:
        for s in self.sinks:
            s.end()


@functools.lru_cache(maxsize=32)
def tshark(path: Path, *args: str) -> str:
    exe = require_tool("tshark")
    return subprocess.run([exe, "-r", str(path), *args], capture_output=True, text=True, check=True).stdout


def tshark_streams(path: Path) -> dict[tuple[Endpoint, Endpoint], bytes]:
    """Each TCP stream direction's payload as tshark's Follow TCP Stream reassembles it."""
    n = len(set(tshark(path, "-T", "fields", "-e", "tcp.stream").split()))
    follow = [a for i in range(n) for a in ("-z", f"follow,tcp,raw,{i}")]
    out: dict[tuple[Endpoint, Endpoint], bytearray] = {}
    nodes: list[Endpoint] = []
    for line in tshark(path, "-q", *follow).splitlines():
        if line.startswith("Node "):
            host, _, port = line.split(": ", 1)[1].rpartition(":")
            nodes.append((host.strip("[]"), int(port)))
            if len(nodes) == 2:
                out.setdefault((nodes[0], nodes[1]), bytearray())
                out.setdefault((nodes[1], nodes[0]), bytearray())
        elif line.startswith("====="):
            nodes = []
        elif len(nodes) == 2 and line.strip():
            src, dst = (nodes[1], nodes[0]) if line.startswith("\t") else (nodes[0], nodes[1])
            out[(src, dst)] += bytes.fromhex(line.strip())
    return {k: bytes(v) for k, v in out.items()}


def tshark_content_lengths(path: Path) -> list[int]:
    return sorted(
        int(v)
        for v in tshark(
            path, "-Y", "http.response", "-T", "fields", "-e", "http.content_length_header"
        ).split()
    )


def check_http(transfers: list[Transfer], expected_lengths: list[int], expected_responses: int) -> None:
    responses = [t for t in transfers if t.direction == "toclient"]
    assert len(responses) == expected_responses
    declared = sorted(t.declared_size for t in responses if t.declared_size is not None)
    assert declared == expected_lengths
    for t in responses:
        assert t.complete and t.bytes_missing == 0
        if t.declared_size is not None:
            assert t.size == len(t.data) == t.declared_size
        if not t.header("content-encoding") and t.status == 200:
            assert t.sha256 is not None


# -- dpkt-driven ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["dpkt_http.pcap", "zeek_wikipedia.pcap"])
def test_dpkt_read_capture_reassembles_like_tshark(name: str) -> None:
    path = corpus_path("pcaps", name)
    convs: dict[frozenset[Endpoint], tuple[Endpoint, TcpConversation]] = {}
    sinks: dict[tuple[Endpoint, Endpoint], Collect] = {}
    transfers: list[Transfer] = []
    with path.open("rb") as fh:
        for _ts, buf in dpkt.pcap.Reader(fh):
            ip = dpkt.ethernet.Ethernet(buf).data
            if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.tcp.TCP):
                continue
            seg = ip.data
            src, dst = (ip_text(ip.src), seg.sport), (ip_text(ip.dst), seg.dport)
            key = frozenset((src, dst))
            if key not in convs:
                # The originator is the first sender, unless that packet is a SYN+ACK.
                orig, resp = (dst, src) if seg.flags & 0x12 == 0x12 else (src, dst)
                carver = HttpCarver(transfers.append)
                up, down = sinks[(orig, resp)], sinks[(resp, orig)] = Collect(), Collect()
                conv = TcpConversation(Tee(up, carver.requests), Tee(down, carver.responses))
                convs[key] = (orig, conv)
            orig, conv = convs[key]
            conv.add(src == orig, seg.seq, seg.data, seg.flags)
    for _, conv in convs.values():
        conv.close()

    expected = tshark_streams(path)
    assert expected, "tshark found no TCP streams"
    for direction, payload in expected.items():
        got = sinks[direction]
        assert got.gaps == 0
        assert bytes(got.buf) == payload, direction
    responses = len(tshark(path, "-Y", "http.response", "-T", "fields", "-e", "frame.number").split())
    check_http(transfers, tshark_content_lengths(path), responses)


# -- through camwatch's own capture reader and pipeline --------------------------------------------
class HttpReassembly(Analyzer):
    NAME = "test-pcap-http"
    TCP_PORTS = frozenset({80})
    FLOW_EVENTS = True

    def __init__(self) -> None:
        self.transfers: list[Transfer] = []
        self.sinks: dict[tuple[Endpoint, Endpoint], Collect] = defaultdict(Collect)
        self.table = ConversationTable(self._new)

    def _new(self, flow: Flow | None) -> TcpConversation:
        assert flow is not None
        cli, srv = (flow.src_ip, flow.src_port), (flow.dest_ip, flow.dest_port)
        carver = HttpCarver(self.transfers.append)
        return TcpConversation(
            Tee(self.sinks[(cli, srv)], carver.requests),
            Tee(self.sinks[(srv, cli)], carver.responses),
            flow=flow,
        )

    def packet(self, pkt: Packet) -> None:
        self.table.packet(pkt)

    def flow_end(self, flow: Flow) -> None:
        self.table.end(flow)

    def done(self) -> None:
        self.table.close()


@pytest.mark.parametrize("name", ["dpkt_http.pcap", "zeek_wikipedia.pcap", "2ic80_dahua_web.pcapng"])
def test_pipeline_capture_reassembles_like_tshark(name: str) -> None:
    path = corpus_path("pcaps", name)
    an = HttpReassembly()
    pl = Pipeline([an], Counters())
    with CaptureReader(path) as reader:
        for batch in reader.batches():
            pl.run_batch(batch)
    pl.finish()
    expected = tshark_streams(path)
    port80 = {k: v for k, v in expected.items() if 80 in (k[0][1], k[1][1])}
    assert port80
    for direction, payload in port80.items():
        assert an.sinks[direction].gaps == 0
        assert bytes(an.sinks[direction].buf) == payload, direction
    responses = len(tshark(path, "-Y", "http.response", "-T", "fields", "-e", "frame.number").split())
    check_http(an.transfers, tshark_content_lengths(path), responses)
