"""Destination policy: file validation, group selection, evaluation order, learning mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.catalogue import EndpointCatalogue
from agent.config import RULES_DIR, Config
from agent.errors import ConfigError
from agent.policy import DeviceFacts, Policy
from tests.unit.test_destinations_harness import FakeStore

HIK = DeviceFacts(
    mac="bc:ad:28:00:00:01", ips=("10.20.0.31",), vlan=(20,), vendor="hikvision", family="hikvision"
)
EZVIZ = DeviceFacts(mac="54:d6:0d:00:00:01", ips=("10.20.0.32",), vendor="ezviz", family="hikvision")
DAHUA = DeviceFacts(mac="38:af:29:bb:bc:ab", ips=("10.30.0.5",), vlan=(30,), vendor="dahua", family="dahua")
OTHER = DeviceFacts(mac="00:11:22:33:44:55", ips=("10.40.0.9",))


@pytest.fixture(scope="module")
def cat() -> EndpointCatalogue:
    return EndpointCatalogue(Config())


def evaluate(
    policy: Policy, facts: DeviceFacts, ip: str, port: int, proto: str = "tcp", **kw: Any
) -> tuple[str, ...]:
    cat = policy.catalogue
    names = kw.pop("names", ())
    service = kw.pop("service", None)
    if service is None and cat is not None:
        for n in names:
            service = cat.service_for_domain(n)
            if service:
                break
        if service is None:
            service = cat.service_for(None, ip, port, proto, facts.family, port_only=not names)
    v = policy.evaluate(
        device=facts.mac or "x",
        dest_ip=ip,
        dest_port=port,
        proto=proto,
        names=names,
        service=service,
        now=kw.pop("now", 1000.0),
        facts=facts,
        **kw,
    )
    return (v.verdict, v.reason, v.group, v.rule or "", v.name or "", "notify" if v.notify else "")


SITE = {
    "version": 1,
    "defaults": {
        "vendor_cloud": "allow",
        "deny_countries": ["KP"],
        "allow": [{"name": "ntp", "domains": ["pool.ntp.org", "*.pool.ntp.org"], "ports": ["udp/123"]}],
    },
    "groups": [
        {
            "name": "hik",
            "match": {"vendors": ["hikvision"]},
            "vendor_cloud": "deny",
            "allow_services": ["hik-connect", "ntp"],
            "countries": ["IE", "DE"],
            "allow": [
                {"name": "vms", "cidrs": ["203.0.113.0/24"], "ports": ["tcp/7660"]},
                {"domains": ["updates.example.net"], "ports": ["tcp/443"]},
            ],
        },
        {"name": "vlan30", "match": {"vlans": [30], "cidrs": ["10.30.0.0/16"]}, "vendor_cloud": "alert"},
        {"name": "by-mac", "match": {"macs": ["00-11-22-33-44-55"]}, "deny_services": ["p2p"]},
    ],
}


@pytest.fixture
def site(cat: EndpointCatalogue) -> Policy:
    return Policy.from_dict(SITE, catalogue=cat)


def test_group_selection(site: Policy) -> None:
    assert site.group_for(HIK).name == "hik"
    assert site.group_for(EZVIZ).name == "hik"  # brand family selects OEM vendors too
    assert site.group_for(DAHUA).name == "vlan30"
    assert (
        site.group_for(DeviceFacts(mac="aa:00:00:00:00:01", ips=("10.30.0.9",))).name == "defaults"
    )  # no VLAN
    assert site.group_for(OTHER).name == "by-mac"
    assert site.group_for(DeviceFacts()).name == "defaults"


def test_allow_rule_beats_everything(site: Policy) -> None:
    # NTP pool from the defaults' allow rule, even for a group that denies vendor clouds
    assert evaluate(site, HIK, "192.0.2.10", 123, "udp", names=["2.pool.ntp.org"]) == (
        "allowed", "policy", "hik", "defaults.ntp", "2.pool.ntp.org", "",
    )  # fmt: skip
    assert evaluate(site, HIK, "203.0.113.9", 7660)[:4] == ("allowed", "policy", "hik", "hik.vms")
    assert evaluate(site, HIK, "198.51.100.1", 443, names=["updates.example.net"])[:4] == (
        "allowed", "policy", "hik", "hik.allow[1]",
    )  # fmt: skip
    # explicitly allowed even in a denied country
    assert evaluate(site, HIK, "203.0.113.9", 7660, country="KP")[:2] == ("allowed", "policy")


def test_port_mismatch(site: Policy) -> None:
    assert evaluate(site, HIK, "203.0.113.9", 22)[:4] == ("unexpected", "port", "hik", "hik.vms")
    assert evaluate(site, OTHER, "192.0.2.10", 80, names=["0.pool.ntp.org"])[:2] == ("unexpected", "port")


def test_vendor_cloud_modes(site: Policy) -> None:
    # hik: vendor_cloud deny, allow_services [hik-connect, category ntp]
    assert evaluate(site, HIK, "52.0.0.1", 443, names=["litedev.hik-connect.com"])[:4] == (
        "vendor-cloud", "catalogue", "hik", "catalogue:hik-connect",
    )  # fmt: skip
    assert evaluate(site, HIK, "52.0.0.1", 123, "udp", names=["time.ys7.com"])[:2] == (
        "vendor-cloud",
        "catalogue",
    )
    assert evaluate(site, HIK, "52.0.0.1", 8666, names=["litedev.ezvizlife.com"])[:2] == (
        "unexpected",
        "catalogue",
    )
    # vlan30: vendor_cloud alert -> verdict kept, alert requested
    v = evaluate(site, DAHUA, "52.0.0.1", 8800, "udp", names=["www.easy4ipcloud.com"])
    assert v[:2] == ("vendor-cloud", "catalogue") and v[5] == "notify"
    # weak (port-only) evidence counts as the service too
    v = evaluate(site, DAHUA, "52.0.0.1", 8800, "udp")
    assert v[:4] == ("vendor-cloud", "catalogue", "vlan30", "catalogue:easy4ip")
    # by-mac: deny_services by category
    assert evaluate(site, OTHER, "47.88.59.209", 32100, "udp")[:2] == ("unexpected", "catalogue")
    assert evaluate(site, OTHER, "52.0.0.1", 443, names=["api.eu.xiaoyi.com"])[:2] == (
        "vendor-cloud",
        "catalogue",
    )


def test_countries(site: Policy) -> None:
    assert evaluate(site, OTHER, "175.45.176.1", 443, country="KP", names=["x.example"])[:2] == (
        "unexpected", "country",
    )  # fmt: skip
    # deny_countries applies before the catalogue
    assert evaluate(site, DAHUA, "175.45.176.1", 8800, "udp", country="KP")[:4] == (
        "unexpected", "country", "vlan30", "deny_countries",
    )  # fmt: skip
    # hik: countries allow-list (after catalogue, baseline)
    assert evaluate(site, HIK, "8.8.8.8", 443, country="US", names=["x.example"])[:4] == (
        "unexpected", "country", "hik", "countries",
    )  # fmt: skip
    assert evaluate(site, HIK, "3.120.0.1", 443, country="DE", names=["x.example"])[:2] == (
        "unexpected",
        "not_in_policy",
    )
    assert evaluate(site, HIK, "3.120.0.1", 443, country=None, names=["x.example"])[:2] == (
        "unexpected",
        "not_in_policy",
    )


def test_direct_ip_and_not_in_policy(site: Policy) -> None:
    assert evaluate(site, OTHER, "192.0.2.77", 443) == ("unexpected", "direct_ip", "by-mac", "", "", "")
    assert evaluate(site, OTHER, "192.0.2.77", 443, names=["evil.example"])[:2] == (
        "unexpected",
        "not_in_policy",
    )


def test_bundled_default_policy(cat: EndpointCatalogue) -> None:
    policy = Policy(Config(), cat)
    assert policy.paths == [RULES_DIR / "policy" / "default.yaml"]
    assert evaluate(policy, OTHER, "192.0.2.1", 123, "udp", names=["time.cloudflare.com"])[:2] == (
        "allowed",
        "policy",
    )
    assert evaluate(policy, HIK, "52.0.0.1", 8666, names=["litedev.ezvizlife.com"])[:2] == (
        "vendor-cloud",
        "catalogue",
    )
    assert evaluate(policy, HIK, "192.0.2.1", 443)[:2] == ("unexpected", "direct_ip")


@pytest.mark.parametrize("name", sorted(p.name for p in (RULES_DIR / "policy" / "examples").glob("*.yaml")))
def test_example_policies_load(cat: EndpointCatalogue, name: str) -> None:
    policy = Policy(None, cat, paths=[RULES_DIR / "policy" / "examples" / name])
    assert policy.groups


def test_local_only_example(cat: EndpointCatalogue) -> None:
    policy = Policy(None, cat, paths=[RULES_DIR / "policy" / "examples" / "local-only.yaml"])
    cam = DeviceFacts(mac="bc:ad:28:00:00:02", ips=("10.20.0.5",), vendor="hikvision", family="hikvision")
    assert evaluate(policy, cam, "52.0.0.1", 8666, names=["litedev.ezvizlife.com"])[:2] == (
        "unexpected",
        "catalogue",
    )
    assert evaluate(policy, cam, "192.0.2.123", 123, "udp")[:2] == ("allowed", "policy")
    nvr = DeviceFacts(mac="bc:ad:28:00:00:10", ips=("10.20.0.10",), vendor="hikvision", family="hikvision")
    assert evaluate(policy, nvr, "52.0.0.1", 80, names=["usdownload.ezvizlife.com"])[:2] == (
        "vendor-cloud",
        "catalogue",
    )


def test_several_files_merge(tmp_path: Path, cat: EndpointCatalogue) -> None:
    a = tmp_path / "a.yaml"
    a.write_text("defaults: {vendor_cloud: deny, allow: [{domains: [a.example]}]}\ngroups: [{name: g1}]\n")
    b = tmp_path / "b.yaml"
    b.write_text(
        "defaults: {allow: [{domains: [b.example]}]}\ngroups: [{name: g2, match: {vendors: [dahua]}}]\n"
    )
    policy = Policy.load([a, b], Config(), cat)
    assert [g.name for g in policy.groups] == ["g1", "g2"]
    assert policy.defaults.vendor_cloud == "deny"  # kept: b does not set it
    assert evaluate(policy, OTHER, "192.0.2.1", 1, names=["b.example"])[:2] == ("allowed", "policy")
    assert evaluate(policy, OTHER, "192.0.2.1", 1, names=["a.example"])[:2] == ("allowed", "policy")
    c = tmp_path / "c.yaml"
    c.write_text("groups: [{name: g1}]\n")
    with pytest.raises(ConfigError) as ei:
        Policy.load([a, c], Config(), cat)
    assert (ei.value.path, ei.value.key) == (
        str(c),
        "groups[0].name",
    ) and "already defined" in ei.value.problem


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("colour: red", "colour", "unknown key"),
        ("version: 2", "version", "unsupported"),
        ("groups: [{match: {}}]", "groups[0].name", "name"),
        ("groups: [{name: g, match: {vendors: [hikvison]}}]", "groups[0].match.vendors[0]", "unknown vendor"),
        ("groups: [{name: g, match: {macs: [bc:ad:28]}}]", "groups[0].match.macs[0]", "not a MAC"),
        ("groups: [{name: g, match: {cidrs: [10.0.0.0/33]}}]", "groups[0].match.cidrs[0]", "CIDR"),
        ("groups: [{name: g, match: {vlans: [5000]}}]", "groups[0].match.vlans", "VLAN"),
        ("groups: [{name: g, match: {classes: [toaster]}}]", "groups[0].match.classes[0]", "one of"),
        ("groups: [{name: g, match: {colour: red}}]", "groups[0].match.colour", "unknown selector"),
        ("groups: [{name: g, vendor_cloud: maybe}]", "groups[0].vendor_cloud", "allow, alert, deny"),
        (
            "groups: [{name: g, allow_services: [hik-conect]}]",
            "groups[0].allow_services[0]",
            "unknown service",
        ),
        ("groups: [{name: g, countries: [Ireland]}]", "groups[0].countries[0]", "two-letter"),
        ("groups: [{name: g, allow: [{domains: ['*']}]}]", "groups[0].allow[0].domains[0]", "domain"),
        ("groups: [{name: g, allow: [{ports: [tcp/99999]}]}]", "groups[0].allow[0].ports[0]", "range"),
        ("groups: [{name: g, allow: [{}]}]", "groups[0].allow[0]", "at least one"),
        ("groups: [{name: g, allow: [{domains: [a.b], why: x}]}]", "groups[0].allow[0].why", "unknown key"),
        ("groups: [{name: g, allow: {domains: [a.b]}}]", "groups[0].allow", "list"),
        ("defaults: {match: {}}", "defaults.match", "unknown key"),
        ("defaults: {deny_countries: [xx1]}", "defaults.deny_countries[0]", "two-letter"),
        ("groups: [{name: g}, {name: g}]", "groups[1].name", "already defined"),
        ("- just a list", "-", "mapping"),
        ("groups: [{name: g", "line 2", "not valid YAML"),
    ],
)
def test_errors_name_file_and_key(
    tmp_path: Path, cat: EndpointCatalogue, text: str, key: str, problem: str
) -> None:
    p = tmp_path / "policy.yaml"
    p.write_text(text + "\n")
    with pytest.raises(ConfigError) as ei:
        Policy.load([p], Config(), cat)
    assert ei.value.path == str(p)
    assert ei.value.key == key
    assert problem in ei.value.problem


def test_empty_file_is_an_empty_policy(tmp_path: Path, cat: EndpointCatalogue) -> None:
    p = tmp_path / "empty.yaml"
    p.write_text("")
    policy = Policy.load([p], Config(), cat)
    assert policy.groups == [] and evaluate(policy, OTHER, "192.0.2.1", 443)[:2] == (
        "unexpected",
        "direct_ip",
    )


# --- learning ---------------------------------------------------------------------------------------


def learning_policy(cat: EndpointCatalogue, store: FakeStore | None = None, period: float = 3600.0) -> Policy:
    cfg = Config(learning_enabled=True, learning_period=period)
    return (
        Policy.from_dict(SITE, catalogue=cat, config=cfg) if store is None else _with_store(cat, cfg, store)
    )


def _with_store(cat: EndpointCatalogue, cfg: Config, store: FakeStore) -> Policy:
    policy = Policy.from_dict(SITE, catalogue=cat, config=cfg)
    policy.load_state(store)
    return policy


def test_learning_then_enforcement(cat: EndpointCatalogue) -> None:
    store = FakeStore()
    policy = learning_policy(cat, store)
    policy.note_time(1000.0)  # first traffic starts the window
    assert evaluate(policy, OTHER, "192.0.2.5", 9000, names=["odd.example"], now=1500.0)[:2] == (
        "allowed",
        "learning",
    )
    assert evaluate(policy, OTHER, "192.0.2.6", 4444, now=1600.0)[:2] == ("allowed", "learning")
    # policy and catalogue still judge while learning; explicit denials are not learnt
    assert evaluate(policy, OTHER, "192.0.2.1", 123, "udp", names=["a.pool.ntp.org"], now=1700.0)[:2] == (
        "allowed", "policy",
    )  # fmt: skip
    assert evaluate(policy, OTHER, "47.88.59.209", 32100, "udp", now=1700.0)[:2] == (
        "unexpected",
        "catalogue",
    )
    assert evaluate(policy, OTHER, "175.45.176.1", 80, country="KP", now=1700.0)[:2] == (
        "unexpected",
        "country",
    )
    assert policy.flush() == 2
    assert store.meta["learning_started"] == "1000.0"
    assert store.baseline[OTHER.mac] == {("name", "odd.example tcp/9000"), ("ip", "192.0.2.6 tcp/4444")}  # type: ignore[index]
    # after the window: the baseline allows what was learnt, nothing else
    after = 1000.0 + 3600.0
    assert evaluate(policy, OTHER, "198.51.100.8", 9000, names=["odd.example"], now=after)[:4] == (
        "allowed", "baseline", "by-mac", "baseline",
    )  # fmt: skip
    assert evaluate(policy, OTHER, "192.0.2.6", 4444, now=after)[:2] == ("allowed", "baseline")
    assert evaluate(policy, OTHER, "192.0.2.6", 4445, now=after)[:2] == ("unexpected", "direct_ip")
    assert evaluate(policy, OTHER, "192.0.2.7", 9000, names=["other.example"], now=after)[:2] == (
        "unexpected", "not_in_policy",
    )  # fmt: skip
    # baselines are per device
    assert evaluate(policy, HIK, "192.0.2.6", 4444, now=after, country="DE")[:2] == (
        "unexpected",
        "direct_ip",
    )


def test_learning_state_survives_restart(cat: EndpointCatalogue) -> None:
    store = FakeStore()
    first = learning_policy(cat, store)
    first.note_time(1000.0)
    evaluate(first, OTHER, "192.0.2.6", 4444, now=1100.0)
    first.flush()
    second = learning_policy(cat, store)  # restart: start and baseline come from the store
    assert second.learning_start == 1000.0
    assert second.learning_active(2000.0) and not second.learning_active(5000.0)
    assert evaluate(second, OTHER, "192.0.2.6", 4444, now=5000.0)[:2] == ("allowed", "baseline")


def test_learning_disabled_by_default(cat: EndpointCatalogue) -> None:
    policy = Policy.from_dict(SITE, catalogue=cat)
    policy.note_time(0.0)
    assert policy.learning_start is None and not policy.learning_active(1.0)
