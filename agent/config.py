"""Operator configuration (`camwatch.yaml`): defaults, YAML loading and validation.

Works with no file at all. Every error names the file and the key and exits with code 2.
"""

from __future__ import annotations

import ipaddress
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


@dataclass
class Config:
    source: str = "<defaults>"
    local_cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(
        default_factory=lambda: [ipaddress.ip_network(c) for c in DEFAULT_LOCAL_CIDRS]
    )
    local_vlans: set[int] = field(default_factory=set)
    rules_dir: Path = RULES_DIR
    policy_paths: list[Path] = field(default_factory=lambda: [RULES_DIR / "policy" / "default.yaml"])
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


def _duration(path: str, key: str, value: Any) -> float:
    """Seconds from a number or a string like '90s', '15m', '12h', '7d'."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str) and value[:-1].replace(".", "", 1).isdigit():
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}.get(value[-1])
        if unit:
            return float(value[:-1]) * unit
    raise ConfigError(path, key, f"expected a duration like 30, '90s', '15m', '12h' or '7d', got {value!r}")


def _positive_int(path: str, key: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ConfigError(path, key, f"expected a positive integer, got {value!r}")


def _bool(path: str, key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(path, key, f"expected true or false, got {value!r}")


def _str_list(path: str, key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(path, key, f"expected a string or a list of strings, got {value!r}")


def _section(path: str, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(path, key, f"expected a mapping, got {type(value).__name__}")
    return value


KNOWN_KEYS = {
    "networks": {"cidrs", "vlans"},
    "rules_dir": None,
    "policy": None,
    "state_dir": None,
    "geoip": {"mmdb", "asn_mmdb"},
    "flows": {"idle_timeout", "active_timeout", "max_flows"},
    "dns": {"min_ttl", "max_ttl"},
    "learning": {"enabled", "period"},
    "metrics": {"listen", "per_device", "per_device_cap"},
    "analyzers": None,
    "capture": {"interfaces", "filter", "workers"},
}


def load_config(path: str | Path | None) -> Config:
    """Load and validate a YAML configuration; `None` gives the defaults."""
    cfg = Config()
    if path is None:
        return cfg
    p = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(p, "-", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(p, "-", f"cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "-"
        raise ConfigError(p, where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(p, "-", "top level must be a mapping")
    cfg.source = p
    base = Path(path).resolve().parent

    def rel(v: str) -> Path:
        q = Path(v).expanduser()
        return q if q.is_absolute() else base / q

    for key, sub in raw.items():
        if key not in KNOWN_KEYS:
            raise ConfigError(p, str(key), f"unknown key (known: {', '.join(sorted(KNOWN_KEYS))})")
        allowed = KNOWN_KEYS[key]
        if allowed is not None:
            for subkey in _section(p, key, sub):
                if subkey not in allowed:
                    raise ConfigError(
                        p, f"{key}.{subkey}", f"unknown key (known: {', '.join(sorted(allowed))})"
                    )

    nets = _section(p, "networks", raw.get("networks"))
    if "cidrs" in nets:
        cidrs = []
        for i, c in enumerate(_str_list(p, "networks.cidrs", nets["cidrs"])):
            try:
                cidrs.append(ipaddress.ip_network(c, strict=False))
            except ValueError:
                raise ConfigError(p, f"networks.cidrs[{i}]", f"not a CIDR: {c!r}") from None
        cfg.local_cidrs = cidrs
    if "vlans" in nets:
        vl = nets["vlans"]
        if not isinstance(vl, list) or not all(isinstance(v, int) and 0 <= v < 4096 for v in vl):
            raise ConfigError(p, "networks.vlans", f"expected a list of VLAN ids 0-4095, got {vl!r}")
        cfg.local_vlans = set(vl)
    if "rules_dir" in raw:
        cfg.rules_dir = rel(_str_list(p, "rules_dir", raw["rules_dir"])[0])
        cfg.policy_paths = [cfg.rules_dir / "policy" / "default.yaml"]
    if "policy" in raw:
        cfg.policy_paths = [rel(v) for v in _str_list(p, "policy", raw["policy"])]
        for i, pp in enumerate(cfg.policy_paths):
            if not pp.is_file():
                raise ConfigError(p, f"policy[{i}]", f"file not found: {pp}")
    if "state_dir" in raw:
        cfg.state_dir = rel(_str_list(p, "state_dir", raw["state_dir"])[0])
    geo = _section(p, "geoip", raw.get("geoip"))
    for k, attr in (("mmdb", "geoip_mmdb"), ("asn_mmdb", "asn_mmdb")):
        if geo.get(k):
            q = rel(_str_list(p, f"geoip.{k}", geo[k])[0])
            if not q.is_file():
                raise ConfigError(p, f"geoip.{k}", f"file not found: {q}")
            setattr(cfg, attr, q)
    flows = _section(p, "flows", raw.get("flows"))
    if "idle_timeout" in flows:
        cfg.flow_idle_timeout = _duration(p, "flows.idle_timeout", flows["idle_timeout"])
    if "active_timeout" in flows:
        cfg.flow_active_timeout = _duration(p, "flows.active_timeout", flows["active_timeout"])
    if "max_flows" in flows:
        cfg.max_flows = _positive_int(p, "flows.max_flows", flows["max_flows"])
    dns = _section(p, "dns", raw.get("dns"))
    if "min_ttl" in dns:
        cfg.dns_min_ttl = _duration(p, "dns.min_ttl", dns["min_ttl"])
    if "max_ttl" in dns:
        cfg.dns_max_ttl = _duration(p, "dns.max_ttl", dns["max_ttl"])
    learning = _section(p, "learning", raw.get("learning"))
    if "enabled" in learning:
        cfg.learning_enabled = _bool(p, "learning.enabled", learning["enabled"])
    if "period" in learning:
        cfg.learning_period = _duration(p, "learning.period", learning["period"])
    metrics = _section(p, "metrics", raw.get("metrics"))
    if "listen" in metrics:
        cfg.metrics_listen = parse_listen(p, "metrics.listen", metrics["listen"])
    if "per_device" in metrics:
        cfg.per_device_metrics = _bool(p, "metrics.per_device", metrics["per_device"])
    if "per_device_cap" in metrics:
        cfg.per_device_cap = _positive_int(p, "metrics.per_device_cap", metrics["per_device_cap"])
    analyzers = _section(p, "analyzers", raw.get("analyzers"))
    for name, opts in analyzers.items():
        cfg.analyzer_options[str(name)] = _section(p, f"analyzers.{name}", opts)
    cap = _section(p, "capture", raw.get("capture"))
    if "interfaces" in cap:
        cfg.interfaces = _str_list(p, "capture.interfaces", cap["interfaces"])
    if "filter" in cap:
        cfg.bpf_filter = _str_list(p, "capture.filter", cap["filter"])[0]
    if "workers" in cap:
        cfg.workers = _positive_int(p, "capture.workers", cap["workers"])
    return cfg


def parse_listen(path: str, key: str, value: Any) -> str:
    """Validate 'HOST:PORT' / ':PORT' / 'PORT' and return 'HOST:PORT'."""
    text = str(value)
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(path, key, f"expected ADDR:PORT, got {value!r}")
    return f"{host or '127.0.0.1'}:{port}"
