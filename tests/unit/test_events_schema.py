"""docs/events.schema.json describes what build_event emits.

jsonschema is not a dependency, so this file carries a small validator for the subset of JSON Schema
2020-12 the schema uses; it refuses schemas with keywords it does not implement, so it can never pass
by silently ignoring a constraint.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from agent.events import EVENT_TYPES, alert_body, build_event, to_json
from agent.model import LINKTYPE_ETHERNET, Flow, Packet

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "events.schema.json"

ANNOTATIONS = {"$schema", "$id", "title", "description", "$defs", "examples"}
IMPLEMENTED = {
    "type", "enum", "const", "pattern", "minimum", "maximum", "minLength", "minItems", "items",
    "properties", "required", "additionalProperties", "dependentRequired", "allOf", "anyOf", "if",
    "then", "$ref",
}  # fmt: skip
TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


class MiniValidator:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def errors(self, value: Any, schema: dict[str, Any] | bool | None = None, where: str = "$") -> list[str]:
        schema = self.root if schema is None else schema
        if schema is True:
            return []
        if schema is False:
            return [f"{where}: not allowed"]
        unknown = set(schema) - IMPLEMENTED - ANNOTATIONS
        if unknown:
            raise AssertionError(f"validator does not implement {sorted(unknown)}")
        errs: list[str] = []
        if "$ref" in schema:
            ref = schema["$ref"]
            assert ref.startswith("#/"), ref
            target: Any = self.root
            for part in ref[2:].split("/"):
                target = target[part]
            errs += self.errors(value, target, where)
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(TYPES[t](value) for t in types):
                return [*errs, f"{where}: {value!r} is not of type {types}"]
        if "enum" in schema and value not in schema["enum"]:
            errs.append(f"{where}: {value!r} not in {schema['enum']}")
        if "const" in schema and value != schema["const"]:
            errs.append(f"{where}: {value!r} != {schema['const']!r}")
        if isinstance(value, str):
            if "pattern" in schema and not re.search(schema["pattern"], value):
                errs.append(f"{where}: {value!r} does not match {schema['pattern']}")
            if len(value) < schema.get("minLength", 0):
                errs.append(f"{where}: too short")
        if TYPES["number"](value):
            if "minimum" in schema and value < schema["minimum"]:
                errs.append(f"{where}: {value} < {schema['minimum']}")
            if "maximum" in schema and value > schema["maximum"]:
                errs.append(f"{where}: {value} > {schema['maximum']}")
        if isinstance(value, list):
            if len(value) < schema.get("minItems", 0):
                errs.append(f"{where}: fewer than {schema['minItems']} items")
            if "items" in schema:
                for i, item in enumerate(value):
                    errs += self.errors(item, schema["items"], f"{where}[{i}]")
        if isinstance(value, dict):
            props = schema.get("properties", {})
            for key in schema.get("required", []):
                if key not in value:
                    errs.append(f"{where}: missing required {key!r}")
            for key, item in value.items():
                if key in props:
                    errs += self.errors(item, props[key], f"{where}.{key}")
                elif "additionalProperties" in schema:
                    errs += self.errors(item, schema["additionalProperties"], f"{where}.{key}")
            for key, needed in schema.get("dependentRequired", {}).items():
                if key in value:
                    errs += [f"{where}: {key!r} requires {n!r}" for n in needed if n not in value]
        for sub in schema.get("allOf", []):
            errs += self.errors(value, sub, where)
        if "anyOf" in schema and all(self.errors(value, sub, where) for sub in schema["anyOf"]):
            errs.append(f"{where}: matches none of anyOf")
        if "if" in schema and not self.errors(value, schema["if"], where) and "then" in schema:
            errs += self.errors(value, schema["then"], where)
        return errs


@pytest.fixture(scope="module")
def validator() -> MiniValidator:
    return MiniValidator(json.loads(SCHEMA_PATH.read_text()))


def _flow(**kw: Any) -> Flow:
    base: dict[str, Any] = dict(
        flow_id=77, vlan=(100, 20), proto=6, src_ip="10.20.0.31", src_port=40122, dest_ip="203.0.113.7",
        dest_port=8666, src_mac="bc:ad:28:00:00:01", dest_mac="00:11:22:33:44:55", first_ts=1.0, last_ts=1.0,
    )  # fmt: skip
    base.update(kw)
    return Flow(**base)


def _sadp_packet() -> Packet:
    return Packet(
        ts=1.0, linktype=LINKTYPE_ETHERNET, frame=memoryview(b"\x00" * 60), vlan=(),
        src_mac=bytes.fromhex("bcad28000001"), dest_mac=b"\xff" * 6, ethertype=0x8033, l3_offset=14,
        ip_version=0, src_ip_raw=b"", dest_ip_raw=b"",
        proto=0, src_port=0, dest_port=0, tcp_flags=0, payload_offset=14, payload_len=46, flow=None,
    )  # fmt: skip


def sample_events() -> list[dict[str, Any]]:
    ts = 1740910504.512311
    mac = "bc:ad:28:00:00:01"
    return [
        build_event(
            "device",
            {"mac": mac, "ip": "10.20.0.31", "vendor": "hikvision", "class": "camera",
             "model": "DS-2CD2043G0-I", "confidence": 0.9, "sources": ["oui", "sadp"],
             "first_seen": ts, "last_seen": ts},
            ts=ts, pkt=_sadp_packet(), in_iface="eth1",
        ),
        build_event(
            "destination",
            {"device": mac, "verdict": "unexpected", "reason": "not_in_policy",
             "dns_name": "litedev.ezvizlife.com", "service": None, "country": "IE", "asn": 16509},
            ts=ts, flow=_flow(), pcap_filename="cam.pcap",
        ),
        build_event(
            "dns",
            {"device": mac, "rrname": "litedev.ezvizlife.com", "rrtype": "A", "rcode": "NOERROR", "ttl": 60,
             "answers": ["203.0.113.7"]},
            ts=ts, flow=_flow(proto=17, dest_port=53, dest_ip="10.20.0.1", vlan=()),
        ),
        build_event(
            "alert",
            alert_body("CW-DEST-001", "high", "unexpected destination", "destination", device=mac),
            ts=ts, flow=_flow(),
        ),
        build_event("alert", alert_body("CW-ICMP", "low", "ping", "scan"), ts=ts,
                    flow=_flow(proto=1, src_port=8, dest_port=0)),
        build_event("alert", alert_body("CW-V6", "info", "v6", "x"), ts=ts,
                    flow=_flow(src_ip="fe80::1", dest_ip="2001:db8::7")),
        build_event(
            "stats",
            {"packets": 10, "bytes": 1000, "flows": 3, "devices": 1, "decode_errors": {"truncated_frame": 0},
             "flows_evicted": {"idle": 1}, "events": {"alert": 1}},
            ts=ts,
        ),
        build_event("update", {"channel": "http", "direction": "pull", "verdict": "expected"},
                    ts=ts, flow=_flow()),
        build_event("firmware", {"sha256": "00" * 32, "verdict": "clean"}, ts=ts),
        build_event("cloud", {"device": "bc:ad:28:00:00:01", "service": "cs2-p2p", "evidence": "payload"},
                    ts=ts, flow=_flow()),
    ]  # fmt: skip


def test_every_event_type_has_a_sample() -> None:
    assert {e["event_type"] for e in sample_events()} == set(EVENT_TYPES)


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e["event_type"])
def test_emitted_events_validate(validator: MiniValidator, event: dict[str, Any]) -> None:
    # Validate what is actually written: the JSON line, parsed back.
    parsed = json.loads(to_json(event))
    assert validator.errors(parsed) == []


def test_schema_event_type_enum_matches_code() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["properties"]["event_type"]["enum"] == list(EVENT_TYPES)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda e: e.pop("timestamp"), "missing required 'timestamp'"),
        (lambda e: e.update(timestamp="2025-03-02 10:15:04"), "does not match"),
        (lambda e: e.update(event_type="flow"), "not in"),
        (lambda e: e.pop("alert"), "missing required 'alert'"),
        (lambda e: e["alert"].pop("rule_id"), "missing required 'rule_id'"),
        (lambda e: e["alert"].update(severity="severe"), "not in"),
        (lambda e: e.update(vlan=[5000]), "> 4095"),
        (lambda e: e.update(community_id="2:abc"), "does not match"),
        (lambda e: e.pop("dest_ip"), "requires 'dest_ip'"),
        (lambda e: e.update(extra=1), "not allowed"),
        (lambda e: e.update(src_port=70000), "> 65535"),
    ],
)
def test_validator_rejects_broken_events(validator: MiniValidator, mutate: Any, expected: str) -> None:
    event = json.loads(to_json(sample_events()[3]))
    mutate(event)
    errors = validator.errors(event)
    assert any(expected in e for e in errors), errors


def test_docs_example_lines_validate(validator: MiniValidator) -> None:
    """Every example line in docs/events.md is valid, so the docs cannot drift from the schema."""
    doc = (SCHEMA_PATH.parent / "events.md").read_text()
    lines = [line for line in doc.splitlines() if line.startswith('{"timestamp"')]
    assert len(lines) >= len(EVENT_TYPES)
    for line in lines:
        assert validator.errors(json.loads(line)) == [], line


# ------------------------------------------------------------------ property: any flow validates

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_ips = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
_flows = st.builds(
    _flow,
    flow_id=st.integers(0, 2**63 - 1),
    vlan=st.lists(st.integers(0, 4095), max_size=2).map(tuple),
    proto=st.sampled_from([6, 17, 1, 58, 47, 132]),
    src_ip=_ips,
    dest_ip=_ips,
    src_port=st.integers(0, 255),
    dest_port=st.integers(0, 255),
)


@settings(max_examples=150, deadline=None)
@given(
    flow=_flows,
    ts=st.floats(allow_nan=True, allow_infinity=True),
    event_type=st.sampled_from(EVENT_TYPES),
    text=st.text(max_size=40),
)
def test_any_flow_event_validates(
    validator: MiniValidator, flow: Flow, ts: float, event_type: str, text: str
) -> None:
    body: dict[str, Any] = {
        "device": {"mac": "bc:ad:28:00:00:01", "model": text},
        "destination": {"verdict": "unexpected", "dns_name": text},
        "dns": {"rrname": text},
        "alert": alert_body("R-1", "medium", text, "c"),
        "stats": {"packets": 1},
        "update": {"channel": "http", "direction": "pull", "verdict": "unexpected", "uri": text},
        "firmware": {"verdict": "clean", "filename": text},
        "cloud": {"device": "bc:ad:28:00:00:01", "service": "cs2-p2p", "evidence": "port", "signature": text},
    }[event_type]
    line = to_json(build_event(event_type, body, ts=ts, flow=flow, in_iface="eth0"))
    assert line.isascii() and "\n" not in line
    assert validator.errors(json.loads(line)) == []


def test_every_golden_replay_event_validates(validator: MiniValidator) -> None:
    golden = Path(__file__).resolve().parent.parent / "golden"
    lines = [line for path in sorted(golden.glob("*.ndjson")) for line in path.read_text().splitlines()]
    assert len(lines) > 100
    problems = [(line[:120], validator.errors(json.loads(line))) for line in lines]
    assert [p for p in problems if p[1]] == []
