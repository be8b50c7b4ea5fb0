"""Destination policy: which outbound destinations each group of devices may use, learning mode,
and RFC 8520 (MUD) import. File format and semantics: docs/policy.md.

Evaluation (`Policy.evaluate`, once per new (device, destination, port, proto)), first hit wins:

1. an `allow` rule of the device's group or of `defaults` matches a DNS name the device resolved
   for the address, or the address (CIDR), and the port      -> allowed / policy
2. the destination country is in `deny_countries`             -> unexpected / country
3. the destination is a catalogue service (agent.catalogue):
   listed in `deny_services`, or `vendor_cloud: deny` and not in `allow_services`
                                                              -> unexpected / catalogue
   otherwise                                                  -> vendor-cloud / catalogue
   (`vendor_cloud: alert` keeps the verdict but asks for a low-severity alert)
4. learning mode is active                                    -> allowed / learning (recorded)
5. the (name or address, port) is in the device's baseline    -> allowed / baseline
6. `countries` is set and the destination country is not in it -> unexpected / country
7. an allow rule matched the destination but not its port     -> unexpected / port
8. the device resolved no name for the address                -> unexpected / direct_ip
9. anything else                                              -> unexpected / not_in_policy

Learning: when `learning.enabled`, the first `learning.period` seconds of capture time after the
first flow (start persisted as store meta `learning_started`) record every destination that reaches
step 4 into the baseline (`store.add_baseline(device, kind, value, ts)`, kind "name" or "ip", value
"<name-or-address> <proto>/<port>") instead of judging it; afterwards the baseline is enforced.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent.catalogue import (
    CATEGORIES,
    CidrSet,
    DomainSet,
    PortSpec,
    ServiceMatch,
    check_domain_pattern,
    load_yaml,
    parse_port,
    proto_number,
    proto_text,
)
from agent.errors import ConfigError

VENDOR_CLOUD_MODES = ("allow", "alert", "deny")
DEVICE_CLASSES = ("camera", "nvr", "dvr", "doorbell", "unknown")
LEARNING_META_KEY = "learning_started"

_GROUP_KEYS = frozenset(
    {
        "name",
        "description",
        "match",
        "allow",
        "vendor_cloud",
        "allow_services",
        "deny_services",
        "countries",
        "deny_countries",
        "source",
    }
)
_DEFAULT_KEYS = _GROUP_KEYS - {"name", "match"}
_MATCH_KEYS = frozenset({"vendors", "macs", "cidrs", "vlans", "classes", "mud_urls"})
_RULE_KEYS = frozenset({"name", "description", "domains", "cidrs", "ports"})
_TOP_KEYS = frozenset({"version", "defaults", "groups"})
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


# --------------------------------------------------------------------------------------------------
# model


@dataclass(slots=True)
class AllowRule:
    rule_id: str  # "<group>.allow[<i>]" or "<group>.<name>"
    domains: DomainSet
    cidrs: CidrSet
    ports: tuple[PortSpec, ...]

    def port_ok(self, proto: int, port: int) -> bool:
        return not self.ports or any(p.matches(proto, port) for p in self.ports)

    def dest_match(self, names: Sequence[str], ip: str) -> str | None:
        """What matched the destination (a name or the CIDR), ignoring the port; None if nothing.
        A rule with only ports matches every destination ("*")."""
        if not self.domains and not self.cidrs:
            return "*"
        if self.domains:
            for n in names:
                if self.domains.match(n) is not None:
                    return n
        if self.cidrs:
            hit = self.cidrs.match(ip)
            if hit is not None:
                return hit[0]
        return None


@dataclass(slots=True)
class Group:
    name: str
    source: str  # file the group came from
    vendors: frozenset[str] = frozenset()
    macs: frozenset[str] = frozenset()
    cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    vlans: frozenset[int] = frozenset()
    classes: frozenset[str] = frozenset()
    mud_urls: frozenset[str] = frozenset()
    allow: list[AllowRule] = field(default_factory=list)
    vendor_cloud: str | None = None
    allow_services: frozenset[str] | None = None
    deny_services: frozenset[str] | None = None
    countries: frozenset[str] | None = None
    deny_countries: frozenset[str] | None = None

    def selects(self, info: DeviceFacts) -> bool:
        """All selector kinds given must match (any value within one kind)."""
        if self.vendors and not ({info.vendor, info.family} & self.vendors):
            return False
        if self.macs and info.mac not in self.macs:
            return False
        if self.cidrs and not any(_in_nets(ip, self.cidrs) for ip in info.ips):
            return False
        if self.vlans and not (set(info.vlan) & self.vlans):
            return False
        if self.classes and info.device_class not in self.classes:
            return False
        return not (self.mud_urls and info.mud_url not in self.mud_urls)


@dataclass(slots=True)
class DeviceFacts:
    """What group selection looks at (built from an inventory Device plus the flow)."""

    mac: str | None = None
    ips: tuple[str, ...] = ()
    vlan: tuple[int, ...] = ()
    vendor: str | None = None
    family: str | None = None
    device_class: str | None = None
    mud_url: str | None = None

    @classmethod
    def from_device(
        cls, device: Any, mac: str | None = None, ip: str | None = None, vlan: tuple[int, ...] = ()
    ) -> DeviceFacts:
        if device is None:
            return cls(mac=mac.lower() if mac else None, ips=(ip,) if ip else (), vlan=tuple(vlan))
        ips = tuple(dict.fromkeys([*([ip] if ip else []), *getattr(device, "ips", ())]))
        return cls(
            mac=(mac or getattr(device, "mac", None) or "").lower() or None,
            ips=ips,
            vlan=tuple(vlan) or tuple(getattr(device, "vlan", ())),
            vendor=getattr(device, "vendor", None),
            family=getattr(device, "family", None),
            device_class=getattr(device, "device_class", None),
            mud_url=getattr(device, "mud_url", None),
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: str  # agent.stats.VERDICTS
    reason: str  # agent.stats.VERDICT_REASONS
    group: str
    rule: str | None  # allow rule id, "baseline", "catalogue:<service>", "countries", ...
    name: str | None  # the DNS name that matched, else the most recent name resolved, else None
    service: ServiceMatch | None = None
    notify: bool = False  # vendor_cloud: alert -> a low-severity alert although not unexpected


def _in_nets(ip: str, nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in n for n in nets if n.version == addr.version)


# --------------------------------------------------------------------------------------------------
# parsing


class _Parser:
    def __init__(self, path: str, catalogue: Any) -> None:
        self.path = path
        self.catalogue = catalogue

    def err(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path, key, problem)

    def str_list(self, key: str, value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(
            isinstance(v, str | int) and not isinstance(v, bool) for v in value
        ):
            return [str(v) for v in value]
        raise self.err(key, f"expected a string or a list of strings, got {value!r}")

    def countries(self, key: str, value: Any) -> frozenset[str] | None:
        if value is None:
            return None
        out = set()
        for i, c in enumerate(self.str_list(key, value)):
            cc = c.strip().upper()
            if len(cc) != 2 or not cc.isalpha() or not cc.isascii():
                raise self.err(f"{key}[{i}]", f"expected an ISO 3166 two-letter country code, got {c!r}")
            out.add(cc)
        return frozenset(out)

    def services(self, key: str, value: Any) -> frozenset[str] | None:
        if value is None:
            return None
        names = self.str_list(key, value)
        known = set(CATEGORIES)
        if self.catalogue is not None:
            known |= set(self.catalogue.services)
        for i, n in enumerate(names):
            if self.catalogue is not None and n not in known:
                raise self.err(
                    f"{key}[{i}]", f"unknown service or category {n!r} (known: {', '.join(sorted(known))})"
                )
        return frozenset(names)

    def rules(self, prefix: str, group_name: str, value: Any) -> list[AllowRule]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.err(f"{prefix}.allow", "expected a list of rules")
        out = []
        for i, raw in enumerate(value):
            key = f"{prefix}.allow[{i}]"
            if not isinstance(raw, dict):
                raise self.err(key, "expected a mapping with domains / cidrs / ports")
            unknown = set(raw) - _RULE_KEYS
            if unknown:
                raise self.err(
                    f"{key}.{sorted(unknown)[0]}", f"unknown key (known: {', '.join(sorted(_RULE_KEYS))})"
                )
            domains = DomainSet()
            for j, d in enumerate(self.str_list(f"{key}.domains", raw.get("domains"))):
                domains.add(check_domain_pattern(self.path, f"{key}.domains[{j}]", d), True)
            cidrs = CidrSet()
            for j, c in enumerate(self.str_list(f"{key}.cidrs", raw.get("cidrs"))):
                try:
                    cidrs.add(ipaddress.ip_network(c, strict=False), True)
                except ValueError:
                    raise self.err(f"{key}.cidrs[{j}]", f"not a CIDR: {c!r}") from None
            ports_raw = raw.get("ports")
            if ports_raw is not None and not isinstance(ports_raw, list):
                ports_raw = [ports_raw]
            ports = tuple(
                parse_port(self.path, f"{key}.ports[{j}]", p) for j, p in enumerate(ports_raw or [])
            )
            if not domains and not cidrs and not ports:
                raise self.err(key, "a rule needs at least one of domains, cidrs or ports")
            name = raw.get("name")
            if name is not None and (not isinstance(name, str) or not _NAME_RE.match(name)):
                raise self.err(f"{key}.name", f"expected a short name (letters, digits, - _ .), got {name!r}")
            # Rule ids name the group, not its list position, so they stay stable when groups move.
            rule_id = f"{group_name}.{name}" if name else f"{group_name}.allow[{i}]"
            out.append(AllowRule(rule_id, domains, cidrs, ports))
        return out

    def common(self, key: str, raw: dict[str, Any], group: Group) -> None:
        vc = raw.get("vendor_cloud")
        if vc is not None and vc not in VENDOR_CLOUD_MODES:
            raise self.err(
                f"{key}.vendor_cloud", f"expected one of {', '.join(VENDOR_CLOUD_MODES)}, got {vc!r}"
            )
        group.vendor_cloud = vc
        group.allow_services = self.services(f"{key}.allow_services", raw.get("allow_services"))
        group.deny_services = self.services(f"{key}.deny_services", raw.get("deny_services"))
        group.countries = self.countries(f"{key}.countries", raw.get("countries"))
        group.deny_countries = self.countries(f"{key}.deny_countries", raw.get("deny_countries"))
        group.allow = self.rules(key, group.name, raw.get("allow"))

    def match(self, key: str, raw: Any, group: Group) -> None:
        if raw is None:
            return
        if not isinstance(raw, dict):
            raise self.err(key, "expected a mapping of selectors")
        unknown = set(raw) - _MATCH_KEYS
        if unknown:
            raise self.err(
                f"{key}.{sorted(unknown)[0]}", f"unknown selector (known: {', '.join(sorted(_MATCH_KEYS))})"
            )
        vendors = [v.lower() for v in self.str_list(f"{key}.vendors", raw.get("vendors"))]
        if self.catalogue is not None and getattr(self.catalogue, "vendors", None):
            for i, v in enumerate(vendors):
                if v not in self.catalogue.vendors:
                    known = ", ".join(sorted(self.catalogue.vendors))
                    raise self.err(f"{key}.vendors[{i}]", f"unknown vendor {v!r} (known: {known})")
        group.vendors = frozenset(vendors)
        macs = set()
        for i, m in enumerate(self.str_list(f"{key}.macs", raw.get("macs"))):
            mm = m.strip().lower().replace("-", ":")
            if not _MAC_RE.match(mm):
                raise self.err(f"{key}.macs[{i}]", f"not a MAC address like 'bc:ad:28:00:00:01': {m!r}")
            macs.add(mm)
        group.macs = frozenset(macs)
        nets = []
        for i, c in enumerate(self.str_list(f"{key}.cidrs", raw.get("cidrs"))):
            try:
                nets.append(ipaddress.ip_network(c, strict=False))
            except ValueError:
                raise self.err(f"{key}.cidrs[{i}]", f"not a CIDR: {c!r}") from None
        group.cidrs = tuple(nets)
        vlans = raw.get("vlans")
        if vlans is not None:
            if not isinstance(vlans, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 4096 for v in vlans
            ):
                raise self.err(f"{key}.vlans", f"expected a list of VLAN ids 0-4095, got {vlans!r}")
            group.vlans = frozenset(vlans)
        classes = self.str_list(f"{key}.classes", raw.get("classes"))
        for i, c in enumerate(classes):
            if c not in DEVICE_CLASSES:
                raise self.err(
                    f"{key}.classes[{i}]", f"expected one of {', '.join(DEVICE_CLASSES)}, got {c!r}"
                )
        group.classes = frozenset(classes)
        group.mud_urls = frozenset(self.str_list(f"{key}.mud_urls", raw.get("mud_urls")))

    def document(self, raw: Any) -> tuple[Group | None, list[Group]]:
        if raw is None:
            return None, []
        if not isinstance(raw, dict):
            raise self.err("-", "top level must be a mapping (keys: version, defaults, groups)")
        unknown = set(raw) - _TOP_KEYS
        if unknown:
            raise self.err(str(sorted(unknown)[0]), f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
        version = raw.get("version", 1)
        if version != 1:
            raise self.err(
                "version", f"unsupported policy format version {version!r} (this camwatch reads 1)"
            )
        defaults = None
        if raw.get("defaults") is not None:
            d = raw["defaults"]
            if not isinstance(d, dict):
                raise self.err("defaults", "expected a mapping")
            unknown = set(d) - _DEFAULT_KEYS
            if unknown:
                raise self.err(
                    f"defaults.{sorted(unknown)[0]}",
                    f"unknown key (known: {', '.join(sorted(_DEFAULT_KEYS))})",
                )
            defaults = Group("defaults", self.path)
            self.common("defaults", d, defaults)
        groups_raw = raw.get("groups") or []
        if not isinstance(groups_raw, list):
            raise self.err("groups", "expected a list of groups")
        groups = []
        for i, g in enumerate(groups_raw):
            key = f"groups[{i}]"
            if not isinstance(g, dict):
                raise self.err(key, "expected a mapping")
            unknown = set(g) - _GROUP_KEYS
            if unknown:
                raise self.err(
                    f"{key}.{sorted(unknown)[0]}", f"unknown key (known: {', '.join(sorted(_GROUP_KEYS))})"
                )
            name = g.get("name")
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise self.err(
                    f"{key}.name", f"every group needs a short name (letters, digits, - _ .), got {name!r}"
                )
            group = Group(name, self.path)
            self.match(f"{key}.match", g.get("match"), group)
            self.common(key, g, group)
            groups.append(group)
        return defaults, groups


# --------------------------------------------------------------------------------------------------
# policy


class Policy:
    """Groups + defaults from one or more policy files, learning state and the baseline."""

    def __init__(
        self,
        config: Any = None,
        catalogue: Any = None,
        *,
        paths: Iterable[Path | str] | None = None,
        store: Any = None,
    ) -> None:
        self.catalogue = catalogue
        self.defaults = Group("defaults", "<builtin>")
        self.groups: list[Group] = []
        self.paths = [
            Path(p) for p in (paths if paths is not None else getattr(config, "policy_paths", []) or [])
        ]
        for p in self.paths:
            self._add_document(str(p), load_yaml(p))
        self.learning_enabled = bool(getattr(config, "learning_enabled", False))
        self.learning_period = float(getattr(config, "learning_period", 7 * 86_400.0))
        self.learning_start: float | None = None
        self.baseline: dict[str, set[tuple[str, str]]] = {}
        self._pending_baseline: list[tuple[str, str, str, float]] = []
        self._pending_meta: dict[str, str] = {}
        self.store = None
        self._state_loaded = False
        if store is not None:
            self.load_state(store)

    @classmethod
    def load(
        cls, paths: Iterable[Path | str], config: Any = None, catalogue: Any = None, *, store: Any = None
    ) -> Policy:
        return cls(config, catalogue, paths=paths, store=store)

    @classmethod
    def from_dict(
        cls, doc: Any, *, catalogue: Any = None, config: Any = None, source: str = "<dict>"
    ) -> Policy:
        self = cls(config, catalogue, paths=[])
        self._add_document(source, doc)
        return self

    def _add_document(self, source: str, raw: Any) -> None:
        defaults, groups = _Parser(source, self.catalogue).document(raw)
        if defaults is not None:
            # Later files override scalar defaults; their allow rules are added.
            d = self.defaults
            for attr in ("vendor_cloud", "allow_services", "deny_services", "countries", "deny_countries"):
                if getattr(defaults, attr) is not None:
                    setattr(d, attr, getattr(defaults, attr))
            d.allow.extend(defaults.allow)
            d.source = source
        names = {g.name: g.source for g in self.groups}
        for i, g in enumerate(groups):
            if g.name in names:
                where = "this file" if names[g.name] == source else names[g.name]
                raise ConfigError(source, f"groups[{i}].name", f"group {g.name!r} already defined in {where}")
            names[g.name] = source
            self.groups.append(g)

    # --- state ----------------------------------------------------------------------------------

    def load_state(self, store: Any) -> None:
        """Learning start (store meta) and baseline (`store.load_baseline()`); idempotent."""
        self.store = store
        if self._state_loaded or store is None:
            return
        self._state_loaded = True
        started = store.get_meta(LEARNING_META_KEY)
        if started:
            try:
                self.learning_start = float(started)
            except ValueError:
                self.learning_start = None
        raw = store.load_baseline() or {}
        items: Iterable[Any] = raw.items() if isinstance(raw, dict) else raw
        for entry in items:
            if isinstance(raw, dict):
                device, pairs = entry
                for kind, value in pairs:
                    self.baseline.setdefault(str(device), set()).add((str(kind), str(value)))
            else:
                device, kind, value = entry[0], entry[1], entry[2]
                self.baseline.setdefault(str(device), set()).add((str(kind), str(value)))

    def flush(self, store: Any = None) -> int:
        """Write pending baseline entries and learning meta to the store; returns entries written."""
        store = store if store is not None else self.store
        if store is None:
            return 0
        for key, value in self._pending_meta.items():
            store.set_meta(key, value)
        self._pending_meta.clear()
        n = len(self._pending_baseline)
        for device, kind, value, ts in self._pending_baseline:
            store.add_baseline(device, kind, value, ts)
        self._pending_baseline.clear()
        return n

    def note_time(self, now: float) -> None:
        """Start the learning window at the first traffic seen (capture time), once."""
        if self.learning_enabled and self.learning_start is None:
            self.learning_start = now
            self._pending_meta[LEARNING_META_KEY] = repr(now)

    def learning_active(self, now: float) -> bool:
        if not self.learning_enabled:
            return False
        self.note_time(now)
        assert self.learning_start is not None
        return now < self.learning_start + self.learning_period

    def learn(self, device: str, kind: str, value: str, ts: float) -> None:
        entries = self.baseline.setdefault(device, set())
        if (kind, value) not in entries:
            entries.add((kind, value))
            self._pending_baseline.append((device, kind, value, ts))

    # --- evaluation -----------------------------------------------------------------------------

    def group_for(self, info: DeviceFacts) -> Group:
        for g in self.groups:
            if g.selects(info):
                return g
        return self.defaults

    def inbound_rule(self, facts: DeviceFacts, remote_ip: str, port: int, proto: int | str) -> Verdict | None:
        """An allow rule accepting a connection the remote side opened to the device on `port`:
        only rules naming the remote address by CIDR count (a name or a ports-only rule says
        nothing about who may connect in)."""
        group = self.group_for(facts)
        rules = group.allow if group is self.defaults else [*group.allow, *self.defaults.allow]
        pnum = proto_number(proto)
        for rule in rules:
            if rule.cidrs and rule.cidrs.match(remote_ip) is not None and rule.port_ok(pnum, port):
                return Verdict("allowed", "policy", group.name, rule.rule_id, None)
        return None

    def _setting(self, group: Group, attr: str) -> Any:
        value = getattr(group, attr)
        return getattr(self.defaults, attr) if value is None else value

    def evaluate(
        self,
        *,
        device: str,
        dest_ip: str,
        dest_port: int,
        proto: int | str,
        names: Sequence[str] = (),
        country: str | None = None,
        service: ServiceMatch | None = None,
        now: float,
        facts: DeviceFacts | None = None,
    ) -> Verdict:
        """Verdict for a new destination of `device` (see the module docstring for the order)."""
        info = facts or DeviceFacts()
        group = self.group_for(info)
        gname = group.name
        pnum = proto_number(proto)
        first_name = names[0] if names else None
        port_mismatch: str | None = None
        rules = group.allow if group is self.defaults else [*group.allow, *self.defaults.allow]
        for rule in rules:
            what = rule.dest_match(names, dest_ip)
            if what is None:
                continue
            if rule.port_ok(pnum, dest_port):
                name = what if what in names else first_name
                return Verdict("allowed", "policy", gname, rule.rule_id, name, service)
            port_mismatch = port_mismatch or rule.rule_id

        deny_countries = self._setting(group, "deny_countries")
        if country and deny_countries and country in deny_countries:
            return Verdict("unexpected", "country", gname, "deny_countries", first_name, service)

        if service is not None:
            svc = service.service
            denied = self._setting(group, "deny_services") or frozenset()
            allowed = self._setting(group, "allow_services") or frozenset()
            mode = self._setting(group, "vendor_cloud") or "allow"
            cat_rule = f"catalogue:{svc.name}"
            if svc.name in denied or svc.category in denied:
                return Verdict("unexpected", "catalogue", gname, cat_rule, first_name, service)
            if svc.name in allowed or svc.category in allowed:
                return Verdict("vendor-cloud", "catalogue", gname, cat_rule, first_name, service)
            if mode == "deny":
                return Verdict("unexpected", "catalogue", gname, cat_rule, first_name, service)
            return Verdict(
                "vendor-cloud", "catalogue", gname, cat_rule, first_name, service, notify=mode == "alert"
            )

        ptext = f"{proto_text(pnum)}/{dest_port}"
        if self.learning_active(now):
            kind, host = ("name", first_name) if first_name else ("ip", dest_ip)
            self.learn(device, kind, f"{host} {ptext}", now)
            return Verdict("allowed", "learning", gname, "learning", first_name, service)

        known = self.baseline.get(device)
        if known:
            for n in names:
                if ("name", f"{n} {ptext}") in known:
                    return Verdict("allowed", "baseline", gname, "baseline", n, service)
            if ("ip", f"{dest_ip} {ptext}") in known:
                return Verdict("allowed", "baseline", gname, "baseline", first_name, service)

        countries = self._setting(group, "countries")
        if country and countries is not None and country not in countries:
            return Verdict("unexpected", "country", gname, "countries", first_name, service)
        if port_mismatch:
            return Verdict("unexpected", "port", gname, port_mismatch, first_name, service)
        if not names:
            return Verdict("unexpected", "direct_ip", gname, None, None, service)
        return Verdict("unexpected", "not_in_policy", gname, None, first_name, service)


# --------------------------------------------------------------------------------------------------
# MUD (RFC 8520) import


def _mud_port_spec(proto: str, dp: Any) -> str:
    if isinstance(dp, dict):
        if "port" in dp and dp.get("operator", "eq") == "eq":
            return f"{proto}/{int(dp['port'])}"
        if "lower-port" in dp and "upper-port" in dp:
            return f"{proto}/{int(dp['lower-port'])}-{int(dp['upper-port'])}"
    return f"{proto}/0-65535"


def _mud_port(matches: dict[str, Any]) -> list[str]:
    """Destination ports of an ACE as policy port specs ('tcp/443', 'udp/1000-2000').

    RFC 8520 puts them in `tcp` / `udp` containers (`destination-port`); older drafts (e.g. osMUD's
    examples) put `protocol` and `destination-port-range-or-operator` inside `ipv4` / `ipv6`.
    """
    out = []
    for proto in ("tcp", "udp"):
        m = matches.get(proto)
        if isinstance(m, dict):
            out.append(
                _mud_port_spec(
                    proto, m.get("destination-port") or m.get("destination-port-range-or-operator")
                )
            )
    if not out:
        for fam in ("ipv4", "ipv6"):
            m = matches.get(fam)
            if isinstance(m, dict) and m.get("protocol") in (6, 17):
                proto = "tcp" if m["protocol"] == 6 else "udp"
                out.append(_mud_port_spec(proto, m.get("destination-port-range-or-operator")))
    return out


def _initiated_by_remote(matches: dict[str, Any]) -> bool:
    """`ietf-mud:direction-initiated: to-device` in a from-device ACE only allows replies."""
    for proto in ("tcp", "udp"):
        m = matches.get(proto)
        if isinstance(m, dict) and m.get("ietf-mud:direction-initiated") == "to-device":
            return True
    return False


def import_mud(path: str | Path, group: str, *, match: dict[str, Any] | None = None) -> dict[str, Any]:
    """Turn an RFC 8520 MUD file's from-device ACLs into a policy group (a YAML-ready dict).

    Mapped: ACEs with `forwarding: accept` in the ACLs named by `from-device-policy`, their
    `ietf-acldns:dst-dnsname` (-> domains), `destination-ipv4-network` / `destination-ipv6-network`
    (-> cidrs) and TCP/UDP destination ports. The group selects devices announcing the file's
    `mud-url` (DHCP option 161 / DHCPv6 112) unless `match` is given, and sets `vendor_cloud: deny`
    because a MUD file is an allow-list. Not mappable (listed under `source.skipped`): MUD
    abstractions (`manufacturer`, `same-manufacturer`, `controller`, `my-controller`,
    `local-networks`: local traffic is never judged anyway) and to-device (inbound) policies.
    """
    p = str(path)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(p, "-", "file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(p, "-", f"not a readable MUD JSON file: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("ietf-mud:mud"), dict):
        raise ConfigError(p, "ietf-mud:mud", "missing the 'ietf-mud:mud' container")
    mud = doc["ietf-mud:mud"]
    acl_root = doc.get("ietf-access-control-list:access-lists") or doc.get("ietf-access-control-list:acls")
    if not isinstance(acl_root, dict) or not isinstance(acl_root.get("acl"), list):
        raise ConfigError(p, "ietf-access-control-list:access-lists.acl", "missing the ACL list")
    if not isinstance(group, str) or not _NAME_RE.match(group):
        raise ConfigError(p, "-", f"group name must be letters, digits, - _ . (got {group!r})")
    acls = {a.get("name"): a for a in acl_root["acl"] if isinstance(a, dict)}
    fdp = mud.get("from-device-policy") or {}
    refs = (((fdp.get("access-lists") or {}).get("access-list")) or []) if isinstance(fdp, dict) else []
    names = [r.get("name") for r in refs if isinstance(r, dict)]
    rules: list[dict[str, Any]] = []
    skipped: list[str] = []
    for acl_name in names:
        acl = acls.get(acl_name)
        if acl is None:
            raise ConfigError(
                p, f"from-device-policy.access-lists.access-list[{acl_name}]", "ACL not defined"
            )
        aces = ((acl.get("aces") or acl.get("access-list-entries") or {}).get("ace")) or []
        for ace in aces:
            if not isinstance(ace, dict):
                continue
            ace_name = str(ace.get("name") or f"ace{len(rules)}")
            if ((ace.get("actions") or {}).get("forwarding")) != "accept":
                skipped.append(f"{acl_name}/{ace_name}: not an accept action")
                continue
            matches = ace.get("matches") or {}
            domains: list[str] = []
            cidrs: list[str] = []
            for fam in ("ipv4", "ipv6"):
                m = matches.get(fam)
                if not isinstance(m, dict):
                    continue
                dn = m.get("ietf-acldns:dst-dnsname")
                if isinstance(dn, str):
                    domains.append(dn.rstrip(".").lower())
                net = m.get(f"destination-{fam}-network")
                if isinstance(net, str):
                    cidrs.append(net)
            mud_ext = matches.get("ietf-mud:mud") or matches.get("mud")
            if isinstance(mud_ext, dict) and mud_ext:
                skipped.append(f"{acl_name}/{ace_name}: MUD abstraction {sorted(mud_ext)} (no addresses)")
                continue
            if not domains and not cidrs:
                skipped.append(f"{acl_name}/{ace_name}: no destination name or network")
                continue
            if _initiated_by_remote(matches):
                skipped.append(f"{acl_name}/{ace_name}: replies to connections the remote side opens")
                continue
            rule: dict[str, Any] = {"name": re.sub(r"[^A-Za-z0-9_.-]", "-", ace_name)}
            if domains:
                rule["domains"] = sorted(set(domains))
            if cidrs:
                rule["cidrs"] = cidrs
            ports = _mud_port(matches)
            if ports:
                rule["ports"] = ports
            rules.append(rule)
    if mud.get("to-device-policy"):
        skipped.append("to-device-policy: inbound rules are not imported")
    mud_url = mud.get("mud-url")
    out: dict[str, Any] = {"name": group}
    if match is not None:
        out["match"] = match
    elif isinstance(mud_url, str):
        out["match"] = {"mud_urls": [mud_url]}
    out["vendor_cloud"] = "deny"
    out["allow"] = rules
    source: dict[str, Any] = {"mud_url": mud_url, "file": Path(path).name}
    sysinfo = mud.get("systeminfo")
    if isinstance(sysinfo, str):
        source["systeminfo"] = sysinfo
    if skipped:
        source["skipped"] = skipped
    out["source"] = source
    return out


def merge_group(policy_path: str | Path, group: dict[str, Any], *, catalogue: Any = None) -> None:
    """Add `group` to a policy file (replacing a group of the same name); creates the file if needed.

    The result is validated before the file is replaced (atomically). YAML comments in the file are
    not preserved: keep imported groups in their own policy file (config `policy:` takes a list).
    """
    path = Path(policy_path)
    doc: Any = load_yaml(path) if path.exists() else None
    if doc is None:
        doc = {"version": 1, "groups": []}
    if not isinstance(doc, dict):
        raise ConfigError(str(path), "-", "top level must be a mapping")
    groups = doc.setdefault("groups", [])
    if not isinstance(groups, list):
        raise ConfigError(str(path), "groups", "expected a list of groups")
    for i, g in enumerate(groups):
        if isinstance(g, dict) and g.get("name") == group.get("name"):
            groups[i] = group
            break
    else:
        groups.append(group)
    _Parser(str(path), catalogue).document(doc)  # raises ConfigError naming the key
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=False)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent or Path(".")), prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# Name used by agent.cli (`camwatch policy import-mud --into`).
merge_policy_group = merge_group


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m agent.policy import-mud MUD.json --group NAME [--into POLICY.yaml]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m agent.policy")
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import-mud", help="turn an RFC 8520 MUD file into a policy group")
    imp.add_argument("mud")
    imp.add_argument("--group", required=True)
    imp.add_argument("--into", help="policy file to add the group to (printed to stdout otherwise)")
    chk = sub.add_parser("check", help="validate policy files")
    chk.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            from agent.catalogue import EndpointCatalogue

            Policy(None, EndpointCatalogue(None), paths=args.files)
            print("ok")
            return 0
        group = import_mud(args.mud, args.group)
        if args.into:
            from agent.catalogue import EndpointCatalogue

            merge_group(args.into, group, catalogue=EndpointCatalogue(None))
        else:
            sys.stdout.write(yaml.safe_dump({"groups": [group]}, sort_keys=False))
    except ConfigError as exc:
        print(f"camwatch: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
