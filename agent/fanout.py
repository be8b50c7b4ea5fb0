"""`camwatch run --workers N`: capture on several cores with PACKET_FANOUT.

Layout (docs/live-capture.md, "Multi-core capture"):

* The parent opens, per worker and interface, one AF_PACKET socket with its own TPACKET_V3 ring and
  joins the sockets of an interface into one PACKET_FANOUT group (PACKET_FANOUT_HASH with
  PACKET_FANOUT_FLAG_DEFRAG: the kernel's flow hash is symmetric, so both directions of a flow reach
  the same socket). It then drops privileges and forks N worker processes; each keeps only its own
  sockets.
* A worker runs the hot path: the unchanged `Pipeline` (decode, flow table, counters, dispatch
  tables) with *forwarding stand-ins* in place of the analyzers. A stand-in has the declarations of
  the real analyzer (ports, EtherTypes, first-N payload packets), so the dispatch tables select
  exactly the packets the analyzers subscribed to; instead of analysing them it appends a compact
  record (frame bytes, time stamp, link type, decoded fields, flow key and flow counters) to the next
  message. Flow starts and ends are forwarded too (flows by key).
* The parent runs the real analyzers, the event writer, the state store and the Prometheus
  collector. Records of all workers are merged in time-stamp order (each message carries a watermark:
  the capture time up to which the worker has handed over everything), so a DNS answer seen by one
  worker is processed before the flow it names that another worker saw.
* follow()/unfollow()/expect() happen in the parent on mirror flows. Every new flow, and every flow
  that just had a packet forwarded, stays "provisionally followed" in its worker (all its packets are
  forwarded) until the parent has processed that packet and told the owning worker whether an
  analyzer follows the flow; so the packets right after a follow() decision are not lost.
* Worker -> parent is a bounded queue: when it is full the worker drops the message and counts its
  packets in `camwatch_worker_queue_dropped_packets_total{worker}` rather than block the ring.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import queue
import select
import signal
import time
from collections import Counter, deque
from multiprocessing.connection import Connection
from typing import Any

from agent.capture.pcapfile import RecordBatch
from agent.config import Config
from agent.daemon import (
    COMMIT_INTERVAL,
    IDLE_CLOCK,
    POLL_MS,
    STATS_INTERVAL,
    Daemon,
    Source,
    drop_privileges,
    log,
    start_metrics,
)
from agent.errors import UsageError
from agent.model import Flow, Packet
from agent.pipeline import Pipeline
from agent.stats import Counters
from analyzers.base import Analyzer

QUEUE_MESSAGES = 256  # per worker: messages (one per poll round) waiting for the parent
WATERMARK_LAG = 0.3  # s: packets older than this have left the kernel ring (50 ms block timeout)
HEARTBEAT = 0.1  # s: an idle worker still sends its watermark and counters this often
STOP_WAIT = 15.0  # s: how long the parent waits for the workers' last messages on shutdown
FORWARD = "__forward__"

# Record layout (a list, so that several stand-ins can add their names to one packet's record):
TS, KIND, KEY, STATIC, STATE, PKT, FRAME, NAMES = range(8)
KIND_PACKET, KIND_END = 0, 1


# Per-flow counters a worker reports to the analysis process (one list, read and written alike).
_FLOW_STATE_FIELDS = (
    "last_ts",
    "pkts_toserver",
    "pkts_toclient",
    "bytes_toserver",
    "bytes_toclient",
    "tcp_flags_seen",
    "payload_pkts_toserver",
    "payload_pkts_toclient",
)


def _flow_state(flow: Flow) -> tuple[Any, ...]:
    return tuple(getattr(flow, name) for name in _FLOW_STATE_FIELDS)


def _set_flow_state(flow: Flow, state: tuple[Any, ...]) -> None:
    for name, value in zip(_FLOW_STATE_FIELDS, state, strict=True):
        setattr(flow, name, value)


def _flow_static(flow: Flow) -> tuple[Any, ...]:
    return (
        flow.flow_id,
        flow.vlan,
        flow.proto,
        flow.src_ip,
        flow.src_port,
        flow.dest_ip,
        flow.dest_port,
        flow.src_mac,
        flow.dest_mac,
        flow.first_ts,
        flow.key,
        flow.in_iface,
    )


def _packet_fields(pkt: Packet) -> tuple[Any, ...]:
    return (
        pkt.linktype,
        pkt.vlan,
        pkt.src_mac,
        pkt.dest_mac,
        pkt.ethertype,
        pkt.l3_offset,
        pkt.ip_version,
        pkt.src_ip_raw,
        pkt.dest_ip_raw,
        pkt.proto,
        pkt.src_port,
        pkt.dest_port,
        pkt.tcp_flags,
        pkt.payload_offset,
        pkt.payload_len,
        pkt.from_originator,
    )


def _defines(cls: type, hook: str) -> bool:
    return any(hook in vars(k) for k in cls.__mro__ if k not in (Analyzer, object))


# --------------------------------------------------------------------------- worker side


class _Sink:
    """Collects the records of one message in a worker."""

    def __init__(self) -> None:
        self.records: list[list[Any]] = []
        self.packets = 0  # packet records in `records`
        self.seq = 0  # sequence number of the message being filled
        self.provisional: dict[tuple[Any, ...], int] = {}  # flow key -> seq that armed it
        self.clock = 0.0  # capture time of the worker pipeline
        self._pkt: Packet | None = None
        self._rec: list[Any] | None = None
        self.follow: Analyzer | None = None

    def packet(self, pkt: Packet, name: str | None, static: bool = False) -> None:
        if pkt is self._pkt and self._rec is not None:
            if name is not None:
                self._rec[NAMES].append(name)
            return
        flow = pkt.flow
        rec: list[Any] = [
            pkt.ts,
            KIND_PACKET,
            flow.key if flow is not None else None,
            _flow_static(flow) if static and flow is not None else None,
            _flow_state(flow) if flow is not None else None,
            _packet_fields(pkt),
            bytes(pkt.frame),
            [name] if name is not None else [],
        ]
        self.records.append(rec)
        self.packets += 1
        self._pkt, self._rec = pkt, rec

    def arm(self, flow: Flow) -> None:
        """Forward every packet of `flow` until the parent says whether an analyzer follows it."""
        if self.follow is not None:
            flow.followers = [self.follow]
        self.provisional[flow.key] = self.seq

    def end(self, flow: Flow) -> None:
        self.provisional.pop(flow.key, None)
        self.records.append([self.clock, KIND_END, flow.key, None, _flow_state(flow), None, None, None])

    def take(self) -> tuple[list[list[Any]], int]:
        out, n = self.records, self.packets
        self.records, self.packets = [], 0
        self._pkt = self._rec = None
        return out, n


class _Forward(Analyzer):
    """Sees every flow start/end and every packet of (provisionally) followed flows."""

    NAME = FORWARD
    FLOW_EVENTS = True

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink

    def flow_start(self, flow: Flow, pkt: Packet) -> None:
        self.sink.packet(pkt, None, static=True)
        self.sink.arm(flow)

    def packet(self, pkt: Packet) -> None:
        self.sink.packet(pkt, None)

    def flow_end(self, flow: Flow) -> None:
        self.sink.end(flow)


def _stand_in(real: type[Analyzer], sink: _Sink) -> Analyzer:
    """An analyzer with `real`'s subscriptions whose packet() forwards instead of analysing."""
    name = real.NAME

    def packet(self: Analyzer, pkt: Packet) -> None:
        sink.packet(pkt, name)
        if pkt.flow is not None:
            sink.arm(pkt.flow)

    attrs: dict[str, Any] = {
        attr: getattr(real, attr)
        for attr in (
            "NAME",
            "UDP_PORTS",
            "TCP_PORTS",
            "ETHERTYPES",
            "TCP_PAYLOAD_PACKETS",
            "UDP_PAYLOAD_PACKETS",
        )
    }
    attrs["packet"] = packet
    cls = type(f"{real.__name__}Forwarder", (Analyzer,), attrs)
    return cls()


