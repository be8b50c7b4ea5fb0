"""YARA-X rule engine: load rules/firmware/*.yar plus user rule directories, compile once per process,
scan each member once with every rule, and turn matches into findings or inspector hand-offs.

Rule contract (docs/writing-rules.md): meta `id`, `severity`, `vendor`, `cve`, `reference`,
`description`; optional `category`, `indicator`, `role` (comma list) and `reliability`. The tag
`silent` marks a rule whose matches are only handed to a Python inspector or used as a correlation
signal, never reported on their own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import yara_x

from agent.errors import UsageError
from analyzers.firmware.model import Finding, Severity

from .evidence import match_excerpt

BUILTIN_RULE_DIR = Path(__file__).resolve().parents[3] / "rules" / "firmware"
REQUIRED_META = ("id", "severity", "vendor", "cve", "reference", "description")

# Per-scan bounds: a hostile member must not make one pattern produce millions of matches or hang.
MAX_MATCHES_PER_PATTERN = 256
SCAN_TIMEOUT_SECONDS = 60

RawHits = list[tuple[str, str, list[tuple[str, int, int]]]]  # (namespace, rule, [(pattern, off, len)])


@dataclass(frozen=True, slots=True)
class RuleMeta:
    id: str
    severity: Severity
    description: str
    vendor: str = ""
    cve: tuple[str, ...] = ()
    reference: str = ""
    category: str = ""
    indicator: str = ""
    roles: frozenset[str] = frozenset()
    silent: bool = False
    origin: str = ""  # the .yar file the rule came from


@dataclass(slots=True)
class RuleHit:
    """All matches of one rule in one scanned buffer: (pattern identifier, offset, length)."""

    meta: RuleMeta
    matches: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def first_offset(self) -> int:
        return min(m[1] for m in self.matches) if self.matches else 0

    def to_finding(self, path: str, data: bytes) -> Finding:
        excerpts: list[str] = []
        first: int | None = None
        for _pid, off, length in sorted(self.matches, key=lambda m: m[1]):
            start, text = match_excerpt(data, off, length)
            if first is None:
                first = start
            if text and text not in excerpts:
                excerpts.append(text)
            if len(excerpts) >= 3:
                break
        evidence = " | ".join(excerpts)
        if len(evidence) > 200:
            evidence = evidence[:199] + "…"
        return Finding(
            rule_id=self.meta.id,
            severity=self.meta.severity,
            message=self.meta.description,
            path=path,
            offset=first,
            evidence=evidence,
            category=self.meta.category,
            source="yara",
            cve=list(self.meta.cve),
            reference=self.meta.reference,
            vendor=self.meta.vendor,
        )


def _meta_str(meta: dict[str, object], key: str, default: str = "") -> str:
    value = meta.get(key, default)
    return str(value).strip() if value is not None else default


def _rule_meta(rule: yara_x.Rule, origin: str, strict: bool) -> RuleMeta:
    meta: dict[str, object] = dict(rule.metadata)
    missing = [k for k in REQUIRED_META if k not in meta]
    if strict and missing:
        raise UsageError(f"{origin}: rule {rule.identifier}: missing meta {', '.join(missing)}")
    try:
        severity = Severity.parse(_meta_str(meta, "severity", "medium"))
    except ValueError as exc:
        raise UsageError(f"{origin}: rule {rule.identifier}: {exc}") from None
    cve = tuple(c.strip() for c in _meta_str(meta, "cve").split(",") if c.strip())
    roles = frozenset(r.strip() for r in _meta_str(meta, "role").split(",") if r.strip())
    return RuleMeta(
        # user rules without an id still get a stable one derived from the rule name
        id=_meta_str(meta, "id") or f"USER-{rule.identifier}",
        severity=severity,
        description=_meta_str(meta, "description") or rule.identifier,
        vendor=_meta_str(meta, "vendor"),
        cve=cve,
        reference=_meta_str(meta, "reference"),
        category=_meta_str(meta, "category") or "custom",
        indicator=_meta_str(meta, "indicator"),
        roles=roles,
        silent="silent" in rule.tags,
        origin=origin,
    )


class RuleSet:
    """Compiled rules plus their parsed meta, keyed by (namespace, rule identifier)."""

    def __init__(self, rules: yara_x.Rules, meta: dict[tuple[str, str], RuleMeta], files: list[Path]):
        self.rules = rules
        self.meta = meta
        self.files = files
        self._local = threading.local()

    def by_id(self) -> dict[str, RuleMeta]:
        return {m.id: m for m in self.meta.values()}

    def _scanner(self) -> yara_x.Scanner:
        # a Scanner is not thread-safe; one per thread, reused across members
        scanner = getattr(self._local, "scanner", None)
        if scanner is None:
            scanner = new_scanner(self.rules)
            self._local.scanner = scanner
        return scanner

    def scan(self, data: bytes) -> list[RuleHit]:
        return self.hits_from_raw(self.scan_raw(data))

    def scan_raw(self, data: bytes) -> RawHits:
        return raw_matches(self._scanner(), data)

    def hits_from_raw(self, raw: RawHits) -> list[RuleHit]:
        hits: list[RuleHit] = []
        for namespace, identifier, matches in raw:
            meta = self.meta.get((namespace, identifier))
            if meta is None:  # pragma: no cover - every compiled rule was indexed
                continue
            hits.append(RuleHit(meta, list(matches)))
        return hits


def new_scanner(rules: yara_x.Rules) -> yara_x.Scanner:
    """A scanner with camwatch's per-scan bounds."""
    scanner = yara_x.Scanner(rules)
    scanner.max_matches_per_pattern(MAX_MATCHES_PER_PATTERN)
    scanner.set_timeout(SCAN_TIMEOUT_SECONDS)
    return scanner


