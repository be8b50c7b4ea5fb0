"""Fingerprint rules (rules/fingerprints.yaml) and the shared step that writes fingerprint facts
into the inventory, raises CW-DEV-FW-CHANGED and publishes `device` events.

The analyzers that gather the facts are fp_discovery (SADP, DHIP, Dahua 5050, Xiongmai 34569,
WS-Discovery), fp_banners (HTTP / RTSP heads, Dahua and Xiongmai DVRIP) and fp_tls (ClientHello JA4,
server certificates). docs/fingerprints.md describes the facts and events.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.catalogue import load_yaml
from agent.errors import CamwatchError

RULES_FILE = "fingerprints.yaml"
FW_RULE = ("CW-DEV-FW-CHANGED", "info")
FINGERPRINT_RULES: tuple[tuple[str, str], ...] = (FW_RULE,)
# Announced vendor strings that say nothing about the brand.
GENERIC_VENDORS = frozenset({"", "private", "general", "oem", "none", "null", "unknown", "default"})


@dataclass(slots=True)
class MakerPattern:
    regex: re.Pattern[str]
    maker: str | None = None
    brand: str | None = None


@dataclass(slots=True)
class FingerprintRules:
    makers: frozenset[str] = frozenset()
    brands: dict[str, str] = field(default_factory=dict)  # brand id -> maker
    aliases: dict[str, str] = field(default_factory=dict)  # lower-case alias -> brand id
    models: list[MakerPattern] = field(default_factory=list)
    http_server: list[MakerPattern] = field(default_factory=list)
    http_realm: list[MakerPattern] = field(default_factory=list)
    http_paths: list[tuple[str, str]] = field(default_factory=list)  # (prefix, maker)
    rtsp_server: list[MakerPattern] = field(default_factory=list)
    rtsp_realm: list[MakerPattern] = field(default_factory=list)
    tls_subject: list[MakerPattern] = field(default_factory=list)

    # --- lookups ----------------------------------------------------------------------------------

    def brand_for(self, text: str | None) -> str | None:
        """Brand id for an announced vendor / manufacturer / name string; an unknown, non-generic
        string is kept (lower case) as the brand: it still says "sold as something else"."""
        if not text:
            return None
        norm = " ".join(text.lower().replace("_", " ").split())
        if norm in GENERIC_VENDORS:
            return None
        return self.aliases.get(norm) or self.aliases.get(norm.replace(" ", "")) or norm[:48]

    def brand_for_model(self, model: str | None) -> str | None:
        return _first(self.models, model, "brand")

    def maker_of(self, brand: str | None) -> str | None:
        return self.brands.get(brand) if brand else None

    def http_server_maker(self, server: str | None) -> str | None:
        return _first(self.http_server, server, "maker")

    def http_realm_maker(self, realm: str | None) -> str | None:
        return _first(self.http_realm, realm, "maker")

    def http_path_maker(self, path: str | None) -> str | None:
        if not path:
            return None
        return next((maker for prefix, maker in self.http_paths if path.startswith(prefix)), None)

    def rtsp_server_maker(self, server: str | None) -> str | None:
        return _first(self.rtsp_server, server, "maker")

    def rtsp_realm_facts(self, realm: str | None) -> tuple[str | None, str | None]:
        """(maker, serial) from an RTSP realm."""
        if not realm:
            return None, None
        for p in self.rtsp_realm:
            m = p.regex.search(realm)
            if m:
                return p.maker, m.groupdict().get("serial")
        return None, None

    def tls_subject_maker(self, subject: str | None) -> str | None:
        return _first(self.tls_subject, subject, "maker")


def _first(patterns: list[MakerPattern], text: str | None, attr: str) -> str | None:
    if not text:
        return None
    for p in patterns:
        if p.regex.search(text):
            return str(getattr(p, attr))
    return None


# --- loading -------------------------------------------------------------------------------------


def _str(path: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CamwatchError(f"{path}: {key}: expected a non-empty string, got {value!r}")
    return value.strip()


def _patterns(
    path: str, key: str, items: Any, makers: frozenset[str], brands: dict[str, str]
) -> list[MakerPattern]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise CamwatchError(f"{path}: {key}: expected a list")
    out = []
    for i, item in enumerate(items):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise CamwatchError(f"{path}: {where}: expected a mapping")
        text = _str(path, f"{where}.pattern", item.get("pattern"))
        try:
            regex = re.compile(text, re.IGNORECASE)
        except re.error as exc:
            raise CamwatchError(f"{path}: {where}.pattern: invalid regular expression: {exc}") from None
        maker, brand = item.get("maker"), item.get("brand")
        if maker is not None and _str(path, f"{where}.maker", maker) not in makers:
            raise CamwatchError(f"{path}: {where}.maker: {maker!r} is not listed under makers")
        if brand is not None and _str(path, f"{where}.brand", brand) not in brands:
            raise CamwatchError(f"{path}: {where}.brand: {brand!r} is not listed under brands")
        if maker is None and brand is None:
            raise CamwatchError(f"{path}: {where}: needs a maker or a brand")
        out.append(MakerPattern(regex, maker, brand))
    return out


def parse_rules(doc: Any, path: str = RULES_FILE) -> FingerprintRules:
    """Validate and compile a fingerprints document; errors name the file and key."""
    if not isinstance(doc, dict):
        raise CamwatchError(f"{path}: expected a mapping at the top level")
    makers_raw = doc.get("makers") or []
    if not isinstance(makers_raw, list):
        raise CamwatchError(f"{path}: makers: expected a list")
    makers = frozenset(_str(path, "makers", m).lower() for m in makers_raw)
    rules = FingerprintRules(makers=makers)
    brands_raw = doc.get("brands") or {}
    if not isinstance(brands_raw, dict):
        raise CamwatchError(f"{path}: brands: expected a mapping")
    for brand, spec in brands_raw.items():
        bid = _str(path, "brands", brand).lower()
        if not isinstance(spec, dict):
            raise CamwatchError(f"{path}: brands.{bid}: expected a mapping")
        maker = _str(path, f"brands.{bid}.maker", spec.get("maker")).lower()
        if maker not in makers:
            raise CamwatchError(f"{path}: brands.{bid}.maker: {maker!r} is not listed under makers")
        rules.brands[bid] = maker
        rules.aliases[bid] = bid
        for alias in spec.get("aliases") or []:
            rules.aliases[" ".join(_str(path, f"brands.{bid}.aliases", alias).lower().split())] = bid
    rules.models = _patterns(path, "models", doc.get("models"), makers, rules.brands)
    sections = {}
    for name in ("http", "rtsp", "tls"):
        sec = doc.get(name) or {}
        if not isinstance(sec, dict):
            raise CamwatchError(f"{path}: {name}: expected a mapping")
        sections[name] = sec
    rules.http_server = _patterns(path, "http.server", sections["http"].get("server"), makers, rules.brands)
    rules.http_realm = _patterns(path, "http.realm", sections["http"].get("realm"), makers, rules.brands)
    for i, item in enumerate(sections["http"].get("paths") or []):
        if not isinstance(item, dict):
            raise CamwatchError(f"{path}: http.paths[{i}]: expected a mapping")
        maker = _str(path, f"http.paths[{i}].maker", item.get("maker"))
        if maker not in makers:
            raise CamwatchError(f"{path}: http.paths[{i}].maker: {maker!r} is not listed under makers")
        rules.http_paths.append((_str(path, f"http.paths[{i}].prefix", item.get("prefix")), maker))
    rules.rtsp_server = _patterns(path, "rtsp.server", sections["rtsp"].get("server"), makers, rules.brands)
    rules.rtsp_realm = _patterns(path, "rtsp.realm", sections["rtsp"].get("realm"), makers, rules.brands)
    rules.tls_subject = _patterns(path, "tls.subject", sections["tls"].get("subject"), makers, rules.brands)
    return rules


def load_rules(rules_dir: str) -> FingerprintRules:
    """The rules of `rules_dir` (empty when it has no fingerprints file). Parsed once per file
    version: the analyzers sharing them at start-up parse once, an edited file (SIGHUP) again."""
    path = Path(rules_dir) / RULES_FILE
    if not path.is_file():
        return FingerprintRules()
    st = path.stat()
    return _parse_file(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _parse_file(path: str, _mtime_ns: int, _size: int) -> FingerprintRules:
    return parse_rules(load_yaml(Path(path)), path)


def rules_for(ctx: Any) -> FingerprintRules:
    """The rules for a context (config.rules_dir), shared by the fingerprint analyzers; also hands
    the bounded brand / maker label sets to the inventory."""
    from agent.config import RULES_DIR

    rules_dir = getattr(getattr(ctx, "config", None), "rules_dir", None) or RULES_DIR
    rules = load_rules(str(rules_dir))
    inv = getattr(ctx, "inventory", None)
    if inv is not None:
        inv.known_brands = frozenset(rules.brands)
        inv.known_makers = rules.makers
    return rules


# --- applying facts -------------------------------------------------------------------------------


def record(
    ctx: Any,
    *,
    mac: str | None,
    ip: str | None,
    ts: float,
    vlan: tuple[int, ...] = (),
    pkt: Any = None,
    flow: Any = None,
    **facts: Any,
) -> Any:
    """Write fingerprint facts about the local device (mac, ip) into the inventory; alert on a
    firmware change; publish the device event. Returns the Device (or None when not recorded)."""
    inv = ctx.inventory
    if inv is None:
        return None
    dev = inv.observe(mac, ip, ts, vlan)
    if dev is None:
        return None
    changes = inv.update_fingerprint(dev.key, **facts)
    for change in changes:
        if change["field"] == "firmware":
            rule_id, severity = FW_RULE
            ctx.emit(
                "alert",
                {
                    "rule_id": rule_id,
                    "severity": severity,
                    "message": f"firmware changed from {change['old']} to {change['new']} (an update)",
                    "category": "firmware",
                    "device": dev.mac or dev.key,
                    "old": change["old"],
                    "new": change["new"],
                    "source": facts.get("source"),
                },
                ts=ts,
                flow=flow,
                pkt=pkt,
            )
            ctx.counters.alerts[(rule_id, severity)] += 1
    inv.publish(ctx, ts=ts, pkt=pkt, flow=flow)
    return dev
