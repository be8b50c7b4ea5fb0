"""Schema migrations: a version-1 database (as the first release wrote it) upgrades in order and
keeps its data; migrations are ordered and contiguous."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from agent.store import DB_NAME, MIGRATIONS, SCHEMA_VERSION, StateStore

MAC = "bc:ad:28:00:00:01"


def _make_v1_database(path: Path) -> None:
    """Build the file exactly as a version-1 camwatch left it: v1 DDL, v1 rows, version 1 recorded."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL, "
        "description TEXT NOT NULL)"
    )
    for statement in MIGRATIONS[0].statements:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1, 0, 'initial schema')")
    record = {"mac": MAC, "vendor": "hikvision", "model": "DS-2CD2043G0-I", "ip": "10.20.0.31"}
    conn.execute(
        "INSERT INTO devices (mac, vendor, class, first_seen, last_seen, record) VALUES (?, ?, ?, ?, ?, ?)",
        (MAC, "hikvision", "camera", 1.0, 2.0, json.dumps(record)),
    )
    conn.execute(
        "INSERT INTO destinations VALUES (?, '203.0.113.7', 8666, 'TCP', 1.0, 2.0, 4, ?)",
        (MAC, json.dumps({"verdict": "unexpected", "reason": "direct_ip"})),
    )
    for rule, severity, ts in (("R-low", "low", 1.0), ("R-crit", "critical", 2.0), ("R-med", "medium", 3.0)):
        conn.execute(
            "INSERT INTO findings (rule_id, severity, message, ts, event) VALUES (?, ?, 'm', ?, '{}')",
            (rule, severity, ts),
        )
    conn.execute("INSERT INTO meta VALUES ('learning_started', '123')")
    conn.commit()
    conn.close()


def test_migrations_are_ordered_and_contiguous() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert SCHEMA_VERSION == MIGRATIONS[-1].version >= 2


def test_upgrade_from_v1_keeps_data_and_backfills(tmp_path: Path) -> None:
    _make_v1_database(tmp_path / DB_NAME)
    with StateStore(tmp_path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        # v2 backfilled severity ranks: the severity filter works on old rows.
        assert [f["rule_id"] for f in store.list_findings("medium")] == ["R-med", "R-crit"]
        # v2 extracted model/ip columns from the old JSON records.
        assert store._c.execute("SELECT model, ip FROM devices").fetchone() == (
            "DS-2CD2043G0-I",
            "10.20.0.31",
        )
        # v3 extracted the verdict of existing destinations.
        dest = store.list_destinations(MAC)[0]
        assert dest["verdict"] == "unexpected" and dest["count"] == 4
        assert not store.record_destination(MAC, "203.0.113.7", 8666, "TCP", {}, 3.0)
        assert store.get_meta("learning_started") == "123"
        assert store.load_devices()[MAC]["model"] == "DS-2CD2043G0-I"
        assert store.integrity_check()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    rows = conn.execute("SELECT version, description FROM schema_version ORDER BY version").fetchall()
    conn.close()
    assert [v for v, _ in rows] == list(range(1, SCHEMA_VERSION + 1))
    assert rows[0][1] == "initial schema"


def test_reopening_a_current_database_applies_nothing(tmp_path: Path) -> None:
    with StateStore(tmp_path):
        pass
    conn = sqlite3.connect(tmp_path / DB_NAME)
    before = conn.execute("SELECT version, applied_at FROM schema_version").fetchall()
    conn.close()
    with StateStore(tmp_path):
        pass
    conn = sqlite3.connect(tmp_path / DB_NAME)
    after = conn.execute("SELECT version, applied_at FROM schema_version").fetchall()
    conn.close()
    assert before == after
