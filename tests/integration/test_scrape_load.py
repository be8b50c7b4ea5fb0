"""Scrape load: 100 concurrent scrapers on /metrics of `camwatch run` while tcpreplay feeds it at
top speed. Every scrape must succeed (status 200, complete gzip OpenMetrics body); the latency is
measured by bench/scrape_load.py (whose scraper this test runs) and recorded in docs/reliability.md.

Same namespace/veth harness as test_live_capture.py (root only).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, require_tool
from tests.integration import test_live_capture as live
from tests.integration.test_live_capture import Netns, daemon, metric

pytestmark = live.pytestmark
netns = live.netns
workdir = live.workdir

CLIENTS = 100
SECONDS = 8.0
SCRAPER = REPO / "bench" / "scrape_load.py"


@pytest.fixture(scope="module")
def mix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from agent.samplegen import generate

    path = tmp_path_factory.mktemp("scrape") / "mix.pcap"
    generate(path, 100_000, snaplen=256)
    return path


def test_100_concurrent_scrapers_during_full_speed_capture_get_no_errors(
    netns: Netns, workdir: Path, mix: Path
) -> None:
    tcpreplay = require_tool("tcpreplay")
    with daemon(netns, workdir) as d:
        d.wait_ready()
        feeder = subprocess.Popen(
            netns.exec(tcpreplay, "-q", "-i", netns.tx, "--topspeed", "--loop=0", str(mix)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            d.wait_packets(1000)
            before = metric(d.metrics(), "camwatch_processed_packets_total") or 0.0
            cmd = [sys.executable, str(SCRAPER), "client", "--url", f"{d.url}/metrics"]
            res = subprocess.run(
                netns.exec(*cmd, "--clients", str(CLIENTS), "--seconds", str(SECONDS)),
                capture_output=True,
                text=True,
                timeout=SECONDS + 120,
                check=False,
            )
            after = metric(d.metrics(), "camwatch_processed_packets_total") or 0.0
        finally:
            feeder.kill()
            feeder.wait(timeout=10)
        assert res.returncode == 0, res.stderr
        result = json.loads(res.stdout)
        assert result["errors"] == 0, result
        assert result["requests"] >= CLIENTS, result  # every scraper got at least one answer
        assert after > before  # the capture kept being analysed under the load
        status, _ = live.http_get(netns, f"{d.url}/healthz")
        assert status == 200
        rc = d.stop()
    assert rc == 0, d.log.read_text()
