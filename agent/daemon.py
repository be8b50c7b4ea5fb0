"""`camwatch run`: the live-capture daemon.

One process captures one or more interfaces (AF_PACKET TPACKET_V3 rings, or dumpcap pipes), runs
the Engine's pipeline on every batch, and serves /metrics and /healthz. Start-up order matters for
least privilege:

1. open the capture sockets (needs CAP_NET_RAW);
2. `--user`: drop to that user keeping only CAP_NET_RAW (bounding, permitted, effective, inheritable
   and ambient sets), or, already unprivileged, lower the capability sets to CAP_NET_RAW;
3. only then start dumpcap children, open the state store and the event file (so they belong to the
   unprivileged user) and bind the metrics port.

Signals: SIGTERM / SIGINT finish the batches already captured, end all flows, write the stats event,
commit the state store and exit 0. SIGHUP reloads the endpoint catalogue, the destination policy
and the analyzers' rule files (their `reload()` hook) from the configuration (flows, inventory, DNS
cache and baseline are kept); a reload that fails is logged and the previous rules stay in force.
See docs/live-capture.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import importlib
import os
import pwd
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from agent.capture.pcapfile import RecordBatch
from agent.config import Config, load_config, parse_listen
from agent.errors import CamwatchError, UsageError

POLL_MS = 200  # longest wait in poll(): bounds the reaction time to signals
STATS_INTERVAL = 1.0  # wall seconds between PACKET_STATISTICS reads
COMMIT_INTERVAL = 5.0  # wall seconds between state-store commits
IDLE_CLOCK = 1.0  # with no packet for this long, advance capture time to wall time (flow timeouts)

CAP_NET_RAW = 13
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_SET_NO_NEW_PRIVS = 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1


class Source(Protocol):
    name: str
    index: int

    def fileno(self) -> int: ...
    def read(self, max_blocks: int | None = None) -> list[RecordBatch]: ...
    def stats(self) -> tuple[int, int]: ...
    def error(self) -> str | None: ...
    def close(self) -> None: ...


def log(message: str) -> None:
    print(f"camwatch: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- privileges


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(libc: Any, option: int, arg: int, arg3: int = 0) -> None:
    if (
        libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0))
        != 0
    ):
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def _capset_net_raw(libc: Any, *, raw: bool = True) -> None:
    """Set effective, permitted and inheritable to CAP_NET_RAW only (or nothing)."""
    mask = 1 << CAP_NET_RAW if raw else 0
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)(_CapData(mask, mask, mask), _CapData(0, 0, 0))
    if libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def effective_capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


# Imported before switching users: the interpreter's files may not be readable by the new user
# (an interpreter under /root, for instance), and an import failing mid-capture would stop the daemon.
PRELOAD = (
    "sqlite3",
    "hashlib",
    "encodings.idna",
    "gzip",
    "email.utils",
    "http.server",
    # `--workers N`: queues, locks and the fork start method are imported when first used
    "multiprocessing.queues",
    "multiprocessing.synchronize",
    "multiprocessing.popen_fork",
    "agent.fanout",
    "prometheus_client.exposition",
    "prometheus_client.openmetrics.exposition",
    "agent.engine",
    "agent.catalogue",
    "agent.dnscache",
    "agent.events",
    "agent.geo",
    "agent.inventory",
    "agent.policy",
    "agent.store",
    "agent.metrics",
    "agent.firmware_worker",
    "analyzers",
    "analyzers.firmware.inspect.engine",
    "analyzers.firmware.inspect.hashlist",
    "geoip2fast",
)


def preload_modules() -> None:
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def drop_privileges(user: str | None) -> str:
    """Keep only CAP_NET_RAW; with `user` (start as root), also become that user. Returns a log line."""
    libc = _libc()
    if user is None:
        if os.geteuid() == 0:
            return "running as root (use --user to drop privileges after opening the capture)"
        if effective_capabilities() & ~(1 << CAP_NET_RAW):
            _capset_net_raw(libc)
            return f"running as uid {os.getuid()} with CAP_NET_RAW only"
        return f"running as uid {os.getuid()}"
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"--user {user}: no such user") from None
    if os.geteuid() != 0:
        raise UsageError(f"--user {user}: camwatch must start as root to switch users")
    preload_modules()
    try:
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        last = 40
    try:
        for cap in range(last + 1):
            if cap != CAP_NET_RAW:
                _prctl(libc, PR_CAPBSET_DROP, cap)
        _prctl(libc, PR_SET_KEEPCAPS, 1)
        os.setgroups([])
        os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
        os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
        _capset_net_raw(libc)
        # Ambient: a dumpcap/tcpdump child keeps CAP_NET_RAW without file capabilities.
        _prctl(libc, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_RAW)
        _prctl(libc, PR_SET_KEEPCAPS, 0)
        # No exec (dumpcap, external firmware tools) can gain privileges again through set-uid
        # or file capabilities; the ambient CAP_NET_RAW still reaches a dumpcap child.
        _prctl(libc, PR_SET_NO_NEW_PRIVS, 1)
    except OSError as exc:
        raise CamwatchError(f"cannot drop privileges to {user}: {exc.strerror or exc}") from None
    _check_every_thread(user)
    return f"dropped privileges to {user} (uid {pw.pw_uid}), keeping CAP_NET_RAW only (no new privileges)"


def _check_every_thread(user: str) -> None:
    """Capability sets and no_new_privs are per thread and the drop above changed only this one:
    refuse to run when another thread (started by an imported library) kept more."""
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = dict(
                line.split(":\t", 1) for line in (task / "status").read_text().splitlines() if ":\t" in line
            )
        except OSError:  # the thread ended meanwhile
            continue
        extra_caps = int(fields.get("CapBnd", "0"), 16) & ~(1 << CAP_NET_RAW)
        if extra_caps or fields.get("NoNewPrivs", "1").strip() != "1":
            raise CamwatchError(
                f"cannot drop privileges to {user}: thread {task.name} ({fields.get('Name', '?').strip()}) "
                "was started before the drop and keeps its capabilities"
            )


# --------------------------------------------------------------------------- interfaces


def interface_up(name: str) -> bool | None:
    """IFF_UP of an interface, None when it does not exist."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16sH14x", name.encode()[:15], 0))
        except OSError:
            return None
    return bool(struct.unpack_from("16xH", res)[0] & IFF_UP)


