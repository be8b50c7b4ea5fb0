"""`promtool check metrics` (the real binary) passes camwatch's exposition: the /metrics text, the
node_exporter textfile, and the per-device variant. A deliberately bad exposition proves the check
is live (promtool exits non-zero and names the problem)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from agent.metrics import MetricsSnapshot, build_registry, write_textfile
from agent.stats import Counters
from tests.conftest import require_tool


def realistic_snapshot(per_device: bool) -> MetricsSnapshot:
    c = Counters()
    c.packets, c.bytes = 2_500_000, 1_900_000_000
    c.decode_errors.update({"truncated_frame": 12, "ip_fragment": 40})
    c.flows_total, c.flows_active = 48_000, 1_200
    c.flows_evicted.update({"idle": 46_000, "active": 700, "capacity": 100})
    c.last_packet_ts, c.last_processed_wall = 1_740_910_504.5, 1_740_910_504.6
    c.events.update({"device": 14, "destination": 230, "dns": 1_800, "alert": 9, "stats": 1})
    c.destination_verdicts.update(
        {
            ("allowed", "policy", "hikvision"): 120,
            ("vendor-cloud", "catalogue", "hikvision"): 40,
            ("vendor-cloud", "catalogue", "dahua"): 31,
            ("unexpected", "direct_ip", "xiongmai"): 6,
            ("unexpected", "country", "unknown"): 2,
        }
    )
    c.alerts.update({("CW-DEST-001", "high"): 6, ("CW-DNS-004", "medium"): 2, ("CW-FW-002", "critical"): 1})
    c.capture_files = 3
    macs = [f"bc:ad:28:00:00:{i:02x}" for i in range(12)]
    devices = {m: _device(i) for i, m in enumerate(macs)}
    return MetricsSnapshot(
        counters=c.snapshot(),
        devices_by_vendor_class={
            ("hikvision", "camera"): 8,
            ("dahua", "nvr"): 2,
            ("xiongmai", "dvr"): 1,
            ("unknown", "unknown"): 3,
        },
        per_device=devices if per_device else None,
        known_rules=(("CW-DEST-001", "high"), ("CW-FW-001", "critical")),
    )


def _device(i: int) -> dict[str, float]:
    return {
        "packets": 100 + i,
        "bytes": 10_000 * i,
        "destinations": i,
        "unexpected_destinations": 0,
        "alerts": i % 2,
        "last_seen": 1_740_910_500.0 + i,
    }


def promtool_check(text: bytes) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool")
    return subprocess.run(
        [promtool, "check", "metrics"], input=text.decode(), capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("per_device", [False, True], ids=["default", "per_device"])
def test_exposition_is_promtool_clean(per_device: bool) -> None:
    registry = build_registry(lambda: realistic_snapshot(per_device), per_device_cap=8)
    text = generate_latest(registry)
    assert b"camwatch_destination_verdicts_total" in text
    assert (b'device="bc:ad:28:00:00:07"' in text) is per_device
    result = promtool_check(text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


def test_textfile_is_promtool_clean(tmp_path: Path) -> None:
    path = tmp_path / "camwatch.prom"
    write_textfile(path, build_registry(lambda: realistic_snapshot(False), process_metrics=False))
    result = promtool_check(path.read_bytes())
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_is_live() -> None:
    bad = b"# HELP camwatch_bad A counter without the suffix.\n# TYPE camwatch_bad counter\ncamwatch_bad 1\n"
    result = promtool_check(bad)
    assert result.returncode != 0
    assert "_total" in result.stdout + result.stderr
