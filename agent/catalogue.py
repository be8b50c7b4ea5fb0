"""Vendor catalogues: MAC prefixes (rules/oui.yaml) and vendor endpoints (rules/endpoints.yaml).

Both files are data; this module loads and validates them (every error names the file and the key,
via ConfigError) and answers two questions:

* `vendor_for_mac(mac)` -> VendorHint | None: maker / brand family of a MAC, with a `weak` flag for
  borrowed or generic prefixes (chip and Wi-Fi module makers, Xiongmai's borrowed blocks). Locally
  administered (randomised) MACs never match.
* `service_for(domain, ip, port, proto, family=None)` -> ServiceMatch | None: which catalogue service a
  destination belongs to. Evidence order: DNS name (most specific pattern wins), then CIDR (longest
  prefix wins), then a *distinctive* port only (weak evidence, `match.weak is True`). Port-only matches
  are restricted to services of the device's brand family (or `generic` services) when the family is
  known, so that e.g. UDP 8800 from a Hikvision camera is not blamed on Dahua's Easy4IP, and apply
  only to unnamed destinations (no domain given); an ambiguous port matches nothing.

`DomainSet` (exact names plus "*.suffix" wildcards) is shared with agent.policy.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agent.errors import ConfigError

# libyaml's C safe loader when PyYAML was built with it (30x faster on the rule files), else the
# pure-Python one; both construct only plain data types.
YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str) -> Any:
    """Safe-load `text` with the fast loader; on a broken document raise the pure-Python loader's
    error instead, whose mark points at the line where the problem starts (libyaml's often point
    past it)."""
    try:
        return yaml.load(text, Loader=YAML_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        pass
    return yaml.safe_load(text)

CATEGORIES = ("cloud", "p2p", "ddns", "update", "ntp", "telemetry")
PROTO_BY_NAME = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58}
PROTO_NAME = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_LABEL_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$")
_HEX = set("0123456789abcdef")
# Upper bound on a distinctive port range: a wide range would turn port-only matching into noise.
_MAX_DISTINCTIVE_RANGE = 64


def load_yaml(path: Path) -> Any:
    """Read a YAML file, turning every failure into a ConfigError naming the file."""
    p = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(p, "-", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(p, "-", f"cannot read: {exc}") from None
    try:
        return parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "-"
        raise ConfigError(p, where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None


def normalize_name(name: str) -> str:
    """DNS names compare case-insensitively and without the root dot."""
    return name.strip().rstrip(".").lower()


def proto_number(proto: int | str) -> int:
    if isinstance(proto, int):
        return proto
    p = proto.strip().lower()
    if p.isdigit():
        return int(p)
    return PROTO_BY_NAME.get(p, -1)


def proto_text(proto: int | str) -> str:
    n = proto_number(proto)
    return PROTO_NAME.get(n, str(n))


def check_domain_pattern(path: str, key: str, value: Any) -> str:
    """Validate 'host.example' or '*.example' and return it normalised."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(path, key, f"expected a domain name or '*.suffix', got {value!r}")
    pat = normalize_name(value)
    body = pat[2:] if pat.startswith("*.") else pat
    labels = body.split(".")
    if not body or not all(_LABEL_RE.match(label) for label in labels):
        problem = "not a domain name or '*.suffix' pattern (wildcard only as the whole first label)"
        raise ConfigError(path, key, f"{problem}: {value!r}")
    if pat.startswith("*.") and len(labels) < 2:
        raise ConfigError(path, key, f"wildcard over a top-level domain is too broad: {value!r}")
    return pat


