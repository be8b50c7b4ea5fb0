"""`camwatch run --workers 2` (PACKET_FANOUT over worker processes, agent/fanout.py) on a veth pair
inside a network namespace this test creates: the events must equal those of an offline replay.

Same harness as test_live_capture.py (its fixtures and helpers are reused): nothing leaves the
namespace, every wait is bounded, the namespace and the daemon are always cleaned up. Needs root.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from tests.integration import test_live_capture as live
from tests.integration.test_live_capture import (
    CAMWATCH,
    PPS,
    SAMPLE_PACKETS,
    Netns,
    _run,
    daemon,
    devices,
    metric,
    norm_events,
    replay,
)

pytestmark = live.pytestmark
# the namespace, work directory and offline-replay fixtures of test_live_capture.py
netns = live.netns
workdir = live.workdir
offline = live.offline


def per_worker(body: str, name: str) -> dict[str, float]:
    pattern = rf'^{name}{{worker="(\d+)"}} (\S+)$'
    return {m.group(1): float(m.group(2)) for m in re.finditer(pattern, body, re.M)}


def test_two_workers_match_offline_replay(
    netns: Netns, workdir: Path, offline: tuple[set[tuple[Any, ...]], set[str]]
) -> None:
    offline_events, offline_devices = offline
    with daemon(netns, workdir, "--workers", "2") as d:
        d.wait_ready()
        body = d.metrics()
        # pre-initialised for both workers before any packet
        assert per_worker(body, "camwatch_worker_queue_dropped_packets_total") == {"0": 0.0, "1": 0.0}
        replay(netns)
        d.wait_packets(SAMPLE_PACKETS)
        time.sleep(1.5)  # one PACKET_STATISTICS read in every worker after the last packet
        body = d.metrics()
        assert metric(body, "camwatch_capture_up", netns.rx) == 1
        assert metric(body, "camwatch_up") == 1
        assert metric(body, "camwatch_capture_packets_total", netns.rx) == SAMPLE_PACKETS
        assert metric(body, "camwatch_capture_kernel_packets_total", netns.rx) == SAMPLE_PACKETS
        assert metric(body, "camwatch_capture_kernel_drops_total", netns.rx) == 0
        assert metric(body, "camwatch_processed_packets_total") == SAMPLE_PACKETS
        packets = per_worker(body, "camwatch_worker_packets_total")
        assert set(packets) == {"0", "1"}, body
        assert all(n > 0 for n in packets.values()), packets  # the fanout hash spread the flows
        assert sum(packets.values()) == SAMPLE_PACKETS
        assert per_worker(body, "camwatch_worker_queue_dropped_packets_total") == {"0": 0.0, "1": 0.0}
        # again, five times faster
        replay(netns, pps=5 * PPS)
        d.wait_packets(2 * SAMPLE_PACKETS)
        time.sleep(1.5)
        body = d.metrics()
        assert metric(body, "camwatch_capture_kernel_packets_total", netns.rx) == 2 * SAMPLE_PACKETS
        assert metric(body, "camwatch_capture_kernel_drops_total", netns.rx) == 0
        assert metric(body, "camwatch_processed_packets_total") == 2 * SAMPLE_PACKETS
        assert per_worker(body, "camwatch_worker_queue_dropped_packets_total") == {"0": 0.0, "1": 0.0}
        rc = d.stop()
    log = d.log.read_text()
    assert rc == 0, log
    assert "0 dropped by the kernel, 0 dropped on worker queues" in log
    assert "PACKET_FANOUT over 2 worker processes" in log
    live = norm_events(d.events)
    assert live == offline_events, (sorted(live - offline_events), sorted(offline_events - live))
    assert sum(1 for e in live if e[0] == "destination") >= 10
    assert devices(d.state) == offline_devices


def test_workers_need_afpacket(netns: Netns) -> None:
    res = _run(netns.exec(CAMWATCH, "run", "-i", netns.rx, "--workers", "2", "--backend", "dumpcap"))
    assert res.returncode == 2
    assert res.stderr.strip() == "camwatch: --workers above 1 needs the afpacket backend (PACKET_FANOUT)"
