"""WAL in practice: a reader in another process sees only whole committed batches while the writer
keeps committing, and a long read transaction neither blocks the writer nor sees its commits."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from agent.store import StateStore

BATCHES = 25
BATCH = 400

READER = textwrap.dedent(
    """
    import json, sys, time
    from agent.store import StateStore

    state, expected = sys.argv[1], int(sys.argv[2])
    seen, errors, snapshot_stable = [], [], None
    deadline = time.monotonic() + 20
    with StateStore(state, read_only=True) as store:
        conn = store._c
        # A long read transaction: its snapshot must not move while the writer commits.
        conn.execute("BEGIN")
        a = conn.execute("SELECT count(*) FROM destinations").fetchone()[0]
        time.sleep(0.4)
        b = conn.execute("SELECT count(*) FROM destinations").fetchone()[0]
        conn.execute("COMMIT")
        snapshot_stable = (a, b)
        while time.monotonic() < deadline:
            try:
                n = len(store.load_destination_keys())
            except Exception as exc:  # any error is a test failure, reported to the parent
                errors.append(repr(exc))
                break
            seen.append(n)
            if n >= expected:
                break
            time.sleep(0.005)
    print(json.dumps({"seen": seen, "errors": errors, "snapshot": snapshot_stable}))
    """
)


def test_reader_process_while_writing(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    with StateStore(tmp_path) as writer:
        writer.set_meta("created", "1")
        writer.commit()
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(tmp_path), str(BATCHES * BATCH)],
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(0.2)  # let the reader open its long transaction first
            commit_times = []
            n = 0
            for _ in range(BATCHES):
                for _ in range(BATCH):
                    writer.record_destination(
                        "bc:ad:28:00:00:01",
                        f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}",
                        443,
                        "TCP",
                        {},
                        float(n),
                    )
                    n += 1
                t0 = time.perf_counter()
                writer.commit()
                commit_times.append(time.perf_counter() - t0)
                time.sleep(0.02)
            out, err = reader.communicate(timeout=30)
        finally:
            if reader.poll() is None:
                reader.kill()
                reader.wait()
    assert reader.returncode == 0, err
    result = json.loads(out)
    assert result["errors"] == []
    a, b = result["snapshot"]
    assert a == b, "a read transaction saw a concurrent commit"
    seen = result["seen"]
    assert seen[-1] == BATCHES * BATCH
    assert seen == sorted(seen), "counts went backwards"
    # Batches are atomic: a reader never sees half a batch.
    assert all(count % BATCH == 0 for count in seen), seen
    # The reader's long transaction did not stall the writer (WAL: readers never block writers).
    assert max(commit_times) < 1.0


def test_second_store_opens_and_closes_while_a_batch_is_open(tmp_path: Path) -> None:
    """`camwatch devices` against a running daemon: the daemon holds its batch transaction open for
    seconds; opening, reading and closing another store must neither wait for it nor fail."""
    with StateStore(tmp_path) as daemon:
        daemon.upsert_device("bc:ad:28:00:00:01", {"vendor": "hikvision"})
        daemon.commit()
        daemon.upsert_device("bc:ad:28:00:00:02", {"vendor": "dahua"})  # batch left open
        t0 = time.perf_counter()
        for read_only in (False, True):
            with StateStore(tmp_path, read_only=read_only) as cli:
                assert list(cli.load_devices()) == ["bc:ad:28:00:00:01"]
        assert time.perf_counter() - t0 < 1.0
        daemon.commit()
    with StateStore(tmp_path, read_only=True) as cli:
        assert len(cli.load_devices()) == 2
