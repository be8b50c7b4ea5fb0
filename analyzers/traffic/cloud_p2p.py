"""Vendor cloud and P2P sessions recognised by payload (rules/cloud-signatures.yaml): CS2/PPPP,
Dahua Easy4IP (DHGET/DHPOST, inverted STUN, PTCP), EZVIZ/Hik-Connect, XMeye.

Only the first payload packets of each flow are inspected (UDP_PAYLOAD_PACKETS, TCP_PAYLOAD_PACKETS).
When the very first packet of a flow matches, `flow_start` tags the flow before the destination
verdict (this analyzer is registered before DestinationAnalyzer): `flow.tags["service"]`,
`["service_evidence"] = "payload"`, `["service_signature"]`. DestinationAnalyzer then names a direct-IP
destination by payload instead of guessing from the port. Matches on later packets (TCP: the first
data segment follows the handshake) confirm the destination's service in the `cloud` event.

Events: one `cloud` per (device, service, remote address, remote port, proto). Counters:
`cloud_sessions[service]` once per recognised flow (service names come from the catalogue).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agent.catalogue import BUNDLED_RULES, parse_yaml
from agent.errors import ConfigError
from agent.inventory import device_key
from analyzers.base import Analyzer

SIGNATURES_FILE = "cloud-signatures.yaml"
CONTAINS_WINDOW = 2048  # contains_ascii looks this far into a payload
DEFAULT_MAX_KEYS = 100_000
PROTOS = {"udp": 17, "tcp": 6}
_SIG_KEYS = frozenset(
    (
        "id",
        "service",
        "proto",
        "ports",
        "prefix_hex",
        "prefix_ascii",
        "contains_ascii",
        "length_field",
        "min_len",
        "max_len",
        "id_field",
        "description",
        "source",
    )
)


@dataclass(frozen=True, slots=True)
class Signature:
    id: str
    service: str
    proto: int
    ports: frozenset[int]
    prefixes: tuple[bytes, ...]
    contains: tuple[bytes, ...]
    length_field: tuple[int, int, int, bool] | None  # offset, size, add, invert
    min_len: int
    max_len: int
    id_field: tuple[int, int] | None

    @property
    def port_only(self) -> bool:
        return not (self.prefixes or self.contains or self.length_field)

    def matches(self, payload: memoryview | bytes, sport: int, dport: int) -> bool:
        if self.ports and sport not in self.ports and dport not in self.ports:
            return False
        n = len(payload)
        if n < self.min_len or n > self.max_len:
            return False
        if self.prefixes and not any(payload[: len(p)] == p for p in self.prefixes):
            return False
        lf = self.length_field
        if lf is not None:
            off, size, add, invert = lf
            if n < off + size:
                return False
            value = int.from_bytes(payload[off : off + size], "big")
            if invert:
                value ^= (1 << (8 * size)) - 1
            if value + add != n:
                return False
        if self.contains:
            window = bytes(payload[:CONTAINS_WINDOW])
            if not any(c in window for c in self.contains):
                return False
        return True

    def peer_id(self, payload: memoryview | bytes) -> str | None:
        if self.id_field is None:
            return None
        off, length = self.id_field
        raw = bytes(payload[off : off + length]).rstrip(b"\0")
        if not raw or not all(0x20 < b < 0x7F for b in raw):
            return None
        return raw.decode("ascii")


def load_signatures(path: Path | str, services: set[str] | None = None) -> tuple[Signature, ...]:
    """Parse and validate a cloud-signatures file; `services` (catalogue names) bounds `service`."""
    p = str(path)
    try:
        raw = parse_yaml(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(p, "signatures", f"cannot read: {exc}") from None
    if not isinstance(raw, dict) or raw.get("version") != 1 or not isinstance(raw.get("signatures"), list):
        raise ConfigError(p, "signatures", "expected version: 1 and a 'signatures' list")
    out: list[Signature] = []
    seen: set[str] = set()
    for i, e in enumerate(raw["signatures"]):
        key = f"signatures[{i}]"
        if not isinstance(e, dict):
            raise ConfigError(p, key, "expected a mapping")
        unknown = set(e) - _SIG_KEYS
        if unknown:
            raise ConfigError(p, f"{key}.{sorted(unknown)[0]}", "unknown key")
        sid = e.get("id")
        if not isinstance(sid, str) or not sid or sid in seen:
            raise ConfigError(p, f"{key}.id", f"missing or duplicate id {sid!r}")
        seen.add(sid)
        service = e.get("service")
        if not isinstance(service, str) or (services is not None and service not in services):
            raise ConfigError(p, f"{key}.service", f"not a service of endpoints.yaml: {service!r}")
        proto = PROTOS.get(str(e.get("proto", "")).lower())
        if proto is None:
            raise ConfigError(p, f"{key}.proto", "expected udp or tcp")
        try:
            ports = frozenset(int(x) for x in e.get("ports") or [])
            prefixes = tuple(bytes.fromhex(str(h)) for h in e.get("prefix_hex") or [])
            prefixes += tuple(str(a).encode("latin-1") for a in e.get("prefix_ascii") or [])
            contains = tuple(str(a).encode("latin-1") for a in e.get("contains_ascii") or [])
        except (TypeError, ValueError) as exc:
            raise ConfigError(p, key, f"bad ports or magic: {exc}") from None
        if not all(0 < x < 65536 for x in ports):
            raise ConfigError(p, f"{key}.ports", "ports must be 1-65535")
        lf = None
        if e.get("length_field") is not None:
            f = e["length_field"]
            if not isinstance(f, dict) or int(f.get("size", 0)) not in (1, 2, 4):
                raise ConfigError(p, f"{key}.length_field", "needs offset and size 1, 2 or 4")
            lf = (int(f.get("offset", 0)), int(f["size"]), int(f.get("add", 0)), bool(f.get("invert", False)))
        idf = None
        if e.get("id_field") is not None:
            f = e["id_field"]
            if not isinstance(f, dict) or int(f.get("length", 0)) <= 0:
                raise ConfigError(p, f"{key}.id_field", "needs offset and length")
            idf = (int(f.get("offset", 0)), min(int(f["length"]), 64))
        sig = Signature(
            sid,
            service,
            proto,
            ports,
            prefixes,
            contains,
            lf,
            int(e.get("min_len", 1)),
            int(e.get("max_len", 65535)),
            idf,
        )
        if sig.port_only and not ports:
            raise ConfigError(p, key, "a signature needs a payload condition or ports")
        out.append(sig)
    return tuple(out)


def signatures_path(rules_dir: Path | str | None) -> Path:
    if rules_dir:
        candidate = Path(rules_dir) / SIGNATURES_FILE
        if candidate.exists():
            return candidate
    return BUNDLED_RULES / SIGNATURES_FILE


class CloudP2PAnalyzer(Analyzer):
    NAME = "cloud_p2p"
    UDP_PAYLOAD_PACKETS = 2
    TCP_PAYLOAD_PACKETS = 2
    FLOW_EVENTS = True

    def setup(self, ctx: Any) -> None:
        super().setup(ctx)
        cfg = getattr(ctx, "config", None)
        opts = (getattr(cfg, "analyzer_options", None) or {}).get(self.NAME, {})
        self.max_keys = int(opts.get("max_keys", DEFAULT_MAX_KEYS))
        self.reported: set[tuple[str, str, str, int, str]] = set()
        self._started: Any = None
        self._load_rules()

    def reload(self) -> None:
        # Sessions already reported stay reported; the new signatures apply to later flows.
        self._load_rules()

    def _load_rules(self) -> None:
        """(Re-)read the signatures; nothing changes when the file is invalid (ConfigError)."""
        ctx = self.ctx
        cfg = getattr(ctx, "config", None)
        cat = getattr(ctx, "catalogue", None)
        services = cat.services if cat is not None else {}
        path = signatures_path(getattr(cfg, "rules_dir", None))
        signatures = load_signatures(path, set(services) if services else None)
        self.services = services
        self.signatures = signatures
        self.by_proto: dict[int, tuple[Signature, ...]] = {
            proto: tuple(s for s in signatures if s.proto == proto) for proto in (6, 17)
        }
        # Pre-initialise the metric series of every service a signature can name (bounded set).
        counts = getattr(ctx.counters, "cloud_sessions", None)
        if counts is not None:
            for s in signatures:
                counts.setdefault(s.service, 0)

    # -- hooks -----------------------------------------------------------------------------------
    def flow_start(self, flow: Any, pkt: Any) -> None:
        # Runs before DestinationAnalyzer.flow_start: a first packet recognised here names the
        # destination's service by payload. The `cloud` event waits for packet(), after the
        # destination verdict, so it can carry that verdict.
        self._started = None
        if pkt is None or not pkt.payload_len or flow.proto not in (6, 17):
            return
        hit = self._match(flow, pkt)
        if hit is None:
            return
        self._started = (pkt, hit)
        if not hit.port_only:
            flow.tags["service"] = hit.service
            flow.tags["service_evidence"] = "payload"
            flow.tags["service_signature"] = hit.id

    def packet(self, pkt: Any) -> None:
        flow = pkt.flow
        started = self._started
        if started is not None and started[0] is pkt:
            self._started = None
            self._recognised(flow, pkt, started[1])
            return
        if flow is None or not pkt.payload_len or "_cw_cloud" in flow.tags:
            return
        hit = self._match(flow, pkt)
        if hit is not None:
            self._recognised(flow, pkt, hit)

    # -- matching --------------------------------------------------------------------------------
    def _match(self, flow: Any, pkt: Any) -> Signature | None:
        payload = pkt.payload
        weak = None
        for sig in self.by_proto.get(flow.proto, ()):
            if sig.matches(payload, flow.src_port, flow.dest_port):
                if not sig.port_only:
                    return sig
                weak = weak or sig
        return weak

    def _recognised(self, flow: Any, pkt: Any, hit: Signature) -> None:
        if flow is None:
            return
        flow.tags["_cw_cloud"] = hit.id
        counts = getattr(self.ctx.counters, "cloud_sessions", None)
        if counts is not None:
            counts[hit.service] += 1
        evidence = "port" if hit.port_only else "payload"
        self._report(flow, pkt, hit, evidence, hit.peer_id(pkt.payload))

    def _report(self, flow: Any, pkt: Any, sig: Signature, evidence: str, peer_id: str | None) -> None:
        ctx = self.ctx
        src_local = ctx.is_local(flow.src_ip)
        dst_local = ctx.is_local(flow.dest_ip)
        if src_local or not dst_local:
            mac, ip, remote_ip, remote_port = flow.src_mac, flow.src_ip, flow.dest_ip, flow.dest_port
        else:
            mac, ip, remote_ip, remote_port = flow.dest_mac, flow.dest_ip, flow.src_ip, flow.src_port
        if _broadcast(flow.dest_ip, flow.dest_mac):
            direction = "lan-broadcast"
        elif src_local and dst_local:
            direction = "lan"
        elif src_local:
            direction = "outbound"
        elif dst_local:
            direction = "inbound"
        else:
            direction = "transit"
        dkey = device_key(mac, ip) or ip
        proto = "udp" if flow.proto == 17 else "tcp"
        key = (dkey, sig.service, remote_ip, remote_port, proto)
        if key in self.reported:
            return
        if len(self.reported) >= self.max_keys:
            self.reported.clear()  # bounded memory: keys may be reported again after this
        self.reported.add(key)
        svc = self.services.get(sig.service)
        body: dict[str, Any] = {}
        if mac and dkey == mac:
            body["device"] = mac
        body.update(
            {
                "device_ip": ip,
                "service": sig.service,
                "service_vendor": svc.vendor if svc is not None else None,
                "service_category": svc.category if svc is not None else None,
                "signature": sig.id,
                "evidence": evidence,
                "direction": direction,
                "dest_ip": remote_ip,
                "dest_port": remote_port,
                "proto": proto,
                "peer_id": peer_id,
                # what the destination analyzer concluded for this flow (None for LAN traffic)
                "destination_verdict": flow.tags.get("verdict"),
                "destination_service": flow.tags.get("service") if "verdict" in flow.tags else None,
            }
        )
        ctx.emit("cloud", body, ts=pkt.ts, flow=flow, pkt=pkt)


def _broadcast(ip: str, mac: str | None) -> bool:
    if ip == "255.255.255.255" or ip.endswith(".255"):
        return True
    return bool(mac) and mac is not None and mac.lower() == "ff:ff:ff:ff:ff:ff"
