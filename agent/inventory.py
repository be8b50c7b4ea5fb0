"""Device inventory: what each local device is, from passive evidence.

Devices are keyed by MAC (`device_key()`: lower-case, colon-separated), or by IP address when the
capture has no link layer. Only local devices are recorded: callers check `ctx.is_local(ip)` first.
In-memory state is the source of truth during a run; `flush(store)` writes the devices changed since
the last flush with `store.upsert_device(key, record)` and `load(store)` restores them from
`store.load_devices() -> {key: record}` at start-up.

Record (JSON-able dict, `Device.to_record()`; timestamps are capture-time epoch seconds):
    key, mac, ips (most recent last), vlan, first_seen, last_seen,
    vendor, family, vendor_weak, vendor_source ("oui" | a protocol name), registrant, mac_local,
    model, serial, firmware,
    brand (the label it is sold under), maker (who built it), maker_source, relabel (brand's maker
    differs from the maker), services ("http/80", "rtsp/554"... protocols it answered in), ja4 (TLS
    client fingerprints, bounded), tls_names (SNI it sent, bounded), oem_code (SADP DetailOEMCode / OEMinfo),
    hostname (DHCP option 12 / DHCPv6 FQDN), vendor_class (option 60 / DHCPv6 16),
    dhcp_fingerprint (option 55 as "1,3,6,15"), dhcpv6_fingerprint (ORO as "23,24"),
    mud_url (DHCPv4 161 / DHCPv6 112), requested_ip (option 50), client_id (option 61, hex),
    dns_names (names the device asked for, bounded), mdns_names (names it announced, bounded),
    server_ports ("tcp/554"... local peers connected to it), rtsp_peers (local devices it pulled
    RTSP from), class ("camera" | "nvr" | "unknown"), version (record format, 1).

Class heuristics (simple on purpose; evaluated on every identity change, first match wins):
    nvr     hostname, model, vendor class or an mDNS name contains NVR / DVR / XVR, or the device
            opened RTSP (tcp/554) to two or more local devices (it records cameras);
    camera  it serves RTSP (tcp/554) or a vendor camera port (Hikvision SDK tcp/8000, Dahua tcp/37777,
            Xiongmai tcp/34567, ONVIF tcp/8899) to local peers, or a non-weak OUI of a camera maker,
            or its hostname / model contains IPC / CAM;
    unknown otherwise.

`device` events (via `publish(ctx, ts=...)`, which analyzers call after updating) are emitted once
when a device is first seen and whenever an identity fact (ips, vendor, family, model, hostname,
vendor class, DHCP fingerprints, MUD URL, class...) changes; never per packet. Devices restored from
the store do not produce a second "new" event. When an identity value is replaced (firmware, model,
serial, brand, maker) the next event also lists `changes: [{field, old, new}]`;
`update_fingerprint()` returns those changes so the calling analyzer can alert on firmware updates.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from agent.catalogue import mac_is_local

RECORD_VERSION = 1
DEFAULT_MAX_DEVICES = 10_000
_MAX_IPS = 16
_MAX_DNS_NAMES = 256
_MAX_MDNS_NAMES = 64
_MAX_PORTS = 32
_MAX_PEERS = 16
_MAX_SERVICES = 32
_MAX_JA4 = 8
_MAX_CHANGES = 16
# A device seen again is re-written to the store only when last_seen moved this much (capture time).
_LAST_SEEN_FLUSH_STEP = 60.0

CAMERA_FAMILIES = frozenset({"hikvision", "dahua", "uniview", "raysharp", "tvt", "xiongmai"})
CAMERA_SERVER_PORTS = frozenset({"tcp/554", "tcp/8000", "tcp/37777", "tcp/34567", "tcp/8899"})
_NVR_RE = re.compile(r"(?<![a-z])(nvr|dvr|xvr)", re.IGNORECASE)
_CAM_RE = re.compile(r"(?<![a-z])(ipc|ipcam|cam)", re.IGNORECASE)
# Rank of vendor evidence: a better source replaces a worse one, never the reverse.
_SOURCE_RANK = {"oui-weak": 0, "oui": 1}
_PROTOCOL_RANK = 2

_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
COUNTER_KEYS = ("packets", "bytes", "destinations", "unexpected_destinations", "alerts")

IDENTITY_FIELDS = (
    "ips",
    "vendor",
    "family",
    "vendor_weak",
    "model",
    "serial",
    "firmware",
    "brand",
    "maker",
    "relabel",
    "services",
    "ja4",
    "hostname",
    "vendor_class",
    "dhcp_fingerprint",
    "dhcpv6_fingerprint",
    "mud_url",
    "class",
)


def device_key(mac: str | None, ip: str | None) -> str:
    """Inventory / passive-DNS key: the unicast MAC when known, else (no link layer) the IP address.

    A group (multicast / broadcast) MAC gives "": the frame was sent to many, not to a device, even
    when its IP looks unicast (a subnet broadcast such as 192.168.1.255)."""
    if mac:
        m = mac.lower()
        if len(m) >= 2 and not int(m[1], 16) & 1:
            return m
        return ""
    return ip or ""


@functools.lru_cache(maxsize=4096)
def _usable_ip(ip: str | None) -> bool:
    if not ip:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return not (addr.is_unspecified or addr.is_multicast or addr == _BROADCAST)


@dataclass(slots=True)
class Device:
    key: str
    mac: str | None
    first_seen: float
    last_seen: float
    ips: dict[str, None] = field(default_factory=dict)  # ordered set, most recent last
    vlan: tuple[int, ...] = ()
    vendor: str | None = None
    family: str | None = None
    vendor_weak: bool = False
    vendor_source: str | None = None
    registrant: str | None = None
    mac_local: bool = False
    model: str | None = None
    serial: str | None = None
    firmware: str | None = None
    brand: str | None = None
    maker: str | None = None
    maker_source: str | None = None
    relabel: bool = False
    oem_code: str | None = None
    services: dict[str, None] = field(default_factory=dict)
    ja4: dict[str, None] = field(default_factory=dict)
    tls_names: dict[str, None] = field(default_factory=dict)
    hostname: str | None = None
    vendor_class: str | None = None
    dhcp_fingerprint: str | None = None
    dhcpv6_fingerprint: str | None = None
    mud_url: str | None = None
    requested_ip: str | None = None
    client_id: str | None = None
    dns_names: dict[str, None] = field(default_factory=dict)
    mdns_names: dict[str, None] = field(default_factory=dict)
    server_ports: dict[str, None] = field(default_factory=dict)
    rtsp_peers: dict[str, None] = field(default_factory=dict)
    device_class: str = "unknown"
    # activity counted by the destination analyzer (per-device metrics, summaries)
    counters: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTER_KEYS, 0.0))
    # bookkeeping, not persisted
    announced: bool = False
    changed: set[str] = field(default_factory=set)
    value_changes: list[dict[str, Any]] = field(default_factory=list)
    flushed_last_seen: float = 0.0

    @property
    def ip(self) -> str | None:
        """Most recently seen address (IPv4 preferred)."""
        v4 = [a for a in self.ips if ":" not in a]
        pool = v4 or list(self.ips)
        return pool[-1] if pool else None

    def identity(self) -> dict[str, Any]:
        return {
            "mac": self.mac,
            "ip": self.ip,
            "vendor": self.vendor,
            "family": self.family,
            "vendor_weak": self.vendor_weak,
            "class": self.device_class,
        }

    def to_record(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "key": self.key,
            "mac": self.mac,
            "ip": self.ip,
            "ips": list(self.ips),
            "vlan": list(self.vlan),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "vendor": self.vendor,
            "family": self.family,
            "vendor_weak": self.vendor_weak,
            "vendor_source": self.vendor_source,
            "registrant": self.registrant,
            "mac_local": self.mac_local,
            "model": self.model,
            "serial": self.serial,
            "firmware": self.firmware,
            "brand": self.brand,
            "maker": self.maker,
            "maker_source": self.maker_source,
            "relabel": self.relabel,
            "oem_code": self.oem_code,
            "services": list(self.services),
            "ja4": list(self.ja4),
            "tls_names": list(self.tls_names),
            "hostname": self.hostname,
            "vendor_class": self.vendor_class,
            "dhcp_fingerprint": self.dhcp_fingerprint,
            "dhcpv6_fingerprint": self.dhcpv6_fingerprint,
            "mud_url": self.mud_url,
            "requested_ip": self.requested_ip,
            "client_id": self.client_id,
            "dns_names": list(self.dns_names),
            "mdns_names": list(self.mdns_names),
            "server_ports": list(self.server_ports),
            "rtsp_peers": list(self.rtsp_peers),
            "class": self.device_class,
            "counters": dict(self.counters),
        }

    def confidence(self) -> float:
        """How sure the identification is: OUI guess 0.2 (weak) / 0.5, protocol evidence 0.8,
        plus 0.1 each for a model and for DHCP facts."""
        if self.vendor_source is None:
            score = 0.0
        else:
            score = {"oui-weak": 0.2, "oui": 0.5}.get(self.vendor_source, 0.8)
        if self.model:
            score += 0.1
        if self.hostname or self.vendor_class or self.dhcp_fingerprint:
            score += 0.1
        return round(min(score, 1.0), 2)

    def sources(self) -> list[str]:
        out = []
        if self.vendor_source in ("oui", "oui-weak"):
            out.append("oui")
        elif self.vendor_source:
            out.append(self.vendor_source)
        if (
            self.hostname
            or self.vendor_class
            or self.dhcp_fingerprint
            or self.dhcpv6_fingerprint
            or self.mud_url
        ):
            out.append("dhcp")
        if self.mdns_names and "mdns" not in out:
            out.append("mdns")
        if self.maker_source and self.maker_source not in out and self.maker_source != "oui":
            out.append(self.maker_source)
        if self.server_ports or self.rtsp_peers or self.services:
            out.append("traffic")
        return out

    @classmethod
    def from_record(cls, key: str, rec: dict[str, Any]) -> Device:
        def opt(name: str) -> str | None:
            v = rec.get(name)
            return None if v is None else str(v)

        def oset(name: str, cap: int) -> dict[str, None]:
            v = rec.get(name) or []
            return dict.fromkeys([str(x) for x in v][-cap:]) if isinstance(v, list) else {}

        first = float(rec.get("first_seen") or 0.0)
        last = float(rec.get("last_seen") or first)
        dev = cls(key=key, mac=opt("mac"), first_seen=first, last_seen=last)
        dev.ips = oset("ips", _MAX_IPS)
        vlan = rec.get("vlan") or []
        dev.vlan = tuple(int(v) for v in vlan) if isinstance(vlan, list) else ()
        for name in (
            "vendor", "family", "vendor_source", "registrant", "model", "serial", "firmware", "hostname",
            "brand", "maker", "maker_source", "oem_code",
            "vendor_class", "dhcp_fingerprint", "dhcpv6_fingerprint", "mud_url", "requested_ip", "client_id",
        ):  # fmt: skip
            setattr(dev, name, opt(name))
        dev.vendor_weak = bool(rec.get("vendor_weak", False))
        dev.mac_local = bool(rec.get("mac_local", False))
        dev.dns_names = oset("dns_names", _MAX_DNS_NAMES)
        dev.mdns_names = oset("mdns_names", _MAX_MDNS_NAMES)
        dev.server_ports = oset("server_ports", _MAX_PORTS)
        dev.rtsp_peers = oset("rtsp_peers", _MAX_PEERS)
        dev.services = oset("services", _MAX_SERVICES)
        dev.ja4 = oset("ja4", _MAX_JA4)
        dev.tls_names = oset("tls_names", _MAX_DNS_NAMES)
        dev.relabel = bool(rec.get("relabel", False))
        dev.device_class = str(rec.get("class") or "unknown")
        counters = rec.get("counters")
        if isinstance(counters, dict):
            for k in COUNTER_KEYS:
                v = counters.get(k)
                if isinstance(v, int | float) and not isinstance(v, bool):
                    dev.counters[k] = float(v)
        dev.announced = True
        dev.flushed_last_seen = last
        return dev


def _bounded_label(value: str | None, known: frozenset[str]) -> str:
    if not value:
        return "unknown"
    return value if value in known else "other"


def _bounded_add(target: dict[str, None], value: str, cap: int) -> bool:
    """Add to an ordered set (moving an existing value to the end); True when the value is new."""
    if value in target:
        if next(reversed(target)) != value:
            del target[value]
            target[value] = None
        return False
    target[value] = None
    if len(target) > cap:
        del target[next(iter(target))]
    return True


class Inventory:
    """Local devices, their identity facts and what they asked for."""

    def __init__(self, config: Any = None, catalogue: Any = None, *, max_devices: int | None = None) -> None:
        self.catalogue = catalogue
        if max_devices is None:
            opts = (getattr(config, "analyzer_options", None) or {}).get("inventory", {})
            max_devices = int(opts.get("max_devices", DEFAULT_MAX_DEVICES))
        self.max_devices = max_devices
        self.devices: dict[str, Device] = {}
        self._by_ip: dict[str, str] = {}  # ip -> device key (latest owner)
        self._pending: dict[str, None] = {}  # keys with an unpublished identity change
        self._dirty: set[str] = set()
        self.loaded = False
        self.overflow = 0  # devices refused because max_devices was reached
        # bounded label sets for count_by_vendor_brand (filled from rules/fingerprints.yaml)
        self.known_brands: frozenset[str] = frozenset()
        self.known_makers: frozenset[str] = frozenset()

    # --- lookup ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.devices)

    def __iter__(self) -> Any:
        return iter(list(self.devices.values()))

    def get(self, key: str) -> Device | None:
        return self.devices.get(key)

    def by_ip(self, ip: str) -> Device | None:
        key = self._by_ip.get(ip)
        return None if key is None else self.devices.get(key)

    def lookup(self, mac: str | None, ip: str | None) -> Device | None:
        return self.devices.get(device_key(mac, ip))

    # --- updates --------------------------------------------------------------------------------

    def observe(
        self, mac: str | None, ip: str | None, ts: float, vlan: tuple[int, ...] = ()
    ) -> Device | None:
        """Note that a local device (MAC and/or IP) was active at capture time `ts`; create it if new."""
        key = device_key(mac, ip)
        if not key or (key == ip and not _usable_ip(ip)):
            return None  # no unicast MAC and no unicast address: not a device
        dev = self.devices.get(key)
        if dev is None:
            if len(self.devices) >= self.max_devices:
                self.overflow += 1
                return None
            mac_l = key if key != ip else None
            dev = self.devices[key] = Device(
                key=key, mac=mac_l, first_seen=ts, last_seen=ts, vlan=tuple(vlan)
            )
            if mac_l:
                dev.mac_local = mac_is_local(mac_l)
                hint = self.catalogue.vendor_for_mac(mac_l) if self.catalogue is not None else None
                if hint is not None:
                    dev.vendor, dev.family, dev.vendor_weak = hint.vendor, hint.family, hint.weak
                    dev.registrant = hint.registrant
                    dev.vendor_source = "oui-weak" if hint.weak else "oui"
            self._changed(dev, "new")
        else:
            if ts > dev.last_seen:
                dev.last_seen = ts
                if ts - dev.flushed_last_seen >= _LAST_SEEN_FLUSH_STEP:
                    self._dirty.add(key)
            if ts < dev.first_seen:
                dev.first_seen = ts
            if vlan and tuple(vlan) != dev.vlan:
                dev.vlan = tuple(vlan)
                self._dirty.add(key)
        if ip and ip != key:
            ips = dev.ips
            if ip in ips:  # the common case, per flow: no address parsing
                if next(reversed(ips)) != ip:
                    del ips[ip]
                    ips[ip] = None
                    self._by_ip[ip] = key
            elif _usable_ip(ip):
                _bounded_add(ips, ip, _MAX_IPS)
                self._changed(dev, "ips")
                self._by_ip[ip] = key
        return dev

    def set_dhcp(self, key: str, **facts: str | None) -> None:
        """DHCP facts: hostname, vendor_class, dhcp_fingerprint, dhcpv6_fingerprint, mud_url,
        requested_ip, client_id (None values are ignored)."""
        dev = self.devices.get(key)
        if dev is None:
            return
        for name, value in facts.items():
            if value is None or name not in _DHCP_FIELDS:
                continue
            if getattr(dev, name) != value:
                setattr(dev, name, value)
                if name in IDENTITY_FIELDS:
                    self._changed(dev, name)
                else:
                    self._dirty.add(key)

    def update_identity(
        self,
        key: str,
        *,
        source: str,
        vendor: str | None = None,
        family: str | None = None,
        model: str | None = None,
        serial: str | None = None,
        firmware: str | None = None,
    ) -> None:
        """Identity facts from protocol evidence (mDNS, SADP, DHIP, banners...). A protocol-stated
        vendor replaces an OUI guess; model / serial / firmware are taken as reported."""
        dev = self.devices.get(key)
        if dev is None:
            return
        if vendor:
            rank = _SOURCE_RANK.get(source, _PROTOCOL_RANK)
            current = _SOURCE_RANK.get(dev.vendor_source, _PROTOCOL_RANK) if dev.vendor_source else -1
            if rank > current or (rank == current and dev.vendor != vendor):
                changed = dev.vendor != vendor or dev.vendor_weak
                dev.vendor, dev.vendor_weak, dev.vendor_source = vendor, False, source
                dev.family = family or vendor
                if changed:
                    self._changed(dev, "vendor")
        for name, value in (("model", model), ("serial", serial), ("firmware", firmware)):
            if value and getattr(dev, name) != value:
                self._replace(dev, name, value)

    def update_fingerprint(
        self,
        key: str,
        *,
        source: str,
        maker: str | None = None,
        brand: str | None = None,
        brand_maker: str | None = None,
        model: str | None = None,
        serial: str | None = None,
        firmware: str | None = None,
        oem_code: str | None = None,
        service: str | None = None,
        ja4: str | None = None,
    ) -> list[dict[str, Any]]:
        """Fingerprint facts (discovery replies, banners, TLS). `maker` is who built the device
        (protocol evidence: a Dahua protocol means Dahua firmware), `brand` the label it announces
        and `brand_maker` that brand's maker from the rules. Returns the value changes made
        ({field, old, new}; e.g. a firmware update) so the caller can alert on them."""
        dev = self.devices.get(key)
        if dev is None:
            return []
        start = len(dev.value_changes)
        if maker:
            self.update_identity(key, source=source, vendor=maker, family=maker)
            if dev.maker != maker:
                self._replace(dev, "maker", maker)
            dev.maker_source = source
        elif brand_maker and dev.maker is None:
            # no protocol-level maker yet: the brand's maker is the best hint (not a change of maker)
            dev.maker, dev.maker_source = brand_maker, "brand"
            self._changed(dev, "maker")
        self.update_identity(key, source=source, model=model, serial=serial, firmware=firmware)
        if brand and dev.brand != brand:
            self._replace(dev, "brand", brand)
        if oem_code and dev.oem_code != oem_code:
            dev.oem_code = oem_code
            self._dirty.add(key)
        if service and _bounded_add(dev.services, service, _MAX_SERVICES):
            self._changed(dev, "services")
        if ja4 and _bounded_add(dev.ja4, ja4, _MAX_JA4):
            self._changed(dev, "ja4")
        self._relabel(dev)
        return dev.value_changes[start:]

    def _relabel(self, dev: Device) -> None:
        """A device is relabelled when the brand it is sold under is not its maker's own name."""
        maker = dev.maker or (dev.family if dev.vendor_source == "oui" and not dev.vendor_weak else None)
        relabel = bool(dev.brand and maker and dev.brand != maker)
        if relabel != dev.relabel:
            dev.relabel = relabel
            self._changed(dev, "relabel")

    def _replace(self, dev: Device, name: str, value: str) -> None:
        old = getattr(dev, name)
        setattr(dev, name, value)
        if old is not None:
            dev.value_changes.append({"field": name, "old": old, "new": value})
            del dev.value_changes[:-_MAX_CHANGES]
        self._changed(dev, name)

    def add_dns_name(self, key: str, name: str) -> None:
        dev = self.devices.get(key)
        if dev is not None and name and _bounded_add(dev.dns_names, name, _MAX_DNS_NAMES):
            self._dirty.add(key)

    def add_tls_name(self, key: str, name: str) -> None:
        """A TLS server name (SNI) the device asked for (bounded, like dns_names)."""
        dev = self.devices.get(key)
        if dev is not None and name and _bounded_add(dev.tls_names, name, _MAX_DNS_NAMES):
            self._dirty.add(key)

    def add_mdns_name(self, key: str, name: str) -> None:
        dev = self.devices.get(key)
        if dev is not None and name and _bounded_add(dev.mdns_names, name, _MAX_MDNS_NAMES):
            self._dirty.add(key)
            if _NVR_RE.search(name) and dev.device_class != "nvr":
                self._reclassify(dev)

    def note_server_port(self, key: str, proto: str, port: int) -> None:
        """A local peer connected to this device on proto/port (it offers that service)."""
        dev = self.devices.get(key)
        if dev is not None and _bounded_add(dev.server_ports, f"{proto}/{port}", _MAX_PORTS):
            self._dirty.add(key)
            self._reclassify(dev)

    def note_rtsp_client(self, key: str, server_key: str) -> None:
        """This device opened RTSP to the local device `server_key` (NVR behaviour when repeated)."""
        dev = self.devices.get(key)
        if dev is not None and server_key != key and _bounded_add(dev.rtsp_peers, server_key, _MAX_PEERS):
            self._dirty.add(key)
            self._reclassify(dev)

    # --- classification -------------------------------------------------------------------------

    @staticmethod
    def classify(dev: Device) -> str:
        texts = [t for t in (dev.hostname, dev.model, dev.vendor_class) if t]
        if any(_NVR_RE.search(t) for t in texts + list(dev.mdns_names)) or len(dev.rtsp_peers) >= 2:
            return "nvr"
        if any(p in CAMERA_SERVER_PORTS for p in dev.server_ports):
            return "camera"
        if dev.family in CAMERA_FAMILIES and not dev.vendor_weak:
            return "camera"
        if any(_CAM_RE.search(t) for t in (dev.hostname, dev.model) if t):
            return "camera"
        return "unknown"

    def _reclassify(self, dev: Device) -> None:
        cls = self.classify(dev)
        if cls != dev.device_class:
            dev.device_class = cls
            dev.changed.add("class")
            self._pending[dev.key] = None
            self._dirty.add(dev.key)

    def _changed(self, dev: Device, what: str) -> None:
        dev.changed.add(what)
        self._pending[dev.key] = None
        self._dirty.add(dev.key)
        if what != "ips":
            cls = self.classify(dev)
            if cls != dev.device_class:
                dev.device_class = cls
                dev.changed.add("class")

    # --- events ---------------------------------------------------------------------------------

    def pending(self) -> list[str]:
        return list(self._pending)

    def publish(self, ctx: Any, *, ts: float, pkt: Any = None, flow: Any = None) -> int:
        """Emit one `device` event per device whose identity changed since the last publish."""
        if not self._pending:
            return 0
        count = 0
        for key in list(self._pending):
            dev = self.devices.get(key)
            if dev is None or dev.mac is None:
                # Events identify devices by MAC; IP-only devices (no link layer) stay in the inventory.
                continue
            body = self.event_body(dev)
            ctx.emit("device", body, ts=ts, pkt=pkt, flow=flow)
            dev.announced = True
            dev.changed.clear()
            dev.value_changes.clear()
            count += 1
        self._pending.clear()
        return count

    def event_body(self, dev: Device) -> dict[str, Any]:
        """`device` event body (docs/events.md); facts not known are left out."""
        change = "updated" if dev.announced else "new"
        body: dict[str, Any] = {
            "key": dev.key,
            "mac": dev.mac,
            "ip": dev.ip,
            "ips": list(dev.ips),
            "vlan": list(dev.vlan),
            "vendor": dev.vendor,
            "family": dev.family,
            "vendor_weak": dev.vendor_weak,
            "vendor_source": dev.vendor_source,
            "mac_local": dev.mac_local,
            "class": dev.device_class,
            "model": dev.model,
            "serial": dev.serial,
            "firmware": dev.firmware,
            "brand": dev.brand,
            "maker": dev.maker,
            "relabel": dev.relabel or None,
            "oem_code": dev.oem_code,
            "services": list(dev.services),
            "ja4": list(dev.ja4),
            "hostname": dev.hostname,
            "vendor_class": dev.vendor_class,
            "dhcp_fingerprint": dev.dhcp_fingerprint,
            "dhcpv6_fingerprint": dev.dhcpv6_fingerprint,
            "mud_url": dev.mud_url,
            "confidence": dev.confidence(),
            "sources": dev.sources(),
            "first_seen": dev.first_seen,
            "last_seen": dev.last_seen,
            "change": change,
        }
        if change == "updated":
            body["changed"] = sorted(c for c in dev.changed if c in IDENTITY_FIELDS)
            if dev.value_changes:
                body["changes"] = [dict(c) for c in dev.value_changes]
        return {k: v for k, v in body.items() if v is not None and v != []}

    # --- summaries ------------------------------------------------------------------------------

    def count_by_vendor_class(self) -> dict[tuple[str, str], int]:
        """(vendor or "unknown", class) -> devices (raw values; the metrics collector bounds them)."""
        out: dict[tuple[str, str], int] = {}
        for dev in self.devices.values():
            k = (dev.vendor or "unknown", dev.device_class or "unknown")
            out[k] = out.get(k, 0) + 1
        return out

    def count_by_vendor_brand(self) -> dict[tuple[str, str], int]:
        """(maker, brand) -> devices, with bounded labels: values outside `known_makers` /
        `known_brands` (set from rules/fingerprints.yaml by the fingerprint analyzers) become
        "other", missing ones "unknown"."""
        out: dict[tuple[str, str], int] = {}
        for dev in self.devices.values():
            maker = dev.maker or (dev.family if dev.vendor_source and not dev.vendor_weak else None)
            k = (_bounded_label(maker, self.known_makers), _bounded_label(dev.brand, self.known_brands))
            out[k] = out.get(k, 0) + 1
        return out

    def per_device_summary(self, cap: int | None = None) -> dict[str, dict[str, float]]:
        """MAC -> {packets, bytes, destinations, unexpected_destinations, alerts, last_seen}, first seen
        first (stable series); `cap` limits how many (None: all; the collector also caps)."""
        devs = sorted((d for d in self.devices.values() if d.mac), key=lambda d: (d.first_seen, d.key))
        if cap is not None:
            devs = devs[: max(cap, 0)]
        out = {}
        for d in devs:
            assert d.mac is not None
            out[d.mac] = {**d.counters, "last_seen": d.last_seen}
        return out

    def summary_table(self, limit: int = 50) -> str:
        """Plain-text device table for terminal summaries."""
        if not self.devices:
            return "Devices: none"
        devs = sorted(self.devices.values(), key=lambda d: (d.first_seen, d.key))
        rows = [("MAC / KEY", "IP", "VENDOR", "CLASS", "NAME", "DEST", "UNEXP", "ALERTS")]
        for d in devs[:limit]:
            vendor = (d.vendor or "-") + ("?" if d.vendor_weak else "")
            name = d.model or d.hostname or next(iter(d.mdns_names), None) or "-"
            c = d.counters
            rows.append(
                (
                    d.key,
                    d.ip or "-",
                    vendor,
                    d.device_class,
                    name[:32],
                    str(int(c["destinations"])),
                    str(int(c["unexpected_destinations"])),
                    str(int(c["alerts"])),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [f"Devices ({len(self.devices)}; '?' = weak OUI hint):"]
        lines += [
            "  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        if len(devs) > limit:
            lines.append(f"  ... {len(devs) - limit} more")
        return "\n".join(lines)

    # --- persistence ----------------------------------------------------------------------------

    def dirty(self) -> set[str]:
        return set(self._dirty)

    def flush(self, store: Any) -> int:
        """Write changed devices through `store.upsert_device(key, record)`; returns how many."""
        if store is None or not self._dirty:
            return 0
        written = 0
        for key in sorted(self._dirty):
            dev = self.devices.get(key)
            if dev is not None:
                store.upsert_device(key, dev.to_record())
                dev.flushed_last_seen = dev.last_seen
                written += 1
            self._dirty.discard(key)
        return written

    def load(self, store: Any) -> int:
        """Restore devices from `store.load_devices()`; idempotent (a second call does nothing)."""
        if store is None or self.loaded:
            return 0
        self.loaded = True
        records = store.load_devices() or {}
        for key, rec in records.items():
            if not isinstance(rec, dict) or key in self.devices:
                continue
            dev = Device.from_record(str(key), rec)
            self.devices[dev.key] = dev
            for ip in dev.ips:
                self._by_ip[ip] = dev.key
        return len(records)


_DHCP_FIELDS = frozenset(
    {
        "hostname",
        "vendor_class",
        "dhcp_fingerprint",
        "dhcpv6_fingerprint",
        "mud_url",
        "requested_ip",
        "client_id",
    }
)
