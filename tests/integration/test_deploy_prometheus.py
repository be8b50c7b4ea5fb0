"""deploy/prometheus: the real promtool checks the rule file, runs its unit tests (a firing and a quiet
case per alert) and validates every example configuration; the rules stay in step with the code
(exploit rule ids) and with docs/soc-analyst.md (runbook anchors)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from analyzers.traffic.exploits import ExploitAnalyzer
from tests.conftest import REPO, require_tool

PROM = REPO / "deploy" / "prometheus"
RULES = PROM / "camwatch.rules.yml"
TESTS = PROM / "camwatch.rules.test.yml"
SOC_DOC = REPO / "docs" / "soc-analyst.md"


def alerts() -> list[dict[str, object]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_promtool_check_rules() -> None:
    res = promtool("check", "rules", RULES.name)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 14 rules found" in res.stdout


def test_promtool_unit_tests_pass_and_cover_every_alert() -> None:
    res = promtool("test", "rules", TESTS.name)
    assert res.returncode == 0, res.stdout + res.stderr
    cases = yaml.safe_load(TESTS.read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {str(a["alert"]) for a in alerts()}
    assert names - fired == set(), "alerts without a firing case"
    assert names - quiet == set(), "alerts without a quiet case"


def test_promtool_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """The unit tests are live: lowering a threshold makes promtool fail."""
    shutil.copy(TESTS, tmp_path / TESTS.name)
    broken = RULES.read_text().replace("> 0.001", "> 0.00001")
    assert broken != RULES.read_text()
    (tmp_path / RULES.name).write_text(broken)
    res = promtool("test", "rules", TESTS.name, cwd=tmp_path)
    assert res.returncode != 0
    assert "CamwatchCaptureKernelDrops" in res.stdout + res.stderr


@pytest.mark.parametrize(
    "name", ["prometheus.yml", "prometheus-file-sd.yml", "federation.yml", "remote-write.yml"]
)
def test_promtool_check_config(name: str) -> None:
    res = promtool("check", "config", name)
    assert res.returncode == 0, res.stdout + res.stderr


def test_compose_prometheus_config(tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "deploy" / "docker" / "prometheus.yml").read_text())
    assert cfg["rule_files"] == ["/etc/prometheus/rules/camwatch.rules.yml"]  # the compose mount
    cfg["rule_files"] = [str(RULES)]
    (tmp_path / "p.yml").write_text(yaml.safe_dump(cfg))
    res = promtool("check", "config", "p.yml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_file_sd_targets_have_site_and_vlan() -> None:
    for path in (PROM / "targets").glob("*.yml"):
        for group in yaml.safe_load(path.read_text()):
            assert group["targets"] and {"site", "vlan"} <= set(group["labels"]), (path, group)


def test_every_alert_is_documented_and_annotated() -> None:
    text = SOC_DOC.read_text()
    anchors = {github_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.+?)\s*$", text, re.M)}
    for alert in alerts():
        ann = alert["annotations"]
        assert isinstance(ann, dict)
        assert ann.get("summary") and ann.get("description"), alert["alert"]
        url = str(ann["runbook_url"])
        assert url.startswith("docs/soc-analyst.md#"), url
        assert url.split("#", 1)[1] in anchors, f"{alert['alert']}: no heading for {url}"
        assert str(alert["alert"]) in text, f"{alert['alert']} not described in docs/soc-analyst.md"
        assert alert["labels"]["severity"] in ("critical", "warning", "info")  # type: ignore[index]


def test_exploit_alerts_cover_every_known_exploit_rule() -> None:
    exprs = {str(a["alert"]): str(a["expr"]) for a in alerts()}
    selector = re.search(r'rule_id=~"([^"]+)"', exprs["CamwatchExploitOrBackdoor"])
    assert selector
    pattern = re.compile(selector.group(1))
    assert selector.group(1) in exprs["CamwatchWeakCameraAccess"]
    known = ExploitAnalyzer.KNOWN_RULES
    assert known
    for rule_id, severity in known:
        assert pattern.fullmatch(rule_id), rule_id
        assert severity in ("critical", "high", "medium", "low"), (rule_id, severity)
    assert not pattern.fullmatch("CW-DEST-001") and not pattern.fullmatch("CW-UPD-001")


def github_slug(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return slug.replace(" ", "-")
