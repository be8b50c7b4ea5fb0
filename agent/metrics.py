"""Prometheus exposition: the scrape-time collector, a small HTTP server, and the textfile route.

The pipeline counts in plain ints/dicts (agent.stats.Counters); nothing here runs per packet. On
each scrape `CamwatchCollector.collect()` takes an immutable `MetricsSnapshot` and builds fresh metric
families from it, so concurrent scrapes cannot race and stale label values cannot linger. camwatch
never registers anything in client_python's global REGISTRY: `build_registry()` makes an isolated
one. Labels are bounded sets only (reasons, verdicts, known vendors, severities, rule ids); IPs,
domains and hashes never become label values. Every metric is listed in docs/metrics.md.
"""

from __future__ import annotations

import contextlib
import gzip
import ipaddress
import platform
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, ProcessCollector, write_to_textfile
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent import __version__
from agent.errors import CamwatchError
from agent.events import EVENT_TYPES
from agent.stats import (
    DECODE_ERROR_REASONS,
    EVICTION_REASONS,
    FIRMWARE_VERDICTS,
    RELOAD_RESULTS,
    SEVERITIES,
    UPDATE_CHANNELS,
    UPDATE_VERDICTS,
    VERDICT_REASONS_BY_VERDICT,
    Counters,
)

# Vendors that may appear as a label value; anything else is folded into "other" (and a missing
# vendor into "unknown"), so a typo or a spoofed DHCP vendor string cannot mint new series.
KNOWN_VENDORS = frozenset(
    {
        "hikvision",
        "ezviz",
        "dahua",
        "imou",
        "uniview",
        "xiongmai",
        "axis",
        "hanwha",
        "bosch",
        "reolink",
        "amcrest",
        "lorex",
        "tp-link",
        "ubiquiti",
        "intelbras",
        "tvt",
        "raysharp",
        # The remaining vendor ids of rules/oui.yaml (OEM arms, SoC and Wi-Fi module makers whose
        # prefixes cheap cameras carry); a test keeps this set a superset of that file's ids.
        "prama-hikvision",
        "huacheng",
        "hisilicon",
        "realtek",
        "espressif",
        "bilian",
    }
)
DEVICE_CLASSES = frozenset({"camera", "nvr", "dvr", "doorbell", "unknown"})


_MAC = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$")
_LABEL_TEXT = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_HEX_RUN = re.compile(r"[0-9a-fA-F]{16,}")  # hash-like: never a label value

# Per-device metric keys accepted in MetricsSnapshot.per_device[mac] and how they are exported.
PER_DEVICE_METRICS: dict[str, tuple[str, str, str]] = {
    # key: (family name, type, help)
    "packets": ("camwatch_device_packets", "counter", "Packets sent or received by the device."),
    "bytes": ("camwatch_device_bytes", "counter", "Bytes sent or received by the device."),
    "destinations": ("camwatch_device_destinations", "gauge", "Distinct destinations of the device."),
    "unexpected_destinations": (
        "camwatch_device_unexpected_destinations",
        "gauge",
        "Distinct destinations of the device judged unexpected.",
    ),
    "alerts": ("camwatch_device_alerts", "counter", "Alerts raised for the device."),
    "last_seen": (
        "camwatch_device_last_seen_timestamp_seconds",
        "gauge",
        "Capture time the device was last seen (Unix seconds).",
    ),
}


def bounded_vendor(vendor: object) -> str:
    """Vendor label value: a known vendor, "unknown" when missing, "other" otherwise."""
    if vendor is None or vendor == "":
        return "unknown"
    text = str(vendor).strip().lower()
    if text in ("", "unknown", "none"):
        return "unknown"
    return text if text in KNOWN_VENDORS else "other"


def bounded_class(dev_class: object) -> str:
    if dev_class is None or dev_class == "":
        return "unknown"
    text = str(dev_class).strip().lower()
    return text if text in DEVICE_CLASSES else "other"


