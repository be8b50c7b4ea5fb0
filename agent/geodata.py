"""Compact, NumPy-backed copy of the geoip2fast data files (country and AS organisation).

geoip2fast unpickles its tables into Python lists of ints: about 110 MB of RSS for the country+ASN
file, which is most of an idle agent's memory. The same tables as sorted NumPy arrays (IPv4 network
starts as uint32, IPv6 starts as 16-byte big-endian strings, ids as small ints, AS names as one
UTF-8 blob with offsets) take about 20 MB and answer a lookup with one binary search.

The arrays are built once from the package's .dat.gz file and cached as an .npz (no pickles) in
the user's cache directory (systemd's CacheDirectory= for the daemon), keyed by the data file's
name, size and mtime. Building needs the one-off memory of the lists; every later start loads only
the arrays. If the file does not have the layout this module knows, `load()` returns None and
geo.py falls back to geoip2fast itself.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CompactGeo", "load"]

_MAX_IPV4 = 0xFFFFFFFF
# Country ids below this are geoip2fast's reserved/private pseudo-countries.
_FIRST_REAL_COUNTRY = 16
_CACHE_FORMAT = 1


def _cache_dir() -> Path:
    """systemd's CacheDirectory= when the daemon runs under it, else the XDG cache directory."""
    if os.environ.get("CACHE_DIRECTORY"):
        return Path(os.environ["CACHE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "camwatch"


class _Table:
    """One sorted network table: starts, prefix lengths, ids; IPv4 and IPv6 kept apart."""

    def __init__(
        self, v4_start: Any, v4_len: Any, v4_id: Any, v6_start: Any, v6_len: Any, v6_id: Any
    ) -> None:
        self.v4_start, self.v4_len, self.v4_id = v4_start, v4_len, v4_id
        self.v6_start, self.v6_len, self.v6_id = v6_start, v6_len, v6_id

    @classmethod
    def from_chunks(cls, firsts: list[list[int]], lengths: list[list[int]], ids: list[list[int]]) -> _Table:
        flat_first = [ip for chunk in firsts for ip in chunk]
        flat_len = [n for chunk in lengths for n in chunk]
        flat_id = [i for chunk in ids for i in chunk]
        if not (len(flat_first) == len(flat_len) == len(flat_id)):
            raise ValueError("geo tables of different lengths")
        if any(b < a for a, b in itertools.pairwise(flat_first)):
            raise ValueError("geo network starts not sorted")
        split = next((i for i, ip in enumerate(flat_first) if ip > _MAX_IPV4), len(flat_first))
        return cls(
            np.array(flat_first[:split], dtype=np.uint32),
            np.array(flat_len[:split], dtype=np.uint8),
            np.array(flat_id[:split], dtype=np.uint32),
            np.array([ip.to_bytes(16, "big") for ip in flat_first[split:]], dtype="S16"),
            np.array(flat_len[split:], dtype=np.uint8),
            np.array(flat_id[split:], dtype=np.uint32),
        )

    def find(self, ip: int) -> int | None:
        """Id of the network holding `ip`, or None (in a gap between networks)."""
        if ip <= _MAX_IPV4:
            i = int(np.searchsorted(self.v4_start, ip, side="right")) - 1
            if i < 0:
                return None
            size = 1 << (32 - int(self.v4_len[i]))
            return int(self.v4_id[i]) if ip < int(self.v4_start[i]) + size else None
        key = ip.to_bytes(16, "big")
        i = int(np.searchsorted(self.v6_start, key, side="right")) - 1
        if i < 0:
            return None
        size = 1 << (128 - int(self.v6_len[i]))
        start = int.from_bytes(bytes(self.v6_start[i]).ljust(16, b"\0"), "big")
        return int(self.v6_id[i]) if ip < start + size else None

    def arrays(self, prefix: str) -> dict[str, Any]:
        names = ("v4_start", "v4_len", "v4_id", "v6_start", "v6_len", "v6_id")
        return {f"{prefix}{n}": getattr(self, n) for n in names}

    @classmethod
    def from_arrays(cls, data: Any, prefix: str) -> _Table:
        names = ("v4_start", "v4_len", "v4_id", "v6_start", "v6_len", "v6_id")
        return cls(*(data[f"{prefix}{n}"] for n in names))


class CompactGeo:
    """Country code and AS organisation of an address given as an int (IPv4 or IPv6)."""

    def __init__(
        self, country: _Table, codes: list[str], asn: _Table | None, asn_blob: Any, asn_off: Any
    ) -> None:
        self._country = country
        self._codes = codes  # country id -> two-letter code ("" for pseudo-countries)
        self._asn = asn
        self._asn_blob = asn_blob  # uint8: every AS organisation name, UTF-8, back to back
        self._asn_off = asn_off  # int64: start of name i in the blob (len = names + 1)

    @property
    def has_asn(self) -> bool:
        return self._asn is not None

    def country(self, ip: int) -> str | None:
        cid = self._country.find(ip)
        if cid is None or cid < _FIRST_REAL_COUNTRY or cid >= len(self._codes):
            return None
        return self._codes[cid] or None

    def asn_name(self, ip: int) -> str | None:
        if self._asn is None:
            return None
        aid = self._asn.find(ip)
        if aid is None or aid + 1 >= len(self._asn_off):
            return None
        start, end = int(self._asn_off[aid]), int(self._asn_off[aid + 1])
        return bytes(self._asn_blob[start:end]).decode("utf-8", "replace")

    def save(self, path: Path) -> None:
        arrays = self._country.arrays("c_")
        arrays["codes"] = np.array(self._codes, dtype="U2")
        if self._asn is not None:
            arrays.update(self._asn.arrays("a_"))
            arrays["asn_blob"] = self._asn_blob
            arrays["asn_off"] = self._asn_off
        arrays["format"] = np.array([_CACHE_FORMAT])
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".geo-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)  # atomic: concurrent starts never see half a file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def open(cls, path: Path) -> CompactGeo:
        with np.load(path, allow_pickle=False) as data:
            if int(data["format"][0]) != _CACHE_FORMAT:
                raise ValueError("old cache format")
            country = _Table.from_arrays(data, "c_")
            codes = [str(c) for c in data["codes"]]
            if "asn_blob" in data:
                return cls(country, codes, _Table.from_arrays(data, "a_"), data["asn_blob"], data["asn_off"])
            return cls(country, codes, None, None, None)

    @classmethod
    def build(cls, dat_file: Path) -> CompactGeo:
        """Convert geoip2fast's pickled tables (format 120, country or country+ASN)."""
        # The file is the geoip2fast package's own bundled data, read exactly as geoip2fast reads it.
        with gzip.open(dat_file, "rb") as fh:
            version, info, _total, tables = pickle.load(fh)  # noqa: S301 - trusted package data
        if version != 120 or not info.get("country") or info.get("city"):
            raise ValueError(f"unsupported geoip2fast data layout (version {version})")
        if info.get("asn"):
            (
                _idx,
                _idx_asn,
                names_country,
                names_asn,
                first,
                first_asn,
                ids_country,
                ids_asn,
                lengths,
                lengths_asn,
            ) = tables
        else:
            _idx, names_country, first, ids_country, lengths = tables
            names_asn = first_asn = ids_asn = lengths_asn = None
        codes = []
        for item in names_country:
            code = str(item).split(":", 1)[0]
            codes.append(code if len(code) == 2 and code.isalpha() else "")
        country = _Table.from_chunks(first, lengths, ids_country)
        if names_asn is None:
            return cls(country, codes, None, None, None)
        encoded = [("" if n in ("<unknown>", "IANA.ORG") else str(n)).encode("utf-8") for n in names_asn]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        asn = _Table.from_chunks(first_asn, lengths_asn, ids_asn)
        return cls(country, codes, asn, blob, offsets)


def load(dat_file: Path, cache_dir: Path | None = None) -> CompactGeo | None:
    """The compact tables for `dat_file`, from the cache when it is current; None if the file's
    layout is not the one this module understands (the caller then uses geoip2fast)."""
    st = dat_file.stat()
    cache = (
        cache_dir or _cache_dir()
    ) / f"{dat_file.name}.{st.st_size}.{int(st.st_mtime)}.v{_CACHE_FORMAT}.npz"
    try:
        return CompactGeo.open(cache)
    except (OSError, ValueError, KeyError):
        pass  # missing, unreadable (another user's home after `run --user`) or stale: rebuilt below
    try:
        geo = CompactGeo.build(dat_file)
    except (ValueError, TypeError, pickle.UnpicklingError, EOFError, OSError):
        return None
    with contextlib.suppress(OSError):  # a read-only home: keep the tables in memory only
        geo.save(cache)
    return geo
