"""Country and ASN of public addresses, fully offline.

Sources, per question:
* the MaxMind databases named in the configuration (`geoip.mmdb` for countries, `geoip.asn_mmdb` for
  autonomous systems), read with `maxminddb`; otherwise
* the data files bundled with the `geoip2fast` package (MaxMind GeoLite2-derived, IPv4 and IPv6).
  Nothing is ever downloaded.

Everything loads lazily on the first lookup of a public address. The bundled files are read into
compact NumPy tables (agent/geodata.py: about 20 MB instead of geoip2fast's 110 MB of Python lists,
cached under ~/.cache/camwatch after the first start); set `analyzers.geo.asn: false` to load the
country-only file. One bundled dataset is shared per process.

Private, shared (CGNAT), link-local, loopback, multicast, reserved and configured local addresses
give None. Lookups are cached (LRU). The bundled data has no AS *numbers* (only organisation names),
so `asn()` then returns `Asn(number=None, org=...)`; with an ASN .mmdb both are filled.
"""

from __future__ import annotations

import functools
import ipaddress
import threading
from pathlib import Path
from typing import Any, NamedTuple

_CACHE_SIZE = 65_536
_FAST_LOCK = threading.Lock()
_FAST: dict[str, Any] = {}  # {"db": GeoIP2Fast instance, "asn": bool}
_FAST_COUNTRY_FILE = "geoip2fast-ipv6.dat.gz"
_FAST_ASN_FILE = "geoip2fast-asn-ipv6.dat.gz"


class Asn(NamedTuple):
    number: int | None
    org: str


class _GeoIP2FastTables:
    """geoip2fast's own lookup (fallback when agent.geodata does not know the file's layout)."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def country(self, ip: str) -> str | None:
        code = self._db.lookup(ip).country_code
        # Error markers ("--", "<not found in database>", ...) are not two ASCII letters.
        return code if isinstance(code, str) and len(code) == 2 and code.isalpha() else None

    def asn_name(self, ip: str) -> str | None:
        org = self._db.lookup(ip).asn_name
        return None if not org or org in ("<unknown>", "IANA.ORG") else str(org)


class _CompactTables:
    """agent.geodata's NumPy copy of the same data (about a fifth of the memory)."""

    def __init__(self, geo: Any) -> None:
        self._geo = geo

    def country(self, ip: str) -> str | None:
        return self._geo.country(int(ipaddress.ip_address(ip)))

    def asn_name(self, ip: str) -> str | None:
        return self._geo.asn_name(int(ipaddress.ip_address(ip))) or None


def _fast_db(with_asn: bool) -> Any:
    """The process-wide bundled tables (loaded once; upgraded to the ASN file when asked)."""
    with _FAST_LOCK:
        db = _FAST.get("db")
        if db is not None and (_FAST["asn"] or not with_asn):
            return db
        import geoip2fast

        name = _FAST_ASN_FILE if with_asn else _FAST_COUNTRY_FILE
        from agent import geodata

        compact = geodata.load(Path(geoip2fast.__file__).resolve().parent / name)
        if compact is not None:
            db = _CompactTables(compact)
        else:
            db = _GeoIP2FastTables(geoip2fast.GeoIP2Fast(geoip2fast_data_file=name))
        _FAST.update(db=db, asn=with_asn)
        return db


class GeoLookup:
    """`country(ip) -> 'DE' | None`, `asn(ip) -> Asn | None`."""

    def __init__(self, config: Any = None, *, with_asn: bool | None = None) -> None:
        self._country_mmdb: Path | None = getattr(config, "geoip_mmdb", None)
        self._asn_mmdb: Path | None = getattr(config, "asn_mmdb", None)
        opts = (getattr(config, "analyzer_options", None) or {}).get("geo", {})
        self._with_asn = bool(opts.get("asn", True)) if with_asn is None else with_asn
        self._local = list(getattr(config, "local_cidrs", None) or [])
        self._readers: dict[Path, Any] = {}
        self._lock = threading.Lock()
        # Per-instance caches (a method-level lru_cache would keep every instance alive).
        self._country_cached = functools.lru_cache(maxsize=_CACHE_SIZE)(self._country)
        self._asn_cached = functools.lru_cache(maxsize=_CACHE_SIZE)(self._asn)

    def country(self, ip: str) -> str | None:
        """ISO 3166 alpha-2 code of a public address, or None."""
        return self._country_cached(ip)

    def asn(self, ip: str) -> Asn | None:
        """(AS number or None, organisation) of a public address, or None."""
        return self._asn_cached(ip)

    def is_public(self, ip: str) -> bool:
        return self._public_text(ip) is not None

    def _public_text(self, ip: str) -> str | None:
        """Canonical text of a public address (IPv4-mapped IPv6 unwrapped), or None."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if not addr.is_global or addr.is_multicast or addr.is_reserved:
            return None
        if any(addr in net for net in self._local if net.version == addr.version):
            return None
        return str(addr)

    def _reader(self, path: Path) -> Any:
        with self._lock:
            reader = self._readers.get(path)
            if reader is None:
                import maxminddb

                reader = self._readers[path] = maxminddb.open_database(str(path))
            return reader

    def _country(self, ip: str) -> str | None:
        text = self._public_text(ip)
        if text is None:
            return None
        ip = text
        if self._country_mmdb is not None:
            rec = self._reader(self._country_mmdb).get(ip)
            if not isinstance(rec, dict):
                return None
            for key in ("country", "registered_country"):
                code = (rec.get(key) or {}).get("iso_code")
                if isinstance(code, str) and len(code) == 2:
                    return code.upper()
            return None
        return _fast_db(self._with_asn).country(ip)

    def _asn(self, ip: str) -> Asn | None:
        text = self._public_text(ip)
        if text is None:
            return None
        ip = text
        if self._asn_mmdb is not None:
            rec = self._reader(self._asn_mmdb).get(ip)
            if not isinstance(rec, dict) or "autonomous_system_number" not in rec:
                return None
            number = rec.get("autonomous_system_number")
            org = rec.get("autonomous_system_organization") or ""
            return Asn(int(number) if isinstance(number, int) else None, str(org))
        if not self._with_asn:
            return None
        org = _fast_db(True).asn_name(ip)
        return Asn(None, org) if org else None

    def load(self) -> None:
        """Open the databases now. The daemon calls this at start-up so the first outbound flow
        of a live capture does not stall the capture path while ~0.3 s of data is loaded."""
        if self._country_mmdb is not None:
            self._reader(self._country_mmdb)
        if self._asn_mmdb is not None:
            self._reader(self._asn_mmdb)
        if self._country_mmdb is None or (self._with_asn and self._asn_mmdb is None):
            _fast_db(self._with_asn)

    def close(self) -> None:
        with self._lock:
            for reader in self._readers.values():
                reader.close()
            self._readers.clear()
