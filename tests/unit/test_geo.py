"""Geo lookup: bundled geoip2fast data (IPv4 + IPv6, no network) and MaxMind .mmdb files.

The .mmdb path is tested against tiny databases written here from the MaxMind DB format
specification (binary search tree of 24-bit records, data section, metadata map), so no
third-party database is needed.
"""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path
from typing import Any

import pytest

from agent.config import Config
from agent.geo import Asn, GeoLookup

# --- a minimal MaxMind DB writer ------------------------------------------------------------------

_MMDB_META_MARKER = b"\xab\xcd\xefMaxMind.com"


def _ctrl(type_id: int, size: int) -> bytes:
    if size < 29:
        head, extra = size, b""
    elif size < 29 + 256:
        head, extra = 29, bytes([size - 29])
    else:
        head, extra = 30, struct.pack("!H", size - 285)
    if type_id <= 7:
        return bytes([(type_id << 5) | head]) + extra
    return bytes([head, type_id - 7]) + extra  # extended type


def _uint(type_id: int, value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return _ctrl(type_id, len(raw)) + raw


def encode(value: Any) -> bytes:
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _ctrl(2, len(raw)) + raw
    if isinstance(value, dict):
        out = _ctrl(7, len(value))
        for k, v in value.items():
            out += encode(k) + encode(v)
        return out
    if isinstance(value, list):
        return _ctrl(11, len(value)) + b"".join(encode(v) for v in value)
    if isinstance(value, tuple):  # (type name, int) for explicit integer widths
        kind, number = value
        return _uint({"uint16": 5, "uint32": 6, "uint64": 9}[kind], number)
    if isinstance(value, int):
        return _uint(6, value)
    raise TypeError(value)


class _Node:
    __slots__ = ("kids",)

    def __init__(self) -> None:
        self.kids: list[Any] = [None, None]


def write_mmdb(path: Path, records: dict[str, dict[str, Any]], db_type: str) -> None:
    """IPv6 tree (IPv4 networks live under ::/96, as MaxMind readers expect), 24-bit records."""
    data = b""
    root = _Node()
    for cidr, rec in records.items():
        net = ipaddress.ip_network(cidr)
        if net.version == 4:
            bits = "0" * 96 + format(int(net.network_address), "032b")[: net.prefixlen]
        else:
            bits = format(int(net.network_address), "0128b")[: net.prefixlen]
        offset = len(data)
        data += encode(rec)
        node = root
        for b in bits[:-1]:
            i = int(b)
            if not isinstance(node.kids[i], _Node):
                node.kids[i] = _Node()
            node = node.kids[i]
        node.kids[int(bits[-1])] = ("data", offset)
    nodes = [root]
    for n in nodes:  # breadth-first numbering
        nodes.extend(k for k in n.kids if isinstance(k, _Node))
    index = {id(n): i for i, n in enumerate(nodes)}
    count = len(nodes)

    def rec_value(k: Any) -> int:
        if k is None:
            return count
        if isinstance(k, _Node):
            return index[id(k)]
        return count + 16 + k[1]

    tree = b"".join(
        rec_value(n.kids[0]).to_bytes(3, "big") + rec_value(n.kids[1]).to_bytes(3, "big") for n in nodes
    )
    meta = {
        "binary_format_major_version": ("uint16", 2),
        "binary_format_minor_version": ("uint16", 0),
        "build_epoch": ("uint64", 1_700_000_000),
        "database_type": db_type,
        "description": {"en": "camwatch test database"},
        "ip_version": ("uint16", 6),
        "languages": ["en"],
        "node_count": ("uint32", count),
        "record_size": ("uint16", 24),
    }
    path.write_bytes(tree + b"\x00" * 16 + data + _MMDB_META_MARKER + encode(meta))


@pytest.fixture
def mmdb_files(tmp_path: Path) -> tuple[Path, Path]:
    country = tmp_path / "country.mmdb"
    write_mmdb(
        country,
        {
            "81.2.69.0/24": {"country": {"iso_code": "NL"}},
            "175.16.199.0/24": {"registered_country": {"iso_code": "JP"}},
            "2a02:ff00::/32": {"country": {"iso_code": "SE"}},
            "89.160.20.0/24": {"continent": {"code": "EU"}},
        },
        "GeoLite2-Country",
    )
    asn = tmp_path / "asn.mmdb"
    write_mmdb(
        asn,
        {
            "81.2.69.0/24": {
                "autonomous_system_number": ("uint32", 64500),
                "autonomous_system_organization": "Example Cloud",
            },
            "2a02:ff00::/32": {
                "autonomous_system_number": ("uint32", 64501),
                "autonomous_system_organization": "V6 Net",
            },
        },
        "GeoLite2-ASN",
    )
    return country, asn


def test_mmdb_country_and_asn(mmdb_files: tuple[Path, Path]) -> None:
    country, asn = mmdb_files
    # (The facts in these tiny databases are made up; only the addresses are real public ones.)
    geo = GeoLookup(Config(geoip_mmdb=country, asn_mmdb=asn))
    assert geo.country("81.2.69.7") == "NL"
    assert geo.country("175.16.199.1") == "JP"  # falls back to the registered country
    assert geo.country("2a02:ff00::5") == "SE"
    assert geo.country("89.160.20.1") is None  # record without a country
    assert geo.country("8.8.8.8") is None  # not in the database: no fallback to bundled data
    assert geo.asn("81.2.69.7") == Asn(64500, "Example Cloud")
    assert geo.asn("2a02:ff00:1::1") == Asn(64501, "V6 Net")
    assert geo.asn("175.16.199.1") is None
    assert geo.country("10.0.0.1") is None  # private stays None with mmdb too
    geo.close()


def test_mmdb_is_opened_lazily(mmdb_files: tuple[Path, Path]) -> None:
    country, _ = mmdb_files
    geo = GeoLookup(Config(geoip_mmdb=country))
    assert geo._readers == {}
    assert geo.country("10.1.2.3") is None  # private: no database needed
    assert geo._readers == {}
    geo.country("8.8.8.8")
    assert list(geo._readers) == [country]


# --- bundled data ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def geo() -> GeoLookup:
    return GeoLookup(Config())


def test_bundled_ipv4_and_ipv6(geo: GeoLookup) -> None:
    assert geo.country("8.8.8.8") == "US"
    asn = geo.asn("8.8.8.8")
    assert asn is not None and asn.number is None and "GOOGLE" in asn.org.upper()
    assert geo.country("2001:4860:4860::8888") == "US"
    assert geo.country("::ffff:8.8.8.8") == "US"  # IPv4-mapped IPv6
    assert geo.country("3.120.55.194") == "DE"  # the YI camera's cloud endpoint (AWS Frankfurt)


@pytest.mark.parametrize(
    "ip",
    [
        "10.1.2.3",
        "192.168.1.1",
        "172.16.0.1",
        "100.64.1.1",
        "169.254.1.1",
        "127.0.0.1",
        "224.0.0.251",
        "255.255.255.255",
        "0.0.0.0",
        "fe80::1",
        "fd00::1",
        "ff02::fb",
        "::1",
        "not-an-ip",
        "",
    ],
)
def test_private_and_special_addresses_give_none(geo: GeoLookup, ip: str) -> None:
    assert geo.country(ip) is None
    assert geo.asn(ip) is None


def test_configured_local_networks_give_none() -> None:
    import ipaddress as ipa

    cfg = Config()
    cfg.local_cidrs = [ipa.ip_network("8.8.8.0/24")]
    assert GeoLookup(cfg).country("8.8.8.8") is None


def test_lookups_are_cached(geo: GeoLookup) -> None:
    geo.country("1.1.1.1")
    before = geo._country_cached.cache_info().hits
    geo.country("1.1.1.1")
    assert geo._country_cached.cache_info().hits == before + 1


def test_country_only_mode_has_no_asn() -> None:
    g = GeoLookup(Config(analyzer_options={"geo": {"asn": False}}))
    assert g.asn("8.8.8.8") is None
    assert g.country("8.8.8.8") == "US"
