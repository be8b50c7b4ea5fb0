"""RFC 8520 (MUD) import: from-device ACLs -> a policy group, merged into a policy file, applied to
the device that announced the MUD URL over DHCP (real capture: tcpdump dhcp-mud.pcap)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.catalogue import EndpointCatalogue
from agent.config import Config
from agent.errors import ConfigError
from agent.policy import DeviceFacts, Policy, import_mud, main, merge_group
from analyzers.traffic.destinations import DestinationAnalyzer
from analyzers.traffic.dhcp import DhcpAnalyzer
from tests.conftest import corpus_path
from tests.unit.test_destinations_harness import Driver, FakeContext, tcp_frame, udp_frame

MUD_URL = "https://mudctl.example.com/.well-known/mud/v1/rasbp101"  # announced in dhcp-mud.pcap


def _ace(
    name: str, fam: str, dst: dict[str, Any], l4: str | None, port: Any, action: str = "accept"
) -> dict[str, Any]:
    matches: dict[str, Any] = {fam: dict(dst)}
    if l4:
        matches[fam]["protocol"] = 6 if l4 == "tcp" else 17
        matches[l4] = {"ietf-mud:direction-initiated": "from-device"}
        if port is not None:
            matches[l4]["destination-port"] = port
    return {"name": name, "matches": matches, "actions": {"forwarding": action}}


def camera_mud() -> dict[str, Any]:
    """A camera's MUD file in the structure of RFC 8520 §9 (ietf-mud + ietf-access-control-list)."""
    v4_from = [
        _ace(
            "cloud-api",
            "ipv4",
            {"ietf-acldns:dst-dnsname": "api.camera.example"},
            "tcp",
            {"operator": "eq", "port": 443},
        ),
        _ace(
            "time",
            "ipv4",
            {"ietf-acldns:dst-dnsname": "ntp.camera.example."},
            "udp",
            {"operator": "eq", "port": 123},
        ),
        _ace(
            "vms",
            "ipv4",
            {"destination-ipv4-network": "192.0.2.0/24"},
            "tcp",
            {"lower-port": 8000, "upper-port": 8010},
        ),
        _ace("blocked", "ipv4", {"ietf-acldns:dst-dnsname": "ads.example"}, "tcp", None, action="drop"),
        {
            "name": "lan",
            "matches": {"ietf-mud:mud": {"local-networks": [None]}},
            "actions": {"forwarding": "accept"},
        },
        {
            "name": "reply-only",
            "matches": {
                "ipv4": {"ietf-acldns:dst-dnsname": "viewer.camera.example", "protocol": 6},
                "tcp": {"ietf-mud:direction-initiated": "to-device"},
            },
            "actions": {"forwarding": "accept"},
        },
    ]
    v6_from = [
        _ace(
            "cloud-api-v6",
            "ipv6",
            {"ietf-acldns:dst-dnsname": "api.camera.example"},
            "tcp",
            {"operator": "eq", "port": 443},
        )
    ]
    to_dev = [
        {
            "name": "cl0-todev",
            "matches": {
                "ipv4": {"ietf-acldns:src-dnsname": "api.camera.example", "protocol": 6},
                "tcp": {
                    "ietf-mud:direction-initiated": "from-device",
                    "source-port": {"operator": "eq", "port": 443},
                },
            },
            "actions": {"forwarding": "accept"},
        }
    ]
    return {
        "ietf-mud:mud": {
            "mud-version": 1,
            "mud-url": MUD_URL,
            "last-update": "2024-05-01T10:00:00+00:00",
            "cache-validity": 48,
            "is-supported": True,
            "systeminfo": "Example IP camera",
            "from-device-policy": {
                "access-lists": {"access-list": [{"name": "cam-v4fr"}, {"name": "cam-v6fr"}]}
            },
            "to-device-policy": {"access-lists": {"access-list": [{"name": "cam-v4to"}]}},
        },
        "ietf-access-control-list:acls": {
            "acl": [
                {"name": "cam-v4fr", "type": "ipv4-acl-type", "aces": {"ace": v4_from}},
                {"name": "cam-v6fr", "type": "ipv6-acl-type", "aces": {"ace": v6_from}},
                {"name": "cam-v4to", "type": "ipv4-acl-type", "aces": {"ace": to_dev}},
            ]
        },
    }


