"""Fingerprint analyzers end to end on generated scenario captures (agent/scenarios/fingerprints.py)
through the real engine and pipeline: device facts, relabel, firmware-change event + alert, and
negatives (non-camera payloads on the same ports, the bundled camera-VLAN sample)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import Config
from agent.engine import SAMPLE_CAPTURE, Engine
from agent.errors import CamwatchError
from agent.scenarios.fingerprints import SCENARIOS, write_scenario
from analyzers.traffic.fingerprints import parse_rules


def replay(paths: list[Path], tmp_path: Path) -> tuple[list[dict[str, Any]], Engine]:
    cfg = Config()
    cfg.state_dir = tmp_path / "state"
    out = io.StringIO()
    engine = Engine(cfg, events=out)
    try:
        engine.replay([str(p) for p in paths])
        engine.finish()
    finally:
        engine.close()
    return [json.loads(line) for line in out.getvalue().splitlines()], engine


def scenario(name: str, tmp_path: Path) -> tuple[list[dict[str, Any]], Engine]:
    return replay([write_scenario(name, tmp_path / f"{name}.pcap")], tmp_path)


def devices(events: list[dict[str, Any]], mac: str) -> list[dict[str, Any]]:
    return [e["device"] for e in events if e["event_type"] == "device" and e["device"]["mac"] == mac]


def fp_alerts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        e["alert"]
        for e in events
        if e["event_type"] == "alert" and e["alert"]["rule_id"].startswith("CW-DEV")
    ]


def test_sadp_probe_match(tmp_path: Path) -> None:
    events, engine = scenario("sadp", tmp_path)
    dev = devices(events, "44:19:b6:00:00:20")[-1]
    assert dev["maker"] == "hikvision" and dev["brand"] == "hikvision" and "relabel" not in dev
    assert dev["model"] == "DS-2CD2143G2-I" and dev["firmware"] == "V5.7.3build 220112"
    assert dev["serial"] == "DS-2CD2143G2-I20230101AAWRJ12345678" and dev["services"] == ["sadp/37020"]
    assert "sadp" in dev["sources"]
    # the reply is sent twice: one fact, not one event per packet
    facts = [d for d in devices(events, "44:19:b6:00:00:20") if "firmware" in d.get("changed", [])]
    assert len(facts) == 1
    assert len(devices(events, "44:19:b6:00:00:20")) == 2  # "new" (first packet) + the facts
    assert fp_alerts(events) == []
    assert engine.inventory.count_by_vendor_brand().get(("hikvision", "hikvision")) == 1


def test_firmware_change_event_and_info_alert(tmp_path: Path) -> None:
    events, engine = scenario("sadp_fw_change", tmp_path)
    alerts = fp_alerts(events)
    assert len(alerts) == 1
    assert alerts[0]["rule_id"] == "CW-DEV-FW-CHANGED" and alerts[0]["severity"] == "info"
    assert (alerts[0]["old"], alerts[0]["new"]) == ("V5.7.3build 220112", "V5.7.15build 230801")
    changed = [d for d in devices(events, "44:19:b6:00:00:20") if d.get("changes")]
    assert len(changed) == 1
    assert changed[0]["changes"] == [
        {"field": "firmware", "old": "V5.7.3build 220112", "new": "V5.7.15build 230801"}
    ]
    assert engine.counters.alerts[("CW-DEV-FW-CHANGED", "info")] == 1


def test_dhip_reply_of_relabelled_dahua(tmp_path: Path) -> None:
    events, engine = scenario("dhip_relabel", tmp_path)
    dev = devices(events, "4c:11:bf:00:00:21")[-1]
    assert dev["maker"] == "dahua" and dev["brand"] == "intelbras" and dev["relabel"] is True
    assert dev["model"] == "IPC-HDW5442TM-AS" and dev["serial"] == "7J0ABCD1234EFGH"
    assert dev["firmware"] == "2.820.0000000.5.R" and dev["services"] == ["dhip/37810"]
    assert "relabel" in dev["changed"]
    assert engine.inventory.count_by_vendor_brand()[("dahua", "intelbras")] == 1
    # the admin PC's search request says nothing about the PC
    assert all("maker" not in d for d in devices(events, "00:1b:21:00:01:00"))


def test_hikvision_oui_with_lts_model_is_relabel(tmp_path: Path) -> None:
    events, _ = scenario("sadp_lts", tmp_path)
    dev = devices(events, "44:19:b6:00:00:24")[-1]
    assert (dev["maker"], dev["brand"], dev["relabel"]) == ("hikvision", "lts", True)


def test_xiongmai_discovery_reply(tmp_path: Path) -> None:
    events, _ = scenario("xm_discovery", tmp_path)
    dev = devices(events, "00:12:14:00:00:22")[-1]
    assert dev["maker"] == "xiongmai" and dev["vendor"] == "xiongmai" and dev["vendor_weak"] is False
    assert dev["serial"] == "6f8c2d1e0a9b7c35" and dev["services"] == ["xm-discovery/34569"]
    assert dev["class"] == "camera"


def test_onvif_probe_match_scopes(tmp_path: Path) -> None:
    events, _ = scenario("onvif", tmp_path)
    dev = devices(events, "bc:ad:28:00:00:23")[-1]
    assert dev["model"] == "DS-2CD2387G2-LU" and dev["brand"] == "hikvision"
    assert dev["services"] == ["ws-discovery/3702"]


def test_negatives_on_discovery_ports_give_nothing(tmp_path: Path) -> None:
    events, engine = scenario("negatives", tmp_path)
    for d in (e["device"] for e in events if e["event_type"] == "device"):
        assert not {"maker", "brand", "services", "serial", "model", "firmware"} & d.keys(), d
    assert fp_alerts(events) == []
    for dev in engine.inventory:
        assert dev.maker is None and not dev.services


def test_bundled_sample_gives_no_fingerprint_alerts(tmp_path: Path) -> None:
    events, _ = replay([SAMPLE_CAPTURE], tmp_path)
    assert fp_alerts(events) == []
    assert not any(d.get("relabel") for d in (e["device"] for e in events if e["event_type"] == "device"))


def test_all_scenarios_are_deterministic(tmp_path: Path) -> None:
    for name in SCENARIOS:
        a = write_scenario(name, tmp_path / f"a_{name}.pcap").read_bytes()
        b = write_scenario(name, tmp_path / f"b_{name}.pcap").read_bytes()
        assert a == b


def test_rules_file_validation_names_the_key() -> None:
    with pytest.raises(CamwatchError, match=r"brands.acme.maker"):
        parse_rules({"makers": ["dahua"], "brands": {"acme": {"maker": "nobody"}}})
    with pytest.raises(CamwatchError, match=r"rtsp.realm\[0\].pattern"):
        parse_rules({"makers": ["dahua"], "rtsp": {"realm": [{"pattern": "(", "maker": "dahua"}]}})
    rules = parse_rules(
        {"makers": ["dahua"], "brands": {"dahua": {"maker": "dahua", "aliases": ["Dahua Tech"]}}}
    )
    assert rules.brand_for("DAHUA  tech") == "dahua" and rules.brand_for("Private") is None
    assert rules.brand_for("Acme Vision") == "acme vision"  # unknown labels are kept (metrics: "other")
