"""`camwatch devices` / `camwatch findings` output: aligned tables, JSON, and terminal safety."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from agent.errors import UsageError
from agent.store import StateStore
from agent.tables import clean, print_devices, print_findings, render_table

HIK = "bc:ad:28:00:00:01"
DAHUA = "38:af:29:bb:bc:ab"


@pytest.fixture
def store(tmp_path: Path):
    with StateStore(tmp_path) as s:
        s.upsert_device(
            HIK,
            {"vendor": "hikvision", "class": "camera", "model": "DS-2CD2043G0-I", "ip": "10.20.0.31",
             "firmware": "V5.5.0", "first_seen": 1740910504.5, "last_seen": 1740914104.0},
        )  # fmt: skip
        s.upsert_device(DAHUA, {"vendor": "dahua", "device_class": "nvr", "model": "\x1b[2JEVIL\x07"})
        s.record_destination(HIK, "203.0.113.7", 8666, "TCP", {"verdict": "unexpected"}, 1740910505.0)
        s.record_destination(HIK, "198.51.100.1", 123, "UDP", {"verdict": "allowed"}, 1740910505.0)
        s.add_finding(
            {"rule_id": "CW-DEST-001", "severity": "high", "message": "unexpected destination 203.0.113.7",
             "device": HIK, "src_ip": "10.20.0.31", "dest_ip": "203.0.113.7", "dest_port": 8666,
             "ts": 1740910505.0, "event": {"event_type": "alert"}},
        )  # fmt: skip
        s.add_finding(
            {"rule_id": "CW-V6", "severity": "low", "message": "x" * 300, "device": None,
             "src_ip": "fe80::1", "dest_ip": "2001:db8::7", "dest_port": 443, "ts": 1740910600.0},
        )  # fmt: skip
        s.commit()
        yield s


def test_devices_table(store: StateStore) -> None:
    out = io.StringIO()
    print_devices(store, False, out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["MAC", "IP", "VENDOR", "CLASS", "MODEL", "FIRMWARE", "FIRST", "SEEN", "(UTC)",
                                "LAST", "SEEN", "(UTC)", "DESTS"]  # fmt: skip
    # Sorted by MAC; columns aligned: every row's VENDOR starts where the header's does.
    assert lines[1].startswith(DAHUA) and lines[2].startswith(HIK)
    col = lines[0].index("VENDOR")
    assert lines[1][col:].startswith("dahua") and lines[2][col:].startswith("hikvision")
    assert "2025-03-02 10:15:04" in lines[2] and lines[2].rstrip().endswith("2")
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()
    assert "\\x1b[2JEVIL\\x07" in lines[1]
    assert lines[-1] == "2 devices"


def test_devices_json(store: StateStore) -> None:
    out = io.StringIO()
    print_devices(store, True, out)
    data = json.loads(out.getvalue())
    assert [d["mac"] for d in data] == [DAHUA, HIK]
    assert data[1]["destinations"] == 2 and data[1]["model"] == "DS-2CD2043G0-I"
    assert data[0]["model"] == "\x1b[2JEVIL\x07"  # JSON escapes it; content stays exact


def test_findings_table_and_filter(store: StateStore) -> None:
    out = io.StringIO()
    print_findings(store, False, None, out)
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:4] == ["TIME", "(UTC)", "SEVERITY", "RULE"]
    assert "CW-V6" in lines[1] and "[2001:db8::7]:443" in lines[1]  # newest first
    assert lines[1].endswith("...") and len(lines[1]) < 300
    assert "CW-DEST-001" in lines[2] and "203.0.113.7:8666" in lines[2] and HIK in lines[2]
    assert lines[-1] == "2 findings"
    out = io.StringIO()
    print_findings(store, False, "high", out)
    assert "CW-V6" not in out.getvalue() and out.getvalue().endswith("1 finding\n")
    out = io.StringIO()
    print_findings(store, True, "medium", out)
    assert [f["rule_id"] for f in json.loads(out.getvalue())] == ["CW-DEST-001"]
    with pytest.raises(UsageError):
        print_findings(store, False, "bogus", io.StringIO())


def test_empty_store(tmp_path: Path) -> None:
    with StateStore(tmp_path) as s:
        out = io.StringIO()
        print_devices(s, False, out)
        print_findings(s, False, "critical", out)
        assert "No devices recorded yet" in out.getvalue()
        assert "No findings at severity critical or above" in out.getvalue()
        out = io.StringIO()
        print_devices(s, True, out)
        assert json.loads(out.getvalue()) == []


def test_render_and_clean_helpers() -> None:
    assert render_table(("A", "BB"), [("xxx", "y"), ("z", "")]) == "A    BB\nxxx  y\nz\n"
    assert clean(None) == "-" and clean(["a", "b"]) == "a,b"
    assert clean("a\u202eb") == "a?b"  # right-to-left override cannot reorder the line
