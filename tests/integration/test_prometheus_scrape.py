"""A real Prometheus server scrapes a MetricsServer on loopback and the series arrive, checked through
the Prometheus HTTP API. Bounded waits; the Prometheus process is always killed."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import __version__
from agent.metrics import MetricsServer, MetricsSnapshot, build_registry
from agent.stats import Counters
from tests.conftest import require_tool

pytestmark = pytest.mark.slow

DEADLINE = 25.0  # seconds for Prometheus to become ready and ingest a scrape


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api(base: str, path: str, **params: str) -> dict[str, Any]:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.loads(resp.read())


def wait_for(predicate, what: str, proc: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + DEADLINE
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-3000:]
            pytest.fail(f"prometheus exited with {proc.returncode} while waiting for {what}:\n{tail}")
        try:
            result = predicate()
            if result:
                return result
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last_error = exc
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what} (last error: {last_error}):\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def prometheus(tmp_path: Path, target: str) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    binary = require_tool("prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: camwatch\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    log = tmp_path / "prometheus.log"
    for _attempt in range(3):
        port = free_port()
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            base = f"http://127.0.0.1:{port}"
            try:
                wait_for(lambda base=base: urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200,
                         "readiness", proc, log)  # fmt: skip
            except pytest.fail.Exception:
                if "address already in use" in log.read_text():
                    continue  # another process grabbed the free port first: retry with a new one
                raise
            yield base, proc, log
            return
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    pytest.fail("could not start prometheus on a free loopback port")


def test_real_prometheus_scrapes_camwatch(tmp_path: Path) -> None:
    counters = Counters()
    counters.packets = 4242
    counters.alerts[("CW-DEST-001", "high")] += 3
    snapshot = lambda: MetricsSnapshot(  # noqa: E731
        counters=counters.snapshot(), devices_by_vendor_class={("hikvision", "camera"): 2}
    )
    started = time.monotonic()
    with MetricsServer("127.0.0.1:0", build_registry(snapshot)) as server:
        with prometheus(tmp_path, f"127.0.0.1:{server.port}") as (base, proc, log):

            def build_info() -> list[dict[str, Any]]:
                data = api(base, "/api/v1/query", query="camwatch_build_info")
                return data["data"]["result"] if data["status"] == "success" else []

            result = wait_for(build_info, "camwatch_build_info in the TSDB", proc, log)
            sample = result[0]
            assert sample["metric"]["version"] == __version__
            assert sample["metric"]["job"] == "camwatch"
            assert sample["metric"]["instance"] == f"127.0.0.1:{server.port}"
            assert sample["value"][1] == "1"

            # The target is healthy and the counters/labelled series arrived too.
            targets = api(base, "/api/v1/targets")["data"]["activeTargets"]
            assert [t["health"] for t in targets] == ["up"], targets
            packets = api(base, "/api/v1/query", query="camwatch_processed_packets_total")["data"]["result"]
            assert packets[0]["value"][1] == "4242"
            alerts = api(base, "/api/v1/query", query='camwatch_alerts_total{severity="high"}')["data"][
                "result"
            ]
            assert alerts[0]["metric"]["rule_id"] == "CW-DEST-001" and alerts[0]["value"][1] == "3"

            # A new value is picked up by the next scrapes (collect() runs per scrape).
            counters.packets = 5000

            def updated() -> bool:
                res = api(base, "/api/v1/query", query="camwatch_processed_packets_total")["data"]["result"]
                return bool(res) and res[0]["value"][1] == "5000"

            wait_for(updated, "the updated counter", proc, log)
        assert proc.returncode is not None  # the context manager stopped Prometheus
    assert time.monotonic() - started < 30
