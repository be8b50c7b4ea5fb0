"""Evidence ring: packets of flows that raised alerts are written as a pcap, and nothing else."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from agent.cli import main
from agent.engine import SAMPLE_CAPTURE
from tests.conftest import require_tool


def test_evidence_pcap_holds_exactly_the_alerting_flows(tmp_path: Path) -> None:
    ev, pcap = tmp_path / "ev.ndjson", tmp_path / "evidence.pcap"
    rc = main(
        [
            "replay",
            str(SAMPLE_CAPTURE),
            "--events",
            str(ev),
            "--evidence-pcap",
            str(pcap),
            "--state-dir",
            str(tmp_path / "st"),
            "-q",
        ]
    )
    assert rc == 0
    alerts = [e for e in map(json.loads, ev.read_text().splitlines()) if e["event_type"] == "alert"]
    alerting = {frozenset({(a["src_ip"], a["src_port"]), (a["dest_ip"], a["dest_port"])}) for a in alerts}
    assert len(alerting) == 2
    out = subprocess.run(
        [
            require_tool("tshark"),
            "-n",
            "-r",
            str(pcap),
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "tcp.srcport",
            "-e",
            "ip.dst",
            "-e",
            "tcp.dstport",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    seen = {frozenset({(f[0], int(f[1])), (f[2], int(f[3]))}) for f in (line.split("\t") for line in out)}
    assert seen == alerting  # every alerting flow is there, and no other traffic
    assert len(out) >= 2 * 3  # the alerting packet plus the rest of each TCP conversation


def test_evidence_ring_is_bounded_per_flow(tmp_path: Path) -> None:
    from agent.config import Config
    from agent.engine import Engine

    cfg = Config()
    cfg.state_dir = tmp_path / "st"
    pcap = tmp_path / "evidence.pcap"
    engine = Engine(cfg, evidence=str(pcap))
    assert engine.evidence is not None
    engine.evidence.per_flow = 2
    engine.replay([str(SAMPLE_CAPTURE)])
    engine.finish()
    engine.close()
    frames = subprocess.run(
        [require_tool("tshark"), "-n", "-r", str(pcap), "-T", "fields", "-e", "frame.number"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert len(frames) == 2 * 2  # two alerting flows, at most two packets each
