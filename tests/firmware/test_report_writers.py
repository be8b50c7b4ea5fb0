"""Report writers: the JSON document and its schema version, the Prometheus textfile (checked by the
real promtool, bounded labels, atomic replace) and the terminal summary (hostile names neutralised)."""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
from pathlib import Path

import pytest

from analyzers.firmware.inspect import InspectionSession
from analyzers.firmware.model import ContainerInfo, Finding, ImageReport, Member, Severity
from analyzers.firmware.report import SCHEMA_VERSION, summary_text, write_json, write_prom
from tests.conftest import require_tool

HOSTILE = "rootfs!/etc/\x1b[2J\x1b]0;pwned\x07<b>init</b>.sh"


def sample_reports() -> list[ImageReport]:
    session = InspectionSession()
    members = {
        "rootfs!/etc/init.d/rcS": b"#!/bin/sh\ntelnetd -p 2323 &\n",
        "rootfs!/etc/passwd": b"root:absxcfbgXtb3o:0:0:root:/:/bin/sh\n",
        HOSTILE: b"#!/bin/sh\ncat /dev/urandom > /dev/mtd2\n",
    }
    image = b"".join(members.values())
    good = ImageReport(path="/srv/fw/cam-a.bin", size=len(image), sha256=hashlib.sha256(image).hexdigest())
    for name, data in members.items():
        m = Member(path=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())
        good.members.append(m)
        good.findings.extend(session.inspect_member(m, data))
    info = ContainerInfo(
        "uimage", "", 0, len(image), metadata={"raw": b"\x00\x01", "nan": math.nan, "ids": {1, 2}}
    )
    good.containers.append(info)
    good.findings.extend(session.inspect_container(info))
    session.finish(good, image)
    failed = ImageReport(path="/srv/fw/broken.bin", size=0, sha256="", error="cannot read image: empty file")
    return [good, failed]


@pytest.fixture(scope="module")
def reports() -> list[ImageReport]:
    return sample_reports()


def test_json_document(tmp_path: Path, reports) -> None:
    dest = tmp_path / "report.json"
    write_json(reports, str(dest))
    doc = json.loads(dest.read_text())
    assert doc["schema_version"] == SCHEMA_VERSION and doc["generated_at"].endswith("Z")
    assert doc["summary"]["images"] == 2 and doc["summary"]["failed"] == 1
    first = doc["images"][0]
    by_rule = {f["rule_id"]: f for f in first["findings"]}
    assert by_rule["CW-FW-TELNET-004"]["severity"] == "high"
    assert by_rule["CW-FW-CRED-101"]["offset"] == 0 and "xc3511" in by_rule["CW-FW-CRED-101"]["message"]
    assert first["max_severity"] == "high"
    assert first["finding_counts"]["high"] == sum(1 for f in first["findings"] if f["severity"] == "high")
    assert sum(doc["summary"]["findings"].values()) == len(first["findings"])
    assert len(first["entropy"]) == len(reports[0].entropy) and first["entropy_block_size"] > 0
    meta = first["containers"][0]["metadata"]
    assert meta["raw"] == {"base64": "AAE="} and meta["nan"] is None and sorted(meta["ids"]) == [1, 2]
    assert doc["images"][1]["error"] and doc["images"][1]["max_severity"] is None
    # the hostile member name survives as data (escaped by json), not as raw control bytes
    assert "\x1b" not in dest.read_text() and any(m["path"] == HOSTILE for m in first["members"])


def test_json_to_stdout(capsys, reports) -> None:
    write_json(reports, "-")
    assert json.loads(capsys.readouterr().out)["summary"]["images"] == 2


def test_prometheus_textfile_passes_promtool_and_keeps_labels_bounded(tmp_path: Path, reports) -> None:
    promtool = require_tool("promtool")
    dest = tmp_path / "camwatch_firmware.prom"
    dest.write_text("stale content\n")
    write_prom(reports, str(dest))
    text = dest.read_text()
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # replaced atomically, no temporary file left behind
    assert "stale" not in text and sorted(p.name for p in tmp_path.iterdir()) == [dest.name]
    values = dict(re.findall(r"^(camwatch_\S+) (\S+)$", text, re.M))
    assert float(values["camwatch_firmware_images_analyzed_total"]) == 2
    assert float(values["camwatch_firmware_images_failed_total"]) == 1
    for sev in Severity:  # every severity pre-initialised
        assert f'camwatch_firmware_findings{{severity="{sev.label}"}}' in values
    high = sum(1 for f in reports[0].findings if f.severity == Severity.HIGH)
    assert float(values['camwatch_firmware_findings{severity="high"}']) == high
    assert float(values['camwatch_firmware_rule_hits{rule="CW-FW-TELNET-004"}']) == 1
    assert float(values["camwatch_firmware_last_scan_timestamp_seconds"]) > 1.6e9
    labels = set(re.findall(r'\{(\w+)="', text))
    assert labels == {"severity", "rule", "verdict"}
    assert reports[0].sha256 not in text and "cam-a" not in text and "rootfs" not in text
    assert "process_" not in text and "python_gc" not in text  # own registry only


def test_summary_text(reports) -> None:
    out = summary_text(reports)
    assert "2 image(s), 1 failed" in out and "/srv/fw/cam-a.bin" in out and "analysis failed" in out
    assert "CW-FW-TELNET-004" in out and "CW-FW-CRED-101" in out
    assert "\x1b" not in out and "\x07" not in out and "\\x1b[2J" in out  # ANSI escapes neutralised


def test_empty_report_list(tmp_path: Path) -> None:
    write_json([], str(tmp_path / "e.json"))
    assert json.loads((tmp_path / "e.json").read_text())["images"] == []
    write_prom([], str(tmp_path / "e.prom"))
    assert "camwatch_firmware_images_analyzed_total 0.0" in (tmp_path / "e.prom").read_text()
    assert "0 image(s)" in summary_text([])


def test_finding_without_offset_renders(tmp_path: Path) -> None:
    r = ImageReport(path="x", size=1, sha256="00")
    r.findings.append(Finding("CW-FW-HASH-001", Severity.HIGH, "bad", evidence="sha256 00"))
    assert "CW-FW-HASH-001 <image>: bad" in summary_text([r])
