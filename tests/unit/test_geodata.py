"""The compact NumPy geo tables answer exactly as geoip2fast does on the same bundled file."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import geoip2fast
import pytest

from agent import geodata

DATA = Path(geoip2fast.__file__).resolve().parent


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[geodata.CompactGeo, object]:
    name = "geoip2fast-asn-ipv6.dat.gz"
    cache = tmp_path_factory.mktemp("geo-cache")
    built = geodata.load(DATA / name, cache_dir=cache)
    assert built is not None
    assert list(cache.glob("*.npz")), "the converted tables were not cached"
    cached = geodata.load(DATA / name, cache_dir=cache)  # second load: from the .npz
    assert cached is not None
    return cached, geoip2fast.GeoIP2Fast(geoip2fast_data_file=name)


def _public(rng: random.Random, v6_starts: list[int]) -> str:
    """A random public IPv4 address, or (when `v6_starts` is given) an IPv6 address near the start
    of a random IPv6 network of the data (random IPv6 addresses are almost all unallocated)."""
    while True:
        if v6_starts:
            raw = rng.choice(v6_starts) + rng.getrandbits(rng.choice((8, 32, 64)))
        else:
            raw = rng.getrandbits(32)
        addr = ipaddress.ip_address(raw)
        if addr.is_global and not addr.is_multicast and not addr.is_reserved:
            return str(addr)


@pytest.mark.parametrize("v6", [False, True])
def test_country_and_asn_match_geoip2fast(tables: tuple[geodata.CompactGeo, object], v6: bool) -> None:
    compact, reference = tables
    rng = random.Random(11)
    starts = [int.from_bytes(bytes(b).ljust(16, b"\0"), "big") for b in compact._country.v6_start[::50]]
    found = asn_found = 0
    for _ in range(1500):
        ip = _public(rng, starts if v6 else [])
        ref = reference.lookup(ip)  # type: ignore[attr-defined]
        ref_code = ref.country_code if len(ref.country_code) == 2 and ref.country_code.isalpha() else None
        got = compact.country(int(ipaddress.ip_address(ip)))
        assert got == ref_code, f"{ip}: {got} != {ref_code}"
        found += got is not None
        org = compact.asn_name(int(ipaddress.ip_address(ip)))
        if org:
            # geoip2fast sizes IPv4 ASN networks as IPv6 ones in its v6 file, so it also "finds" an
            # organisation for addresses in gaps; wherever we find one, it must be the same.
            assert org == ref.asn_name, f"{ip}: {org} != {ref.asn_name}"
            asn_found += 1
    assert found > 500, f"only {found} of 1500 addresses had a country"
    assert asn_found > 500, f"only {asn_found} of 1500 addresses had an AS organisation"


def test_well_known_addresses(tables: tuple[geodata.CompactGeo, object]) -> None:
    compact, _ = tables
    assert compact.country(int(ipaddress.ip_address("8.8.8.8"))) == "US"
    assert "google" in (compact.asn_name(int(ipaddress.ip_address("8.8.8.8"))) or "").lower()
    assert compact.country(int(ipaddress.ip_address("10.1.2.3"))) is None  # private pseudo-country


def test_unknown_layout_falls_back(tmp_path: Path) -> None:
    import gzip
    import pickle

    bad = tmp_path / "odd.dat.gz"
    with gzip.open(bad, "wb") as fh:
        pickle.dump((999, {"country": True}, 0, ()), fh)
    assert geodata.load(bad, cache_dir=tmp_path) is None
