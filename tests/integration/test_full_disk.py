"""Full disk: the state directory and/or the event file on a tiny tmpfs that fills during a run.

Decided behaviour (docs/reliability.md, "Full disk"): camwatch stops with exit code 3 and one line
naming the file and "no space left on device"; the store keeps everything up to its last commit
and passes `PRAGMA integrity_check`; the event file holds only complete lines; after space is freed
the next run works, and every event the failed run could not write is emitted by it (at least once),
so nothing is lost. `camwatch run` does the same (systemd restarts it). Needs root (mount).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tool
from tests.integration import test_live_capture as live
from tests.integration.test_live_capture import CAMWATCH, SAMPLE, Netns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mounts small tmpfs file systems")

netns = live.netns
workdir = live.workdir
FULL_EXIT = 3


@contextlib.contextmanager
def tiny_fs(size_kib: int) -> Iterator[Path]:
    """A tmpfs of `size_kib` KiB mounted on a fresh directory; always unmounted."""
    mount = require_tool("mount")
    where = Path(tempfile.mkdtemp(prefix="camwatch-full-"))
    source = f"cwfull-{uuid.uuid4().hex[:6]}"
    res = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755", source, str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run([require_tool("umount"), "-l", str(where)], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            where.rmdir()


def grow(where: Path, size_kib: int) -> None:
    """Free space: enlarge the tmpfs in place (the files on it stay)."""
    res = subprocess.run(
        [require_tool("mount"), "-o", f"remount,size={size_kib}k", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr


def replay(state_dir: Path, events: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CAMWATCH, "replay", str(SAMPLE), "--state-dir", str(state_dir), "--events", str(events), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db, timeout=10)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def store_keys(db: Path) -> tuple[set[str], set[tuple[Any, ...]]]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        devices = {r[0] for r in conn.execute("SELECT mac FROM devices")}
        dests = set(conn.execute("SELECT device, dest_ip, dest_port, proto FROM destinations"))
        return devices, dests
    finally:
        conn.close()


def event_lines(path: Path) -> list[dict[str, Any]]:
    """The events of a file that must hold only complete lines (no unterminated tail)."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path}: ends with a partial line: {data[-120:]!r}"
    return [json.loads(line) for line in data.splitlines()]


def facts(events: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """Device and destination facts (what a SOC must never miss)."""
    out: set[tuple[Any, ...]] = set()
    for e in events:
        if e["event_type"] == "device":
            out.add(("device", e["device"]["mac"]))
        elif e["event_type"] == "destination":
            d = e["destination"]
            out.add(("destination", d["device"], d["dest_ip"], d["dest_port"], d["proto"]))
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[set[tuple[Any, ...]], set[str]]:
    """Facts and device MACs of the sample replayed with plenty of space."""
    tmp = tmp_path_factory.mktemp("reference")
    res = replay(tmp / "state", tmp / "events.ndjson")
    assert res.returncode == 0, res.stderr
    return facts(event_lines(tmp / "events.ndjson")), store_keys(tmp / "state" / "camwatch.db")[0]


def assert_one_line(stderr: str, paths: list[Path]) -> None:
    """One line, naming the full file (one of `paths`) and saying the disk is full."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "no space left on device" in lines[0], lines[0]
    assert any(lines[0].startswith(f"camwatch: {p}: ") for p in paths), lines[0]


# (what is on the tiny file system, its size in KiB): the sample writes about 60 KiB of events and
# about 150 KiB of database + WAL (the migrations alone about 70 KiB), so each size fills part-way
# through the replay.
CASES = [("events", 24), ("state", 112), ("both", 128)]


@pytest.mark.parametrize(("where", "size_kib"), CASES, ids=[c[0] for c in CASES])
def test_replay_on_a_full_disk_stops_cleanly_and_the_rerun_loses_nothing(
    where: str, size_kib: int, tmp_path: Path, reference: tuple[set[tuple[Any, ...]], set[str]]
) -> None:
    ref_facts, ref_devices = reference
    with tiny_fs(size_kib) as fs:
        state_dir = fs / "state" if where in ("state", "both") else tmp_path / "state"
        events = fs / "events.ndjson" if where in ("events", "both") else tmp_path / "events.ndjson"
        db = state_dir / "camwatch.db"
        res = replay(state_dir, events)
        assert res.returncode == FULL_EXIT, res.stderr
        assert_one_line(res.stderr, {"events": [events], "state": [db], "both": [events, db]}[where])
        # Failed part-way, not at start-up: some events are out and the schema is committed.
        assert event_lines(events), "the disk filled before the first event"
        assert db.is_file() and integrity(db) == "ok"
        store_keys(db)  # the tables exist: the migrations were committed

        grow(fs, 64 * 1024)
        res = replay(state_dir, events)
        assert res.returncode == 0, res.stderr
        assert integrity(db) == "ok"
        devices, _dests = store_keys(db)
        assert devices == ref_devices
        every = event_lines(events)
        assert every[-1]["event_type"] == "stats"
        # Everything the failed run could not write was emitted by the rerun (at least once).
        assert facts(every) >= ref_facts


@pytest.mark.slow
def test_live_daemon_on_a_full_disk_exits_3_with_one_line(netns: Netns, workdir: Path) -> None:
    with tiny_fs(24) as fs:
        events = fs / "events.ndjson"
        d = live.Daemon(netns, workdir, "--events", str(events))
        try:
            d.wait_ready()
            live.replay(netns)
            d.proc.wait(timeout=live.WAIT)
        finally:
            if d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait(timeout=10)
            d._log_file.close()
        assert d.proc.returncode == FULL_EXIT, d.log.read_text()
        log = d.log.read_text()
        assert "Traceback" not in log
        errors = [line for line in log.splitlines() if "no space left on device" in line]
        assert len(errors) == 1 and str(events) in errors[0], log
        assert event_lines(events)
        assert integrity(workdir / "state" / "camwatch.db") == "ok"