def bounded_label(value: object, fallback: str = "other") -> str:
    """A free-text label value (rule id, reason) kept only when it is short, plain and cannot be an
    IP address or a hash; otherwise `fallback`."""
    text = str(value)
    if not _LABEL_TEXT.match(text) or _HEX_RUN.search(text) or _looks_like_ip(text):
        return fallback
    return text


def _looks_like_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def devices_by_vendor_class(devices: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], int]:
    """Inventory summary for MetricsSnapshot from device records (vendor, class/device_class)."""
    out: dict[tuple[str, str], int] = {}
    for rec in devices:
        key = (bounded_vendor(rec.get("vendor")), bounded_class(rec.get("class", rec.get("device_class"))))
        out[key] = out.get(key, 0) + 1
    return out


@dataclass(frozen=True)
class MetricsSnapshot:
    """What one scrape publishes. `counters` must be a snapshot copy (Counters.snapshot()).

    `per_device` (MAC -> {packets, bytes, destinations, unexpected_destinations, alerts, last_seen})
    is given only when per-device metrics are enabled; the collector exports at most
    `per_device_cap` devices, in the mapping's order (first seen first, so series are stable), and
    counts the rest in camwatch_per_device_dropped_devices. `known_rules` ((rule_id, severity)
    pairs from the loaded rule set) pre-initialises camwatch_alerts_total to 0.
    """

    counters: Counters
    devices_by_vendor_class: dict[tuple[str, str], int] = field(default_factory=dict)
    # (maker, brand) -> devices; labels already bounded by the inventory (rules/fingerprints.yaml)
    devices_by_maker_brand: dict[tuple[str, str], int] = field(default_factory=dict)
    relabelled_devices: int = 0
    per_device: dict[str, dict[str, float]] | None = None
    known_rules: tuple[tuple[str, str], ...] = ()
    # camwatch_up: 1 while `camwatch run` captures on every interface (always 1 for a replay)
    up: int = 1