# --------------------------------------------------------------------------- the daemon


def _load(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config)
    if args.interface:
        cfg.interfaces = list(dict.fromkeys(args.interface))
        cfg.overrides["capture.interfaces"] = "--interface"
    if args.filter is not None:
        cfg.bpf_filter = args.filter
        cfg.overrides["capture.filter"] = "--filter"
    if args.listen:
        cfg.metrics_listen = parse_listen("--listen", "address", args.listen)
        cfg.overrides["metrics.listen"] = "--listen"
    if args.state_dir:
        cfg.state_dir = Path(args.state_dir)
        cfg.overrides["state_dir"] = "--state-dir"
    if args.policy:
        paths = [Path(p) for p in args.policy]
        for p in paths:
            if not p.is_file():
                raise UsageError(f"{p}: policy file not found")
        cfg.policy_paths = paths
        cfg.policy_explicit = True
    if getattr(args, "ring_size", None) is not None:
        cfg.ring_size_mb = args.ring_size
        cfg.overrides["capture.ring_size"] = "--ring-size"
    if not cfg.interfaces:
        raise UsageError(
            "no capture interface: give --interface/-i or capture.interfaces in the configuration"
        )
    return cfg


def open_sources(cfg: Config, backend: str, ring_mb: int) -> list[Source]:
    sources: list[Source] = []
    try:
        for i, name in enumerate(cfg.interfaces):
            if backend == "afpacket":
                from agent.capture.afpacket import AfPacketSource, compile_filter

                bpf = compile_filter(cfg.bpf_filter, name) if cfg.bpf_filter else None
                sources.append(AfPacketSource(name, i, bpf=bpf, ring_mb=ring_mb))
            else:
                from agent.capture.pipe import DumpcapSource

                sources.append(DumpcapSource(name, i, capture_filter=cfg.bpf_filter, buffer_mb=ring_mb))
    except BaseException:
        for src in sources:
            src.close()
        raise
    return sources


def start_metrics(engine: Any, ready: Any) -> Any:
    """Start the /metrics server of a daemon; a busy or foreign address is a configuration error."""
    from agent.metrics import MetricsServer

    server = MetricsServer(engine.config.metrics_listen, engine.registry(), ready=ready)
    try:
        server.start()
    except CamwatchError as exc:
        raise UsageError(f"{engine.config.describe('metrics.listen')}: {exc}") from None
    return server