class DomainSet:
    """Exact names and '*.suffix' wildcards, mapped to a value; lookup walks the name's suffixes.

    Cost is one dict probe per label of the queried name (typically 3-5), independent of set size.
    """

    __slots__ = ("_exact", "_wild")

    def __init__(self) -> None:
        self._exact: dict[str, tuple[str, Any]] = {}
        self._wild: dict[str, tuple[str, Any]] = {}

    def add(self, pattern: str, value: Any) -> Any | None:
        """Add a normalised pattern; returns the value it displaced (None when new)."""
        if pattern.startswith("*."):
            old = self._wild.get(pattern[2:])
            self._wild[pattern[2:]] = (pattern, value)
        else:
            old = self._exact.get(pattern)
            self._exact[pattern] = (pattern, value)
        return None if old is None else old[1]

    def __bool__(self) -> bool:
        return bool(self._exact or self._wild)

    def __len__(self) -> int:
        return len(self._exact) + len(self._wild)

    def match(self, name: str) -> tuple[str, Any] | None:
        """(pattern, value) of the most specific pattern matching `name`, or None."""
        n = normalize_name(name)
        hit = self._exact.get(n)
        if hit is not None:
            return hit
        if not self._wild:
            return None
        # '*.a.b' matches names strictly below a.b: try the longest proper suffix first.
        i = n.find(".")
        while i >= 0:
            hit = self._wild.get(n[i + 1 :])
            if hit is not None:
                return hit
            i = n.find(".", i + 1)
        return None


