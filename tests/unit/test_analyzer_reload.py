"""The analyzers' `reload()` hook (analyzers/base.py), called on SIGHUP by `camwatch run`: changed rule
files in the configured rules_dir are picked up, a broken file keeps the previous rules and counts a
failed reload, and runtime state (keys already reported) survives."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.catalogue import BUNDLED_RULES
from agent.config import Config
from agent.daemon import Daemon
from agent.engine import Engine
from agent.errors import ConfigError
from analyzers.base import Analyzer, defines


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    """A private copy of the bundled rules (without the firmware YARA rules)."""
    target = tmp_path / "rules"
    shutil.copytree(BUNDLED_RULES, target, ignore=shutil.ignore_patterns("firmware"))
    return target


@pytest.fixture
def engine(tmp_path: Path, rules: Path) -> Iterator[Engine]:
    cfg = Config()
    cfg.rules_dir = rules
    cfg.policy_paths = [rules / "policy" / "default.yaml"]
    cfg.state_dir = tmp_path / "state"
    cfg.analyzer_options = {"updates": {"scan": False}}
    eng = Engine(cfg)
    try:
        yield eng
    finally:
        eng.close()


def by_name(engine: Engine, name: str) -> Any:
    return next(a for a in engine.analyzers if name == a.NAME)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_base_hook_is_a_no_op_and_not_a_packet_hook() -> None:
    a = Analyzer()
    assert a.reload() is None
    assert not defines(a, "reload")


def test_reload_picks_up_changed_rule_files(engine: Engine, rules: Path) -> None:
    cloud = by_name(engine, "cloud_p2p")
    assert "cs2-pppp" in {s.id for s in cloud.signatures}
    cloud.reported.add(("k", "v", "x", 1, "y"))  # state that must survive
    exploits = by_name(engine, "exploits")
    assert exploits.sigs.rules["CW-EXP-001"].severity == "high"
    updates = by_name(engine, "updates")
    assert updates.sources == []
    fp = [by_name(engine, n) for n in ("fp_banners", "fp_discovery", "fp_tls")]
    assert all("acmecam" not in a.rules.makers for a in fp)

    edit(rules / "cloud-signatures.yaml", "id: cs2-pppp\n", "id: cs2-pppp-v2\n")
    edit(
        rules / "traffic-signatures.yaml", "CW-EXP-001:\n    severity: high", "CW-EXP-001:\n    severity: low"
    )
    edit(rules / "update-channels.yaml", "update_sources: []", 'update_sources: ["192.0.2.0/24"]')
    edit(rules / "fingerprints.yaml", "makers: [hikvision,", "makers: [acmecam, hikvision,")

    assert engine.reload_analyzers() == []
    ids = {s.id for s in cloud.signatures}
    assert "cs2-pppp-v2" in ids and "cs2-pppp" not in ids
    assert "cs2-pppp-v2" in {s.id for s in cloud.by_proto[17]}
    assert ("k", "v", "x", 1, "y") in cloud.reported
    assert exploits.sigs.rules["CW-EXP-001"].severity == "low"
    assert [str(n) for n in updates.sources] == ["192.0.2.0/24"]
    assert all("acmecam" in a.rules.makers for a in fp)
    assert "acmecam" in engine.inventory.known_makers


def test_broken_file_keeps_the_previous_rules(engine: Engine, rules: Path) -> None:
    cloud = by_name(engine, "cloud_p2p")
    before = cloud.signatures
    by_proto = cloud.by_proto
    (rules / "cloud-signatures.yaml").write_text("version: 1\nsignatures: [\n  - {id: x\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        cloud.reload()
    assert cloud.signatures is before and cloud.by_proto is by_proto

    updates = by_name(engine, "updates")
    channels = updates.rules
    (rules / "update-channels.yaml").write_text("version: 2\n", encoding="utf-8")
    failed = engine.reload_analyzers()
    assert sorted(f.split(":", 1)[0] for f in failed) == ["cloud_p2p", "updates"]
    assert cloud.signatures is before
    assert updates.rules is channels


def test_sighup_counts_a_failed_analyzer_reload(engine: Engine, rules: Path, tmp_path: Path) -> None:
    conf = tmp_path / "camwatch.yaml"
    conf.write_text(f"rules_dir: {rules}\n", encoding="utf-8")
    args = argparse.Namespace(
        config=str(conf),
        interface=["lo"],
        filter=None,
        listen=None,
        state_dir=str(tmp_path / "state"),
        policy=None,
    )
    daemon = Daemon(engine, [], args)
    fp = by_name(engine, "fp_tls")
    daemon.reload()
    assert engine.counters.reloads == {"success": 1, "failure": 0}

    old = fp.rules
    edit(rules / "fingerprints.yaml", "makers: [", "makers: [[")  # not valid YAML any more
    daemon.reload()
    assert engine.counters.reloads == {"success": 1, "failure": 1}
    assert fp.rules is old

    edit(rules / "fingerprints.yaml", "makers: [[", "makers: [acmecam, ")
    daemon.reload()
    assert engine.counters.reloads == {"success": 2, "failure": 1}
    assert "acmecam" in fp.rules.makers
