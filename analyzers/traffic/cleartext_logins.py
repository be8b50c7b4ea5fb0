"""Known default credentials (rules/default-credentials.yaml) and the cleartext login formats
camwatch checks against them: HTTP/RTSP Basic, telnet, and the Xiongmai "Sofia" password hash.

Nothing here keeps or returns an unknown password: lookups answer with the matching table entry
(`CredentialMatch`) or None.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CREDENTIALS_FILE = Path(__file__).resolve().parents[2] / "rules" / "default-credentials.yaml"
ANY_USER = "*"
_SOFIA_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase


def sofia_hash(password: str) -> str:
    """Xiongmai "Sofia" password hash: MD5 of the password; output character i is
    (d[2i] + d[2i+1]) mod 62 in 0-9A-Za-z (firmware-formats.md section 9, tothi sofia_hash.py)."""
    d = hashlib.md5(password.encode("utf-8"), usedforsecurity=False).digest()
    return "".join(_SOFIA_ALPHABET[(d[2 * i] + d[2 * i + 1]) % 62] for i in range(8))


@dataclass(frozen=True, slots=True)
class CredentialMatch:
    """One default-credential table entry that a login used."""

    user: str
    password: str
    vendors: tuple[str, ...]
    sources: tuple[str, ...]
    severity: str | None = None

    @property
    def label(self) -> str:
        """`default:<user>/<password>`: names the public table entry (never an unknown secret)."""
        return f"default:{self.user}/{self.password}"

    @property
    def universal(self) -> bool:
        return self.user == ANY_USER


class CredentialTable:
    """(user, password) pairs from the rules file, looked up by cleartext or by Sofia hash."""

    def __init__(self, entries: list[CredentialMatch]) -> None:
        merged: dict[tuple[str, str], CredentialMatch] = {}
        for e in entries:
            key = (e.user, e.password)
            old = merged.get(key)
            if old is not None:
                e = CredentialMatch(
                    e.user,
                    e.password,
                    tuple(dict.fromkeys(old.vendors + e.vendors)),
                    tuple(dict.fromkeys(old.sources + e.sources)),
                    old.severity or e.severity,
                )
            merged[key] = e
        self.entries = tuple(merged.values())
        self._plain = merged
        self._universal = {e.password: e for e in self.entries if e.universal}
        self._sofia: dict[tuple[str, str], CredentialMatch] = {}
        self._sofia_universal: dict[str, CredentialMatch] = {}
        for e in self.entries:
            h = sofia_hash(e.password)
            if e.universal:
                self._sofia_universal[h] = e
            else:
                self._sofia.setdefault((e.user, h), e)

    def __len__(self) -> int:
        return len(self.entries)

    def match(self, user: str, password: str) -> CredentialMatch | None:
        """The table entry for a cleartext (user, password), or None."""
        return self._plain.get((user, password)) or self._universal.get(password)

    def match_sofia(self, user: str, password_hash: str) -> CredentialMatch | None:
        """The table entry whose Sofia hash a Xiongmai DVRIP login carried, or None."""
        return self._sofia_universal.get(password_hash) or self._sofia.get((user, password_hash))


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader when libyaml is there


def load_credentials(path: Path | str | None = None) -> CredentialTable:
    """The table in `path` (default: the packaged file, parsed once per process)."""
    p = Path(path).resolve() if path is not None else CREDENTIALS_FILE
    return _load_credentials(p, p.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _load_credentials(p: Path, _mtime: int) -> CredentialTable:
    doc: Any = yaml.load(p.read_text(encoding="utf-8"), Loader=_YAML_LOADER)  # noqa: S506 - safe loader
    rows = doc.get("credentials") if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"{p}: `credentials` must be a list")
    entries = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "user" not in row or "password" not in row:
            raise ValueError(f"{p}: credentials[{i}] needs `user` and `password`")
        entries.append(
            CredentialMatch(
                str(row["user"]),
                "" if row["password"] is None else str(row["password"]),
                (str(row.get("vendor", "generic")),),
                (str(row.get("source", "")),),
                row.get("severity"),
            )
        )
    return CredentialTable(entries)


def decode_basic(value: str) -> tuple[str, str] | None:
    """(user, password) of an `Authorization: Basic ...` value, or None when it is not one."""
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.decode("utf-8", "replace").partition(":")
    return (user, password) if sep else None