@pytest.fixture
def mud_file(tmp_path: Path) -> Path:
    p = tmp_path / "camera.json"
    p.write_text(json.dumps(camera_mud()), encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def cat() -> EndpointCatalogue:
    return EndpointCatalogue(Config())


def test_import_mud_builds_a_group(mud_file: Path) -> None:
    group = import_mud(mud_file, "example-camera")
    assert group["name"] == "example-camera"
    assert group["match"] == {"mud_urls": [MUD_URL]}
    assert group["vendor_cloud"] == "deny"  # a MUD file is an allow-list
    rules = {r["name"]: r for r in group["allow"]}
    assert set(rules) == {"cloud-api", "time", "vms", "cloud-api-v6"}
    assert rules["cloud-api"] == {
        "name": "cloud-api",
        "domains": ["api.camera.example"],
        "ports": ["tcp/443"],
    }
    assert rules["time"]["domains"] == ["ntp.camera.example"] and rules["time"]["ports"] == ["udp/123"]
    assert rules["vms"] == {"name": "vms", "cidrs": ["192.0.2.0/24"], "ports": ["tcp/8000-8010"]}
    skipped = "\n".join(group["source"]["skipped"])
    for what in ("blocked", "lan", "reply-only", "to-device-policy"):
        assert what in skipped
    assert group["source"]["systeminfo"] == "Example IP camera"


def test_imported_group_is_valid_policy_and_enforces(mud_file: Path, cat: EndpointCatalogue) -> None:
    group = import_mud(mud_file, "example-camera")
    policy = Policy.from_dict({"groups": [group]}, catalogue=cat)
    facts = DeviceFacts(mac="b8:27:eb:b8:53:c8", ips=("10.0.0.5",), mud_url=MUD_URL)
    other = DeviceFacts(mac="b8:27:eb:00:00:01", ips=("10.0.0.6",))

    def verdict(
        f: DeviceFacts, ip: str, port: int, proto: str, names: tuple[str, ...] = ()
    ) -> tuple[str, str]:
        v = policy.evaluate(
            device="d", dest_ip=ip, dest_port=port, proto=proto, names=names, now=0.0, facts=f
        )
        return v.verdict, v.reason

    assert verdict(facts, "198.51.100.1", 443, "tcp", ("api.camera.example",)) == ("allowed", "policy")
    assert verdict(facts, "198.51.100.2", 123, "udp", ("ntp.camera.example",)) == ("allowed", "policy")
    assert verdict(facts, "192.0.2.44", 8004, "tcp") == ("allowed", "policy")
    assert verdict(facts, "198.51.100.1", 80, "tcp", ("api.camera.example",)) == ("unexpected", "port")
    assert verdict(facts, "198.51.100.3", 443, "tcp", ("viewer.camera.example",)) == (
        "unexpected",
        "not_in_policy",
    )
    assert policy.group_for(other).name == "defaults"


def test_merge_into_new_and_existing_policy(tmp_path: Path, mud_file: Path, cat: EndpointCatalogue) -> None:
    target = tmp_path / "site.yaml"
    merge_group(target, import_mud(mud_file, "example-camera"), catalogue=cat)
    doc = yaml.safe_load(target.read_text())
    assert [g["name"] for g in doc["groups"]] == ["example-camera"]
    target.write_text(
        "version: 1\ndefaults: {vendor_cloud: alert}\ngroups:\n  - name: other\n  - name: example-camera\n"
    )
    merge_group(target, import_mud(mud_file, "example-camera"), catalogue=cat)  # replaces, keeps the rest
    doc = yaml.safe_load(target.read_text())
    assert [g["name"] for g in doc["groups"]] == ["other", "example-camera"]
    assert doc["defaults"] == {"vendor_cloud": "alert"} and doc["groups"][1]["allow"]
    policy = Policy.load([target], Config(), cat)
    assert policy.groups[1].mud_urls == frozenset({MUD_URL})
    assert not list(tmp_path.glob(".site.yaml.*"))  # no temporary files left behind


def test_merge_refuses_an_invalid_result(tmp_path: Path, cat: EndpointCatalogue) -> None:
    target = tmp_path / "site.yaml"
    target.write_text("groups: []\n")
    with pytest.raises(ConfigError) as ei:
        merge_group(target, {"name": "bad", "vendor_cloud": "sometimes"}, catalogue=cat)
    assert ei.value.key == "groups[0].vendor_cloud"
    assert target.read_text() == "groups: []\n"  # untouched


def test_older_draft_layout(tmp_path: Path) -> None:
    """osMUD-era files: 'access-lists' / 'access-list-entries', ports inside the ipv6 match."""
    doc = {
        "ietf-mud:mud": {
            "mud-url": "https://bulb.example/mud",
            "from-device-policy": {"access-lists": {"access-list": [{"name": "fr"}]}},
        },
        "ietf-access-control-list:access-lists": {
            "acl": [
                {
                    "name": "fr",
                    "acl-type": "ipv6-acl",
                    "access-list-entries": {
                        "ace": [
                            {
                                "rule-name": "x",
                                "matches": {
                                    "ipv6-acl": {},
                                    "ipv6": {
                                        "ietf-acldns:dst-dnsname": "cloud.bulb.example",
                                        "protocol": 6,
                                        "destination-port-range-or-operator": {"operator": "eq", "port": 443},
                                    },
                                },
                                "actions": {"forwarding": "accept"},
                            }
                        ]
                    },
                }
            ]
        },
    }
    p = tmp_path / "bulb.json"
    p.write_text(json.dumps(doc))
    group = import_mud(p, "bulb", match={"macs": ["aa:bb:cc:00:00:01"]})
    assert group["match"] == {"macs": ["aa:bb:cc:00:00:01"]}
    assert group["allow"] == [{"name": "ace0", "domains": ["cloud.bulb.example"], "ports": ["tcp/443"]}]


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"nope": 1}, "ietf-mud:mud"),
        ({"ietf-mud:mud": {}}, "ietf-access-control-list:access-lists.acl"),
        (
            {
                "ietf-mud:mud": {
                    "from-device-policy": {"access-lists": {"access-list": [{"name": "missing"}]}}
                },
                "ietf-access-control-list:acls": {"acl": []},
            },
            "from-device-policy.access-lists.access-list[missing]",
        ),
    ],
)
def test_import_errors(tmp_path: Path, doc: dict[str, Any], key: str) -> None:
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as ei:
        import_mud(p, "g")
    assert (ei.value.path, ei.value.key) == (str(p), key)