class CamwatchCollector:
    """client_python custom collector publishing a MetricsSnapshot on every scrape."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot], *, per_device_cap: int = 64) -> None:
        self._snapshot = snapshot
        self.per_device_cap = per_device_cap
        self._build = {"version": __version__, "python": platform.python_version()}

    def collect(self) -> Iterator[Metric]:
        start = time.perf_counter()
        snap = self._snapshot()
        # Build everything first so the duration gauge covers the whole scrape's work.
        families = list(self._families(snap))
        duration = GaugeMetricFamily(
            "camwatch_scrape_duration_seconds",
            "Time camwatch spent building this scrape's metrics.",
            value=time.perf_counter() - start,
        )
        yield from families
        yield duration

    def _families(self, snap: MetricsSnapshot) -> Iterator[Metric]:
        c = snap.counters
        info = GaugeMetricFamily(
            "camwatch_build_info", "camwatch build identity (always 1).", labels=["version", "python"]
        )
        info.add_metric([self._build["version"], self._build["python"]], 1)
        yield info
        yield GaugeMetricFamily(
            "camwatch_up",
            "1 while camwatch is capturing on all its interfaces (always 1 for a replay that serves "
            "metrics), 0 otherwise.",
            value=1 if snap.up else 0,
        )

        yield CounterMetricFamily(
            "camwatch_processed_packets", "Packets processed (decoded or counted as errors).", value=c.packets
        )
        yield CounterMetricFamily(
            "camwatch_processed_bytes", "Bytes of captured frames processed.", value=c.bytes
        )
        yield _labelled_counter(
            "camwatch_decode_errors",
            "Packets that could not be fully decoded, by reason.",
            "reason",
            c.decode_errors,
            DECODE_ERROR_REASONS,
        )
        yield _labelled_counter(
            "camwatch_analyzer_errors",
            "Exceptions raised by an analyzer's hooks (the packet is skipped for that analyzer; "
            "capture continues).",
            "analyzer",
            c.analyzer_errors,
            (),
        )
        yield GaugeMetricFamily("camwatch_flows_active", "Flows currently tracked.", value=c.flows_active)
        yield CounterMetricFamily("camwatch_flows", "Flows created.", value=c.flows_total)
        yield _labelled_counter(
            "camwatch_flows_evicted",
            "Flows removed from the flow table, by reason.",
            "reason",
            c.flows_evicted,
            EVICTION_REASONS,
        )
        yield GaugeMetricFamily(
            "camwatch_last_packet_timestamp_seconds",
            "Capture time of the newest packet processed (Unix seconds; 0 before the first packet).",
            value=c.last_packet_ts,
        )
        lag = c.last_processed_wall - c.last_packet_ts if c.last_packet_ts else 0.0
        yield GaugeMetricFamily(
            "camwatch_processing_lag_seconds",
            "Wall-clock time minus capture time of the newest packet when it was processed "
            "(live capture: processing delay; replays: age of the capture).",
            value=max(0.0, lag),
        )
        yield _labelled_counter(
            "camwatch_events", "Events generated, by event type.", "event_type", c.events, EVENT_TYPES
        )
        yield CounterMetricFamily(
            "camwatch_capture_files_read", "Capture files opened for reading.", value=c.capture_files
        )
        yield CounterMetricFamily(
            "camwatch_capture_errors",
            "Capture sources that failed (damaged file, interface error).",
            value=c.capture_errors,
        )
        yield self._verdicts(snap)
        yield from self._issue4(snap)
        if c.capture_up:
            yield from self._live_capture(c)
        yield self._alerts(snap)
        yield self._devices(snap)
        yield from self._devices_by_brand(snap)
        if snap.per_device is not None:
            yield from self._per_device(snap.per_device)

    def _verdicts(self, snap: MetricsSnapshot) -> Metric:
        fam = CounterMetricFamily(
            "camwatch_destination_verdicts",
            "Distinct (device, destination, port) seen for the first time, by verdict, reason and "
            "device vendor.",
            labels=["verdict", "reason", "vendor"],
        )
        values: dict[tuple[str, str, str], float] = {}
        vendors = {"unknown"} | {vendor for vendor, _cls in snap.devices_by_vendor_class}
        for vendor in vendors:
            for verdict, reasons in VERDICT_REASONS_BY_VERDICT.items():
                for reason in reasons:
                    values[(verdict, reason, bounded_vendor(vendor))] = 0
        for (verdict, reason, vendor), n in snap.counters.destination_verdicts.items():
            key = (bounded_label(verdict), bounded_label(reason), bounded_vendor(vendor))
            values[key] = values.get(key, 0) + n
        for key in sorted(values):
            fam.add_metric(list(key), values[key])
        return fam

    def _issue4(self, snap: MetricsSnapshot) -> Iterator[Metric]:
        """Update channels, carved firmware and vendor-cloud sessions (fixed label sets at 0)."""
        c = snap.counters
        fam = CounterMetricFamily(
            "camwatch_update_events",
            "Firmware update transfers and update-channel requests seen on the wire, by channel and verdict.",
            labels=["channel", "verdict"],
        )
        values: dict[tuple[str, str], float] = {(ch, v): 0 for ch in UPDATE_CHANNELS for v in UPDATE_VERDICTS}
        for (channel, verdict), n in c.update_events.items():
            key = (bounded_label(channel), bounded_label(verdict))
            values[key] = values.get(key, 0) + n
        for key in sorted(values):
            fam.add_metric(list(key), values[key])
        yield fam
        yield _labelled_counter(
            "camwatch_firmware_carved",
            "Firmware images carved from the wire, by verdict (hash lists, then the scan's highest finding).",
            "verdict",
            c.firmware_carved,
            FIRMWARE_VERDICTS,
        )
        # Service names come from the endpoint catalogue (bounded); the analyzer pre-seeds them.
        yield _labelled_counter(
            "camwatch_cloud_sessions",
            "Flows recognised as a vendor cloud or P2P protocol, by catalogue service.",
            "service",
            c.cloud_sessions,
            (),
        )

    def _live_capture(self, c: Counters) -> Iterator[Metric]:
        """Per-interface capture health of `camwatch run` (absent for replays). Interface names come
        from the configuration, so the label set is bounded and pre-initialised by the daemon."""
        up = GaugeMetricFamily(
            "camwatch_capture_up",
            "1 while camwatch is capturing on the interface, 0 when the capture failed or stopped.",
            labels=["interface"],
        )
        for name in sorted(c.capture_up):
            up.add_metric([bounded_label(name)], c.capture_up[name])
        yield up
        for attr, name, doc in (
            ("capture_packets", "camwatch_capture_packets", "Packets read from the interface's capture."),
            (
                "capture_kernel_packets",
                "camwatch_capture_kernel_packets",
                "Packets the kernel accepted for camwatch's capture socket after the capture filter, "
                "including the dropped ones (PACKET_STATISTICS tp_packets, accumulated).",
            ),
            (
                "capture_kernel_drops",
                "camwatch_capture_kernel_drops",
                "Packets the kernel dropped because the capture ring was full (PACKET_STATISTICS "
                "tp_drops, accumulated).",
            ),
        ):
            yield _labelled_counter(name, doc, "interface", getattr(c, attr), c.capture_up)
        # All and failed as two counters, not a result label (observability conventions, section 3).
        yield CounterMetricFamily(
            "camwatch_config_reloads",
            "Rule and policy reloads requested with SIGHUP (successful and failed).",
            value=sum(c.reloads.get(r, 0) for r in RELOAD_RESULTS),
        )
        yield CounterMetricFamily(
            "camwatch_config_reload_failures",
            "SIGHUP reloads that failed and left the previous rules and policy in force (a broken "
            "file, or a rule bundle that did not verify).",
            value=c.reloads.get("failure", 0),
        )
        if c.worker_packets:  # `camwatch run --workers N` only
            workers = sorted(c.worker_packets, key=lambda w: (len(w), w))
            yield _labelled_counter(
                "camwatch_worker_packets",
                "Packets each capture worker process read from its PACKET_FANOUT share of the rings.",
                "worker",
                c.worker_packets,
                workers,
            )
            yield _labelled_counter(
                "camwatch_worker_queue_dropped_packets",
                "Packets a capture worker could not forward to the analyzers because the queue to the "
                "parent process was full.",
                "worker",
                c.worker_queue_drops,
                workers,
            )

    def _alerts(self, snap: MetricsSnapshot) -> Metric:
        fam = CounterMetricFamily(
            "camwatch_alerts", "Alerts raised, by rule and severity.", labels=["rule_id", "severity"]
        )
        values: dict[tuple[str, str], float] = {}
        for rule_id, severity in snap.known_rules:
            values[(bounded_label(rule_id), _bounded_severity(severity))] = 0
        for (rule_id, severity), n in snap.counters.alerts.items():
            key = (bounded_label(rule_id), _bounded_severity(severity))
            values[key] = values.get(key, 0) + n
        for key in sorted(values):
            fam.add_metric(list(key), values[key])
        return fam

    def _devices(self, snap: MetricsSnapshot) -> Metric:
        fam = GaugeMetricFamily(
            "camwatch_devices", "Devices in the inventory, by vendor and class.", labels=["vendor", "class"]
        )
        values: dict[tuple[str, str], float] = {}
        for (vendor, dev_class), n in snap.devices_by_vendor_class.items():
            key = (bounded_vendor(vendor), bounded_class(dev_class))
            values[key] = values.get(key, 0) + n
        for key in sorted(values):
            fam.add_metric(list(key), values[key])
        return fam

    def _devices_by_brand(self, snap: MetricsSnapshot) -> Iterator[Metric]:
        fam = GaugeMetricFamily(
            "camwatch_devices_by_brand",
            "Devices by underlying maker and the brand they are sold under (protocol evidence).",
            labels=["maker", "brand"],
        )
        for (maker, brand), n in sorted(snap.devices_by_maker_brand.items()):
            fam.add_metric([bounded_label(maker), bounded_label(brand)], n)
        yield fam
        yield GaugeMetricFamily(
            "camwatch_relabelled_devices",
            "Devices whose announced brand differs from the maker their protocols reveal.",
            value=snap.relabelled_devices,
        )

    def _per_device(self, per_device: Mapping[str, Mapping[str, float]]) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for key, (name, kind, doc) in PER_DEVICE_METRICS.items():
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            families[key] = cls(name, doc + " Only when metrics.per_device is on.", labels=["device"])
        kept = 0
        dropped = 0
        for mac, values in per_device.items():
            label = str(mac).lower()
            # Only MACs may become per-device labels; anything else (an IP...) is dropped.
            if kept >= self.per_device_cap or not _MAC.match(label):
                dropped += 1
                continue
            kept += 1
            for key, fam in families.items():
                if key in values:
                    fam.add_metric([label], values[key])
        yield from families.values()
        yield GaugeMetricFamily(
            "camwatch_per_device_dropped_devices",
            "Devices left out of the per-device metrics because of metrics.per_device_cap.",
            value=dropped,
        )


def _bounded_severity(severity: object) -> str:
    text = str(severity).lower()
    return text if text in SEVERITIES else "other"


def _labelled_counter(
    name: str, doc: str, label: str, counts: Mapping[str, int], preset: Iterable[str]
) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, doc, labels=[label])
    values: dict[str, float] = dict.fromkeys(preset, 0)
    for key, n in counts.items():
        bounded = bounded_label(key)
        values[bounded] = values.get(bounded, 0) + n
    for key in sorted(values):
        fam.add_metric([key], values[key])
    return fam


def build_registry(
    snapshot: Callable[[], MetricsSnapshot], *, per_device_cap: int = 64, process_metrics: bool = True
) -> CollectorRegistry:
    """An isolated registry with camwatch's collector (and the client's process_* metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CamwatchCollector(snapshot, per_device_cap=per_device_cap))
    if process_metrics:
        ProcessCollector(registry=registry)
    return registry


