"""Plain counters touched by the pipeline and analyzers, and the immutable snapshot the metrics
collector publishes on each scrape (no prometheus objects on the hot path)."""

from __future__ import annotations

import copy
import threading
from collections import Counter
from dataclasses import dataclass, field

# Fixed label sets, pre-initialised to 0 so rate() and alerts work from the first scrape.
DECODE_ERROR_REASONS = (
    "truncated_frame",
    "unsupported_linktype",
    "bad_ip_header",
    "bad_ipv6_extension",
    "truncated_l4_header",
    "ip_fragment",
)
EVICTION_REASONS = ("idle", "active", "capacity")
VERDICTS = ("allowed", "vendor-cloud", "unexpected")
VERDICT_REASONS = (
    "policy",  # allowed by a policy rule
    "baseline",  # allowed because learned during the learning period
    "catalogue",  # a known vendor-cloud service
    "not_in_policy",  # unexpected: no policy rule matches
    "direct_ip",  # unexpected: no DNS answer named the address
    "country",  # unexpected: destination country not allowed
    "port",  # unexpected: port not allowed
    "learning",  # seen while learning (recorded, not judged)
)
# Which reasons go with which verdict (metrics pre-initialise exactly these pairs).
VERDICT_REASONS_BY_VERDICT: dict[str, tuple[str, ...]] = {
    "allowed": ("policy", "baseline", "learning"),
    "vendor-cloud": ("catalogue",),
    # catalogue: a known vendor-cloud service the device's policy group forbids
    "unexpected": ("not_in_policy", "direct_ip", "country", "port", "catalogue"),
}
SEVERITIES = ("info", "low", "medium", "high", "critical")
# Issue 4: update channels (analyzers/traffic/updates.py), firmware carved from the wire.
UPDATE_CHANNELS = ("http", "https", "ftp", "tftp", "isapi", "dahua-cgi", "dvrip", "xmeye-cloud")
UPDATE_VERDICTS = ("expected", "unexpected")
# Verdict of a carved image: the hash lists first, then the highest finding of the firmware scan.
FIRMWARE_VERDICTS = (
    "known-good",
    "known-bad",
    "clean",  # scanned, nothing above low
    "medium",
    "high",
    "critical",
    "incomplete",  # bytes missing on the wire (scanned anyway)
    "not-scanned",  # body not kept (carve cap) or scanning disabled
    "error",
)

RELOAD_RESULTS = ("success", "failure")


@dataclass
class Counters:
    """Mutable counters; updated only by the thread that owns the pipeline."""

    packets: int = 0
    bytes: int = 0
    decode_errors: Counter[str] = field(default_factory=Counter)
    flows_total: int = 0
    flows_active: int = 0
    flows_evicted: Counter[str] = field(default_factory=Counter)
    last_packet_ts: float = 0.0  # capture time of the newest packet processed
    last_processed_wall: float = 0.0  # wall time it was processed (lag = wall - capture time)
    events: Counter[str] = field(default_factory=Counter)  # by event_type
    destination_verdicts: Counter[tuple[str, str, str]] = field(
        default_factory=Counter
    )  # (verdict, reason, vendor) -> distinct (device, destination, port) first seen
    alerts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule_id, severity)
    capture_files: int = 0
    capture_errors: int = 0
    # issue 4 (analyzers/traffic/updates.py, cloud_p2p.py)
    update_events: Counter[tuple[str, str]] = field(default_factory=Counter)  # (channel, verdict)
    firmware_carved: Counter[str] = field(default_factory=Counter)  # FIRMWARE_VERDICTS
    cloud_sessions: Counter[str] = field(default_factory=Counter)  # catalogue service name
    # issue 5, live capture (agent/daemon.py); empty for replays. Keys are the configured interface
    # names, pre-initialised by the daemon before the first scrape.
    capture_up: dict[str, int] = field(default_factory=dict)  # 1 while the interface is captured
    capture_packets: Counter[str] = field(default_factory=Counter)  # records handed to the pipeline
    capture_kernel_packets: Counter[str] = field(default_factory=Counter)  # PACKET_STATISTICS tp_packets
    capture_kernel_drops: Counter[str] = field(default_factory=Counter)  # PACKET_STATISTICS tp_drops
    reloads: Counter[str] = field(default_factory=Counter)  # RELOAD_RESULTS (SIGHUP)
    # `camwatch run --workers N` (agent/fanout.py): keys are worker numbers, pre-initialised
    worker_packets: Counter[str] = field(default_factory=Counter)  # packets read by each worker
    worker_queue_drops: Counter[str] = field(default_factory=Counter)  # forwarded packets dropped
    # Exceptions raised by analyzer hooks, by analyzer NAME (pre-initialised by the pipeline); the
    # packet is skipped for that analyzer and capture goes on (agent/pipeline.py).
    analyzer_errors: Counter[str] = field(default_factory=Counter)

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> Counters:
        """A deep copy safe to read from the scrape thread while the pipeline keeps counting."""
        with self._lock:
            snap = copy.copy(self)
            for name in (
                "decode_errors",
                "flows_evicted",
                "events",
                "destination_verdicts",
                "alerts",
                "update_events",
                "firmware_carved",
                "cloud_sessions",
                "capture_packets",
                "capture_kernel_packets",
                "capture_kernel_drops",
                "reloads",
                "worker_packets",
                "worker_queue_drops",
                "analyzer_errors",
            ):
                setattr(snap, name, Counter(getattr(self, name)))
            snap.capture_up = dict(self.capture_up)
            snap._lock = threading.Lock()
        return snap
