"""The engine: assembles configuration, state, catalogues, analyzers, pipeline, events and metrics,
and runs the `replay`, `demo`, `devices` and `findings` commands.

The engine is also the analyzers' Context (analyzers/base.py): it owns the shared state they read
and the `emit()` they write through.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from agent import __version__
from agent.config import Config, load_config, parse_listen
from agent.errors import CamwatchError, CaptureError, UsageError
from agent.model import Flow, Packet
from agent.pipeline import Pipeline
from agent.stats import SEVERITIES, Counters

SAMPLE_CAPTURE = Path(__file__).resolve().parent / "sample" / "camera_vlan.pcap"
STORE_COMMIT_INTERVAL = 5.0  # wall seconds between state-store commits during a run
SUMMARY_LIMIT = 25  # unexpected destinations listed in the terminal summary


class Engine:
    """One analysis session over one or more capture sources."""

    def __init__(
        self,
        config: Config,
        *,
        events: str | TextIO | None = None,
        per_device_metrics: bool | None = None,
        evidence: str | None = None,
    ) -> None:
        from agent.catalogue import EndpointCatalogue
        from agent.dnscache import PassiveDNS
        from agent.events import EventWriter
        from agent.geo import GeoLookup
        from agent.inventory import Inventory
        from agent.policy import Policy
        from agent.store import StateStore
        from analyzers import TRAFFIC_ANALYZERS

        self.config = config
        if per_device_metrics is not None:
            config.per_device_metrics = per_device_metrics
        if config.trust_keys:
            from agent.rulebundle import activate_configured

            # Only a verified bundle's rules: refuses to start otherwise (exit 2).
            activate_configured(config)
        self.counters = Counters()
        self.store = StateStore(config.state_dir)
        self.catalogue = EndpointCatalogue.load(config.rules_dir)
        self.geo = GeoLookup(config)
        self.geo.load()  # at start-up, not on the first outbound flow
        self.dns = PassiveDNS(config)
        self.inventory = Inventory(config, self.catalogue)
        self.inventory.load(self.store)
        self.policy = Policy.load(config.policy_paths, config, self.catalogue, store=self.store)
        self.writer = EventWriter(events)
        self.alerts_by_severity: Counter[str] = Counter()
        self.unexpected: list[dict[str, Any]] = []
        self.pcap_filename: str | None = None
        self._local_nets = [n for n in config.local_cidrs] + [
            ipaddress.ip_network(c) for c in _always_local()
        ]
        self._last_commit = time.monotonic()
        self._stop = threading.Event()
        # camwatch_up: replays are always up; `camwatch run` replaces this with its readiness check
        self.up_check: Callable[[], bool] = lambda: True
        self.analyzers = [cls() for cls in TRAFFIC_ANALYZERS]
        # (rule_id, severity) of every alert an analyzer can raise: pre-initialised to 0 in metrics
        self.known_rules = tuple(rule for a in self.analyzers for rule in a.KNOWN_RULES)
        for a in self.analyzers:
            a.setup(self)
        self.evidence = None
        if evidence:
            from agent.evidence import EvidenceRing

            self.evidence = EvidenceRing(evidence)
            self.evidence.setup(self)
        self.pipeline = Pipeline(
            self.analyzers,
            self.counters,
            idle_timeout=config.flow_idle_timeout,
            active_timeout=config.flow_active_timeout,
            max_flows=config.max_flows,
        )

    # -- Context protocol -----------------------------------------------------------------------
    def follow(self, flow: Flow, analyzer: Any) -> None:
        self.pipeline.follow(flow, analyzer)

    def unfollow(self, flow: Flow, analyzer: Any) -> None:
        self.pipeline.unfollow(flow, analyzer)

    def expect(self, proto: int, ip: str, port: int, analyzer: Any, until: float) -> None:
        self.pipeline.expect(proto, ip, port, analyzer, until)

    def emit(
        self,
        event_type: str,
        body: dict[str, Any],
        *,
        ts: float,
        flow: Flow | None = None,
        pkt: Packet | None = None,
    ) -> None:
        from agent.events import build_event

        event = build_event(event_type, body, ts=ts, flow=flow, pkt=pkt, pcap_filename=self.pcap_filename)
        self.writer.write(event)
        self.counters.events[event_type] += 1
        if event_type == "alert":
            if self.evidence is not None:
                self.evidence.on_alert(flow, pkt)
            sev = str(body.get("severity", "info"))
            self.alerts_by_severity[sev] += 1
            self.store.add_finding(
                {
                    "rule_id": body.get("rule_id"),
                    "severity": sev,
                    "message": body.get("message"),
                    "device": body.get("device") or (flow.src_mac if flow else None),
                    "src_ip": event.get("src_ip"),
                    "dest_ip": event.get("dest_ip"),
                    "dest_port": event.get("dest_port"),
                    "ts": ts,
                    "event": event,
                }
            )
        elif (
            event_type == "destination"
            and body.get("verdict") == "unexpected"
            and len(self.unexpected) < 10_000
        ):
            self.unexpected.append(event)

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one engine per process; bounded
    def _ip_is_local(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self._local_nets if net.version == addr.version)

    def is_local(self, ip: str, vlan: tuple[int, ...] = ()) -> bool:
        if vlan and self.config.local_vlans and not self.config.local_vlans.isdisjoint(vlan):
            return True
        return self._ip_is_local(ip)

    # -- running ----------------------------------------------------------------------------------
    def replay(self, paths: list[str]) -> list[CaptureError]:
        """Process capture files in order; damaged files are reported and the rest still processed."""
        from agent.capture.pcapfile import open_capture

        errors: list[CaptureError] = []
        for path in paths:
            if self._stop.is_set():
                break
            self.pcap_filename = path
            try:
                with open_capture(path) as reader:
                    self.counters.capture_files += 1
                    for batch in reader.batches():
                        self.pipeline.run_batch(batch)
                        self._maybe_commit()
                        if self._stop.is_set():
                            break
            except CaptureError as exc:
                self.counters.capture_errors += 1
                errors.append(exc)
                print(f"camwatch: {exc}", file=sys.stderr)
        return errors

    def _maybe_commit(self) -> None:
        now = time.monotonic()
        if now - self._last_commit >= STORE_COMMIT_INTERVAL:
            self.commit()
            self._last_commit = now

    def commit(self) -> None:
        self.inventory.flush(self.store)
        # Events first (fdatasync): a committed batch never covers events that are not on disk.
        self.writer.flush()
        self.store.commit()
        if self.evidence is not None:
            self.evidence.write()

    def finish(self) -> None:
        """End of input: end flows, let analyzers flush, write a stats event, persist everything."""
        self.pipeline.finish()
        c = self.counters
        self.emit(
            "stats",
            {
                "packets": c.packets,
                "bytes": c.bytes,
                "flows": c.flows_total,
                "decode_errors": dict(sorted(c.decode_errors.items())),
                "flows_evicted": dict(sorted(c.flows_evicted.items())),
                "events": dict(sorted(c.events.items())),
                "devices": len(self.inventory),
            },
            ts=c.last_packet_ts or time.time(),
        )
        self.commit()

    def close(self) -> None:
        try:
            self.writer.close()
        finally:
            if self.writer.failed:
                # Events of the open batch may be missing from the file: keep the store at its last
                # commit, so a rerun derives and emits them again (docs/reliability.md).
                self.store.discard()
            self.store.close()

    def stop(self) -> None:
        self._stop.set()

    def swap_rules(self, catalogue: Any, policy: Any, cfg: Config, *, atomic: bool) -> list[str]:
        """SIGHUP: put a new endpoint catalogue, policy and rules directory in force, then let the
        analyzers re-read their rule files. Returns the analyzers' problems ("NAME: error").

        `atomic` (rules from a verified bundle, whose unpacked directories never change): when an
        analyzer refuses the new files, everything goes back to the previous rule set, including the
        analyzers that had already taken the new files (they re-read the previous, untouched
        directory), so no mix of two rule sets is ever in force."""
        previous = (self.catalogue, self.policy, self.config.rules_dir, self.config.policy_paths)
        self._set_rules(catalogue, policy, cfg.rules_dir, cfg.policy_paths)
        failed = self.reload_analyzers()
        if failed and atomic:
            self._set_rules(*previous)
            undo = self.reload_analyzers()
            failed += [f"{problem} (while restoring the previous rules)" for problem in undo]
        elif atomic:
            self.config.rules_bundle_active = cfg.rules_bundle_active
        return failed

    def _set_rules(self, catalogue: Any, policy: Any, rules_dir: Path, policy_paths: list[Path]) -> None:
        self.catalogue = catalogue
        self.inventory.catalogue = catalogue
        self.policy = policy
        self.config.rules_dir = rules_dir
        self.config.policy_paths = policy_paths

    def reload_analyzers(self) -> list[str]:
        """SIGHUP: every analyzer's `reload()` hook (analyzers/base.py) re-reads its rule files from
        `config.rules_dir`. Returns "NAME: error" for each analyzer whose files were invalid; those
        keep their previous rules, the others use the new ones."""
        failed: list[str] = []
        for a in self.analyzers:
            try:
                a.reload()
            except Exception as exc:  # a bad rule file must not stop the capture
                failed.append(f"{a.NAME or type(a).__name__}: {exc}")
        return failed

    # -- metrics ----------------------------------------------------------------------------------
    def metrics_snapshot(self) -> Any:
        from agent.metrics import MetricsSnapshot

        per_device = None
        if self.config.per_device_metrics:
            # the collector applies the cap, so it can also report how many devices it dropped
            per_device = self.inventory.per_device_summary(None)
        return MetricsSnapshot(
            known_rules=self.known_rules,
            counters=self.counters.snapshot(),
            devices_by_vendor_class=self.inventory.count_by_vendor_class(),
            devices_by_maker_brand=self.inventory.count_by_vendor_brand(),
            relabelled_devices=sum(1 for d in self.inventory if getattr(d, "relabel", False)),
            per_device=per_device,
            up=1 if self.up_check() else 0,
        )

    def registry(self) -> Any:
        from agent.metrics import build_registry

        return build_registry(self.metrics_snapshot, per_device_cap=self.config.per_device_cap)

    # -- summary ----------------------------------------------------------------------------------
    def summary(self, elapsed: float) -> str:
        c = self.counters
        # A rate over a small file measures start-up costs, not throughput: show it for big ones only.
        rate = f" ({c.packets / elapsed:,.0f} packets/s)" if c.packets >= 100_000 and elapsed > 0 else ""
        lines = [
            f"camwatch {__version__}: {c.packets:,} packets, {c.bytes:,} bytes, {c.flows_total:,} flows "
            f"in {elapsed:.2f} s{rate}",
        ]
        if c.decode_errors:
            errs = ", ".join(f"{k} {v}" for k, v in sorted(c.decode_errors.items()))
            lines.append(f"decode issues: {errs}")
        lines.append("")
        lines.append(self.inventory.summary_table())
        lines.append("")
        if self.unexpected:
            lines.append(f"Unexpected destinations ({len(self.unexpected)}):")
            for ev in self.unexpected[:SUMMARY_LIMIT]:
                d = ev.get("destination", {})
                name = d.get("dns_name") or "(no DNS name: direct IP)"
                where = d.get("country") or "??"
                lines.append(
                    f"  {ev.get('src_ip')} -> {ev.get('dest_ip')}:{ev.get('dest_port')}/{ev.get('proto')}"
                    f"  {name}  [{where}]  reason={d.get('reason')}"
                )
            if len(self.unexpected) > SUMMARY_LIMIT:
                lines.append(
                    f"  ... {len(self.unexpected) - SUMMARY_LIMIT} more (see events / `camwatch findings`)"
                )
        else:
            lines.append("Unexpected destinations: none")
        lines.append("")
        counts = ", ".join(f"{k} {v}" for k, v in sorted(c.events.items())) or "none"
        lines.append(f"Events by type: {counts}")
        alerts = ", ".join(
            f"{s} {self.alerts_by_severity[s]}" for s in SEVERITIES if self.alerts_by_severity[s]
        )
        lines.append(f"Alerts by severity: {alerts or 'none'}")
        return "\n".join(lines)

    def max_alert_severity(self) -> int:
        present = [SEVERITIES.index(s) for s, n in self.alerts_by_severity.items() if n and s in SEVERITIES]
        return max(present, default=-1)


def _always_local() -> tuple[str, ...]:
    from agent.config import ALWAYS_LOCAL_CIDRS

    return ALWAYS_LOCAL_CIDRS


def _load(args: argparse.Namespace) -> Config:
    cfg = load_config(getattr(args, "config", None))
    if getattr(args, "state_dir", None):
        cfg.state_dir = Path(args.state_dir)
        cfg.overrides["state_dir"] = "--state-dir"
    if getattr(args, "policy", None):
        paths = [Path(p) for p in args.policy]
        for p in paths:
            if not p.is_file():
                raise UsageError(f"{p}: policy file not found")
        cfg.policy_paths = paths
        cfg.policy_explicit = True
    return cfg


class _Signals:
    """SIGTERM/SIGINT stop the run cleanly: the current batch finishes, state is flushed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.engine.stop()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _run(args: argparse.Namespace, captures: list[str], serve: str | None) -> int:
    cfg = _load(args)
    events = getattr(args, "events", None)
    engine = Engine(
        cfg,
        events=events,
        per_device_metrics=getattr(args, "per_device_metrics", False) or None,
        evidence=getattr(args, "evidence_pcap", None),
    )
    errors: list[CaptureError] = []
    try:
        with _Signals(engine):
            started = time.perf_counter()
            errors = engine.replay(captures)
            engine.finish()
            elapsed = time.perf_counter() - started
        registry = engine.registry()
        if args.metrics_textfile:
            from agent.metrics import write_textfile

            write_textfile(args.metrics_textfile, registry)
        if not args.quiet:
            out = sys.stderr if events == "-" else sys.stdout
            print(engine.summary(elapsed), file=out)
        if serve is not None and not engine._stop.is_set():
            _serve(engine, registry, serve or cfg.metrics_listen)
    finally:
        engine.close()
    if errors:
        return 1
    if args.fail_on and engine.max_alert_severity() >= SEVERITIES.index(args.fail_on):
        return 1
    return 0


