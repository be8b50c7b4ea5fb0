"""StateStore: WAL mode, every table's semantics, batching, restart, and one-line errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.errors import CamwatchError, UsageError
from agent.store import DB_NAME, SCHEMA_VERSION, NameRecord, StateStore

MAC = "bc:ad:28:00:00:01"
MAC2 = "38:af:29:bb:bc:ab"


@pytest.fixture
def store(tmp_path: Path):
    with StateStore(tmp_path / "state") as s:
        yield s


def test_creates_directory_in_wal_mode_with_current_schema(tmp_path: Path) -> None:
    state = tmp_path / "a" / "b"
    with StateStore(state) as s:
        assert (state / DB_NAME).is_file()
        assert s.journal_mode() == "wal"
        assert s.schema_version() == SCHEMA_VERSION
        assert s.integrity_check()
    # Checked from an independent connection too: WAL is a property of the file.
    conn = sqlite3.connect(state / DB_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    versions = [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    conn.close()


def test_upsert_device_keeps_first_seen_min_last_seen_max_and_merges(store: StateStore) -> None:
    store.upsert_device(
        MAC.upper(),
        {
            "vendor": "hikvision",
            "class": "camera",
            "first_seen": 100.0,
            "last_seen": 200.0,
            "model": "DS-2CD2043G0-I",
        },
    )
    store.upsert_device(MAC, {"first_seen": 50.0, "last_seen": 150.0, "ip": "10.20.0.31"})
    store.upsert_device(MAC, {"last_seen": 300.0, "vendor": "hikvision"})
    devices = store.load_devices()
    assert list(devices) == [MAC]
    rec = devices[MAC]
    assert rec["first_seen"] == 50.0
    assert rec["last_seen"] == 300.0
    assert rec["model"] == "DS-2CD2043G0-I"  # kept from the first record
    assert rec["ip"] == "10.20.0.31"
    assert rec["mac"] == MAC
    row = store._c.execute("SELECT vendor, class, model, ip FROM devices").fetchone()
    assert row == ("hikvision", "camera", "DS-2CD2043G0-I", "10.20.0.31")


def test_record_destination_reports_new_keys_and_counts(store: StateStore) -> None:
    assert store.record_destination(MAC, "203.0.113.7", 8666, "TCP", {"verdict": "unexpected"}, 100.0)
    assert not store.record_destination(MAC, "203.0.113.7", 8666, "TCP", {"dns_name": "a.example"}, 90.0)
    assert not store.record_destination(MAC, "203.0.113.7", 8666, "TCP", {}, 400.0)
    # Any component differing is a new key.
    assert store.record_destination(MAC, "203.0.113.7", 8666, "UDP", {}, 100.0)
    assert store.record_destination(MAC, "203.0.113.7", 8667, "TCP", {}, 100.0)
    assert store.record_destination(MAC2, "203.0.113.7", 8666, "TCP", {}, 100.0)
    assert store.load_destination_keys() == {
        (MAC, "203.0.113.7", 8666, "TCP"),
        (MAC, "203.0.113.7", 8666, "UDP"),
        (MAC, "203.0.113.7", 8667, "TCP"),
        (MAC2, "203.0.113.7", 8666, "TCP"),
    }
    first = store.list_destinations(MAC)[0]
    assert first["dest_port"] == 8666 and first["proto"] == "TCP"
    assert (first["first_seen"], first["last_seen"], first["count"]) == (90.0, 400.0, 3)
    assert first["verdict"] == "unexpected"
    assert first["info"] == {"verdict": "unexpected", "dns_name": "a.example"}
    assert len(store.list_destinations()) == 4
    assert len(store.list_destinations(MAC2)) == 1
    assert store.destination_counts() == {MAC: 3, MAC2: 1}


def test_names_baseline_meta(store: StateStore) -> None:
    store.record_name(MAC, "203.0.113.7", "Litedev.EZVIZlife.com.", 100.0)
    store.record_name(MAC, "203.0.113.7", "litedev.ezvizlife.com", 50.0)
    store.record_name(MAC2, "198.51.100.1", "ntp.example", 10.0)
    assert store.load_names() == [
        NameRecord(MAC2, "198.51.100.1", "ntp.example", 10.0, 10.0),
        NameRecord(MAC, "203.0.113.7", "litedev.ezvizlife.com", 50.0, 100.0),
    ]
    store.add_baseline(MAC, "destination", "203.0.113.7:8666/TCP", 10.0)
    store.add_baseline(MAC, "destination", "203.0.113.7:8666/TCP", 20.0)
    store.add_baseline(MAC, "dns_name", "ntp.example", 10.0)
    assert store.load_baseline() == {
        MAC: {("destination", "203.0.113.7:8666/TCP"), ("dns_name", "ntp.example")}
    }
    assert store.get_meta("learning_started") is None
    store.set_meta("learning_started", "1700000000")
    store.set_meta("learning_started", "1700000001")
    assert store.get_meta("learning_started") == "1700000001"


def _finding(rule: str, severity: str, ts: float) -> dict:
    return {
        "rule_id": rule,
        "severity": severity,
        "message": f"{rule} fired",
        "device": MAC,
        "src_ip": "10.20.0.31",
        "dest_ip": "203.0.113.7",
        "dest_port": 8666,
        "ts": ts,
        "event": {"event_type": "alert", "alert": {"rule_id": rule}},
    }


def test_findings_filter_order_and_limit(store: StateStore) -> None:
    store.add_finding(_finding("R-low", "low", 1.0))
    store.add_finding(_finding("R-high", "high", 3.0))
    store.add_finding(_finding("R-crit", "critical", 2.0))
    store.add_finding(_finding("R-odd", "weird", 4.0))  # unknown severity ranks as info
    assert [f["rule_id"] for f in store.list_findings()] == ["R-odd", "R-high", "R-crit", "R-low"]
    assert [f["rule_id"] for f in store.list_findings("high")] == ["R-high", "R-crit"]
    assert [f["rule_id"] for f in store.list_findings("LOW", limit=2)] == ["R-high", "R-crit"]
    top = store.list_findings("critical")[0]
    assert top["event"] == {"event_type": "alert", "alert": {"rule_id": "R-crit"}}
    assert top["dest_port"] == 8666 and top["device"] == MAC
    with pytest.raises(UsageError, match="unknown severity 'severe'"):
        store.list_findings("severe")


def test_writes_are_batched_until_commit(tmp_path: Path) -> None:
    with StateStore(tmp_path) as writer:
        writer.record_destination(MAC, "203.0.113.7", 80, "TCP", {}, 1.0)
        other = sqlite3.connect(tmp_path / DB_NAME)
        assert other.execute("SELECT count(*) FROM destinations").fetchone()[0] == 0
        writer.commit()
        assert other.execute("SELECT count(*) FROM destinations").fetchone()[0] == 1
        other.close()


def test_restart_keeps_everything(tmp_path: Path) -> None:
    with StateStore(tmp_path) as s:
        s.upsert_device(MAC, {"vendor": "hikvision", "first_seen": 1.0, "last_seen": 2.0})
        s.record_destination(MAC, "203.0.113.7", 8666, "TCP", {"verdict": "unexpected"}, 1.0)
        s.record_name(MAC, "203.0.113.7", "a.example", 1.0)
        s.add_baseline(MAC, "destination", "x", 1.0)
        s.set_meta("k", "v")
        s.add_finding(_finding("R1", "high", 1.0))
        # No explicit commit: close() (via the context manager) must persist the batch.
    with StateStore(tmp_path) as s:
        assert s.load_devices()[MAC]["vendor"] == "hikvision"
        assert s.load_destination_keys() == {(MAC, "203.0.113.7", 8666, "TCP")}
        assert not s.record_destination(MAC, "203.0.113.7", 8666, "TCP", {}, 5.0)
        assert s.load_names()[0].name == "a.example"
        assert s.load_baseline() == {MAC: {("destination", "x")}}
        assert s.get_meta("k") == "v"
        assert [f["rule_id"] for f in s.list_findings()] == ["R1"]
    # A clean close checkpoints the WAL: the .db file alone holds the data.
    assert not (tmp_path / f"{DB_NAME}-wal").exists() or (tmp_path / f"{DB_NAME}-wal").stat().st_size == 0


def test_exception_inside_context_still_keeps_the_batch(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), StateStore(tmp_path) as s:
        s.set_meta("k", "v")
        raise KeyboardInterrupt
    with StateStore(tmp_path) as s:
        assert s.get_meta("k") == "v"


def test_damaged_file_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    db = tmp_path / DB_NAME
    db.write_bytes(b"this is not an sqlite database at all\n" * 200)
    with pytest.raises(CamwatchError) as info:
        StateStore(tmp_path)
    message = str(info.value)
    assert str(db) in message
    assert "\n" not in message
    assert "damaged or not a camwatch state database" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_corrupted_pages_are_reported_not_raised_as_sqlite_errors(tmp_path: Path) -> None:
    with StateStore(tmp_path) as s:
        for i in range(3000):
            s.record_destination(MAC, f"10.0.{i // 256}.{i % 256}", 443, "TCP", {"n": i}, float(i))
    db = tmp_path / DB_NAME
    data = bytearray(db.read_bytes())
    page = 4096
    # Smash the b-tree pages after the first two (schema and its neighbour) with garbage.
    for offset in range(2 * page, len(data), page):
        data[offset : offset + 64] = b"\xff" * 64
    db.write_bytes(bytes(data))
    with pytest.raises(CamwatchError) as info, StateStore(tmp_path) as s:
        s.load_destination_keys()
        assert s.integrity_check()
    assert str(db) in str(info.value) and "\n" not in str(info.value)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    with StateStore(tmp_path):
        pass
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute("INSERT INTO schema_version VALUES (?, 0, 'from the future')", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(CamwatchError, match="newer than this camwatch supports"):
        StateStore(tmp_path)


def test_read_only_store(tmp_path: Path) -> None:
    with pytest.raises(CamwatchError, match="no camwatch state database here yet"):
        StateStore(tmp_path, read_only=True)
    with StateStore(tmp_path) as s:
        s.set_meta("k", "v")
    with StateStore(tmp_path, read_only=True) as ro:
        assert ro.get_meta("k") == "v"
        with pytest.raises(CamwatchError, match="read-only"):
            ro.set_meta("k", "w")


def test_state_dir_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("x")
    with pytest.raises(CamwatchError, match="cannot create state directory"):
        StateStore(blocker)


def test_use_after_close(tmp_path: Path) -> None:
    s = StateStore(tmp_path)
    s.close()
    s.close()  # idempotent
    with pytest.raises(CamwatchError, match="closed"):
        s.load_devices()


# ------------------------------------------------------------------ property: destinations vs a model

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_keys = st.tuples(
    st.sampled_from([MAC, MAC2]),
    st.sampled_from(["203.0.113.7", "198.51.100.1", "2001:db8::7"]),
    st.sampled_from([53, 443, 8666]),
    st.sampled_from(["TCP", "UDP"]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(_keys, st.floats(0, 1e9), st.booleans()), max_size=40))
def test_record_destination_matches_a_model(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[tuple[str, str, int, str], float, bool]]
) -> None:
    model: dict[tuple[str, str, int, str], list[float]] = {}
    with StateStore(tmp_path_factory.mktemp("prop")) as s:
        for key, ts, commit in ops:
            device, ip, port, proto = key
            assert s.record_destination(device, ip, port, proto, {}, ts) is (key not in model)
            entry = model.setdefault(key, [ts, ts, 0])
            entry[0], entry[1], entry[2] = min(entry[0], ts), max(entry[1], ts), entry[2] + 1
            if commit:
                s.commit()
        assert s.load_destination_keys() == set(model)
        for row in s.list_destinations():
            key = (row["device"], row["dest_ip"], row["dest_port"], row["proto"])
            assert [row["first_seen"], row["last_seen"], row["count"]] == model[key]
