"""Destination verdicts: every (device, destination address, port, protocol) from a local device to a
non-local address is judged once by agent.policy and reported once.

On a flow's first packet (`flow_start`, so per flow, never per packet):
* local <-> local: no verdict (RTP to the NVR, DNS to the local resolver...); the inventory learns
  who serves what (RTSP and vendor ports) for device classification;
* local -> remote (or a remote answer seen first, e.g. a UDP reply): the device's destination is the
  remote address and the remote port. New key -> policy verdict -> one `destination` event, and an
  `alert` when unexpected (or when `vendor_cloud: alert`);
* remote -> local TCP SYN (the remote side opened a connection to the device): exposure. One
  `destination` event with `direction: inbound` and alert CW-DEST-100, keyed with proto "tcp-in" and
  the device's port, unless a policy allow rule covers the remote address and the device's port.

Alert rule ids (stable; severities in DESTINATION_RULES):
    CW-DEST-001 unexpected / not_in_policy   medium   no rule, service or baseline covers it
    CW-DEST-002 unexpected / direct_ip       medium   no DNS answer named the address for the device
    CW-DEST-003 unexpected / country         high     destination country denied / not allowed
    CW-DEST-004 unexpected / port            medium   allowed destination, port not allowed
    CW-DEST-005 unexpected / catalogue       medium   a vendor-cloud service the policy forbids
    CW-DEST-006 vendor-cloud / catalogue     low      vendor-cloud contact with `vendor_cloud: alert`
    CW-DEST-100 inbound exposure             high     a remote host opened a TCP connection to a device

Counters: `destination_verdicts[(verdict, reason, device vendor)]` once per new key, `alerts[(rule,
severity)]` per alert. Flow tags set for other analyzers: `verdict`, `verdict_reason`, `dest_name`,
`service`.

Persistence (when the context has a `store`): keys already in `store.load_destination_keys()` are not
reported again; new keys and last-seen updates are batched and written every 10 s of capture time
and at the end with `store.record_destination(device, dest_ip, dest_port, proto, info, ts)` (info on
the first write; later writes only widen last_seen). The inventory and the policy's learning state
are flushed at the same moments.
"""

from __future__ import annotations

from typing import Any

from agent.catalogue import PROTO_NAME, ServiceMatch, proto_text
from agent.inventory import device_key
from agent.policy import DeviceFacts, Verdict
from analyzers.base import Analyzer

TCP_SYN, TCP_ACK = 0x02, 0x10
ICMP_PROTOS = frozenset({1, 58})
# ICMP errors (unreachable, time exceeded, ...) answer someone else's packet: not a destination choice.
ICMP_ERRORS = {1: frozenset({3, 4, 5, 11, 12}), 58: frozenset({1, 2, 3, 4})}
UNSPECIFIED = frozenset({"0.0.0.0", "::"})  # noqa: S104 - addresses compared, never bound
RTSP_PORT = 554
FLUSH_INTERVAL = 10.0  # capture seconds between batched store writes
DEFAULT_MAX_KEYS = 250_000

DESTINATION_RULES: dict[str, tuple[str, str]] = {
    # rule id: (severity, message)
    "CW-DEST-001": ("medium", "unexpected destination: not covered by the policy"),
    "CW-DEST-002": ("medium", "unexpected destination: direct IP connection without a DNS lookup"),
    "CW-DEST-003": ("high", "unexpected destination: country not allowed"),
    "CW-DEST-004": ("medium", "unexpected destination: port not allowed for this destination"),
    "CW-DEST-005": ("medium", "vendor cloud service not allowed by the policy"),
    "CW-DEST-006": ("low", "vendor cloud contact"),
    "CW-DEST-100": ("high", "inbound connection from outside the camera network"),
}
RULE_FOR_REASON = {
    "not_in_policy": "CW-DEST-001",
    "direct_ip": "CW-DEST-002",
    "country": "CW-DEST-003",
    "port": "CW-DEST-004",
    "catalogue": "CW-DEST-005",
}


def _unicast(ip: str) -> bool:
    if ip in UNSPECIFIED or ip == "255.255.255.255":
        return False
    first = ip.split(".", 1)[0]
    if "." in ip and first.isdigit() and 224 <= int(first) <= 239:
        return False
    return not ip.lower().startswith("ff")


