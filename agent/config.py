"""Operator configuration (`camwatch.yaml`): defaults, YAML loading and validation.

Works with no file at all. Every key the file may hold is listed in SCHEMA/ANALYZER_OPTIONS and
checked: an unknown key (with a did-you-mean), a wrong type, a bad value, a missing file or broken
YAML is one line naming the file and the dotted key (or the line), and exit code 2.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent.errors import ConfigError

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"

DEFAULT_LOCAL_CIDRS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",  # CGNAT space is not "the internet" for a camera VLAN's purposes
    "fc00::/7",
    "fe80::/10",
)
# Multicast/broadcast destinations are local by definition (discovery, SSDP, mDNS...).
ALWAYS_LOCAL_CIDRS = ("224.0.0.0/4", "255.255.255.255/32", "0.0.0.0/32", "ff00::/8", "127.0.0.0/8", "::1/128")

# Metrics port: a free slot in the Prometheus default-port allocation list (see docs/metrics.md).
DEFAULT_METRICS_PORT = 10025
DEFAULT_RING_MB = 32
MAX_CONFIG_BYTES = 1024 * 1024
IFNAMSIZ = 16  # Linux interface names are at most 15 characters


@dataclass
class Config:
    source: str = "<defaults>"
    local_cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(
        default_factory=lambda: [ipaddress.ip_network(c) for c in DEFAULT_LOCAL_CIDRS]
    )
    local_vlans: set[int] = field(default_factory=set)
    rules_dir: Path = RULES_DIR
    policy_paths: list[Path] = field(default_factory=lambda: [RULES_DIR / "policy" / "default.yaml"])
    policy_explicit: bool = False  # `policy:` or --policy given: a rule bundle does not replace it
    # Signed rule bundles (agent/rulebundle.py): with trust keys, rules come only from the bundle.
    rules_bundle: Path | None = None
    trust_keys: list[Path] = field(default_factory=list)
    rules_bundle_active: Any = None  # the verified rulebundle.Bundle in use, once unpacked
    state_dir: Path = Path("var/camwatch")
    geoip_mmdb: Path | None = None  # optional MaxMind country (or city) database
    asn_mmdb: Path | None = None  # optional MaxMind ASN database
    flow_idle_timeout: float = 120.0
    flow_active_timeout: float = 3600.0
    max_flows: int = 200_000
    dns_min_ttl: float = 60.0
    dns_max_ttl: float = 86_400.0
    learning_enabled: bool = False
    learning_period: float = 7 * 86_400.0
    metrics_listen: str = f"127.0.0.1:{DEFAULT_METRICS_PORT}"
    per_device_metrics: bool = False
    per_device_cap: int = 64
    analyzer_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Live capture (issue 5) settings live here too, so one file configures the daemon.
    interfaces: list[str] = field(default_factory=list)
    bpf_filter: str = ""
    workers: int = 1
    ring_size_mb: int = DEFAULT_RING_MB
    # dotted key -> command-line option that replaced the file's value (for error messages)
    overrides: dict[str, str] = field(default_factory=dict)

    def describe(self, key: str) -> str:
        """Where a setting came from, for a one-line error: '--listen' or 'FILE: metrics.listen'."""
        if key in self.overrides:
            return self.overrides[key]
        return f"{self.source}: {key}"


# --------------------------------------------------------------------------- value checks

Check = Callable[[str, str, Any, Path], Any]  # (file, dotted key, value, config dir) -> parsed value


def _duration(path: str, key: str, value: Any) -> float:
    """Seconds from a number or a string like '90s', '15m', '12h', '7d'."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str) and value[:-1].replace(".", "", 1).isdigit():
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}.get(value[-1])
        if unit:
            return float(value[:-1]) * unit
    raise ConfigError(path, key, f"expected a duration like 30, '90s', '15m', '12h' or '7d', got {value!r}")


def _positive_duration(path: str, key: str, value: Any) -> float:
    seconds = _duration(path, key, value)
    if seconds <= 0:
        raise ConfigError(path, key, f"expected a duration above zero, got {value!r}")
    return seconds


