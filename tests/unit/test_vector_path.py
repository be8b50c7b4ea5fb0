"""The vectorised (NumPy batch) path and the per-packet reference path must agree exactly: same
events byte for byte, same counters, same flow table, on the scenario captures and on captures
built to hit the batch path's corner cases (flow-table cap, VLAN tags, padding, time going
backwards, analyzers that start following a flow in the middle of a batch)."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import dpkt
import pytest

from agent.capture.pcapfile import RecordBatch
from agent.config import Config
from agent.engine import SAMPLE_CAPTURE, Engine
from agent.model import LINKTYPE_ETHERNET, Flow, Packet
from agent.pipeline import Pipeline
from agent.samplegen import generate
from agent.stats import Counters
from analyzers.base import Analyzer
from tests.conftest import CORPUS


def replay(
    capture: Path, tmp: Path, *, vectorised: bool, **cfg_kw: object
) -> tuple[list[str], dict[str, object]]:
    cfg = Config()
    cfg.state_dir = tmp / ("vec" if vectorised else "ref")
    for k, v in cfg_kw.items():
        setattr(cfg, k, v)
    events = cfg.state_dir / "events.ndjson"
    cfg.state_dir.mkdir(parents=True)
    engine = Engine(cfg, events=str(events))
    engine.pipeline.vectorised = vectorised
    errors = engine.replay([str(capture)])
    flows = sorted(
        (
            f.flow_id,
            f.pkts_toserver,
            f.pkts_toclient,
            f.bytes_toserver,
            f.bytes_toclient,
            f.tcp_flags_seen,
            f.last_ts,
            f.payload_pkts_toserver,
            f.payload_pkts_toclient,
        )
        for f in engine.pipeline.flows.live.values()
    )
    engine.finish()
    engine.close()
    c = engine.counters
    summary = {
        "errors": [str(e) for e in errors],
        "packets": c.packets,
        "bytes": c.bytes,
        "flows_total": c.flows_total,
        "evicted": dict(c.flows_evicted),
        "decode_errors": dict(c.decode_errors),
        "last_packet_ts": c.last_packet_ts,
        "live_flows_before_finish": flows,
    }
    return events.read_text(encoding="utf-8").splitlines(), summary


def assert_same(capture: Path, tmp: Path, **cfg_kw: object) -> int:
    vec_events, vec_summary = replay(capture, tmp, vectorised=True, **cfg_kw)
    ref_events, ref_summary = replay(capture, tmp, vectorised=False, **cfg_kw)
    assert vec_summary == ref_summary
    for i, (a, b) in enumerate(zip(vec_events, ref_events, strict=False)):
        assert a == b, f"event {i + 1} differs:\n vectorised: {a}\n per-packet: {b}"
    assert len(vec_events) == len(ref_events)
    assert vec_summary["packets"], "the capture produced no packets"
    return len(vec_events)


@pytest.fixture(scope="module")
def camera_mix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mix") / "mix.pcap"
    generate(path, packets=60_000, seed=7)
    return path


def test_embedded_sample(tmp_path: Path) -> None:
    assert assert_same(SAMPLE_CAPTURE, tmp_path) > 10


def test_generated_camera_mix(camera_mix: Path, tmp_path: Path) -> None:
    # Update downloads, cloud sessions, exploits and discovery all occur in the generated mix, so
    # analyzers follow flows (carving) in the middle of batches here.
    assert assert_same(camera_mix, tmp_path) > 50


def test_generated_mix_with_tiny_flow_table(camera_mix: Path, tmp_path: Path) -> None:
    # Evictions for capacity happen inside batches: the vectorised path must fall back in time.
    assert_same(camera_mix, tmp_path, max_flows=40)


def test_generated_mix_with_short_timeouts(camera_mix: Path, tmp_path: Path) -> None:
    assert_same(camera_mix, tmp_path, flow_idle_timeout=2.0, flow_active_timeout=5.0)


@pytest.mark.parametrize(
    "name",
    ["mudproject_yi_camera.pcap", "2ic80_dahua_web.pcapng", "zeek_wikipedia.pcap", "zeek_http-vlan-0.pcap"],
)
def test_corpus_captures(name: str, tmp_path: Path) -> None:
    path = CORPUS / "pcaps" / name
    if not path.exists():
        pytest.skip(f"{path} absent (third-party corpus not present)")
    assert_same(path, tmp_path)


def _frame(rng: random.Random, i: int) -> bytes:
    """A random mix of what the fast path must accept or refuse."""
    src = f"10.0.{rng.randrange(3)}.{rng.randrange(1, 6)}"
    dst = rng.choice(["10.0.0.1", "8.8.8.8", "203.0.113.9", "10.0.1.7"])
    kind = rng.randrange(10)
    if kind < 5:
        l4: dpkt.Packet = dpkt.tcp.TCP(
            sport=rng.choice([554, 40000 + rng.randrange(4), 80]),
            dport=rng.choice([554, 40000 + rng.randrange(4), 443]),
            flags=rng.choice([0x02, 0x12, 0x10, 0x18, 0x11, 0x04]),
            seq=i,
            data=bytes(rng.randrange(0, 3) * rng.randrange(1, 300)),
        )
        proto = 6
    else:
        l4 = dpkt.udp.UDP(
            sport=rng.choice([5004, 53, 40000 + rng.randrange(4)]),
            dport=rng.choice([5004, 53, 3478, 40000 + rng.randrange(4)]),
            data=bytes(rng.randrange(0, 400)),
        )
        l4.ulen = 8 + len(l4.data)
        proto = 17
    ip = dpkt.ip.IP(
        src=bytes(map(int, src.split("."))), dst=bytes(map(int, dst.split("."))), p=proto, data=l4
    )
    ip.len = 20 + len(bytes(l4))
    if kind == 9:
        ip.offset = 40  # a non-first fragment: must not be counted on a flow
    raw_ip = bytes(ip)
    mac_a, mac_b = b"\x00\x11\x22\x33\x44\x55", b"\xbc\xad\x28\x00\x00\x01"
    if rng.random() < 0.3:
        head = mac_b + mac_a + struct.pack("!HH", 0x8100, rng.choice([10, 20])) + b"\x08\x00"
    else:
        head = mac_b + mac_a + b"\x08\x00"
    frame = head + raw_ip
    if len(frame) < 60:
        frame += b"\x00" * (60 - len(frame))  # Ethernet padding
    if rng.random() < 0.05:
        frame = frame[: rng.randrange(20, len(frame))]  # snapped short
    return frame


def test_adversarial_mix(tmp_path: Path) -> None:
    rng = random.Random(3)
    path = tmp_path / "adv.pcap"
    t = 1_700_000_000.0
    with path.open("wb") as fh:
        writer = dpkt.pcap.Writer(fh, snaplen=262144)
        for i in range(40_000):
            t += rng.choice([0.0, 0.0001, 0.001, 0.3, -0.2])  # time sometimes goes backwards
            frame = _frame(rng, i)
            writer.writepkt(frame, ts=max(t, 1_600_000_000.0))
    assert_same(path, tmp_path, max_flows=200)


class _Snapshots(Analyzer):
    """Records, at every delivered packet and every tick, the counters of every live flow."""

    NAME = "snapshots"
    TCP_PAYLOAD_PACKETS = 40
    FLOW_EVENTS = True

    def __init__(self, follow_at: float | None = None) -> None:
        self.seen: list[tuple[object, ...]] = []
        self.follow_at = follow_at
        self.ctx: Pipeline | None = None

    def _state(self, flow: Flow) -> tuple[object, ...]:
        return (
            flow.flow_id,
            flow.pkts_toserver,
            flow.pkts_toclient,
            flow.bytes_toserver,
            flow.bytes_toclient,
            flow.tcp_flags_seen,
            flow.last_ts,
        )

    def packet(self, pkt: Packet) -> None:
        assert pkt.flow is not None
        self.seen.append(("pkt", pkt.ts, self._state(pkt.flow)))
        if self.follow_at is not None and pkt.ts >= self.follow_at and self.ctx is not None:
            self.ctx.follow(pkt.flow, self)  # from now on every packet of the flow comes here
            self.follow_at = None

    def tick(self, now: float) -> None:
        assert self.ctx is not None
        self.seen.append(("tick", now, sorted(self._state(f) for f in self.ctx.flows.live.values())))

    def flow_end(self, flow: Flow) -> None:
        self.seen.append(("end", self._state(flow)))


def _tcp_frame(src: str, dst: str, sport: int, dport: int, flags: int, payload: bytes = b"") -> bytes:
    seg = dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, data=payload)
    ip = dpkt.ip.IP(src=bytes(map(int, src.split("."))), dst=bytes(map(int, dst.split("."))), p=6, data=seg)
    ip.len = len(bytes(ip))
    return b"\xbc\xad\x28\x00\x00\x01" + b"\x00\x11\x22\x33\x44\x55" + b"\x08\x00" + bytes(ip)


def _batch(frames: list[tuple[float, bytes]]) -> RecordBatch:
    buf = bytearray()
    ts, offs, caps = [], [], []
    for t, f in frames:
        ts.append(t)
        offs.append(len(buf))
        caps.append(len(f))
        buf += f
    return RecordBatch(bytes(buf), LINKTYPE_ETHERNET, 0, ts, offs, caps, list(caps), 0)


def _long_flows(t0: float) -> list[tuple[float, bytes]]:
    """Three long TCP flows: bulk server data (count-only once their payload subscription is
    spent), bare ACKs from the clients (count-only from the start), and a client payload packet
    every 25th packet (delivered while the 40-packet subscription lasts) — across many ticks."""
    frames = []
    t = t0
    for i in range(6000):
        t += 0.004
        c = i % 3
        client, port = f"10.0.0.{10 + c}", 40000 + c
        if i % 25 == 0:
            frames.append((t, _tcp_frame(client, "198.51.100.7", port, 8000, 0x18, b"x" * 30)))
        elif i % 2:
            frames.append((t, _tcp_frame(client, "198.51.100.7", port, 8000, 0x10)))
        else:
            frames.append((t, _tcp_frame("198.51.100.7", client, 8000, port, 0x18, b"v" * 1200)))
    return frames


@pytest.mark.parametrize("follow_at", [None, 1_700_000_012.0])
def test_timers_and_follows_inside_one_batch(follow_at: float | None) -> None:
    """Flows counted in bulk across many ticks and sweeps of one batch, also seen per packet in
    between (and followed half-way): every snapshot an analyzer takes must be identical."""
    results = []
    for vectorised in (True, False):
        snap = _Snapshots(follow_at)
        pl = Pipeline([snap], Counters(), idle_timeout=5.0, vectorised=vectorised)
        snap.ctx = pl
        t0 = 1_700_000_000.0
        # The handshakes come first, in a batch of their own, so the long batch finds the flows.
        hello = []
        for c in range(3):
            client, port = f"10.0.0.{10 + c}", 40000 + c
            hello.append((t0 + c * 0.001, _tcp_frame(client, "198.51.100.7", port, 8000, 0x02)))
            hello.append((t0 + c * 0.001 + 0.0005, _tcp_frame("198.51.100.7", client, 8000, port, 0x12)))
        pl.run_batch(_batch(hello))
        pl.run_batch(_batch(_long_flows(t0 + 1)))
        pl.finish()
        results.append((snap.seen, pl.counters.packets, pl.counters.bytes))
    vec, ref = results
    assert len(vec[0]) == len(ref[0])
    for i, (a, b) in enumerate(zip(vec[0], ref[0], strict=True)):
        assert a == b, f"snapshot {i} differs:\n vectorised: {a}\n per-packet: {b}"
    assert vec[1:] == ref[1:]
    assert sum(1 for s in ref[0] if s[0] == "tick") > 10