def _payload_service(flow: Any, cat: Any) -> ServiceMatch | None:
    """The service analyzers.traffic.cloud_p2p recognised in the flow's first payload (it runs
    before this analyzer): stronger evidence than a distinctive port, weaker than a DNS name."""
    if flow.tags.get("service_evidence") != "payload":
        return None
    svc = cat.services.get(flow.tags.get("service"))
    if svc is None:
        return None
    return ServiceMatch(svc, "payload", str(flow.tags.get("service_signature") or svc.name))


KNOWN_RULES: tuple[tuple[str, str], ...] = tuple((rid, sev) for rid, (sev, _msg) in DESTINATION_RULES.items())


class DestinationAnalyzer(Analyzer):
    NAME = "destinations"
    FLOW_EVENTS = True
    KNOWN_RULES = KNOWN_RULES

    def setup(self, ctx: Any) -> None:
        super().setup(ctx)
        opts = (getattr(ctx.config, "analyzer_options", None) or {}).get(self.NAME, {})
        self.max_keys = int(opts.get("max_keys", DEFAULT_MAX_KEYS))
        self.store = getattr(ctx, "store", None)
        # key -> (verdict, reason, name, service) once judged in this run; None for keys restored
        # from the store (judged silently, without a second event, when next seen).
        self.seen: dict[tuple[str, str, int, str], tuple[str, str, str | None, str | None] | None] = {}
        # key -> [info or None, first_ts, last_ts] awaiting the next store flush
        self.pending: dict[tuple[str, str, int, str], list[Any]] = {}
        self.next_flush: float | None = None
        self.dropped_keys = 0
        if self.store is not None:
            for key in self.store.load_destination_keys() or ():
                self.seen[(str(key[0]), str(key[1]), int(key[2]), str(key[3]))] = None
            if ctx.inventory is not None:
                ctx.inventory.load(self.store)
            if ctx.policy is not None:
                ctx.policy.load_state(self.store)

    # --- flows ----------------------------------------------------------------------------------

    def flow_start(self, flow: Any, pkt: Any) -> None:
        ctx = self.ctx
        ts = flow.first_ts
        if ctx.policy is not None:
            ctx.policy.note_time(ts)
        src_local = ctx.is_local(flow.src_ip)
        dst_local = ctx.is_local(flow.dest_ip)
        if src_local and dst_local:
            self._local_flow(flow, pkt)
            return
        if not src_local and not dst_local:
            return
        icmp = flow.proto in ICMP_PROTOS
        if icmp and flow.src_port in ICMP_ERRORS[flow.proto]:
            return
        proto = PROTO_NAME.get(flow.proto) or proto_text(flow.proto)
        inbound = False
        if src_local:
            mac, ip, remote_ip = flow.src_mac, flow.src_ip, flow.dest_ip
            # ICMP flows carry (type, code) in the port fields: key on the type.
            remote_port = flow.src_port if icmp else flow.dest_port
        else:
            mac, ip, remote_ip = flow.dest_mac, flow.dest_ip, flow.src_ip
            remote_port = flow.src_port
            if flow.proto == 6 and pkt is not None and pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
                # The remote side opened a TCP connection: exposure, keyed on the device's port.
                inbound, remote_port, proto = True, flow.dest_port, "tcp-in"
        if not _unicast(ip):
            return  # to a multicast / broadcast group: no device to judge for
        inv = ctx.inventory
        dev = inv.observe(mac, ip, ts, flow.vlan) if inv is not None else None
        dkey = dev.key if dev is not None else device_key(mac, ip)
        key = (dkey, remote_ip, remote_port, proto)
        flow.tags["_cw_dest_key"] = key
        known = key in self.seen
        prior = self.seen.get(key)
        if prior is not None:
            self._tag(flow, prior)
            self._touch(key, ts)
        else:
            verdict = self._judge(flow, dev, dkey, mac, ip, remote_ip, remote_port, proto, inbound, ts)
            info = (
                verdict.verdict,
                verdict.reason,
                verdict.name,
                verdict.service.name if verdict.service else None,
            )
            self._tag(flow, info)
            if known:  # restored from the store: already reported in an earlier run
                self.seen[key] = info
                self._touch(key, ts)
            else:
                self._remember(key, info, ts)
                self._report(flow, pkt, dev, dkey, ip, key, verdict, inbound, ts)
        if inv is not None:
            inv.publish(ctx, ts=ts, pkt=pkt, flow=flow)

    def flow_end(self, flow: Any) -> None:
        key = flow.tags.get("_cw_dest_key")
        devices = flow.tags.get("_cw_local_devs") or ()
        if key is not None:
            self._touch(key, flow.last_ts)
            devices = (key[0],)
        inv = self.ctx.inventory
        if inv is None:
            return
        for dkey in devices:
            dev = inv.get(dkey)
            if dev is not None:
                dev.counters["packets"] += flow.pkts_toserver + flow.pkts_toclient
                dev.counters["bytes"] += flow.bytes_toserver + flow.bytes_toclient

    def _local_flow(self, flow: Any, pkt: Any) -> None:
        """Both ends local: learn services offered on the camera network (for device classes)."""
        inv = self.ctx.inventory
        if inv is None:
            return
        ts = flow.first_ts
        # A DHCP client's 0.0.0.0 is not an address, and broadcast / multicast "servers" are not
        # devices: leave both to the protocol analyzers (which see the identity facts too).
        client = (
            inv.observe(flow.src_mac, flow.src_ip, ts, flow.vlan) if flow.src_ip not in UNSPECIFIED else None
        )
        server = inv.observe(flow.dest_mac, flow.dest_ip, ts, flow.vlan) if _unicast(flow.dest_ip) else None
        flow.tags["_cw_local_devs"] = tuple(d.key for d in (client, server) if d is not None)
        if flow.proto == 6 and client is not None and server is not None and client is not server:
            inv.note_server_port(server.key, "tcp", flow.dest_port)
            if flow.dest_port == RTSP_PORT:
                inv.note_rtsp_client(client.key, server.key)
        inv.publish(self.ctx, ts=ts, pkt=pkt, flow=flow)

    # --- judging --------------------------------------------------------------------------------

    def _judge(
        self,
        flow: Any,
        dev: Any,
        dkey: str,
        mac: str | None,
        ip: str,
        remote_ip: str,
        remote_port: int,
        proto: str,
        inbound: bool,
        ts: float,
    ) -> Verdict:
        ctx = self.ctx
        facts = DeviceFacts.from_device(dev, mac, ip, tuple(flow.vlan))
        geo = ctx.geo
        country = geo.country(remote_ip) if geo is not None else None
        policy = ctx.policy
        if inbound:
            # Only an explicit allow rule for the remote address (CIDR) and the device's port
            # accepts exposure; inbound connections are never learnt into the baseline.
            allowed = (
                policy.inbound_rule(facts, remote_ip, remote_port, "tcp") if policy is not None else None
            )
            if allowed is not None:
                return allowed
            group = policy.group_for(facts).name if policy is not None else "defaults"
            return Verdict("unexpected", "not_in_policy", group, "inbound", None)
        names = ctx.dns.names_for(dkey, remote_ip, ts) if ctx.dns is not None else []
        service = None
        cat = ctx.catalogue
        if cat is not None:
            family = dev.family if dev is not None and not dev.vendor_weak else None
            for n in names:
                service = cat.service_for_domain(n)
                if service is not None:
                    break
            if service is None:
                service = _payload_service(flow, cat)
            if service is None:
                # Distinctive ports attribute only unnamed (direct IP) destinations.
                service = cat.service_for(None, remote_ip, remote_port, proto, family, port_only=not names)
        if policy is None:
            reason = "direct_ip" if not names else "not_in_policy"
            if service is not None:
                return Verdict(
                    "vendor-cloud", "catalogue", "defaults", f"catalogue:{service.name}", None, service
                )
            return Verdict("unexpected", reason, "defaults", None, names[0] if names else None)
        return policy.evaluate(
            device=dkey,
            dest_ip=remote_ip,
            dest_port=remote_port,
            proto=proto,
            names=names,
            country=country,
            service=service,
            now=ts,
            facts=facts,
        )

    def _report(
        self,
        flow: Any,
        pkt: Any,
        dev: Any,
        dkey: str,
        ip: str,
        key: tuple[str, str, int, str],
        v: Verdict,
        inbound: bool,
        ts: float,
    ) -> None:
        ctx = self.ctx
        remote_ip = key[1]
        asn = ctx.geo.asn(remote_ip) if ctx.geo is not None else None
        country = ctx.geo.country(remote_ip) if ctx.geo is not None else None
        mac = dev.mac if dev is not None else None
        vendor = (dev.vendor if dev is not None else None) or "unknown"
        body: dict[str, Any] = {}
        if mac:
            body["device"] = mac
        body.update(
            {
                "verdict": v.verdict,
                "reason": v.reason,
                "direction": "inbound" if inbound else "outbound",
                "device_ip": ip,
                "device_vendor": dev.vendor if dev is not None else None,
                "device_class": dev.device_class if dev is not None else None,
                "dest_ip": remote_ip,
                "dest_port": key[2],
                "proto": key[3],
                "dns_name": v.name,
                "direct_ip": v.name is None and not inbound,
                "service": v.service.name if v.service else None,
                "service_category": v.service.category if v.service else None,
                "service_vendor": v.service.vendor if v.service else None,
                "service_evidence": v.service.evidence if v.service else None,
                "country": country,
                "asn": asn.number if asn is not None else None,
                "as_org": asn.org if asn is not None else None,
                "group": v.group,
                "rule": v.rule,
            }
        )
        ctx.emit("destination", body, ts=ts, flow=flow, pkt=pkt)
        ctx.counters.destination_verdicts[(v.verdict, v.reason, vendor)] += 1
        counts = dev.counters if dev is not None else None
        if counts is not None:
            counts["destinations"] += 1
        rule_id = None
        if inbound and v.verdict == "unexpected":
            rule_id, category = "CW-DEST-100", "exposure"
        elif v.verdict == "unexpected":
            rule_id, category = RULE_FOR_REASON.get(v.reason, "CW-DEST-001"), "unexpected-destination"
            if counts is not None:
                counts["unexpected_destinations"] += 1
        elif v.notify:
            rule_id, category = "CW-DEST-006", "vendor-cloud"
        if rule_id is None:
            return
        severity, message = DESTINATION_RULES[rule_id]
        where = v.name or remote_ip
        alert = {
            "rule_id": rule_id,
            "severity": severity,
            "message": f"{message}: {dkey} -> {where} {key[3]}/{key[2]}",
            "category": category,
            "device": mac,
            "verdict": v.verdict,
            "reason": v.reason,
            "dest_ip": remote_ip,
            "dest_port": key[2],
            "proto": key[3],
            "dns_name": v.name,
            "service": v.service.name if v.service else None,
            "country": country,
            "group": v.group,
            "rule": v.rule,
        }
        ctx.emit("alert", alert, ts=ts, flow=flow, pkt=pkt)
        ctx.counters.alerts[(rule_id, severity)] += 1
        if counts is not None:
            counts["alerts"] += 1

    # --- bookkeeping ----------------------------------------------------------------------------

    @staticmethod
    def _tag(flow: Any, info: tuple[str, str, str | None, str | None]) -> None:
        flow.tags["verdict"], flow.tags["verdict_reason"] = info[0], info[1]
        flow.tags["dest_name"], flow.tags["service"] = info[2], info[3]

    def _remember(
        self, key: tuple[str, str, int, str], info: tuple[str, str, str | None, str | None], ts: float
    ) -> None:
        if len(self.seen) >= self.max_keys:
            # Forget the oldest key: if seen again it is reported again (bounded memory wins).
            del self.seen[next(iter(self.seen))]
            self.dropped_keys += 1
        self.seen[key] = info
        verdict, reason, name, service = info
        self.pending[key] = [
            {"verdict": verdict, "reason": reason, "dns_name": name, "service": service},
            ts,
            ts,
        ]

    def _touch(self, key: tuple[str, str, int, str], ts: float) -> None:
        entry = self.pending.get(key)
        if entry is None:
            entry = self.pending[key] = [None, ts, ts]
        if entry[1] is None or ts < entry[1]:
            entry[1] = ts
        if entry[2] is None or ts > entry[2]:
            entry[2] = ts

    def tick(self, now: float) -> None:
        if self.next_flush is None:
            self.next_flush = now + FLUSH_INTERVAL
        elif now >= self.next_flush:
            self.flush()
            self.next_flush = now + FLUSH_INTERVAL

    def done(self) -> None:
        self.flush()

    def flush(self) -> int:
        """Write pending destinations, devices and learning state to the store."""
        ctx = self.ctx
        store = self.store
        if store is None:
            self.pending.clear()
            return 0
        written = 0
        for (device, ip, port, proto), (info, first, last) in self.pending.items():
            if info is not None:
                store.record_destination(device, ip, port, proto, info, first)
                written += 1
                if last is not None and last != first:
                    store.record_destination(device, ip, port, proto, {}, last)
            elif last is not None:
                store.record_destination(device, ip, port, proto, {}, last)
        self.pending.clear()
        if ctx.inventory is not None:
            ctx.inventory.flush(store)
        if ctx.policy is not None:
            ctx.policy.flush(store)
        return written
