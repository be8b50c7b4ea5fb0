"""Known-good / known-bad SHA-256 lists and publicly known private keys
(rules/firmware/known-{good,bad,keys}.txt plus --rules dirs)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import UsageError

GOOD_NAME = "known-good.txt"
BAD_NAME = "known-bad.txt"
KEYS_NAME = "known-keys.txt"  # publicly known private keys, by SPKI SHA-256
_LINE = re.compile(r"([0-9a-fA-F]{64})(?:\s+(.*))?\Z")


def parse_hash_file(path: Path) -> dict[str, str]:
    """sha256 (lower case) -> label. Blank lines and '#' comments are skipped; anything else that is
    not '<64 hex> [label]' is an error naming the file and line."""
    out: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            raise UsageError(f"{path}:{lineno}: expected '<sha256> <label>'")
        out[m.group(1).lower()] = (m.group(2) or "").strip() or path.name
    return out


@dataclass(slots=True)
class HashLists:
    good: dict[str, str] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    def verdict(self, sha256: str) -> str:
        sha = sha256.lower()
        if sha in self.bad:  # bad wins if an entry is (wrongly) on both lists
            return "known-bad"
        if sha in self.good:
            return "known-good"
        return "unknown"


def load_hash_lists(dirs: Iterable[Path]) -> HashLists:
    lists = HashLists()
    for d in dirs:
        good, bad, keys = Path(d) / GOOD_NAME, Path(d) / BAD_NAME, Path(d) / KEYS_NAME
        if good.is_file():
            lists.good.update(parse_hash_file(good))
        if bad.is_file():
            lists.bad.update(parse_hash_file(bad))
        if keys.is_file():
            lists.keys.update(parse_hash_file(keys))
    return lists
