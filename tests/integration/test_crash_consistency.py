"""Crash consistency: `camwatch replay` and `camwatch run` killed with SIGKILL mid-run.

What must hold after the kill (docs/reliability.md, "Crash consistency"):
* the SQLite state store passes `PRAGMA integrity_check`, and everything a reader saw committed
  before the kill (devices, destinations with their counts, baseline, names, findings) is still there;
* `camwatch devices` works on the store as the killed process left it (hot WAL, read-only open);
* every newline-terminated line of the event file is one JSON event; an unterminated tail (only a
  kill inside write() can leave one) is removed by the next run, which says so on stderr;
* the next run on the same state directory and event file works, and the counts continue.

The live case reuses the namespace/veth/tcpreplay harness of test_live_capture.py (root only).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.events import EventWriter, build_event
from tests.conftest import require_tool
from tests.integration import test_live_capture as live
from tests.integration.test_live_capture import CAMWATCH, SAMPLE, SAMPLE_PACKETS, Netns, daemon, wait_until

BIG_PACKETS = 200_000  # one pass takes 0.1-1.5 s (machine, compiled record walk or not)
# The replay gets the file PASSES times: at least 40 s of work even on a fast machine, far longer
# than the 5 s commit interval, so the kill always lands mid-run (it comes right after the first
# commit, so a slow machine does not make the test longer).
PASSES = 400
WAIT = 60.0  # seconds: upper bound of every wait below

netns = live.netns
workdir = live.workdir

CONFIG = "learning: {enabled: true, period: 7d}\n"  # learning fills the baseline table too


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def big_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("crash") / "big.pcap"
    from agent.samplegen import generate

    generate(path, BIG_PACKETS)
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "camwatch.yaml"
    path.write_text(CONFIG)
    return path


def committed(db: Path) -> dict[str, Any]:
    """What a separate reader sees committed: rows of every table the agent persists."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return {
            "devices": {r[0] for r in conn.execute("SELECT mac FROM devices")},
            "destinations": {
                (r[0], r[1], r[2], r[3]): r[4]
                for r in conn.execute("SELECT device, dest_ip, dest_port, proto, count FROM destinations")
            },
            "baseline": set(conn.execute("SELECT device, kind, value FROM baseline")),
            "names": set(conn.execute("SELECT device, ip, name FROM names")),
            "findings": conn.execute("SELECT count(*) FROM findings").fetchone()[0],
        }
    finally:
        conn.close()


def wait_for_commit(db: Path, proc: subprocess.Popen[bytes], what: str) -> dict[str, Any]:
    """Poll the store until devices and destinations are committed; fail if the run ends first."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} ended (rc {proc.returncode}) before the kill: capture too short"
        if db.is_file():
            try:
                state = committed(db)
            except sqlite3.OperationalError:  # schema not created yet
                state = None
            if state and state["devices"] and state["destinations"]:
                return state
        time.sleep(0.2)
    pytest.fail(f"{what}: nothing committed to {db} within {WAIT} s")


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db, timeout=10)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def check_events(path: Path) -> tuple[int, bytes]:
    """Every newline-terminated line is a JSON event; returns (complete lines, unterminated tail)."""
    data = path.read_bytes()
    body, _, tail = data.rpartition(b"\n")
    lines = body.split(b"\n") if body else []
    for n, line in enumerate(lines, 1):
        event = json.loads(line)  # raises on a torn or garbled line
        assert isinstance(event, dict) and "event_type" in event, f"{path}:{n}: {line[:200]!r}"
    return len(lines), tail


def assert_kept(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Everything committed before the kill survived it (counts may only grow)."""
    assert before["devices"] <= after["devices"]
    assert before["baseline"] <= after["baseline"]
    assert before["names"] <= after["names"]
    assert after["findings"] >= before["findings"]
    for key, count in before["destinations"].items():
        assert after["destinations"].get(key, 0) >= count, key


def total_count(state: dict[str, Any]) -> int:
    return sum(state["destinations"].values())


