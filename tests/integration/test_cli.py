"""The camwatch command line, run as a real process: exit codes, one-line errors, outputs."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from agent.engine import SAMPLE_CAPTURE
from tests.conftest import require_tool

REPO = Path(__file__).resolve().parent.parent.parent


def camwatch(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def events_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_replay_writes_events_summary_and_valid_textfile(tmp_path: Path) -> None:
    ev, prom = tmp_path / "ev.ndjson", tmp_path / "camwatch.prom"
    res = camwatch(
        "replay",
        str(SAMPLE_CAPTURE),
        "--events",
        str(ev),
        "--metrics-textfile",
        str(prom),
        "--state-dir",
        str(tmp_path / "st"),
    )
    assert res.returncode == 0, res.stderr
    assert "Unexpected destinations (2)" in res.stdout and "120.92.92.241" in res.stdout
    types = {e["event_type"] for e in events_of(ev)}
    assert {"device", "dns", "destination", "alert", "stats"} <= types
    text = prom.read_text()
    assert "camwatch_processed_packets_total 2500" in text.replace(".0\n", "\n")
    check = subprocess.run(
        [require_tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_truncated_capture_keeps_what_came_before_and_exits_1(tmp_path: Path) -> None:
    data = SAMPLE_CAPTURE.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) * 2 // 3])
    ev = tmp_path / "ev.ndjson"
    res = camwatch("replay", str(cut), "--events", str(ev), "--state-dir", str(tmp_path / "st"), "-q")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert lines[0].startswith(f"camwatch: {cut} at byte ") and "truncated" in lines[0]
    stats = [e for e in events_of(ev) if e["event_type"] == "stats"]
    assert stats and 1000 < stats[0]["stats"]["packets"] < 2500
    # the state store kept the devices seen before the damage
    res = camwatch("devices", "--json", "--state-dir", str(tmp_path / "st"))
    assert res.returncode == 0 and len(json.loads(res.stdout)) >= 5


def test_gzip_capture_and_a_damaged_file_among_good_ones(tmp_path: Path) -> None:
    gz = tmp_path / "sample.pcap.gz"
    gz.write_bytes(gzip.compress(SAMPLE_CAPTURE.read_bytes()))
    junk = tmp_path / "notes.txt"
    junk.write_text("<!DOCTYPE html> not a capture\n")
    ev = tmp_path / "ev.ndjson"
    res = camwatch(
        "replay", str(junk), str(gz), "--events", str(ev), "--state-dir", str(tmp_path / "st"), "-q"
    )
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and str(junk) in res.stderr and "not a pcap or pcapng" in res.stderr
    stats = [e for e in events_of(ev) if e["event_type"] == "stats"]
    assert stats[0]["stats"]["packets"] == 2500  # the good file after the bad one was processed


def test_fail_on_threshold(tmp_path: Path) -> None:
    args = ("replay", str(SAMPLE_CAPTURE), "--state-dir", str(tmp_path / "st"), "-q")
    assert camwatch(*args, "--fail-on", "medium").returncode == 1  # the sample raises medium alerts
    assert camwatch(*args, "--fail-on", "critical").returncode == 0


def test_usage_and_config_errors_exit_2(tmp_path: Path) -> None:
    res = camwatch("replay")
    assert res.returncode == 2 and "CAPTURE" in res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("flows: {max_flows: lots}\n")
    res = camwatch("replay", str(SAMPLE_CAPTURE), "--config", str(bad))
    assert res.returncode == 2
    assert res.stderr.strip() == f"camwatch: {bad}: flows.max_flows: expected a positive integer, got 'lots'"


def test_every_subcommand_has_help() -> None:
    for cmd in (
        ["replay"],
        ["demo"],
        ["devices"],
        ["findings"],
        ["policy", "import-mud"],
        ["firmware", "scan"],
    ):
        res = camwatch(*cmd, "--help")
        assert res.returncode == 0 and "usage:" in res.stdout, cmd


def test_demo_once_and_findings_table(tmp_path: Path) -> None:
    res = camwatch("demo", "--once", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Devices (10" in res.stdout
    res = camwatch("findings", "--state-dir", str(tmp_path / "var" / "demo"))
    assert res.returncode == 0 and "CW-DEST-002" in res.stdout


def test_import_mud_prints_a_policy_group(tmp_path: Path) -> None:
    mud = {
        "ietf-mud:mud": {
            "mud-version": 1,
            "mud-url": "https://example.com/cam.json",
            "last-update": "2024-01-01T00:00:00+00:00",
            "cache-validity": 48,
            "is-supported": True,
            "systeminfo": "camera",
            "from-device-policy": {"access-lists": {"access-list": [{"name": "from-cam"}]}},
            "to-device-policy": {"access-lists": {"access-list": []}},
        },
        "ietf-access-control-list:acls": {
            "acl": [
                {
                    "name": "from-cam",
                    "type": "ipv4-acl-type",
                    "aces": {
                        "ace": [
                            {
                                "name": "cloud",
                                "matches": {
                                    "ipv4": {"ietf-acldns:dst-dnsname": "cloud.example.com", "protocol": 6},
                                    "tcp": {"destination-port": {"operator": "eq", "port": 443}},
                                },
                                "actions": {"forwarding": "accept"},
                            }
                        ]
                    },
                }
            ]
        },
    }
    path = tmp_path / "cam.json"
    path.write_text(json.dumps(mud))
    res = camwatch("policy", "import-mud", str(path), "--group", "cams")
    assert res.returncode == 0, res.stderr
    assert "cloud.example.com" in res.stdout and "cams" in res.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_keeps_metrics_up_until_interrupted(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent",
            "replay",
            str(SAMPLE_CAPTURE),
            "--state-dir",
            str(tmp_path / "st"),
            "-q",
            "--serve",
            f"127.0.0.1:{port}",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                    body = resp.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert "camwatch_processed_packets_total" in body
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_python_dash_m_agent_and_version() -> None:
    res = camwatch("--version")
    assert res.returncode == 0 and res.stdout.startswith("camwatch ")


@pytest.mark.parametrize("name", ["tcpdump_802.1ad_QinQ.pcap", "zeek_vlan-pcp-dei.pcapng"])
def test_small_corpus_captures_replay_cleanly(name: str, tmp_path: Path) -> None:
    from tests.conftest import corpus_path

    res = camwatch("replay", str(corpus_path("pcaps", name)), "--state-dir", str(tmp_path / "st"), "-q")
    assert res.returncode == 0 and res.stderr == ""