class CidrSet:
    """Address blocks mapped to a value; longest prefix wins (one dict probe per distinct prefix length)."""

    __slots__ = ("_by_len",)

    def __init__(self) -> None:
        # (ip version, prefix length) -> {network address as int: (cidr text, value)}
        self._by_len: dict[tuple[int, int], dict[int, tuple[str, Any]]] = {}

    def add(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network, value: Any) -> None:
        table = self._by_len.setdefault((net.version, net.prefixlen), {})
        table[int(net.network_address)] = (str(net), value)
        # Keep longest prefixes first so the first hit is the most specific.
        self._by_len = dict(sorted(self._by_len.items(), key=lambda kv: -kv[0][1]))

    def __bool__(self) -> bool:
        return bool(self._by_len)

    def match(self, ip: str) -> tuple[str, Any] | None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        return self.match_addr(addr)

    def match_addr(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[str, Any] | None:
        value = int(addr)
        bits = 32 if addr.version == 4 else 128
        for (version, plen), table in self._by_len.items():
            if version != addr.version:
                continue
            hit = table.get(value >> (bits - plen) << (bits - plen) if plen else 0)
            if hit is not None:
                return hit
        return None


@dataclass(frozen=True, slots=True)
class PortSpec:
    """A protocol (None = any) and an inclusive port range."""

    proto: int | None
    low: int
    high: int

    def matches(self, proto: int, port: int) -> bool:
        return (self.proto is None or self.proto == proto) and self.low <= port <= self.high

    def __str__(self) -> str:
        p = "any" if self.proto is None else PROTO_NAME.get(self.proto, str(self.proto))
        rng = str(self.low) if self.low == self.high else f"{self.low}-{self.high}"
        if self.proto in (1, 58):
            return p
        return f"{p}/{rng}"


def parse_port(path: str, key: str, value: Any) -> PortSpec:
    """'tcp/443', 'udp/6002-6003', '123' / 123 (any protocol), or 'icmp' (no port)."""
    if isinstance(value, bool):
        raise ConfigError(path, key, f"expected a port like 'tcp/443', got {value!r}")
    if isinstance(value, int):
        if 0 <= value <= 65535:
            return PortSpec(None, value, value)
        raise ConfigError(path, key, f"port out of range: {value}")
    if not isinstance(value, str):
        raise ConfigError(path, key, f"expected a port like 'tcp/443', got {value!r}")
    text = value.strip().lower()
    if text in ("icmp", "icmpv6"):
        return PortSpec(PROTO_BY_NAME[text], 0, 65535)
    proto_s, sep, rng = text.partition("/")
    if not sep:
        proto_s, rng = "", text
    proto: int | None = None
    if proto_s and proto_s != "any":
        if proto_s not in ("tcp", "udp"):
            raise ConfigError(path, key, f"protocol must be tcp, udp or any, got {proto_s!r} in {value!r}")
        proto = PROTO_BY_NAME[proto_s]
    low_s, dash, high_s = rng.partition("-")
    if not low_s.isdigit() or (dash and not high_s.isdigit()):
        raise ConfigError(path, key, f"expected 'proto/port' or 'proto/low-high', got {value!r}")
    low, high = int(low_s), int(high_s) if dash else int(low_s)
    if not 0 <= low <= high <= 65535:
        raise ConfigError(path, key, f"bad port range in {value!r}")
    return PortSpec(proto, low, high)


def parse_mac_prefix(path: str, key: str, value: Any) -> tuple[int, int]:
    """'AA:BB:CC' (24 bits), 'AA:BB:CC:D/28', 'AA:BB:CC:DD:E/36' -> (value, bits)."""
    if not isinstance(value, str):
        raise ConfigError(path, key, f"expected a MAC prefix like 'AA:BB:CC', got {value!r}")
    text, _, bits_s = value.strip().partition("/")
    digits = text.replace(":", "").replace("-", "").replace(".", "").lower()
    if not digits or not set(digits) <= _HEX:
        raise ConfigError(path, key, f"not a MAC prefix: {value!r}")
    bits = int(bits_s) if bits_s.isdigit() else len(digits) * 4
    if bits not in (24, 28, 36) or bits > len(digits) * 4 or len(digits) * 4 - bits >= 4:
        raise ConfigError(path, key, f"prefix must be 24 bits (AA:BB:CC), /28 or /36, got {value!r}")
    return int(digits, 16) >> (len(digits) * 4 - bits), bits


@dataclass(frozen=True, slots=True)
class VendorHint:
    """What a MAC prefix says about a device's maker."""

    vendor: str
    family: str
    weak: bool
    registrant: str
    prefix: str

    @property
    def confidence(self) -> str:
        return "low" if self.weak else "medium"


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    vendor: str
    category: str
    description: str
    domains: tuple[str, ...]
    cidrs: tuple[str, ...]
    ports: tuple[PortSpec, ...]
    distinctive_ports: tuple[PortSpec, ...]


@dataclass(frozen=True, slots=True)
class ServiceMatch:
    """A catalogue service plus the evidence that attributed the destination to it."""

    service: Service
    evidence: str  # "domain" | "cidr" | "port" | "payload" (set by the cloud analyzer)
    matched: str  # the pattern, CIDR or port that matched

    @property
    def weak(self) -> bool:
        return self.evidence == "port"

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def vendor(self) -> str:
        return self.service.vendor

    @property
    def category(self) -> str:
        return self.service.category

    def to_event(self) -> dict[str, Any]:
        return {
            "name": self.service.name,
            "vendor": self.service.vendor,
            "category": self.service.category,
            "evidence": self.evidence,
            "matched": self.matched,
        }


def mac_is_local(mac: str) -> bool:
    """Locally administered (often randomised) MAC: second hex digit 2, 6, A or E."""
    digits = mac.replace(":", "").replace("-", "").replace(".", "")
    return len(digits) >= 2 and digits[1].lower() in "26ae"


class EndpointCatalogue:
    """OUI and endpoint catalogues; construct with `EndpointCatalogue(config)` or `from_files(...)`."""

    def __init__(self, config: Any = None) -> None:
        self._init(*_catalogue_files(getattr(config, "rules_dir", None)))

    @classmethod
    def load(cls, rules_dir: Path | str | None) -> EndpointCatalogue:
        """Catalogues from `rules_dir` (oui.yaml, endpoints.yaml); a custom rules directory without
        them falls back to the bundled files, so it only needs the rules it overrides."""
        return cls.from_files(*_catalogue_files(rules_dir))

    @classmethod
    def from_files(cls, oui_path: Path | None, endpoints_path: Path | None) -> EndpointCatalogue:
        self = cls.__new__(cls)
        self._init(oui_path, endpoints_path)
        return self

    def _init(self, oui_path: Path | None, endpoints_path: Path | None) -> None:
        # bits -> {prefix value: hint}; probed longest first (MA-S, MA-M, MA-L)
        self._oui: dict[int, dict[int, VendorHint]] = {36: {}, 28: {}, 24: {}}
        self.services: dict[str, Service] = {}
        self._domains = DomainSet()
        self._cidrs = CidrSet()
        self._ports: dict[tuple[int, int], list[Service]] = {}
        self.vendors: set[str] = set()  # vendor ids and families known to the OUI catalogue
        if oui_path is not None:
            self._load_oui(Path(oui_path))
        if endpoints_path is not None:
            self._load_endpoints(Path(endpoints_path))

    # --- OUI ------------------------------------------------------------------------------------

    def _load_oui(self, path: Path) -> None:
        p = str(path)
        raw = load_yaml(path)
        if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list):
            raise ConfigError(p, "entries", "expected a top-level mapping with an 'entries' list")
        seen: dict[tuple[int, int], str] = {}
        for i, entry in enumerate(raw["entries"]):
            key = f"entries[{i}]"
            if not isinstance(entry, dict):
                raise ConfigError(p, key, "expected a mapping")
            unknown = set(entry) - {"vendor", "family", "registrant", "weak", "prefixes"}
            if unknown:
                raise ConfigError(p, f"{key}.{sorted(unknown)[0]}", "unknown key")
            vendor = _ident(p, f"{key}.vendor", entry.get("vendor"))
            family = _ident(p, f"{key}.family", entry.get("family", vendor))
            weak = entry.get("weak", False)
            if not isinstance(weak, bool):
                raise ConfigError(p, f"{key}.weak", f"expected true or false, got {weak!r}")
            registrant = str(entry.get("registrant") or vendor)
            prefixes = entry.get("prefixes")
            if not isinstance(prefixes, list) or not prefixes:
                raise ConfigError(p, f"{key}.prefixes", "expected a non-empty list of MAC prefixes")
            for j, pv in enumerate(prefixes):
                pkey = f"{key}.prefixes[{j}]"
                value, bits = parse_mac_prefix(p, pkey, pv)
                if (value, bits) in seen:
                    raise ConfigError(p, pkey, f"prefix {pv} already listed for {seen[(value, bits)]}")
                seen[(value, bits)] = vendor
                self._oui[bits][value] = VendorHint(vendor, family, weak, registrant, str(pv).upper())
            self.vendors.update((vendor, family))

    def vendor_for_mac(self, mac: str | None) -> VendorHint | None:
        """Maker of a MAC from its prefix; None for unknown, locally administered or malformed MACs."""
        if not mac:
            return None
        digits = mac.replace(":", "").replace("-", "").replace(".", "").lower()
        if len(digits) != 12 or mac_is_local(digits):
            return None
        try:
            value = int(digits, 16)
        except ValueError:
            return None
        for bits, table in self._oui.items():
            hint = table.get(value >> (48 - bits))
            if hint is not None:
                return hint
        return None

    # --- endpoints --------------------------------------------------------------------------------

    def _load_endpoints(self, path: Path) -> None:
        p = str(path)
        raw = load_yaml(path)
        if not isinstance(raw, dict) or not isinstance(raw.get("services"), list):
            raise ConfigError(p, "services", "expected a top-level mapping with a 'services' list")
        owners: dict[str, str] = {}
        for i, entry in enumerate(raw["services"]):
            key = f"services[{i}]"
            svc, nets = _parse_service(p, key, entry)
            if svc.name in self.services:
                raise ConfigError(p, f"{key}.name", f"duplicate service name {svc.name!r}")
            self.services[svc.name] = svc
            for j, d in enumerate(svc.domains):
                if d in owners:
                    raise ConfigError(p, f"{key}.domains[{j}]", f"{d!r} is already in service {owners[d]!r}")
                owners[d] = svc.name
                self._domains.add(d, svc)
            for net in nets:
                self._cidrs.add(net, svc)
            for spec in svc.distinctive_ports:
                assert spec.proto is not None
                for port in range(spec.low, spec.high + 1):
                    self._ports.setdefault((spec.proto, port), []).append(svc)

    def service_for_domain(self, domain: str | None) -> ServiceMatch | None:
        if not domain:
            return None
        hit = self._domains.match(domain)
        return None if hit is None else ServiceMatch(hit[1], "domain", hit[0])

    def service_for(
        self,
        domain: str | None,
        ip: str | None,
        port: int,
        proto: int | str,
        family: str | None = None,
        *,
        port_only: bool | None = None,
    ) -> ServiceMatch | None:
        """Catalogue service for a destination: by DNS name, then CIDR, then distinctive port (weak).

        Port-only matching is skipped when a domain is given (`port_only` defaults to `domain is
        None`): a device that resolved a name outside the catalogue is talking to that name, not to
        an IP-only vendor relay that happens to share the port."""
        m = self.service_for_domain(domain)
        if m is not None:
            return m
        if ip and self._cidrs:
            hit = self._cidrs.match(ip)
            if hit is not None:
                return ServiceMatch(hit[1], "cidr", hit[0])
        if not (domain is None if port_only is None else port_only):
            return None
        candidates = self._ports.get((proto_number(proto), port))
        if not candidates:
            return None
        if family and family != "generic":
            candidates = [s for s in candidates if s.vendor in (family, "generic")]
        # An ambiguous port says nothing about which vendor; refuse rather than guess.
        if len({s.name for s in candidates}) != 1:
            return None
        return ServiceMatch(candidates[0], "port", f"{proto_text(proto)}/{port}")

    def service_names(self) -> set[str]:
        return set(self.services)


