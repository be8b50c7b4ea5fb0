"""Firmware carved from the wire: images reassembled from HTTP/TFTP/FTP/DVRIP go to the firmware
scanner in a worker process; verdicts and findings come back as `firmware` events and alerts."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from agent.catalogue import BUNDLED_RULES
from agent.cli import main
from agent.firmware_worker import FirmwareWorker
from agent.scenarios import updates as sc


def replay(tmp_path: Path, frames: Any) -> list[dict[str, Any]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    pcap = sc.write(tmp_path / "s.pcap", frames)
    events = tmp_path / "events.ndjson"
    argv = ["replay", str(pcap), "--events", str(events), "--state-dir", str(tmp_path / "st"), "--quiet"]
    assert main(argv) == 0
    return [json.loads(line) for line in events.read_text().splitlines()]


def of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e[kind] for e in events if e["event_type"] == kind]


def test_clean_and_bad_images_get_different_verdicts(tmp_path: Path) -> None:
    clean = of(replay(tmp_path / "a", sc.isapi_push(bad=False)), "firmware")
    events = replay(tmp_path / "b", sc.isapi_push(bad=True))
    bad = of(events, "firmware")
    assert clean[0]["verdict"] == "clean" and clean[0].get("max_severity") in (None, "info", "low")
    assert bad[0]["verdict"] == "high" and bad[0]["findings_by_severity"]["high"] >= 1
    assert bad[0]["top_findings"][0]["rule_id"] == "CW-FW-TELNET-001"
    assert bad[0]["top_findings"][0]["path"].endswith("etc/init.d/rcS")
    assert bad[0]["sha256"] == hashlib.sha256(sc.firmware_uimage(True)).hexdigest()
    assert "uimage" in bad[0]["containers"]
    rules = [a["rule_id"] for a in of(events, "alert")]
    assert "CW-UPD-FW-HIGH" in rules
    # the update event comes first, then the firmware event, then its alert
    order = [e["event_type"] for e in events if e["event_type"] in ("update", "firmware")]
    assert order == ["update", "firmware"]


def test_dahua_zip_in_multipart_is_scanned(tmp_path: Path) -> None:
    fw = of(replay(tmp_path, sc.dahua_upgrade_cgi(bad=True)), "firmware")
    assert len(fw) == 1 and fw[0]["verdict"] == "high"
    assert fw[0]["sha256"] == hashlib.sha256(sc.dahua_zip(True)).hexdigest()


def test_incomplete_transfer_reported_with_missing_bytes(tmp_path: Path) -> None:
    events = replay(tmp_path, sc.incomplete_download())
    (u,) = of(events, "update")
    assert u["complete"] is False and u["bytes_missing"] == 2 * sc.MSS and "sha256" not in u
    (fw,) = of(events, "firmware")
    assert fw["verdict"] == "incomplete" and fw["bytes_missing"] == 2 * sc.MSS
    assert "sha256" not in fw and len(fw["carved_sha256"]) == 64
    assert "CW-UPD-002" in [a["rule_id"] for a in of(events, "alert")]  # pulled from an unknown host


def test_known_bad_hash(tmp_path: Path) -> None:
    image = sc.firmware_uimage(False)
    rules = tmp_path / "rules"
    shutil.copytree(BUNDLED_RULES, rules)
    with (rules / "firmware" / "known-bad.txt").open("a") as fh:
        fh.write(f"{hashlib.sha256(image).hexdigest()} test: bad image\n")
    cfg = tmp_path / "camwatch.yaml"
    cfg.write_text(f"rules_dir: {rules}\n")
    pcap = sc.write(tmp_path / "s.pcap", sc.tftp_uimage())
    events_path = tmp_path / "e.ndjson"
    argv = ["replay", str(pcap), "--events", str(events_path), "--state-dir", str(tmp_path / "st"), "--quiet"]
    assert main([*argv, "--config", str(cfg)]) == 0
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    assert of(events, "update")[0]["hash_verdict"] == "known-bad"
    assert of(events, "firmware")[0]["verdict"] == "known-bad"
    assert "CW-UPD-FW-KNOWN-BAD" in [a["rule_id"] for a in of(events, "alert")]


def test_worker_runs_in_another_process(tmp_path: Path) -> None:
    worker = FirmwareWorker(sandbox=False)
    try:
        assert worker.submit(sc.firmware_uimage(True), {"n": 1})
        assert worker.submit(b"not firmware at all" * 100, {"n": 2})
        results = worker.drain(timeout=120)
    finally:
        worker.close()
    assert [m["n"] for m, _ in results] == [1, 2]
    first = results[0][1]
    assert first["max_severity"] == "high" and first["size"] == len(sc.firmware_uimage(True))
    assert worker._pool is None and worker._tmp is None  # pool shut down, temp files removed
