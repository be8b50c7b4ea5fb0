"""Update channels end to end: generated captures (agent/scenarios/updates.py) replayed through the
CLI; every channel yields its `update` event with the right direction, verdict and alerts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.engine import SAMPLE_CAPTURE
from agent.scenarios import updates as sc


def replay(
    tmp_path: Path, frames: Any = None, *, pcap: Path | None = None, config: str | None = None
) -> list[dict[str, Any]]:
    if pcap is None:
        pcap = sc.write(tmp_path / "s.pcap", frames)
    events = tmp_path / "events.ndjson"
    argv = ["replay", str(pcap), "--events", str(events), "--state-dir", str(tmp_path / "st"), "--quiet"]
    if config is not None:
        cfg = tmp_path / "camwatch.yaml"
        cfg.write_text(config)
        argv += ["--config", str(cfg)]
    assert main(argv) == 0
    return [json.loads(line) for line in events.read_text().splitlines()]


def bodies(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e[kind] for e in events if e["event_type"] == kind]


def upd_alerts(events: list[dict[str, Any]]) -> list[str]:
    return [a["rule_id"] for a in bodies(events, "alert") if a["rule_id"].startswith("CW-UPD")]


CASES = {
    # scenario: (channel, rule, kind, direction, firmware_format, verdict, device_ip, source_ip)
    "isapi_push": (
        "isapi",
        "isapi-update-firmware",
        "push",
        "push",
        "uimage",
        "unexpected",
        "192.168.1.64",
        "192.168.1.10",
    ),
    "dahua_upgrade_cgi": (
        "dahua-cgi",
        "dahua-upgrade-cgi",
        "push",
        "push",
        "dahua-dh-zip",
        "unexpected",
        "192.168.1.108",
        "192.168.1.10",
    ),
    "tftp_uimage": ("tftp", None, "pull", "pull", "uimage", "unexpected", "192.0.0.64", "192.0.0.128"),
    "ftp_retr": ("ftp", None, "pull", "pull", "uimage", "unexpected", "192.168.1.70", "192.168.1.5"),
    "dvrip_push": (
        "dvrip",
        "dvrip-upgrade",
        "push",
        "push",
        "uimage",
        "unexpected",
        "192.168.1.70",
        "192.168.1.10",
    ),
    "xmeye_version_check": (
        "xmeye-cloud",
        "xmeye-version-check",
        "check",
        "pull",
        None,
        "unexpected",
        "192.168.1.70",
        "120.92.92.241",
    ),
    "tls_upgrade_host": (
        "https",
        "upgrade-host-sni",
        "pull",
        "pull",
        None,
        "expected",
        "192.168.1.70",
        "203.0.113.77",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_channel(name: str, tmp_path: Path) -> None:
    channel, rule, kind, direction, fmt, verdict, dev, src = CASES[name]
    updates = bodies(replay(tmp_path, sc.SCENARIOS[name]()), "update")
    assert len(updates) == 1, updates
    u = updates[0]
    assert (u["channel"], u.get("rule"), u["kind"], u["direction"]) == (channel, rule, kind, direction)
    assert (u.get("firmware_format"), u["verdict"], u["device_ip"], u["source_ip"]) == (
        fmt,
        verdict,
        dev,
        src,
    )
    if fmt is not None:
        assert u["complete"] is True and u["bytes_missing"] == 0 and len(u["sha256"]) == 64


def test_online_upgrade_command_then_pull_from_known_host(tmp_path: Path) -> None:
    events = replay(tmp_path, sc.hik_online_upgrade())
    ups = bodies(events, "update")
    assert [(u["rule"], u["kind"], u["verdict"]) for u in ups] == [
        ("isapi-online-upgrade-command", "command", "unexpected"),
        ("ezviz-dav-download", "pull", "expected"),  # the host the device resolved is an upgrade host
    ]
    assert ups[1]["filename"] == "digicap.dav" and ups[1]["source_name"] == sc.UPGRADE_HOST
    assert upd_alerts(events) == ["CW-UPD-001"]  # the command came from a host not in update_sources
    assert [f["verdict"] for f in bodies(events, "firmware")] == ["clean"]


def test_version_check_reports_version_without_alert(tmp_path: Path) -> None:
    events = replay(tmp_path, sc.xmeye_version_check())
    assert bodies(events, "update")[0]["version"] == "2019-05-29"
    assert upd_alerts(events) == []


def test_update_sources_make_pushes_expected(tmp_path: Path) -> None:
    config = "analyzers:\n  updates:\n    update_sources: [192.168.1.0/28]\n"
    events = replay(tmp_path, sc.dahua_upgrade_cgi(), config=config)
    u = bodies(events, "update")[0]
    assert (u["verdict"], u["reason"]) == ("expected", "update_sources")
    assert upd_alerts(events) == []


def test_push_from_other_host_still_unexpected(tmp_path: Path) -> None:
    config = "analyzers:\n  updates:\n    update_sources: [192.168.1.200/32]\n"
    events = replay(tmp_path, sc.isapi_push(bad=False), config=config)
    assert bodies(events, "update")[0]["verdict"] == "unexpected"
    assert "CW-UPD-001" in upd_alerts(events)


def test_negatives_ordinary_downloads(tmp_path: Path) -> None:
    events = replay(tmp_path, sc.ordinary_downloads())
    assert bodies(events, "update") == [] and bodies(events, "firmware") == []
    assert upd_alerts(events) == []


def test_bundled_sample_has_no_update_alerts(tmp_path: Path) -> None:
    events = replay(tmp_path, pcap=SAMPLE_CAPTURE)
    assert upd_alerts(events) == []
    # the sample's XMeye camera does a cleartext version check: recorded, not alerted
    assert [u["channel"] for u in bodies(events, "update")] == ["xmeye-cloud"]
    assert bodies(events, "firmware") == []