class Daemon:
    """The capture loop; owns the engine, the sources and the metrics server."""

    def __init__(self, engine: Any, sources: list[Source], args: argparse.Namespace) -> None:
        self.engine = engine
        self.sources = sources
        self.args = args
        self.stopping = False
        self.reload_requested = False
        self.running = False
        self.down: set[str] = set()
        c = engine.counters
        for src in sources:
            c.capture_up[src.name] = 0
            for counter in (c.capture_packets, c.capture_kernel_packets, c.capture_kernel_drops):
                counter[src.name] = 0
        for result in ("success", "failure"):
            c.reloads[result] = 0
        self._last_packet_wall = time.monotonic()
        # camwatch_up: 0 before the start, while an interface is down or a worker died, when stopping
        engine.up_check = self.ready

    def ready(self) -> bool:
        return self.running and not self.stopping and not self.down

    # -- signals -----------------------------------------------------------------------------------
    def _on_stop(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _on_hup(self, signum: int, frame: Any) -> None:
        self.reload_requested = True

    def run(self) -> int:
        engine = self.engine
        server = start_metrics(engine, self.ready)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous = {
            sig: signal.signal(sig, handler)
            for sig, handler in (
                (signal.SIGTERM, self._on_stop),
                (signal.SIGINT, self._on_stop),
                (signal.SIGHUP, self._on_hup),
            )
        }
        old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        poller = select.poll()
        poller.register(wake_r, select.POLLIN)
        by_fd: dict[int, Source] = {}
        for src in self.sources:
            by_fd[src.fileno()] = src
            poller.register(src.fileno(), select.POLLIN)
            engine.counters.capture_up[src.name] = 1
        names = ", ".join(f"{s.name} ({getattr(s, 'backend', '?')})" for s in self.sources)
        log(f"capturing on {names}; metrics on {server.url}/metrics")
        self.running = True
        try:
            self._loop(poller, by_fd, wake_r)
            # Shutdown: what the kernel already handed over is still analysed.
            for src in self.sources:
                stop = getattr(src, "stop", None)
                if stop is not None:
                    stop()
                self._process(src, src.read())
            self._read_stats()
            self.running = False
            for src in self.sources:
                engine.counters.capture_up[src.name] = 0
            engine.finish()
            c = engine.counters
            total = sum(c.capture_packets.values())
            drops = sum(c.capture_kernel_drops.values())
            log(f"stopped: {total} packets captured, {drops} dropped by the kernel, state saved")
        finally:
            self.running = False
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(wake_r)
            os.close(wake_w)
            server.stop()
        return 0

    def _loop(self, poller: select.poll, by_fd: dict[int, Source], wake_r: int) -> None:
        engine = self.engine
        next_stats = time.monotonic() + STATS_INTERVAL
        next_commit = time.monotonic() + COMMIT_INTERVAL
        while not self.stopping:
            for fd, ev in poller.poll(POLL_MS):
                if fd == wake_r:
                    with contextlib.suppress(BlockingIOError, OSError):
                        os.read(wake_r, 512)
                    continue
                src = by_fd.get(fd)
                if src is None:
                    continue
                if ev & select.POLLIN:
                    self._process(src, src.read())
                if ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    self._source_error(src, poller, fd)
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + STATS_INTERVAL
                self._read_stats()
                self._check_down()
                self._idle_clock(now)
            if now >= next_commit:
                next_commit = now + COMMIT_INTERVAL
                engine.commit()

    def _process(self, src: Source, batches: list[RecordBatch]) -> None:
        if not batches:
            return
        c = self.engine.counters
        run_batch = self.engine.pipeline.run_batch
        n = 0
        for batch in batches:
            run_batch(batch)
            n += len(batch)
            if batch.ts and batch.ts[-1] > c.last_packet_ts:
                c.last_packet_ts = batch.ts[-1]
        c.capture_packets[src.name] += n
        c.last_processed_wall = time.time()
        self._last_packet_wall = time.monotonic()
        if src.name in self.down:
            self._mark_up(src.name)

    def _read_stats(self) -> None:
        c = self.engine.counters
        for src in self.sources:
            try:
                packets, drops = src.stats()
            except OSError:
                continue
            c.capture_kernel_packets[src.name] += packets
            c.capture_kernel_drops[src.name] += drops

    def _source_error(self, src: Source, poller: select.poll, fd: int) -> None:
        problem = src.error()
        if problem is None:
            return
        if getattr(src, "backend", "") == "dumpcap":
            with contextlib.suppress(KeyError, ValueError):
                poller.unregister(fd)
        if src.name not in self.down:
            self.down.add(src.name)
            self.engine.counters.capture_up[src.name] = 0
            self.engine.counters.capture_errors += 1
            log(f"{src.name}: capture interrupted: {problem}")

    def _mark_up(self, name: str) -> None:
        self.down.discard(name)
        self.engine.counters.capture_up[name] = 1
        log(f"{name}: capture resumed")

    def _check_down(self) -> None:
        for src in self.sources:
            if getattr(src, "backend", "") == "dumpcap":
                continue
            state = interface_up(src.name)
            if src.name in self.down and state:
                self._mark_up(src.name)
            elif src.name not in self.down and state is not True:
                self.down.add(src.name)
                self.engine.counters.capture_up[src.name] = 0
                log(f"{src.name}: interface is {'gone' if state is None else 'down'}")

    def _idle_clock(self, now: float) -> None:
        """On a quiet link capture time stands still; let flow timeouts and ticks follow wall time."""
        c = self.engine.counters
        if c.last_packet_ts and now - self._last_packet_wall >= IDLE_CLOCK:
            self.engine.pipeline.advance(max(time.time(), c.last_packet_ts))

    # -- SIGHUP ------------------------------------------------------------------------------------
    def reload(self) -> None:
        from agent import rulebundle
        from agent.catalogue import EndpointCatalogue
        from agent.policy import Policy

        engine = self.engine
        c = engine.counters
        staged: tuple[Any, Path] | None = None
        try:
            cfg = _load(self.args)
            # With a trust key: verify the bundle and unpack it into a fresh directory; it becomes
            # current only when everything below accepted it.
            staged = rulebundle.stage_configured(cfg, state_dir=engine.config.state_dir)
            if staged is not None:
                cfg.rules_bundle_active = staged[0]
            catalogue = EndpointCatalogue.load(cfg.rules_dir)
            engine.policy.flush(engine.store)  # learning state pending in the old policy goes first
            engine.commit()
            policy = Policy.load(cfg.policy_paths, cfg, catalogue, store=engine.store)
        except (CamwatchError, OSError, ValueError) as exc:
            if staged is not None:
                rulebundle.discard(staged[1])
            c.reloads["failure"] += 1
            log(f"reload failed, keeping the previous rules and policy: {exc}")
            return
        # The analyzers' own rule files (fingerprints, cloud/P2P signatures, exploit signatures,
        # update channels); in fanout mode they run here, in the parent.
        failed = engine.swap_rules(catalogue, policy, cfg, atomic=staged is not None)
        if failed:
            c.reloads["failure"] += 1
            if staged is not None:
                rulebundle.discard(staged[1])
                log(f"reload failed, keeping the previous rule set: {'; '.join(failed)}")
                return
            for problem in failed:
                log(f"reload failed, keeping the previous rules of analyzer {problem}")
        else:
            c.reloads["success"] += 1
        if staged is not None:
            root = rulebundle.rules_root(engine.config.state_dir)
            rulebundle.make_current(root, staged[1])
            rulebundle.prune(root, {staged[1]})
        restart = [
            what
            for what, old, new in (
                ("interfaces", [s.name for s in self.sources], cfg.interfaces),
                ("capture filter", engine.config.bpf_filter, cfg.bpf_filter),
                ("metrics listen address", engine.config.metrics_listen, cfg.metrics_listen),
                ("state directory", engine.config.state_dir, cfg.state_dir),
            )
            if old != new
        ]
        files = ", ".join(str(p) for p in cfg.policy_paths)
        what = f"rules ({cfg.rules_dir})"
        if staged is not None:
            m = staged[0].manifest
            what = f"rule bundle {m.name} {m.version} ({cfg.rules_bundle})"
        log(f"reloaded {what} and policy ({files}): {len(policy.groups)} group(s)")
        if restart:
            log(f"changed {', '.join(restart)}: takes effect after a restart")


def run(args: argparse.Namespace) -> int:
    """Entry point of `camwatch run`."""
    from agent.engine import Engine

    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers {args.workers}: expected a positive number of worker processes")
    cfg = _load(args)
    if cfg.ring_size_mb < 1:
        raise UsageError(f"--ring-size {cfg.ring_size_mb}: expected a positive number of MiB")
    args.ring_size = cfg.ring_size_mb  # the capture sources (and the fanout workers) read it here
    from agent.rulebundle import verify_configured

    verify_configured(cfg)  # a bad rule bundle refuses the start before the capture is opened
    workers = args.workers if args.workers is not None else cfg.workers
    if workers > 1:  # PACKET_FANOUT over worker processes: agent/fanout.py
        from agent.fanout import run_fanout

        return run_fanout(args, cfg, workers)
    sources: list[Source] = []
    try:
        if args.backend == "afpacket":
            sources = open_sources(cfg, args.backend, args.ring_size)
            log(drop_privileges(args.user))
        else:
            log(drop_privileges(args.user))
            sources = open_sources(cfg, args.backend, args.ring_size)
        engine = Engine(cfg, events=args.events, evidence=getattr(args, "evidence_pcap", None))
        try:
            return Daemon(engine, sources, args).run()
        finally:
            engine.close()
    finally:
        for src in sources:
            src.close()
