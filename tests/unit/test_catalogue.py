"""OUI and endpoint catalogues: bundled data, lookups, and validation errors naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.catalogue import DomainSet, EndpointCatalogue, check_domain_pattern, mac_is_local, parse_port
from agent.config import RULES_DIR, Config
from agent.errors import ConfigError


@pytest.fixture(scope="module")
def cat() -> EndpointCatalogue:
    return EndpointCatalogue(Config())


# --- OUI ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mac", "vendor", "family", "weak"),
    [
        ("bc:ad:28:00:00:01", "hikvision", "hikvision", False),
        ("BC-AD-28-00-00-01", "hikvision", "hikvision", False),  # dashes and upper case
        ("54:d6:0d:12:34:56", "ezviz", "hikvision", False),  # EZVIZ is Hikvision's family
        ("38:af:29:bb:bc:ab", "dahua", "dahua", False),  # the Dahua camera of the 2ic80 capture
        ("9c:8e:cd:0a:33:1b", "amcrest", "dahua", False),
        ("00:12:17:aa:bb:cc", "xiongmai", "xiongmai", True),  # borrowed Cisco-Linksys block
        ("84:8a:59:00:00:01", "hisilicon", "generic", True),  # SoC vendor
        ("0c:8c:24:0b:39:7b", "bilian", "generic", True),  # the YI camera's Wi-Fi module
        ("58:e8:76:0f:ff:ff", "raysharp", "raysharp", False),  # MA-M /28 block 58:E8:76:0
    ],
)
def test_vendor_for_mac(cat: EndpointCatalogue, mac: str, vendor: str, family: str, weak: bool) -> None:
    hint = cat.vendor_for_mac(mac)
    assert hint is not None
    assert (hint.vendor, hint.family, hint.weak) == (vendor, family, weak)
    assert hint.confidence == ("low" if weak else "medium")


@pytest.mark.parametrize(
    "mac",
    [
        "58:e8:76:10:00:00",  # outside the /28
        "02:ad:28:00:00:01",  # locally administered: never an IEEE block
        "be:ad:28:00:00:01",  # Hikvision prefix with the local bit set (randomised MAC)
        "ff:ff:ff:ff:ff:ff",
        "not-a-mac",
        "",
        None,
    ],
)
def test_vendor_for_mac_misses(cat: EndpointCatalogue, mac: str | None) -> None:
    assert cat.vendor_for_mac(mac) is None


def test_local_mac_detection() -> None:
    assert mac_is_local("02:00:00:00:00:01") and mac_is_local("da:a1:19:00:00:01")
    assert not mac_is_local("bc:ad:28:00:00:01")


def test_every_hikvision_prefix_from_the_reference_is_present(cat: EndpointCatalogue) -> None:
    # camera-network.md §6 lists 68 Hikvision MA-L blocks.
    hik = [p for p in cat._oui[24].values() if p.vendor == "hikvision"]
    assert len(hik) == 68
    assert {h.vendor for h in cat._oui[24].values() if h.family == "dahua"} >= {
        "dahua",
        "huacheng",
        "amcrest",
    }


# --- endpoints --------------------------------------------------------------------------------------


def test_domain_match_most_specific_wins(cat: EndpointCatalogue) -> None:
    m = cat.service_for("time.ys7.com", "203.0.113.1", 123, "udp")
    assert m is not None and (m.name, m.category, m.evidence) == ("hik-ntp", "ntp", "domain")
    m = cat.service_for("devlog.ys7.com", None, 443, "tcp")
    assert m is not None and m.name == "ezviz-cloud" and m.matched == "*.ys7.com"
    m = cat.service_for("usdownload.ezvizlife.com", None, 80, 6)
    assert m is not None and (m.name, m.category) == ("ezviz-firmware", "update")
    m = cat.service_for("LiteDev.EzvizLife.com.", None, 8666, "tcp")  # case and root dot ignored
    assert m is not None and m.name == "ezviz-cloud" and not m.weak


def test_wildcard_does_not_match_apex_unless_listed(cat: EndpointCatalogue) -> None:
    assert cat.service_for("xmeye.net", None, 443, "tcp") is None  # only *.xmeye.net is listed
    m = cat.service_for("secu100.net", None, 443, "tcp")  # apex listed explicitly
    assert m is not None and m.name == "xmeye-cloud"
    assert cat.service_for("notezvizlife.com", None, 443, "tcp") is None


def test_domain_match_ignores_port(cat: EndpointCatalogue) -> None:
    m = cat.service_for("www.easy4ipcloud.com", "198.51.100.9", 1, "tcp")
    assert m is not None and (m.name, m.vendor, m.category) == ("easy4ip", "dahua", "p2p")


def test_distinctive_port_is_weak_evidence(cat: EndpointCatalogue) -> None:
    m = cat.service_for(None, "47.88.59.209", 32100, "udp")
    assert m is not None and (m.name, m.evidence, m.weak, m.matched) == ("cs2-p2p", "port", True, "udp/32100")
    assert m.to_event()["evidence"] == "port"
    # A port that is not distinctive never attributes a flow on its own.
    assert cat.service_for(None, "203.0.113.1", 443, "tcp") is None
    assert cat.service_for(None, "203.0.113.1", 32100, "tcp") is None  # wrong protocol
    # a resolved name outside the catalogue disables port-only attribution
    assert cat.service_for("c2.evil.example", "203.0.113.1", 32100, "udp") is None
    assert cat.service_for("c2.evil.example", "203.0.113.1", 32100, "udp", port_only=True) is not None


def test_port_only_match_respects_device_family(cat: EndpointCatalogue) -> None:
    assert cat.service_for(None, "203.0.113.1", 8800, "udp", "dahua").name == "easy4ip"  # type: ignore[union-attr]
    assert cat.service_for(None, "203.0.113.1", 8800, "udp", "hikvision") is None
    assert cat.service_for(None, "203.0.113.1", 8666, "tcp", "hikvision").name == "ezviz-cloud"  # type: ignore[union-attr]
    # generic services (CS2 P2P) apply to every family; a generic family filters nothing
    assert cat.service_for(None, "203.0.113.1", 32100, "udp", "dahua") is not None
    assert cat.service_for(None, "203.0.113.1", 8800, "udp", "generic") is not None


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_new_service_needs_no_code_and_cidr_longest_prefix(tmp_path: Path) -> None:
    ep = _write(
        tmp_path,
        "endpoints.yaml",
        """