def _serve(engine: Engine, registry: Any, listen: str) -> None:
    from agent.metrics import MetricsServer

    listen = parse_listen("--serve", "address", listen)
    server = MetricsServer(listen, registry, ready=lambda: True)
    try:
        server.start()
    except OSError as exc:
        raise CamwatchError(f"{listen}: cannot listen for metrics: {exc.strerror or exc}") from None
    print(f"Serving metrics on http://{listen}/metrics (Ctrl-C to stop)", flush=True)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()


def run_replay(args: argparse.Namespace) -> int:
    return _run(args, list(args.captures), args.serve)


def run_demo(args: argparse.Namespace) -> int:
    if not SAMPLE_CAPTURE.is_file():
        raise CamwatchError(f"{SAMPLE_CAPTURE}: bundled sample capture is missing (reinstall camwatch)")
    if not getattr(args, "state_dir", None) and not getattr(args, "config", None):
        # The demo keeps its state apart from a real deployment's.
        args.state_dir = str(Path("var") / "demo")
    serve = None if args.once else (args.listen or "")
    return _run(args, [str(SAMPLE_CAPTURE)], serve)


def show_table(args: argparse.Namespace) -> int:
    from agent.store import StateStore
    from agent.tables import print_devices, print_findings

    cfg = _load(args)
    if not (cfg.state_dir / "camwatch.db").is_file():
        raise CamwatchError(
            f"{cfg.state_dir}: no state store here yet (run `camwatch replay` or `camwatch run`)"
        )
    with StateStore(cfg.state_dir, read_only=True) as store:
        if args.command == "devices":
            print_devices(store, args.json, sys.stdout)
        else:
            print_findings(store, args.json, args.severity, sys.stdout)
    return 0
