"""Vendor cloud / P2P recognition by payload (analyzers/traffic/cloud_p2p.py): signatures, the YI
corpus capture (CS2), generated scenarios, look-alikes, metrics and rule-file validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.catalogue import BUNDLED_RULES, EndpointCatalogue
from agent.cli import main
from agent.errors import ConfigError
from agent.scenarios import clouds
from agent.scenarios.updates import write
from analyzers.traffic.cloud_p2p import load_signatures
from tests.conftest import corpus_path

SIGS = {s.id: s for s in load_signatures(BUNDLED_RULES / "cloud-signatures.yaml")}


def replay(pcap: Path, tmp_path: Path) -> list[dict[str, Any]]:
    events = tmp_path / "events.ndjson"
    rc = main(["replay", str(pcap), "--events", str(events), "--state-dir", str(tmp_path / "st"), "--quiet"])
    assert rc == 0
    return [json.loads(line) for line in events.read_text().splitlines()]


def of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event_type"] == kind]


@pytest.mark.parametrize(
    ("sig", "payload", "sport", "dport", "expected"),
    [
        ("cs2-pppp", b"\xf1\x00\x00\x00", 10000, 32100, True),
        ("cs2-pppp", b"\xf1\x31\x00\x04TNPU", 32108, 32108, True),
        ("cs2-pppp", b"\xf1\x00\x00\x00xx", 10000, 32100, False),  # length disagrees
        ("cs2-pppp", b"\xf1\x00\x00\x00", 10000, 5000, False),  # not a CS2 port
        ("cs2-pppp", b"\x80\x60\x00\x00", 10000, 32100, False),
        ("easy4ip-dh-request", b"DHGET /probe/p2psrv HTTP/1.1\r\n", 5000, 8800, True),
        ("easy4ip-dh-request", b"GET / HTTP/1.1\r\n", 5000, 8800, False),
        ("easy4ip-inverted-stun", b"\xff\xfe\xff\xe7" + bytes(40), 5000, 40000, True),
        ("easy4ip-inverted-stun", b"\xff\xfe\xff\xe7" + bytes(41), 5000, 40000, False),
        ("easy4ip-inverted-stun", b"\x00\x01\x00\x18" + bytes(40), 5000, 40000, False),  # plain STUN
        ("easy4ip-ptcp", b"PTCP" + bytes(20), 5000, 40000, True),
        ("ezviz-mqtt", b"\x10\x1c\x00\x04MQTT\x04", 40000, 31006, True),
        ("ezviz-mqtt", b"\x10\x1c\x00\x04MQTT\x04", 40000, 1883, False),
        ("xmeye-json", b'POST / HTTP/1.1\r\n\r\n{"CfgProtocol":{}}', 40000, 8086, True),
        ("xmeye-json", b'POST / HTTP/1.1\r\n\r\n{"Other":{}}', 40000, 8086, False),
    ],
)
def test_signature_matching(sig: str, payload: bytes, sport: int, dport: int, expected: bool) -> None:
    assert SIGS[sig].matches(memoryview(payload), sport, dport) is expected


def test_cs2_peer_id() -> None:
    assert SIGS["cs2-pppp"].peer_id(b"\xf1\x31\x00\x14TNPUSAF\x00" + bytes(12)) == "TNPUSAF"
    assert SIGS["cs2-pppp"].peer_id(b"\xf1\x00\x00\x00") is None


def test_signature_services_are_catalogue_services() -> None:
    cat = EndpointCatalogue.load(None)
    assert {s.service for s in SIGS.values()} <= set(cat.services)


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"id": "x", "service": "nope", "proto": "udp", "prefix_hex": ["f1"]}, "service"),
        ({"id": "x", "service": "cs2-p2p", "proto": "icmp", "prefix_hex": ["f1"]}, "proto"),
        ({"id": "x", "service": "cs2-p2p", "proto": "udp"}, "signatures[0]"),
        ({"id": "x", "service": "cs2-p2p", "proto": "udp", "prefix_hex": ["zz"]}, "signatures[0]"),
        ({"id": "x", "service": "cs2-p2p", "proto": "udp", "prefix_hex": ["f1"], "colour": 1}, "colour"),
    ],
)
def test_bad_signature_files_are_rejected(tmp_path: Path, entry: dict[str, Any], key: str) -> None:
    path = tmp_path / "cloud-signatures.yaml"
    path.write_text(json.dumps({"version": 1, "signatures": [entry]}))
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_signatures(path, set(EndpointCatalogue.load(None).services))


def test_yi_camera_cs2_recognised_by_payload(tmp_path: Path) -> None:
    pcap = corpus_path("pcaps", "mudproject_yi_camera.pcap")
    events = replay(pcap, tmp_path)
    cam = "0c:8c:24:0b:39:7b"
    cloud = [e["cloud"] for e in of(events, "cloud") if e["cloud"].get("device") == cam]
    outbound = {c["dest_ip"] for c in cloud if c["direction"] == "outbound"}
    assert outbound == {"47.88.59.209", "47.90.240.160", "47.74.255.9"}
    assert all(c["service"] == "cs2-p2p" and c["evidence"] == "payload" for c in cloud)
    assert all(c["destination_verdict"] == "vendor-cloud" for c in cloud if c["direction"] == "outbound")
    lan = [c for c in cloud if c["direction"] == "lan-broadcast"]
    assert len(lan) == 1 and lan[0]["dest_port"] == 32108 and lan[0]["peer_id"] == "TNPUSAF"
    dests = [
        e["destination"]
        for e in of(events, "destination")
        if e["destination"]["dest_port"] == 32100 and e["destination"].get("device") == cam
    ]
    assert len(dests) == 3
    assert {d["service_evidence"] for d in dests} == {"payload"}  # not the weak port guess
    assert not [e for e in of(events, "alert") if e["alert"]["rule_id"].startswith("CW-UPD")]


def test_generated_cloud_sessions(tmp_path: Path) -> None:
    events = replay(write(tmp_path / "c.pcap", clouds.cloud_sessions()), tmp_path)
    got = {
        (e["cloud"]["service"], e["cloud"]["signature"], e["cloud"]["evidence"]) for e in of(events, "cloud")
    }
    assert got == {
        ("cs2-p2p", "cs2-pppp", "payload"),
        ("easy4ip", "easy4ip-dh-request", "payload"),
        ("easy4ip", "easy4ip-inverted-stun", "payload"),
        ("easy4ip", "easy4ip-ptcp", "payload"),
        ("ezviz-cloud", "ezviz-mqtt", "payload"),
        ("xmeye-cloud", "xmeye-json", "payload"),
    }
    # one event per (device, service, destination): 3 CS2 servers + 1 broadcast despite 10 datagrams
    assert sum(1 for e in of(events, "cloud") if e["cloud"]["service"] == "cs2-p2p") == 4
    # direct-IP UDP destinations named by payload, before the verdict
    by_port = {e["destination"]["dest_port"]: e["destination"] for e in of(events, "destination")}
    assert by_port[47001]["service"] == "easy4ip" and by_port[47001]["service_evidence"] == "payload"
    assert by_port[32100]["service_evidence"] == "payload"
    # TCP: recognised after the handshake, confirming the port-based attribution
    mqtt = next(e["cloud"] for e in of(events, "cloud") if e["cloud"]["signature"] == "ezviz-mqtt")
    assert mqtt["destination_verdict"] == "vendor-cloud" and mqtt["destination_service"] == "ezviz-cloud"


def test_look_alikes_are_not_clouds(tmp_path: Path) -> None:
    events = replay(write(tmp_path / "n.pcap", clouds.look_alikes()), tmp_path)
    assert of(events, "cloud") == []


def test_bundled_sample_cloud_events_and_metrics(tmp_path: Path) -> None:
    from agent.config import Config
    from agent.engine import SAMPLE_CAPTURE, Engine

    cfg = Config()
    cfg.state_dir = tmp_path / "st"
    out = tmp_path / "e.ndjson"
    engine = Engine(cfg, events=str(out))
    try:
        engine.replay([str(SAMPLE_CAPTURE)])
        engine.finish()
        snap = engine.counters.snapshot()
    finally:
        engine.close()
    events = [json.loads(line) for line in out.read_text().splitlines()]
    services = {e["cloud"]["service"] for e in of(events, "cloud")}
    assert {"cs2-p2p", "easy4ip", "ezviz-cloud", "xmeye-cloud"} <= services
    # series exist for every service a signature can name, also those not seen
    assert set(snap.cloud_sessions) >= {s.service for s in SIGS.values()}
    assert snap.cloud_sessions["cs2-p2p"] >= 3
    assert not [e for e in of(events, "alert") if e["alert"]["rule_id"].startswith("CW-UPD")]