def _positive_int(path: str, key: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ConfigError(path, key, f"expected a positive integer, got {value!r}")


def _bool(path: str, key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(path, key, f"expected true or false, got {value!r}")


def _str(path: str, key: str, value: Any) -> str:
    if isinstance(value, str) and value.strip():
        return value
    raise ConfigError(path, key, f"expected a non-empty string, got {value!r}")


def _str_list(path: str, key: str, value: Any) -> list[str]:
    if isinstance(value, str) and value.strip():
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return list(value)
    raise ConfigError(path, key, f"expected a string or a non-empty list of strings, got {value!r}")


def _section(path: str, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(path, key, f"expected a mapping, got {type(value).__name__}")
    return value


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def _size(path: str, key: str, value: Any, *, bare: int, example: str) -> int:
    """Bytes from an integer (times `bare`) or a string like '32MiB', '512KiB', '1GiB' (binary units)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value * bare
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            unit = (m.group(2) or "").lower().rstrip("b").rstrip("i")
            size = int(float(m.group(1)) * _SIZE_UNITS[unit] * (bare if not m.group(2) else 1))
            if size > 0:
                return size
    raise ConfigError(path, key, f"expected a size such as {example}, got {value!r}")


def _size_bytes(path: str, key: str, value: Any) -> int:
    return _size(path, key, value, bare=1, example="33554432 or '32MiB'")


def _ring_mb(path: str, key: str, value: Any) -> int:
    size = _size(path, key, value, bare=1024 * 1024, example="32MiB")
    if size % (1024 * 1024):
        raise ConfigError(path, key, f"expected whole MiB (the ring is allocated in MiB), got {value!r}")
    return size // (1024 * 1024)


def _cidr_list(path: str, key: str, value: Any) -> list[str]:
    out = []
    for i, c in enumerate(_str_list(path, key, value)):
        try:
            out.append(str(ipaddress.ip_network(c, strict=False)))
        except ValueError:
            raise ConfigError(path, f"{key}[{i}]", f"not a CIDR: {c!r}") from None
    return out


def _resolve(base: Path, value: str) -> Path:
    q = Path(value).expanduser()
    return q if q.is_absolute() else base / q


def _existing_file(path: str, key: str, value: Any, base: Path) -> Path:
    q = _resolve(base, _str(path, key, value))
    if not q.is_file():
        raise ConfigError(path, key, f"file not found: {q}")
    return q


def _existing_dir(path: str, key: str, value: Any, base: Path) -> Path:
    q = _resolve(base, _str(path, key, value))
    if not q.is_dir():
        raise ConfigError(path, key, f"not a directory: {q}")
    return q


def _plain(check: Callable[[str, str, Any], Any]) -> Check:
    return lambda p, k, v, base: check(p, k, v)


# Options of analyzers and shared components (`analyzers.<NAME>.<option>`), as the code reads them.
ANALYZER_OPTIONS: dict[str, dict[str, Check]] = {
    "geo": {"asn": _plain(_bool)},
    "dns": {"cache_size": _plain(_positive_int)},
    "inventory": {"max_devices": _plain(_positive_int)},
    "destinations": {"max_keys": _plain(_positive_int)},
    "cloud_p2p": {"max_keys": _plain(_positive_int)},
    "exploits": {
        "reassembly_budget": _plain(_size_bytes),
        "signatures": lambda p, k, v, base: str(_existing_file(p, k, v, base)),
        "credentials": lambda p, k, v, base: str(_existing_file(p, k, v, base)),
    },
    "updates": {
        "max_carve": _plain(_size_bytes),
        "min_firmware_size": _plain(_size_bytes),
        "scan": _plain(_bool),
        "wait_for_scan": _plain(_bool),
        "sandbox": _plain(_bool),
        "scan_in_process": _plain(_bool),
        "scan_rule_dirs": lambda p, k, v, base: [
            str(_existing_dir(p, f"{k}[{i}]", d, base)) for i, d in enumerate(_str_list(p, k, v))
        ],
        "update_sources": _plain(_cidr_list),
    },
}

# Top-level keys: None = a scalar, a set = a section with these keys.
KNOWN_KEYS: dict[str, set[str] | None] = {
    "networks": {"cidrs", "vlans"},
    "rules_dir": None,
    "rules": {"bundle", "trust_key"},
    "policy": None,
    "state_dir": None,
    "geoip": {"mmdb", "asn_mmdb"},
    "flows": {"idle_timeout", "active_timeout", "max_flows"},
    "dns": {"min_ttl", "max_ttl"},
    "learning": {"enabled", "period"},
    "metrics": {"listen", "per_device", "per_device_cap"},
    "analyzers": None,
    "capture": {"interfaces", "filter", "workers", "ring_size"},
}


def _unknown(path: str, key: str, name: Any, known: Any) -> ConfigError:
    names = sorted(str(k) for k in known)
    close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ConfigError(path, key, f"unknown key; {hint}(known: {', '.join(names) or 'none'})")


# --------------------------------------------------------------------------- YAML


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, mark: Any) -> None:
        super().__init__(f"duplicate key {key!r} (a later value would silently replace the first)")
        self.problem = str(self)
        self.problem_mark = mark


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark)
            seen.add(key)
        except TypeError:  # unhashable key: the base constructor reports it
            pass
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(p: str, path: Path) -> Any:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(p, "-", "file not found") from None
    except IsADirectoryError:
        raise ConfigError(p, "-", "is a directory, not a configuration file") from None
    except OSError as exc:
        raise ConfigError(p, "-", f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(p, "-", f"larger than {MAX_CONFIG_BYTES} bytes: not a configuration file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(p, "-", f"not UTF-8 text (byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "-"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(p, where, f"not valid YAML: {problem}") from None


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path | None) -> Config:
    """Load and validate a YAML configuration; `None` gives the defaults."""
    cfg = Config()
    if path is None:
        return cfg
    p = str(path)
    raw = _read_yaml(p, Path(path))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(p, "-", f"top level must be a mapping of settings, got {type(raw).__name__}")
    cfg.source = p
    base = Path(path).resolve().parent

    for key, sub in raw.items():
        if key not in KNOWN_KEYS:
            raise _unknown(p, str(key), key, KNOWN_KEYS)
        allowed = KNOWN_KEYS[key]
        if allowed is not None:
            for subkey in _section(p, key, sub):
                if subkey not in allowed:
                    raise _unknown(p, f"{key}.{subkey}", subkey, allowed)

    nets = _section(p, "networks", raw.get("networks"))
    if "cidrs" in nets:
        cfg.local_cidrs = [ipaddress.ip_network(c) for c in _cidr_list(p, "networks.cidrs", nets["cidrs"])]
    if "vlans" in nets:
        vl = nets["vlans"]
        if isinstance(vl, int) and not isinstance(vl, bool):
            vl = [vl]
        if not isinstance(vl, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 4096 for v in vl
        ):
            raise ConfigError(p, "networks.vlans", f"expected a list of VLAN ids 0-4095, got {vl!r}")
        cfg.local_vlans = set(vl)
    if "rules_dir" in raw:
        cfg.rules_dir = _existing_dir(p, "rules_dir", raw["rules_dir"], base)
        cfg.policy_paths = [cfg.rules_dir / "policy" / "default.yaml"]
    if "policy" in raw:
        cfg.policy_paths = [_resolve(base, v) for v in _str_list(p, "policy", raw["policy"])]
        cfg.policy_explicit = True
        for i, pp in enumerate(cfg.policy_paths):
            if not pp.is_file():
                raise ConfigError(p, f"policy[{i}]", f"file not found: {pp}")
    _load_rules_section(cfg, p, raw, base)
    if "state_dir" in raw:
        cfg.state_dir = _resolve(base, _str(p, "state_dir", raw["state_dir"]))
        if cfg.state_dir.exists() and not cfg.state_dir.is_dir():
            raise ConfigError(p, "state_dir", f"not a directory: {cfg.state_dir}")
    geo = _section(p, "geoip", raw.get("geoip"))
    for k, attr in (("mmdb", "geoip_mmdb"), ("asn_mmdb", "asn_mmdb")):
        if geo.get(k) is not None:
            setattr(cfg, attr, _existing_file(p, f"geoip.{k}", geo[k], base))
    flows = _section(p, "flows", raw.get("flows"))
    if "idle_timeout" in flows:
        cfg.flow_idle_timeout = _positive_duration(p, "flows.idle_timeout", flows["idle_timeout"])
    if "active_timeout" in flows:
        cfg.flow_active_timeout = _positive_duration(p, "flows.active_timeout", flows["active_timeout"])
    if "max_flows" in flows:
        cfg.max_flows = _positive_int(p, "flows.max_flows", flows["max_flows"])
    dns = _section(p, "dns", raw.get("dns"))
    if "min_ttl" in dns:
        cfg.dns_min_ttl = _duration(p, "dns.min_ttl", dns["min_ttl"])
    if "max_ttl" in dns:
        cfg.dns_max_ttl = _positive_duration(p, "dns.max_ttl", dns["max_ttl"])
    if cfg.dns_min_ttl > cfg.dns_max_ttl:
        key = "dns.min_ttl" if "min_ttl" in dns else "dns.max_ttl"
        raise ConfigError(
            p, key, f"dns.min_ttl ({cfg.dns_min_ttl:g} s) is above dns.max_ttl ({cfg.dns_max_ttl:g} s)"
        )
    learning = _section(p, "learning", raw.get("learning"))
    if "enabled" in learning:
        cfg.learning_enabled = _bool(p, "learning.enabled", learning["enabled"])
    if "period" in learning:
        cfg.learning_period = _positive_duration(p, "learning.period", learning["period"])
    metrics = _section(p, "metrics", raw.get("metrics"))
    if "listen" in metrics:
        cfg.metrics_listen = parse_listen(p, "metrics.listen", metrics["listen"])
    if "per_device" in metrics:
        cfg.per_device_metrics = _bool(p, "metrics.per_device", metrics["per_device"])
    if "per_device_cap" in metrics:
        cfg.per_device_cap = _positive_int(p, "metrics.per_device_cap", metrics["per_device_cap"])
    _load_analyzers(cfg, p, _section(p, "analyzers", raw.get("analyzers")), base)
    cap = _section(p, "capture", raw.get("capture"))
    if "interfaces" in cap:
        cfg.interfaces = _str_list(p, "capture.interfaces", cap["interfaces"])
        for i, name in enumerate(cfg.interfaces):
            if len(name.encode()) >= IFNAMSIZ or "/" in name or any(c.isspace() for c in name):
                raise ConfigError(p, f"capture.interfaces[{i}]", f"not a network interface name: {name!r}")
    if "filter" in cap:
        if not isinstance(cap["filter"], str):
            raise ConfigError(p, "capture.filter", f"expected a BPF filter string, got {cap['filter']!r}")
        cfg.bpf_filter = cap["filter"]
    if "workers" in cap:
        cfg.workers = _positive_int(p, "capture.workers", cap["workers"])
    if "ring_size" in cap:
        cfg.ring_size_mb = _ring_mb(p, "capture.ring_size", cap["ring_size"])
    return cfg


def _load_rules_section(cfg: Config, p: str, raw: dict[str, Any], base: Path) -> None:
    """`rules.bundle` + `rules.trust_key`: with a trust key, only a verified bundle is loaded."""
    rules = _section(p, "rules", raw.get("rules"))
    if rules.get("bundle") is not None:
        cfg.rules_bundle = _resolve(base, _str(p, "rules.bundle", rules["bundle"]))
    if rules.get("trust_key") is not None:
        cfg.trust_keys = [_resolve(base, v) for v in _str_list(p, "rules.trust_key", rules["trust_key"])]
    if not cfg.trust_keys:
        if cfg.rules_bundle is not None:
            raise ConfigError(
                p,
                "rules.bundle",
                "needs rules.trust_key: a bundle is only used after its signature is verified",
            )
        return
    if cfg.rules_bundle is None:
        raise ConfigError(p, "rules.trust_key", "needs rules.bundle (the signed rule bundle to load)")
    if "rules_dir" in raw:
        raise ConfigError(
            p,
            "rules_dir",
            "a plain rules directory is refused when rules.trust_key is set; sign it with "
            "`camwatch rules pack` and give the bundle as rules.bundle",
        )
    from agent.rulebundle import load_trust_keys

    load_trust_keys(cfg.trust_keys, source=p)  # a missing or malformed key fails here, naming the key
    if not cfg.rules_bundle.is_file():
        raise ConfigError(p, "rules.bundle", f"file not found: {cfg.rules_bundle}")


def _load_analyzers(cfg: Config, p: str, section: dict[str, Any], base: Path) -> None:
    for name, opts in section.items():
        key = f"analyzers.{name}"
        schema = ANALYZER_OPTIONS.get(str(name))
        if schema is None:
            from analyzers import TRAFFIC_ANALYZERS

            names = {a.NAME for a in TRAFFIC_ANALYZERS if a.NAME}
            if str(name) not in names:
                raise _unknown(p, key, name, names | set(ANALYZER_OPTIONS))
            schema = {}
        parsed: dict[str, Any] = {}
        for opt, value in _section(p, key, opts).items():
            check = schema.get(str(opt))
            if check is None:
                raise _unknown(p, f"{key}.{opt}", opt, schema)
            parsed[str(opt)] = check(p, f"{key}.{opt}", value, base)
        cfg.analyzer_options[str(name)] = parsed


_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?$")


def parse_listen(path: str, key: str, value: Any) -> str:
    """Validate 'HOST:PORT' / ':PORT' / 'PORT' and return 'HOST:PORT'."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConfigError(path, key, f"expected ADDR:PORT, got {value!r}")
    text = str(value).strip()
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(path, key, f"expected ADDR:PORT, got {value!r}")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare:
        try:
            ipaddress.ip_address(bare)
        except ValueError:
            if not _HOST_RE.match(bare):
                raise ConfigError(path, key, f"expected ADDR:PORT, got {value!r} (bad address)") from None
    return f"{host or '127.0.0.1'}:{port}"