version: 1
services:
  - name: acme-cloud
    vendor: acme
    category: telemetry
    cidrs: [198.51.100.0/24, "2001:db8:1::/48"]
  - name: acme-relay
    vendor: acme
    category: p2p
    cidrs: [198.51.100.128/25]
    distinctive_ports: [udp/40000-40003]
""",
    )
    cat = EndpointCatalogue.from_files(None, ep)
    assert cat.service_for(None, "198.51.100.7", 443, "tcp").name == "acme-cloud"  # type: ignore[union-attr]
    m = cat.service_for(None, "198.51.100.200", 443, "tcp")
    assert m is not None and (m.name, m.evidence, m.matched) == ("acme-relay", "cidr", "198.51.100.128/25")
    assert cat.service_for(None, "2001:db8:1:2::5", 443, "tcp").name == "acme-cloud"  # type: ignore[union-attr]
    assert cat.service_for(None, "192.0.2.1", 40002, "udp").name == "acme-relay"  # type: ignore[union-attr]
    assert cat.service_names() == {"acme-cloud", "acme-relay"}


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (
            "services: [{name: x, vendor: v, category: cloudy, domains: [a.com]}]",
            "services[0].category",
            "one of",
        ),
        (
            "services: [{name: X!, vendor: v, category: cloud, domains: [a.com]}]",
            "services[0].name",
            "lower-case",
        ),
        ("services: [{name: x, vendor: v, category: cloud}]", "services[0]", "domains, cidrs or distinctive"),
        (
            "services: [{name: x, vendor: v, category: cloud, domains: ['a.*.com']}]",
            "services[0].domains[0]",
            "wildcard",
        ),
        (
            "services: [{name: x, vendor: v, category: cloud, domains: ['*.com']}]",
            "services[0].domains[0]",
            "too broad",
        ),
        (
            "services: [{name: x, vendor: v, category: cloud, cidrs: [10.0.0.300/8]}]",
            "services[0].cidrs[0]",
            "CIDR",
        ),
        (
            "services: [{name: x, vendor: v, category: cloud, distinctive_ports: [tcp/1-1000]}]",
            "services[0].distinctive_ports[0]",
            "at most",
        ),
        (
            "services: [{name: x, vendor: v, category: cloud, distinctive_ports: [443]}]",
            "services[0].distinctive_ports[0]",
            "tcp/ or udp/",
        ),
        (
            "services: [{name: x, vendor: v, category: cloud, ports: [sctp/1], domains: [a.com]}]",
            "services[0].ports[0]",
            "protocol",
        ),
        (
            "services: [{name: x, vendor: v, category: cloud, domains: [a.com], colour: red}]",
            "services[0].colour",
            "unknown key",
        ),
        (
            "services:\n - {name: x, vendor: v, category: cloud, domains: [a.com]}\n"
            " - {name: y, vendor: v, category: cloud, domains: [A.com]}",
            "services[1].domains[0]",
            "already in service",
        ),
        (
            "services:\n - {name: x, vendor: v, category: cloud, domains: [a.com]}\n"
            " - {name: x, vendor: v, category: cloud, domains: [b.com]}",
            "services[1].name",
            "duplicate",
        ),
        ("services: {}", "services", "list"),
        ("services: [unclosed", "line 1", "not valid YAML"),
    ],
)
def test_endpoint_errors_name_file_and_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    p = _write(tmp_path, "endpoints.yaml", text)
    with pytest.raises(ConfigError) as ei:
        EndpointCatalogue.from_files(None, p)
    assert ei.value.path == str(p)
    assert ei.value.key == key
    assert problem in ei.value.problem
    assert str(p) in str(ei.value)


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("entries: [{vendor: a, prefixes: ['GG:00:00']}]", "entries[0].prefixes[0]", "not a MAC prefix"),
        ("entries: [{vendor: a, prefixes: ['00:11:22:3/20']}]", "entries[0].prefixes[0]", "24 bits"),
        ("entries: [{vendor: a, prefixes: []}]", "entries[0].prefixes", "non-empty"),
        ("entries: [{vendor: Big Co, prefixes: ['00:11:22']}]", "entries[0].vendor", "lower-case"),
        ("entries: [{vendor: a, weak: maybe, prefixes: ['00:11:22']}]", "entries[0].weak", "true or false"),
        (
            "entries: [{vendor: a, prefixes: ['00:11:22']}, {vendor: b, prefixes: ['00-11-22']}]",
            "entries[1].prefixes[0]",
            "already listed for a",
        ),
        ("entries: [{vendor: a, prefixes: ['00:11:22'], url: x}]", "entries[0].url", "unknown key"),
        ("nothing: here", "entries", "entries"),
    ],
)
def test_oui_errors_name_file_and_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    p = _write(tmp_path, "oui.yaml", text)
    with pytest.raises(ConfigError) as ei:
        EndpointCatalogue.from_files(p, None)
    assert (ei.value.path, ei.value.key) == (str(p), key)
    assert problem in ei.value.problem


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        EndpointCatalogue.from_files(tmp_path / "nope.yaml", None)


def test_load_falls_back_to_bundled_files_for_a_custom_rules_dir(tmp_path: Path) -> None:
    _write(
        tmp_path, "endpoints.yaml", "services: [{name: only, vendor: v, category: cloud, domains: [x.org]}]"
    )
    cat = EndpointCatalogue.load(tmp_path)
    assert cat.service_names() == {"only"}  # the custom endpoints file
    assert cat.vendor_for_mac("bc:ad:28:00:00:01") is not None  # bundled OUI list
    assert EndpointCatalogue.load(RULES_DIR).service_for_domain("www.hiddns.com") is not None


def test_parse_port_forms() -> None:
    assert str(parse_port("f", "k", "tcp/443")) == "tcp/443"
    assert str(parse_port("f", "k", "udp/6002-6003")) == "udp/6002-6003"
    spec = parse_port("f", "k", 123)
    assert spec.proto is None and spec.matches(17, 123) and spec.matches(6, 123)
    assert parse_port("f", "k", "icmp").matches(1, 8)
    for bad in ("tcp/", "tcp/70000", "tcp/9-3", True, 1.5):
        with pytest.raises(ConfigError):
            parse_port("f", "k", bad)


@given(
    labels=st.lists(
        st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True), min_size=1, max_size=4
    )
)
def test_wildcards_match_every_name_below_the_suffix(labels: list[str]) -> None:
    ds = DomainSet()
    ds.add(check_domain_pattern("f", "k", "*.example.com"), "svc")
    ds.add(check_domain_pattern("f", "k", "exact.example.org"), "other")
    name = ".".join([*labels, "example", "com"])
    assert ds.match(name) == ("*.example.com", "svc")
    assert ds.match("example.com") is None
    assert ds.match(".".join([*labels, "example", "org"])) is None or labels == ["exact"]