_SERVICE_KEYS = frozenset(
    ("name", "vendor", "category", "description", "domains", "cidrs", "ports", "distinctive_ports", "source")
)


def _parse_service(
    p: str, key: str, entry: Any
) -> tuple[Service, list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    """Validate one `services[i]` entry of endpoints.yaml."""
    if not isinstance(entry, dict):
        raise ConfigError(p, key, "expected a mapping")
    unknown = set(entry) - _SERVICE_KEYS
    if unknown:
        known = ", ".join(sorted(_SERVICE_KEYS))
        raise ConfigError(p, f"{key}.{sorted(unknown)[0]}", f"unknown key (known: {known})")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(p, f"{key}.name", f"expected a lower-case id like 'hik-connect', got {name!r}")
    vendor = entry.get("vendor")
    if not isinstance(vendor, str) or not _NAME_RE.match(vendor):
        raise ConfigError(p, f"{key}.vendor", f"expected a lower-case id, got {vendor!r}")
    category = entry.get("category")
    if category not in CATEGORIES:
        raise ConfigError(p, f"{key}.category", f"expected one of {', '.join(CATEGORIES)}, got {category!r}")
    domains = tuple(
        check_domain_pattern(p, f"{key}.domains[{j}]", d)
        for j, d in enumerate(_list(p, f"{key}.domains", entry))
    )
    nets = []
    for j, c in enumerate(_list(p, f"{key}.cidrs", entry)):
        try:
            nets.append(ipaddress.ip_network(str(c), strict=False))
        except ValueError:
            raise ConfigError(p, f"{key}.cidrs[{j}]", f"not a CIDR: {c!r}") from None
    ports = tuple(
        parse_port(p, f"{key}.ports[{j}]", v) for j, v in enumerate(_list(p, f"{key}.ports", entry))
    )
    distinctive = tuple(
        parse_port(p, f"{key}.distinctive_ports[{j}]", v)
        for j, v in enumerate(_list(p, f"{key}.distinctive_ports", entry))
    )
    for j, spec in enumerate(distinctive):
        if spec.proto not in (6, 17) or spec.high - spec.low >= _MAX_DISTINCTIVE_RANGE:
            problem = f"needs tcp/ or udp/ and at most {_MAX_DISTINCTIVE_RANGE} ports"
            raise ConfigError(p, f"{key}.distinctive_ports[{j}]", problem)
    if not (domains or nets or distinctive):
        raise ConfigError(p, key, "a service needs domains, cidrs or distinctive_ports to be matchable")
    svc = Service(
        name=name,
        vendor=vendor,
        category=category,
        description=str(entry.get("description") or ""),
        domains=domains,
        cidrs=tuple(str(n) for n in nets),
        ports=ports + tuple(s for s in distinctive if s not in ports),
        distinctive_ports=distinctive,
    )
    return svc, nets


BUNDLED_RULES = Path(__file__).resolve().parent.parent / "rules"


def _catalogue_files(rules_dir: Path | str | None) -> tuple[Path, Path]:
    base = Path(rules_dir) if rules_dir else BUNDLED_RULES
    out = []
    for name in ("oui.yaml", "endpoints.yaml"):
        p = base / name
        out.append(p if p.exists() else BUNDLED_RULES / name)
    return out[0], out[1]


def _ident(path: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ConfigError(path, key, f"expected a lower-case id like 'dahua', got {value!r}")
    return value


def _list(path: str, key: str, entry: dict[str, Any]) -> Iterable[Any]:
    name = key.rsplit(".", 1)[-1]
    value = entry.get(name)
    if value is None:
        return []
    if isinstance(value, str | int) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, list):
        raise ConfigError(path, key, f"expected a list, got {type(value).__name__}")
    return value


# Name kept for readers who look for "Catalogue".
Catalogue = EndpointCatalogue