def test_import_rejects_non_json(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable MUD JSON"):
        import_mud(p, "g")


def test_cli(tmp_path: Path, mud_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import-mud", str(mud_file), "--group", "cam"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["groups"][0]["name"] == "cam"
    target = tmp_path / "p.yaml"
    assert main(["import-mud", str(mud_file), "--group", "cam", "--into", str(target)]) == 0
    assert main(["check", str(target)]) == 0
    assert main(["import-mud", str(tmp_path / "missing.json"), "--group", "cam"]) == 2


def test_mud_url_from_real_dhcp_selects_the_group(tmp_path: Path, mud_file: Path) -> None:
    """DHCP option 161 in a real capture -> inventory mud_url -> the imported group judges flows."""
    policy_file = tmp_path / "mud.yaml"
    cat = EndpointCatalogue(Config())
    merge_group(policy_file, import_mud(mud_file, "example-camera"), catalogue=cat)
    cfg = Config(policy_paths=[policy_file])
    ctx = FakeContext(cfg, local_all=False)
    ctx.is_local = lambda ip, vlan=(): ip.startswith(("62.12.173.", "10.", "255.255.255.255"))  # type: ignore[method-assign]
    drv = Driver(ctx, [DhcpAnalyzer(), DestinationAnalyzer()])
    drv.replay(corpus_path("pcaps", "tcpdump_dhcp-mud.pcap"))
    dev = ctx.inventory.get("b8:27:eb:b8:53:c8")
    assert dev is not None and dev.mud_url == MUD_URL
    pi, gw, cam_ip = "b8:27:eb:b8:53:c8", "00:23:54:c2:57:02", "62.12.173.123"
    drv.feed(tcp_frame(pi, gw, cam_ip, "192.0.2.9", 40000, 8001), 1481200200.0)
    drv.feed(udp_frame(pi, gw, cam_ip, "198.51.100.77", 40001, 9999, b"x"), 1481200201.0)
    dests = {d["dest_ip"]: d for d in ctx.of("destination")}
    assert dests["192.0.2.9"]["verdict"] == "allowed" and dests["192.0.2.9"]["group"] == "example-camera"
    assert dests["198.51.100.77"]["verdict"] == "unexpected"
    assert dests["198.51.100.77"]["rule"] is None and dests["198.51.100.77"]["reason"] == "direct_ip"