def devices_cli(state_dir: Path) -> set[str]:
    res = subprocess.run(
        [CAMWATCH, "devices", "--json", "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return {d["mac"] for d in json.loads(res.stdout)}


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:  # only the processes this test started, by their pid
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


# --------------------------------------------------------------------------- replay


@pytest.mark.slow
def test_replay_killed_mid_run_keeps_a_consistent_store_and_continues(
    tmp_path: Path, big_capture: Path, config: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    state_dir, events = tmp_path / "state", tmp_path / "events.ndjson"
    db = state_dir / "camwatch.db"
    common = ["--config", str(config), "--state-dir", str(state_dir), "--events", str(events), "-q"]
    proc = subprocess.Popen(
        [CAMWATCH, "replay", *[str(big_capture)] * PASSES, *common],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    procs.append(proc)
    before = wait_for_commit(db, proc, "replay")
    assert before["baseline"] and before["names"]  # learning and DNS state are committed too
    time.sleep(1.0)  # well inside the next batch: uncommitted rows and events in flight
    lines_at_kill = events.read_bytes().count(b"\n")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    # The first thing an operator runs: a read-only open of the store exactly as the kill left it.
    assert devices_cli(state_dir) >= before["devices"]
    assert integrity(db) == "ok"
    after = committed(db)
    assert_kept(before, after)
    complete, tail = check_events(events)
    assert complete >= lines_at_kill > 0

    # The next run on the same state and event file: works, counts continue, the file is clean.
    res = subprocess.run(
        [CAMWATCH, "replay", str(big_capture), *common], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    if tail:
        assert "removed an incomplete last line" in res.stderr
    assert integrity(db) == "ok"
    rerun = committed(db)
    assert_kept(after, rerun)
    assert total_count(rerun) > total_count(after)
    complete_after, tail_after = check_events(events)
    assert tail_after == b""
    assert complete_after > complete
    kinds = [json.loads(line)["event_type"] for line in events.read_text().splitlines()]
    assert kinds[-1] == "stats"


# --------------------------------------------------------------------------- event file repair


def test_writer_removes_a_torn_last_line_and_keeps_foreign_text(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    good = b'{"timestamp":"2025-01-01T00:00:00.000000+00:00","event_type":"stats","stats":{}}\n'
    path.write_bytes(good + good[:37])  # killed 37 bytes into the second line
    with EventWriter(path) as writer:
        writer.write(build_event("dns", {"n": 1}, ts=2.0))
    lines = path.read_bytes().split(b"\n")
    assert lines[0] + b"\n" == good and lines[2] == b""
    assert json.loads(lines[1])["event_type"] == "dns"
    # Not the start of an event (a file the user pointed us at): kept, closed with a newline.
    other = tmp_path / "notes.txt"
    other.write_bytes(b"line one\npartial note")
    with EventWriter(other) as writer:
        writer.write(build_event("dns", {}, ts=3.0))
    text = other.read_bytes().split(b"\n")
    assert text[:2] == [b"line one", b"partial note"] and json.loads(text[2])["event_type"] == "dns"


# --------------------------------------------------------------------------- live capture


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces and veth pairs")
def test_live_daemon_killed_mid_capture_keeps_a_consistent_store_and_continues(
    netns: Netns, workdir: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    tcpreplay = require_tool("tcpreplay")
    (workdir / "camwatch.yaml").write_text(CONFIG)
    extra = ("--config", str(workdir / "camwatch.yaml"))
    db = workdir / "state" / "camwatch.db"
    with daemon(netns, workdir, *extra) as d:
        d.wait_ready()
        live.replay(netns)
        d.wait_packets(SAMPLE_PACKETS)
        before = wait_for_commit(db, d.proc, "camwatch run")
        # Keep traffic flowing (DNS answers keep producing events) and kill mid-capture.
        feeder = subprocess.Popen(
            netns.exec(tcpreplay, "-q", "-i", netns.tx, "--pps=5000", "--loop=40", str(SAMPLE)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(feeder)
        d.wait_packets(2 * SAMPLE_PACKETS)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(timeout=10)
        assert d.proc.returncode == -signal.SIGKILL
        feeder.kill()
        feeder.wait(timeout=10)

    assert devices_cli(workdir / "state") >= before["devices"]
    assert integrity(db) == "ok"
    after = committed(db)
    assert_kept(before, after)
    complete, _tail = check_events(d.events)
    assert complete > 0

    # Restart on the same state and event file: captures again, counts continue, clean stop.
    with daemon(netns, workdir, *extra) as d2:
        d2.wait_ready()
        live.replay(netns)
        d2.wait_packets(SAMPLE_PACKETS)
        wait_until(
            "the next commit",
            lambda: total_count(committed(db)) > total_count(after),
            d2.proc,
            d2.log,
        )
        rc = d2.stop()
    assert rc == 0, d2.log.read_text()
    assert integrity(db) == "ok"
    final = committed(db)
    assert_kept(after, final)
    complete_after, tail_after = check_events(d2.events)
    assert tail_after == b"" and complete_after > complete
    assert json.loads(d2.events.read_text().splitlines()[-1])["event_type"] == "stats"