def raw_matches(scanner: yara_x.Scanner, data: bytes) -> RawHits:
    """Matches as plain tuples (namespace, rule, [(pattern, offset, length)]), cheap to send from
    a helper process (offload.py); RuleSet.hits_from_raw turns them into RuleHits."""
    results = scanner.scan(data)
    return [
        (
            rule.namespace,
            rule.identifier,
            [(pattern.identifier, m.offset, m.length) for pattern in rule.patterns for m in pattern.matches],
        )
        for rule in results.matching_rules
    ]


def rule_files(dirs: list[Path]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        if not d.is_dir():
            raise UsageError(f"{d}: rule directory does not exist")
        files.extend(sorted(p for p in d.iterdir() if p.suffix in (".yar", ".yara") and p.is_file()))
    return files


def compile_rules(dirs: list[Path]) -> RuleSet:
    """Compile every .yar file of `dirs`; each file gets its own namespace so rule names may repeat
    across files, but meta ids must be unique. Built-in files (the first dir) must carry full meta."""
    files = rule_files(dirs)
    compiler = yara_x.Compiler()
    namespaces: dict[str, Path] = {}
    for idx, path in enumerate(files):
        ns = f"f{idx}_{path.stem.replace('-', '_')}"
        namespaces[ns] = path
        compiler.new_namespace(ns)
        try:
            compiler.add_source(path.read_text(encoding="utf-8"), origin=str(path))
        except yara_x.CompileError as exc:
            raise UsageError(f"{path}: YARA compile error: {str(exc).strip().splitlines()[0]}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{path}: not UTF-8 text") from None
    rules = compiler.build()
    builtin = dirs[0].resolve() if dirs else None
    meta: dict[tuple[str, str], RuleMeta] = {}
    seen: dict[str, str] = {}
    for rule in rules:
        path = namespaces[rule.namespace]
        strict = builtin is not None and path.resolve().parent == builtin
        m = _rule_meta(rule, str(path), strict)
        if m.id in seen:
            raise UsageError(f"{path}: rule {rule.identifier}: id {m.id} already used in {seen[m.id]}")
        seen[m.id] = str(path)
        meta[(rule.namespace, rule.identifier)] = m
    return RuleSet(rules, meta, files)


_CACHE: dict[tuple[tuple[str, int, int], ...], RuleSet] = {}
_CACHE_LOCK = threading.Lock()


def load_rules(extra_dirs: list[Path] | None = None) -> RuleSet:
    """Compiled rules for the built-in directory plus `extra_dirs`, cached per process; the key
    includes every file's mtime and size, so editing a rule file recompiles on the next session."""
    dirs = [BUILTIN_RULE_DIR, *[Path(d) for d in (extra_dirs or [])]]
    files = rule_files(dirs)
    key = tuple((str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is None:
            cached = compile_rules(dirs)
            _CACHE[key] = cached
        return cached