# --------------------------------------------------------------------------- HTTP server

_LANDING = b"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>camwatch</title></head>
<body><h1>camwatch</h1>
<p>Camera VLAN traffic monitor.</p>
<ul><li><a href="/metrics">Metrics</a></li><li><a href="/healthz">Health</a></li></ul>
</body></html>
"""


def split_listen(listen: str) -> tuple[str, int]:
    """'ADDR:PORT', '[v6]:PORT', ':PORT' or 'PORT' -> (host, port); port 0 picks a free port."""
    text = listen.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise CamwatchError(f"metrics listen address {listen!r}: expected ADDR:PORT")
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 makes the kernel drop connection attempts when many
    # scrapers arrive at once; they then retry after 1, 3, 7... s (bench/scrape_load.py measured
    # scrapes timing out). The kernel caps this at net.core.somaxconn.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A scraper that gave up (its timeout) and closed the connection is not a server fault:
        # no traceback in the daemon's log for it. Anything else is reported as before.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


RENDER_ATTEMPTS = 3  # a snapshot racing the pipeline thread's dict insertions is simply taken again


class _Flight:
    """One exposition being rendered; scrapes that arrive meanwhile wait for it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.body = b""
        self.error: Exception | None = None


class _SharedRender:
    """Single-flight rendering: concurrent scrapes asking for the same format share one collection
    and encoding instead of each taking the GIL from the capture thread for a full render. A scrape
    gets a snapshot started at most one render before it arrived; a scrape arriving after a render
    finished always starts a new one (nothing is cached)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[tuple[str, bool], _Flight] = {}

    def render(self, key: tuple[str, bool], produce: Callable[[], bytes]) -> bytes:
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.body
        try:
            flight.body = _retry_racing_snapshot(produce)
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()
        return flight.body


def _retry_racing_snapshot(produce: Callable[[], bytes]) -> bytes:
    # Snapshots read the pipeline's dicts without a lock (no lock on the hot path); an insertion in
    # the middle raises "dictionary changed size during iteration", and a second look is consistent.
    for attempt in range(RENDER_ATTEMPTS):
        try:
            return produce()
        except RuntimeError as exc:
            if "changed size during iteration" not in str(exc) or attempt == RENDER_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


class _Server6(_Server):
    address_family = socket.AF_INET6


def _make_handler(registry: Collector, ready: Callable[[], bool]) -> type[BaseHTTPRequestHandler]:
    shared = _SharedRender()

    class Handler(BaseHTTPRequestHandler):
        server_version = "camwatch"
        sys_version = ""

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/metrics":
                self._metrics()
            elif path == "/":
                self._send(200, "text/html; charset=utf-8", _LANDING)
            elif path == "/healthz":
                ok = False
                with contextlib.suppress(Exception):
                    ok = bool(ready())
                self._send(200 if ok else 503, "text/plain; charset=utf-8", b"ok\n" if ok else b"not ready\n")
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found; try /metrics\n")

        def do_HEAD(self) -> None:
            self.do_GET()

        def _metrics(self) -> None:
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            compress = gzip_accepted(self.headers.get("Accept-Encoding", ""))

            def produce() -> bytes:
                body = encoder(registry)
                # level 6: nearly the size of 9 for half the CPU on a text exposition
                return gzip.compress(body, compresslevel=6) if compress else body

            try:
                body = shared.render((content_type, compress), produce)
            except Exception as exc:
                # A failed collection must fail the scrape (Prometheus marks the target down)
                # rather than serve partial data.
                self._send(500, "text/plain; charset=utf-8", f"metrics collection failed: {exc}\n".encode())
                return
            headers = [("Content-Encoding", "gzip")] if compress else []
            self._send(200, content_type, body, headers)

        def _send(
            self, code: int, content_type: str, body: bytes, headers: list[tuple[str, str]] | None = None
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers or ():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Scrapes every few seconds would flood stderr; access logging is not wanted here.
            return

    return Handler


class MetricsServer:
    """Threaded HTTP server for /metrics, / and /healthz on ADDR:PORT."""

    def __init__(self, listen: str, registry: Collector, *, ready: Callable[[], bool] | None = None) -> None:
        self.listen = listen
        self.registry = registry
        self.ready = ready or (lambda: True)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0] if self._server is None else str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The bound port (the real one when the listen address asked for port 0)."""
        return split_listen(self.listen)[1] if self._server is None else int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind and serve in a background thread; a busy port is a one-line CamwatchError."""
        if self._server is not None:
            return
        host, port = split_listen(self.listen)
        server_cls = _Server6 if ":" in host else _Server
        try:
            self._server = server_cls((host, port), _make_handler(self.registry, self.ready))
        except OSError as exc:
            raise CamwatchError(f"metrics listen address {self.listen}: {exc.strerror or exc}") from None
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="camwatch-metrics",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_textfile(path: str | Path, registry: Collector) -> None:
    """Write the registry for node_exporter's textfile collector, atomically (temp file + rename
    in the same directory, so the collector never reads half a file)."""
    target = Path(path)
    if target.suffix != ".prom":
        raise CamwatchError(f"{target}: textfile collector files must end in .prom")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(target), registry)
    except OSError as exc:
        raise CamwatchError(f"{target}: cannot write metrics textfile: {exc.strerror or exc}") from None