class _WorkerPipeline(Pipeline):
    """The unchanged hot path; only remembers capture time for flow-end records."""

    sink: _Sink

    def _clock(self, ts: float) -> None:
        self.sink.clock = ts
        super()._clock(ts)


def _worker_main(
    wid: int,
    sources: list[Any],
    commands: Connection,
    out: Any,
    cfg: Config,
    analyzer_classes: list[type[Analyzer]],
) -> None:
    stopping = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides (Ctrl-C reaches the group)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    counters = Counters()
    sink = _Sink()
    forward = _Forward(sink)
    sink.follow = forward
    analyzers: list[Analyzer] = [forward] + [
        _stand_in(cls, sink) for cls in analyzer_classes if _defines(cls, "packet")
    ]
    pipeline = _WorkerPipeline(
        analyzers,
        counters,
        idle_timeout=cfg.flow_idle_timeout,
        active_timeout=cfg.flow_active_timeout,
        max_flows=cfg.max_flows,
    )
    pipeline.sink = sink
    by_key = pipeline.flows.by_key
    per_iface: Counter[str] = Counter()
    kernel_packets: Counter[str] = Counter()
    kernel_drops: Counter[str] = Counter()
    queue_drops = 0
    poller = select.poll()
    by_fd: dict[int, Any] = {}
    for src in sources:
        by_fd[src.fileno()] = src
        poller.register(src.fileno(), select.POLLIN)
    poller.register(commands.fileno(), select.POLLIN)
    last_packet_wall = time.monotonic()
    next_stats = time.monotonic() + STATS_INTERVAL
    last_send = 0.0
    watermark = 0.0

    def process(src: Any, batches: list[RecordBatch]) -> None:
        nonlocal last_packet_wall
        n = 0
        for batch in batches:
            pipeline.run_batch(batch)
            n += len(batch)
        if n:
            per_iface[src.name] += n
            last_packet_wall = time.monotonic()

    def read_stats() -> None:
        for src in sources:
            try:
                p, d = src.stats()
            except OSError:
                continue
            kernel_packets[src.name] += p
            kernel_drops[src.name] += d

    def send(final: bool = False) -> None:
        nonlocal queue_drops, last_send, watermark
        records, npkts = sink.take()
        watermark = float("inf") if final else max(watermark, time.time() - WATERMARK_LAG)
        snapshot = {
            "packets": counters.packets,
            "bytes": counters.bytes,
            "flows_total": counters.flows_total,
            "flows_active": counters.flows_active,
            "last_packet_ts": counters.last_packet_ts,
            "decode_errors": dict(counters.decode_errors),
            "flows_evicted": dict(counters.flows_evicted),
            "capture_packets": dict(per_iface),
            "kernel_packets": dict(kernel_packets),
            "kernel_drops": dict(kernel_drops),
            "queue_drops": queue_drops,
        }
        msg = (wid, sink.seq, records, watermark, snapshot, final)
        sink.seq += 1
        last_send = time.monotonic()
        try:
            if final:
                out.put(msg, timeout=STOP_WAIT)
            else:
                out.put_nowait(msg)
        except queue.Full:
            queue_drops += npkts

    def handle_commands() -> None:
        nonlocal stopping
        while True:
            try:
                if not commands.poll():
                    return
                msg = commands.recv()
            except (EOFError, OSError):
                stopping = True  # the parent is gone
                return
            if msg[0] == "stop":
                stopping = True
            elif msg[0] == "sync":
                for key, followed, upto in msg[1]:
                    flow = by_key.get(key)
                    if flow is None:
                        continue
                    if followed:
                        flow.followers = [forward]
                    elif sink.provisional.get(key, -1) <= upto:
                        sink.provisional.pop(key, None)
                        flow.followers = None

    try:
        while not stopping:
            for fd, ev in poller.poll(POLL_MS // 2):
                if fd == commands.fileno():
                    handle_commands()
                    continue
                src = by_fd.get(fd)
                if src is not None and ev & select.POLLIN:
                    process(src, src.read())
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + STATS_INTERVAL
                read_stats()
                if counters.last_packet_ts and now - last_packet_wall >= IDLE_CLOCK:
                    pipeline.advance(max(time.time(), counters.last_packet_ts))
            if sink.records or now - last_send >= HEARTBEAT:
                send()
        # Shutdown: what the kernel already handed over is still forwarded, then every flow ends.
        for src in sources:
            process(src, src.read())
        read_stats()
        pipeline.flows.drain()
        counters.flows_active = 0
        send(final=True)
    finally:
        for src in sources:
            src.close()
        out.close()
        out.join_thread()


# --------------------------------------------------------------------------- parent side


class ParentPipeline(Pipeline):
    """The real analyzers fed from the workers' records; flows are mirrors of the workers' flows."""

    def __init__(self, analyzers: list[Analyzer], counters: Counters, **kw: Any) -> None:
        super().__init__(analyzers, counters, **kw)
        self.by_name = {a.NAME: a for a in analyzers}
        self.mirrors: dict[tuple[Any, ...], list[Any]] = {}  # key -> [worker, Flow, last seq]
        self.touched: set[tuple[Any, ...]] = set()
        self.started = False

    def follow(self, flow: Flow, analyzer: Analyzer) -> None:
        super().follow(flow, analyzer)
        self.touched.add(flow.key)

    def unfollow(self, flow: Flow, analyzer: Analyzer) -> None:
        super().unfollow(flow, analyzer)
        self.touched.add(flow.key)

    def advance(self, now: float) -> None:
        """Idle clock: the parent's clock follows the workers' watermarks instead (see `release`)."""

    def run_record(self, wid: int, seq: int, rec: list[Any]) -> None:
        ts = rec[TS]
        self.started = True
        if ts >= min(self.next_sweep, self.next_tick):
            self._clock(ts)
        self.now = max(self.now, ts)
        key = rec[KEY]
        if rec[KIND] == KIND_END:
            gone = self.mirrors.pop(key, None)
            self.touched.discard(key)
            if gone is None:
                return
            ended: Flow = gone[1]
            _set_flow_state(ended, rec[STATE])
            ended.ended = True
            self._flow_ended(ended)
            return
        fresh = False
        flow: Flow | None = None
        if key is not None:
            static = rec[STATIC]
            if static is not None:
                (fid, vlan, proto, sip, sport, dip, dport, smac, dmac, first, fkey, iface) = static
                flow = Flow(fid, vlan, proto, sip, sport, dip, dport, smac, dmac, first, first)
                flow.key, flow.in_iface = fkey, iface
                self.mirrors[key] = [wid, flow, seq]
                if self.expected:
                    self._match_expected(flow)
                fresh = True
            else:
                entry = self.mirrors.get(key)
                if entry is None:
                    return  # its start was in a message dropped on a full queue
                entry[2] = seq
                flow = entry[1]
            _set_flow_state(flow, rec[STATE])
            self.touched.add(key)
        (lt, vlan, smac, dmac, et, l3, ipv, sraw, draw, proto, sport, dport, flags, poff, plen, fwd) = rec[
            PKT
        ]
        pkt = Packet(
            ts,
            lt,
            memoryview(rec[FRAME]),
            vlan,
            smac,
            dmac,
            et,
            l3,
            ipv,
            sraw,
            draw,
            proto,
            sport,
            dport,
            flags,
            poff,
            plen,
            flow,
            fwd,
        )
        targets: list[Analyzer] = list(flow.followers or ()) if flow is not None else []
        for name in rec[NAMES]:
            a = self.by_name.get(name)
            if a is not None and a not in targets:
                targets.append(a)
        if fresh and flow is not None:
            for a in self.dispatch.flow_start:
                try:
                    a.flow_start(flow, pkt)
                except Exception as exc:
                    self.analyzer_failed(a, "flow_start", exc)
        for a in targets:
            try:
                a.packet(pkt)
            except Exception as exc:
                self.analyzer_failed(a, "packet", exc)

    def syncs(self) -> dict[int, list[tuple[Any, bool, int]]]:
        """Per worker: whether each flow touched since the last call is followed by an analyzer."""
        out: dict[int, list[tuple[Any, bool, int]]] = {}
        for key in self.touched:
            entry = self.mirrors.get(key)
            if entry is not None:
                out.setdefault(entry[0], []).append((key, bool(entry[1].followers), entry[2]))
        self.touched.clear()
        return out

    def finish(self) -> None:
        for _wid, flow, _seq in list(self.mirrors.values()):
            flow.ended = True
            self._flow_ended(flow)
        self.mirrors.clear()
        for a in self.dispatch.done:
            try:
                a.done()
            except Exception as exc:
                self.analyzer_failed(a, "done", exc)
        self.counters.flows_active = 0


class _Worker:
    def __init__(self, wid: int, proc: Any, commands: Connection) -> None:
        self.wid = wid
        self.proc = proc
        self.commands = commands
        self.pending: deque[tuple[int, list[Any]]] = deque()  # (seq, record)
        self.watermark = 0.0
        self.counters: dict[str, Any] = {}
        self.final = False
        self.dead = False

    def send(self, msg: tuple[Any, ...]) -> None:
        if self.dead or self.final:
            return
        with contextlib.suppress(OSError, ValueError):
            self.commands.send(msg)


class FanoutDaemon(Daemon):
    """The parent: merges the workers' records and runs the analyzers, events, store and metrics."""

    def __init__(
        self, engine: Any, sources: list[Source], args: argparse.Namespace, workers: list[_Worker], out: Any
    ) -> None:
        super().__init__(engine, sources, args)
        self.workers = workers
        self.out = out
        c = engine.counters
        for w in workers:
            c.worker_packets[str(w.wid)] = 0
            c.worker_queue_drops[str(w.wid)] = 0
        assert isinstance(engine.pipeline, ParentPipeline)
        self.pipeline: ParentPipeline = engine.pipeline

    def run(self) -> int:
        engine = self.engine
        server = start_metrics(engine, self.ready)
        previous = {
            sig: signal.signal(sig, handler)
            for sig, handler in (
                (signal.SIGTERM, self._on_stop),
                (signal.SIGINT, self._on_stop),
                (signal.SIGHUP, self._on_hup),
            )
        }
        for src in self.sources:
            engine.counters.capture_up[src.name] = 1
        names = ", ".join(s.name for s in self.sources)
        log(
            f"capturing on {names} (afpacket, PACKET_FANOUT over {len(self.workers)} worker processes); "
            f"metrics on {server.url}/metrics"
        )
        self.running = True
        try:
            self._fanout_loop()
            for w in self.workers:
                w.send(("stop",))
            deadline = time.monotonic() + STOP_WAIT
            while time.monotonic() < deadline and not all(w.final or w.dead for w in self.workers):
                self._receive(0.2)
                self._check_workers()
            self._release(final=True)
            for w in self.workers:
                w.proc.join(timeout=5)
                if w.proc.is_alive():
                    w.proc.kill()
                    w.proc.join(timeout=5)
            self.running = False
            for src in self.sources:
                engine.counters.capture_up[src.name] = 0
            engine.finish()
            c = engine.counters
            total = sum(c.capture_packets.values())
            drops = sum(c.capture_kernel_drops.values())
            qdrops = sum(c.worker_queue_drops.values())
            log(
                f"stopped: {total} packets captured, {drops} dropped by the kernel, "
                f"{qdrops} dropped on worker queues, state saved"
            )
        finally:
            self.running = False
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            server.stop()
            for w in self.workers:
                if w.proc.is_alive():
                    w.proc.kill()
                    w.proc.join(timeout=5)
        return 0

    def _fanout_loop(self) -> None:
        engine = self.engine
        next_stats = time.monotonic() + STATS_INTERVAL
        next_commit = time.monotonic() + COMMIT_INTERVAL
        while not self.stopping:
            self._receive(POLL_MS / 1000)
            self._release()
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + STATS_INTERVAL
                self._check_down()
                self._check_workers()
            if now >= next_commit:
                next_commit = now + COMMIT_INTERVAL
                engine.commit()

    def _receive(self, timeout: float) -> None:
        """Take the messages waiting on the queue (waiting at most `timeout` for the first)."""
        try:
            msg = self.out.get(timeout=timeout)
        except queue.Empty:
            return
        for _ in range(4 * QUEUE_MESSAGES):
            self._message(msg)
            try:
                msg = self.out.get_nowait()
            except queue.Empty:
                return

    def _message(self, msg: tuple[Any, ...]) -> None:
        wid, seq, records, watermark, snapshot, final = msg
        w = self.workers[wid]
        w.pending.extend((seq, rec) for rec in records)
        w.watermark = max(w.watermark, watermark)
        w.counters = snapshot
        w.final = w.final or final
        self._merge_counters()

    def _merge_counters(self) -> None:
        c = self.engine.counters
        snaps = [w.counters for w in self.workers if w.counters]
        with c._lock:
            c.packets = sum(s["packets"] for s in snaps)
            c.bytes = sum(s["bytes"] for s in snaps)
            c.flows_total = sum(s["flows_total"] for s in snaps)
            c.flows_active = sum(s["flows_active"] for s in snaps)
            c.last_packet_ts = max((s["last_packet_ts"] for s in snaps), default=c.last_packet_ts)
            for attr, key in (
                ("decode_errors", "decode_errors"),
                ("flows_evicted", "flows_evicted"),
                ("capture_packets", "capture_packets"),
                ("capture_kernel_packets", "kernel_packets"),
                ("capture_kernel_drops", "kernel_drops"),
            ):
                total: Counter[str] = Counter()
                for s in snaps:
                    total.update(s[key])
                counter = getattr(c, attr)
                for name, n in total.items():
                    counter[name] = n
            for w in self.workers:
                if w.counters:
                    c.worker_packets[str(w.wid)] = w.counters["packets"]
                    c.worker_queue_drops[str(w.wid)] = w.counters["queue_drops"]
        for src in self.sources:
            if src.name in self.down and c.capture_packets[src.name] and interface_is_up(src.name):
                self._mark_up(src.name)

    def _release(self, final: bool = False) -> None:
        """Run the records every worker has handed over up to the common watermark, oldest first."""
        live = [w for w in self.workers if not (w.final or w.dead)]
        limit = float("inf") if final or not live else min(w.watermark for w in live)
        batch: list[tuple[float, int, int, list[Any]]] = []
        for w in self.workers:
            pending = w.pending
            while pending and pending[0][1][TS] <= limit:
                seq, rec = pending.popleft()
                batch.append((rec[TS], w.wid, seq, rec))
        pipeline = self.pipeline
        if batch:
            batch.sort(key=lambda item: item[0])  # stable: each worker's order is kept for equal times
            for _ts, wid, seq, rec in batch:
                pipeline.run_record(wid, seq, rec)
            self.engine.counters.last_processed_wall = time.time()
        if pipeline.started and limit != float("inf") and limit > pipeline.now:
            # Capture time moves on with the watermark: flow timeouts and ticks on a quiet link.
            pipeline.now = limit
            if limit >= min(pipeline.next_sweep, pipeline.next_tick):
                pipeline._clock(limit)
        for wid, syncs in pipeline.syncs().items():
            self.workers[wid].send(("sync", syncs))

    def _check_workers(self) -> None:
        for w in self.workers:
            if not w.dead and not w.final and not w.proc.is_alive():
                w.dead = True
                self.down.add(f"worker {w.wid}")
                log(f"capture worker {w.wid} exited unexpectedly (exit code {w.proc.exitcode})")


def interface_is_up(name: str) -> bool:
    from agent.daemon import interface_up

    return bool(interface_up(name))


def run_fanout(args: argparse.Namespace, cfg: Config, nworkers: int) -> int:
    """Entry point of `camwatch run` with more than one worker (afpacket only)."""
    from agent.capture.afpacket import (
        PACKET_FANOUT_FLAG_DEFRAG,
        PACKET_FANOUT_HASH,
        AfPacketSource,
        compile_filter,
    )
    from agent.engine import Engine
    from analyzers import TRAFFIC_ANALYZERS

    if args.backend != "afpacket":
        raise UsageError("--workers above 1 needs the afpacket backend (PACKET_FANOUT)")
    mode = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG
    base = (os.getpid() * 7) & 0xFFFF
    per_worker: list[list[AfPacketSource]] = [[] for _ in range(nworkers)]
    opened: list[AfPacketSource] = []
    workers: list[_Worker] = []
    ctx = multiprocessing.get_context("fork")
    try:
        for i, name in enumerate(cfg.interfaces):
            bpf = compile_filter(cfg.bpf_filter, name) if cfg.bpf_filter else None
            group = (base + i) & 0xFFFF
            for wid in range(nworkers):
                src = AfPacketSource(name, i, bpf=bpf, ring_mb=args.ring_size, fanout=(group, mode))
                opened.append(src)
                per_worker[wid].append(src)
        log(drop_privileges(args.user))
        out = ctx.Queue(maxsize=QUEUE_MESSAGES * nworkers)
        for wid in range(nworkers):
            recv_end, send_end = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_worker_main,
                args=(wid, per_worker[wid], recv_end, out, cfg, list(TRAFFIC_ANALYZERS)),
                name=f"camwatch-worker-{wid}",
                daemon=True,
            )
            proc.start()
            recv_end.close()
            workers.append(_Worker(wid, proc, send_end))
        # The workers own the sockets now; the parent keeps the objects only for their names.
        for src in opened:
            src.close()
        engine = Engine(cfg, events=args.events, evidence=getattr(args, "evidence_pcap", None))
        engine.pipeline = ParentPipeline(
            engine.analyzers,
            engine.counters,
            idle_timeout=cfg.flow_idle_timeout,
            active_timeout=cfg.flow_active_timeout,
            max_flows=cfg.max_flows,
        )
        names = [per_worker[0][i] for i in range(len(cfg.interfaces))]
        try:
            return FanoutDaemon(engine, list(names), args, workers, out).run()
        finally:
            engine.close()
    finally:
        for src in opened:
            src.close()
        for w in workers:
            if w.proc.is_alive():
                w.send(("stop",))
                w.proc.join(timeout=STOP_WAIT)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=5)


__all__ = ["FanoutDaemon", "ParentPipeline", "run_fanout"]
