"""Firmware update channels on the wire, and the images they carry (docs/update-channels.md).

Channels (rules/update-channels.yaml): Hikvision ISAPI updateFirmware / onlineUpgrade, Dahua
upgrade.cgi / upgrader.cgi, XMeye `POST /list` version checks, Xiongmai DVRIP upgrade messages
1520/1522, TLS connections to known upgrade hosts (SNI), and any HTTP, FTP or TFTP transfer whose
name or first bytes look like firmware (rules/update-patterns.yaml, agent.carving.sniff_firmware).

How packets get here: the first payload packet of every TCP flow (HTTP request line, TLS
ClientHello), TCP ports of FTP control and DVRIP, UDP 69. An HTTP flow is then followed
(`ctx.follow`) and reassembled (agent.reassembly) into an HttpCarver; FTP data connections and TFTP
server ports are predicted with `ctx.expect`. Carved images are hashed, checked against the
known-good/bad lists and scanned in a worker process (agent.firmware_worker).

Events: `update` once per transfer or channel fact, then `firmware` when the scan finishes (at the
latest at done()). Alerts: UPDATE_RULES. Counters: update_events[(channel, verdict)],
firmware_carved[verdict].
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from agent.carving import (
    FtpTracker,
    HttpCarver,
    TftpTracker,
    Transfer,
    match_update_filename,
    sniff_firmware,
)
from agent.catalogue import BUNDLED_RULES, parse_yaml
from agent.errors import ConfigError
from agent.inventory import device_key
from agent.reassembly import ConversationTable, ReassemblyBudget, TcpConversation
from analyzers.base import Analyzer

CHANNELS_FILE = "update-channels.yaml"
MiB = 1 << 20
DEFAULT_MAX_CARVE = 64 * MiB
DEFAULT_MIN_FIRMWARE = 1024  # content-sniffed bodies smaller than this are not images
EXPECT_WINDOW = 60.0  # capture seconds a predicted FTP/TFTP flow may take to appear
HTTP_METHODS = (b"GET ", b"PUT ", b"POST ", b"HEAD ")
# Bodies of these types are never firmware: the flow stops being followed at such a response.
STREAMING_TYPES = ("multipart/x-mixed-replace", "video/", "audio/")
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-www-form-urlencoded", "image/")
DVRIP_HEADER = struct.Struct("<BB2xII2xHI")
TCP_SYN, TCP_ACK = 0x02, 0x10

UPDATE_RULES: dict[str, tuple[str, str]] = {
    "CW-UPD-001": (
        "medium",
        "firmware or upgrade command pushed to a device by a host not in update_sources",
    ),
    "CW-UPD-002": ("medium", "device pulled firmware from a host that is not a known update source"),
    "CW-UPD-FW-KNOWN-BAD": ("critical", "firmware on the wire matches a known-bad hash"),
    "CW-UPD-FW-CRITICAL": ("critical", "firmware on the wire has critical findings"),
    "CW-UPD-FW-HIGH": ("high", "firmware on the wire has high-severity findings"),
}
KNOWN_RULES = tuple((rid, sev) for rid, (sev, _m) in UPDATE_RULES.items())
PUSH_KINDS = frozenset({"push", "command"})


@dataclass(frozen=True, slots=True)
class HttpRule:
    id: str
    channel: str
    kind: str
    methods: frozenset[str]
    paths: re.Pattern[str]
    body_contains: tuple[bytes, ...]
    version_field: str | None

    def matches(self, method: str | None, path: str) -> bool:
        if self.methods and (method or "").upper() not in self.methods:
            return False
        return bool(self.paths.match(path))


@dataclass(frozen=True, slots=True)
class ChannelRules:
    http: tuple[HttpRule, ...]
    dvrip_ports: frozenset[int]
    dvrip_start: frozenset[int]
    dvrip_data: frozenset[int]
    tftp_ports: frozenset[int]
    ftp_ports: frozenset[int]
    upgrade_hosts: re.Pattern[str] | None
    update_sources: tuple[str, ...]


KINDS = frozenset({"push", "command", "query", "check", "pull"})


def _glob_regex(patterns: list[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(str(x).lower())})" for x in patterns))


def load_channels(path: Path | str) -> ChannelRules:
    """Parse and validate an update-channels file (errors name the file and the key)."""
    p = str(path)
    try:
        raw = parse_yaml(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(p, "http", f"cannot read: {exc}") from None
    if not isinstance(raw, dict) or raw.get("version") != 1:
        raise ConfigError(p, "version", "expected version: 1")
    rules = []
    for i, e in enumerate(raw.get("http") or []):
        key = f"http[{i}]"
        if not isinstance(e, dict) or not e.get("id") or not e.get("paths"):
            raise ConfigError(p, key, "expected a mapping with id and paths")
        if e.get("kind") not in KINDS:
            raise ConfigError(p, f"{key}.kind", f"expected one of {', '.join(sorted(KINDS))}")
        regex = _glob_regex([str(x) for x in e["paths"]])
        assert regex is not None
        rules.append(
            HttpRule(
                str(e["id"]),
                str(e.get("channel") or "http"),
                str(e["kind"]),
                frozenset(str(m).upper() for m in e.get("methods") or []),
                regex,
                tuple(str(b).encode("latin-1") for b in e.get("body_contains") or []),
                str(e["version_field"]) if e.get("version_field") else None,
            )
        )
    dv = raw.get("dvrip") or {}
    sources = tuple(str(s) for s in raw.get("update_sources") or [])
    for j, s in enumerate(sources):
        try:
            ipaddress.ip_network(s, strict=False)
        except ValueError:
            raise ConfigError(p, f"update_sources[{j}]", f"not an address or CIDR: {s!r}") from None

    def ports(value: Any, key: str) -> frozenset[int]:
        try:
            return frozenset(int(x) for x in value or [])
        except (TypeError, ValueError):
            raise ConfigError(p, key, "expected a list of numbers") from None

    return ChannelRules(
        tuple(rules),
        ports(dv.get("ports"), "dvrip.ports"),
        ports(dv.get("upgrade_start"), "dvrip.upgrade_start"),
        ports(dv.get("upgrade_data"), "dvrip.upgrade_data"),
        ports(raw.get("tftp_ports"), "tftp_ports"),
        ports(raw.get("ftp_ports"), "ftp_ports"),
        _glob_regex([str(h) for h in raw.get("upgrade_hosts") or []]),
        sources,
    )


def channels_path(rules_dir: Path | str | None) -> Path:
    if rules_dir:
        candidate = Path(rules_dir) / CHANNELS_FILE
        if candidate.exists():
            return candidate
    return BUNDLED_RULES / CHANNELS_FILE


_BUNDLED = load_channels(BUNDLED_RULES / CHANNELS_FILE)


def tls_sni(payload: memoryview | bytes) -> str | None:
    """server_name of a TLS ClientHello in one record (None when absent or not a ClientHello)."""
    b = bytes(payload[:4096])
    if len(b) < 43 or b[0] != 0x16 or b[5] != 0x01:
        return None
    try:
        pos = 9 + 2 + 32
        pos += 1 + b[pos]
        pos += 2 + int.from_bytes(b[pos : pos + 2], "big")
        pos += 1 + b[pos]
        end = min(len(b), pos + 2 + int.from_bytes(b[pos : pos + 2], "big"))
        pos += 2
        while pos + 4 <= end:
            etype = int.from_bytes(b[pos : pos + 2], "big")
            elen = int.from_bytes(b[pos + 2 : pos + 4], "big")
            if etype == 0 and pos + 9 <= end:
                nlen = int.from_bytes(b[pos + 7 : pos + 9], "big")
                name = b[pos + 9 : pos + 9 + nlen]
                if b[pos + 6] == 0 and name and all(0x20 < c < 0x7F for c in name):
                    return name.decode("ascii").lower().rstrip(".")
                return None
            pos += 4 + elen
    except IndexError:
        return None
    return None


class _NullSink:
    """Discards a direction nobody reads (TcpConversation would otherwise collect it)."""

    def data(self, chunk: memoryview) -> None:
        pass

    def gap(self, length: int) -> None:
        pass

    def end(self) -> None:
        pass


_NULL_SINK = _NullSink()


class _DvripUpgrade:
    """StreamSink for the client->device direction of a DVRIP connection after an upgrade start:
    concatenates the bodies of the upgrade-data messages into one image."""

    def __init__(self, owner: UpdateAnalyzer, flow: Any, start_ts: float) -> None:
        self.owner = owner
        self.flow = flow
        self.ts = start_ts
        self.buf = bytearray()
        self.pending = bytearray()
        self.need = 0  # body bytes of the current data message still to copy
        self.copying = False
        self.started = False  # an upgrade-start message was seen
        self.missing = 0
        self.size = 0
        self.done = False

    def data(self, chunk: memoryview) -> None:
        buf = self.pending
        buf += chunk
        pos = 0
        rules = self.owner.rules
        cap = self.owner.max_carve
        while pos < len(buf):
            if self.need:
                take = min(self.need, len(buf) - pos)
                if self.copying:
                    room = cap - len(self.buf)
                    if room > 0:
                        self.buf += buf[pos : pos + min(take, room)]
                    self.size += take
                pos += take
                self.need -= take
                continue
            if len(buf) - pos < DVRIP_HEADER.size:
                break
            head, _ver, _sess, _seq, msg, length = DVRIP_HEADER.unpack_from(buf, pos)
            if head != 0xFF:
                # Lost framing: the rest of the connection cannot be split reliably.
                self.end()
                buf.clear()
                return
            pos += DVRIP_HEADER.size
            self.need = length
            if msg in rules.dvrip_start:
                self.started = True
                self.ts = self.owner._now or self.ts
            elif self.started and self.size and msg not in rules.dvrip_data:
                self.end()  # the upload is over; later messages are ordinary commands
            self.copying = self.started and not self.done and msg in rules.dvrip_data
        del buf[:pos]

    def gap(self, length: int) -> None:
        self.missing += length
        self.pending.clear()
        self.need = 0
        self.copying = False

    def end(self) -> None:
        if self.done or not self.started:
            return
        self.done = True
        t = Transfer(protocol="dvrip", direction="toserver", method="OPSystemUpgrade")
        t.size = self.size
        t.data = self.buf
        t.first_bytes = bytes(self.buf[:8192])
        t.bytes_missing = self.missing
        t.complete = self.missing == 0 and self.size > 0
        t.truncated = self.size > len(self.buf)
        if t.complete and not t.truncated:
            import hashlib

            t.sha256 = hashlib.sha256(self.buf).hexdigest()
        t.firmware = sniff_firmware(t.first_bytes)
        self.owner._dvrip_done(self.flow, t, self.ts)


class UpdateAnalyzer(Analyzer):
    NAME = "updates"
    TCP_PAYLOAD_PACKETS = 1
    TCP_PORTS = _BUNDLED.ftp_ports | _BUNDLED.dvrip_ports
    UDP_PORTS = _BUNDLED.tftp_ports
    FLOW_EVENTS = True
    KNOWN_RULES = KNOWN_RULES

    def setup(self, ctx: Any) -> None:
        super().setup(ctx)
        cfg = getattr(ctx, "config", None)
        opts = (getattr(cfg, "analyzer_options", None) or {}).get(self.NAME, {})
        self.rules, self.sources, self.hashes = self._load_rules()
        self.max_carve = int(opts.get("max_carve", DEFAULT_MAX_CARVE))
        self.min_firmware = int(opts.get("min_firmware_size", DEFAULT_MIN_FIRMWARE))
        self.budget = ReassemblyBudget()
        self.http = ConversationTable(self._http_conversation, max_conversations=256)
        self.ftp_control = ConversationTable(self._ftp_conversation, max_conversations=64)
        self.ftp_trackers: dict[int, tuple[FtpTracker, Any]] = {}
        self.ftp_data: dict[int, TcpConversation] = {}
        self.ftp_expected: set[int] = set()  # id() of expectations already given to ctx.expect
        self.dvrip: dict[int, TcpConversation] = {}
        self.tftp = TftpTracker(self._tftp_transfer, max_carve=self.max_carve)
        self.tftp_flows: dict[tuple[str, int], Any] = {}
        self.reported: set[tuple[Any, ...]] = set()
        self._now = 0.0
        self.scan = bool(opts.get("scan", True))
        self.wait_for_scan = bool(opts.get("wait_for_scan", False))
        self.worker: Any = None
        if self.scan:
            from agent.firmware_worker import FirmwareWorker

            self.worker = FirmwareWorker(
                sandbox=bool(opts.get("sandbox", True)),
                # The scanner always loads the bundled YARA rules; a rules dir that copies them would
                # clash (duplicate ids), so only analyzers.updates.scan_rule_dirs adds more. Hash
                # lists from rules_dir/firmware are applied here, in the capture process.
                rule_dirs=[str(d) for d in opts.get("scan_rule_dirs") or []],
                in_process=bool(opts.get("scan_in_process", False)),
            )

    def reload(self) -> None:
        # Transfers in progress, carving and update events already reported are kept.
        self.rules, self.sources, self.hashes = self._load_rules()

    def _load_rules(self) -> tuple[ChannelRules, list[Any], Any]:
        """Update channels, trusted update sources and firmware hash lists of the configuration."""
        from analyzers.firmware.inspect.engine import BUILTIN_RULE_DIR
        from analyzers.firmware.inspect.hashlist import load_hash_lists

        cfg = getattr(self.ctx, "config", None)
        opts = (getattr(cfg, "analyzer_options", None) or {}).get(self.NAME, {})
        rules_dir = getattr(cfg, "rules_dir", None)
        rules = load_channels(channels_path(rules_dir))
        nets = [*rules.update_sources, *(str(s) for s in opts.get("update_sources") or [])]
        sources = [ipaddress.ip_network(s, strict=False) for s in nets]
        rule_dirs = [BUILTIN_RULE_DIR]
        if rules_dir and (Path(rules_dir) / "firmware").is_dir():
            extra = Path(rules_dir) / "firmware"
            if extra.resolve() != BUILTIN_RULE_DIR.resolve():
                rule_dirs.append(extra)
        return rules, sources, load_hash_lists(rule_dirs)

    # -- dispatch --------------------------------------------------------------------------------
    def packet(self, pkt: Any) -> None:
        flow = pkt.flow
        if flow is None:
            return
        self._now = pkt.ts
        fid = flow.flow_id
        if pkt.proto == 17:
            self._udp(pkt)
            return
        if pkt.proto != 6:
            return
        if self.http.get(flow) is not None:
            self.http.packet(pkt)
            return
        if fid in self.ftp_data:
            self.ftp_data[fid].add_packet(pkt)
            return
        if flow.dest_port in self.rules.ftp_ports or fid in self.ftp_trackers:
            self.ftp_control.packet(pkt)
            self._ftp_expectations(fid, pkt.ts)
            return
        if flow.dest_port in self.rules.dvrip_ports:
            self._dvrip(pkt)
            return
        if flow.followers and self in flow.followers:
            self._expected_tcp(pkt)
            return
        if not pkt.payload_len:
            return
        payload = pkt.payload
        if pkt.from_originator and bytes(payload[:5]).startswith(HTTP_METHODS):
            self.ctx.follow(flow, self)
            self.http.packet(pkt)
        elif payload[0] == 0x16:
            self._sni(flow, pkt, payload)

    def flow_end(self, flow: Any) -> None:
        fid = flow.flow_id
        if self.http.get(flow) is not None:
            self.http.end(flow)
        if fid in self.ftp_trackers:
            self.ftp_control.end(flow)
            self.ftp_trackers.pop(fid, None)
        conv = self.ftp_data.pop(fid, None)
        if conv is not None:
            conv.close()
        conv = self.dvrip.pop(fid, None)
        if conv is not None:
            conv.close()

    def tick(self, now: float) -> None:
        self._now = now
        self.tftp.expire(now)
        if self.worker is not None:
            for meta, summary in self.worker.poll():
                self._firmware_event(meta, summary)

    def done(self) -> None:
        self.http.close()
        self.ftp_control.close()
        for conv in [*self.ftp_data.values(), *self.dvrip.values()]:
            conv.close()
        self.ftp_data.clear()
        self.dvrip.clear()
        self.tftp.close()
        if self.worker is not None:
            for meta, summary in self.worker.drain():
                self._firmware_event(meta, summary)
            self.worker.close()

    # -- HTTP ------------------------------------------------------------------------------------
    def _http_conversation(self, flow: Any) -> TcpConversation:
        carver = HttpCarver(
            lambda t: self._http_transfer(flow, t), max_carve=self.max_carve, want_body=self._want_body
        )
        return TcpConversation(carver.requests, carver.responses, budget=self.budget, flow=flow)

    def _want_body(self, t: Transfer) -> bool:
        ctype = (t.content_type or "").lower()
        if t.status is not None and ctype.startswith(STREAMING_TYPES):
            return False
        if self._http_rule(t) is not None or match_update_filename(t.filename):
            return True
        if t.status is not None and not 200 <= t.status < 300:
            return False
        if ctype.startswith(TEXT_TYPES) or (t.method == "GET" and t.status is None):
            return False
        return t.declared_size is None or t.declared_size >= self.min_firmware

    def _http_rule(self, t: Transfer) -> HttpRule | None:
        try:
            path = unquote(urlsplit(t.uri or "").path).lower()
        except ValueError:
            return None
        for rule in self.rules.http:
            if rule.matches(t.method, path):
                return rule
        return None

    def _http_transfer(self, flow: Any, t: Transfer) -> None:
        ctype = (t.content_type or "").lower()
        if t.status is not None and ctype.startswith(STREAMING_TYPES):
            self.ctx.unfollow(flow, self)  # live video: nothing to carve, stop paying for it
            return
        rule = self._http_rule(t)
        is_request = t.status is None
        if t.extra.get("multipart"):
            flow.tags["_cw_upd_parts"] = flow.tags.get("_cw_upd_parts", 0) + 1
        elif is_request and ctype.startswith("multipart/") and flow.tags.pop("_cw_upd_parts", 0):
            return  # the file parts were reported on their own
        if rule is not None and rule.kind == "pull" and is_request:
            return  # a download rule is reported with its response (the image)
        firmware = self._firmware_id(t)
        if t.status is not None and not 200 <= t.status < 300:
            firmware = None
        if rule is not None:
            # Rules describe requests; a response only matters when it carries an image.
            if not is_request and firmware is None:
                return
            if is_request and rule.body_contains and not any(b in t.first_bytes for b in rule.body_contains):
                return
        elif firmware is None:
            return
        pull = not is_request  # a response body travels server -> client (the device downloads)
        if rule is not None and rule.kind in ("check", "pull"):
            pull = True
        kind = rule.kind if rule is not None else ("pull" if pull else "push")
        if rule is not None and not is_request and rule.kind not in ("pull", "check"):
            kind = "pull"
        # The Host header names the server: the update source only when the device downloads.
        host = t.header("host") if is_request else flow.tags.get("_cw_upd_host")
        if is_request and host:
            flow.tags["_cw_upd_host"] = host
        if not pull:
            host = None
        extra: dict[str, Any] = {}
        if rule is not None and rule.version_field:
            m = re.search(
                rb'"' + re.escape(rule.version_field.encode()) + rb'"\s*:\s*"([^"]{0,80})"', t.first_bytes
            )
            if m:
                extra["version"] = m.group(1).decode("latin-1")
        if t.extra.get("multipart"):
            extra["form_field"] = t.extra.get("form_field")
        channel = rule.channel if rule is not None else "http"
        self._update(
            flow, t, channel, rule.id if rule is not None else None, kind, pull, firmware, host, extra
        )

    def _firmware_id(self, t: Transfer) -> str | None:
        if not t.firmware or t.size <= 0:
            return None
        by_name = match_update_filename(t.filename) == t.firmware
        if not by_name and t.size < self.min_firmware:
            return None  # a magic number in a tiny body is chance, not an image
        return t.firmware

    # -- TLS SNI ---------------------------------------------------------------------------------
    def _sni(self, flow: Any, pkt: Any, payload: memoryview) -> None:
        hosts = self.rules.upgrade_hosts
        if hosts is None:
            return
        name = tls_sni(payload)
        if name is None or not hosts.match(name):
            return
        t = Transfer(protocol="tls", direction="toclient")
        self._update(flow, t, "https", "upgrade-host-sni", "pull", True, None, name, {"sni": name}, pkt=pkt)

    # -- FTP -------------------------------------------------------------------------------------
    def _ftp_conversation(self, flow: Any) -> TcpConversation:
        tracker = FtpTracker(
            flow.src_ip, flow.dest_ip, lambda t: self._ftp_transfer(flow, t), max_carve=self.max_carve
        )
        self.ftp_trackers[flow.flow_id] = (tracker, flow)
        return TcpConversation(tracker.client, tracker.server, budget=self.budget, flow=flow)

    def _ftp_expectations(self, fid: int, ts: float) -> None:
        entry = self.ftp_trackers.get(fid)
        if entry is None:
            return
        tracker, flow = entry
        for e in tracker.expectations:
            if e.ip is None or e.matched or e.command is None or id(e) in self.ftp_expected:
                continue
            self.ftp_expected.add(id(e))
            self.ctx.expect(6, e.ip, e.port, self, ts + EXPECT_WINDOW)
            peer = flow.dest_ip if e.mode == "passive" else flow.src_ip
            if peer != e.ip:  # NAT: the announced address is not the one on the wire
                self.ctx.expect(6, peer, e.port, self, ts + EXPECT_WINDOW)

    def _expected_tcp(self, pkt: Any) -> None:
        flow = pkt.flow
        for tracker, _control in self.ftp_trackers.values():
            e = tracker.match(flow.dest_ip, flow.dest_port)
            if e is None:
                continue
            sink = tracker.data_sink(e)
            conv = (
                TcpConversation(sink, None, budget=self.budget, flow=flow)
                if e.data_from_originator
                else TcpConversation(None, sink, budget=self.budget, flow=flow)
            )
            self.ftp_data[flow.flow_id] = conv
            conv.add_packet(pkt)
            return
        self.ctx.unfollow(flow, self)

    def _ftp_transfer(self, control: Any, t: Transfer) -> None:
        firmware = self._firmware_id(t)
        if firmware is None or t.method not in ("RETR", "STOR", "STOU", "APPE"):
            return
        # RETR: the FTP client downloads (pull); STOR: it uploads to the server (push).
        pull = t.direction == "toclient"
        self._update(control, t, "ftp", None, "pull" if pull else "push", pull, firmware, None, {})

    # -- TFTP ------------------------------------------------------------------------------------
    def _udp(self, pkt: Any) -> None:
        src, dst = pkt.src_ip, pkt.dest_ip
        if not self.tftp.wants(src, pkt.src_port, dst, pkt.dest_port):
            return
        new_request = pkt.dest_port in self.rules.tftp_ports
        if new_request and (src, pkt.src_port) not in self.tftp_flows:
            # The server answers from a new port: follow the flow that will reach the client port.
            self.ctx.expect(17, src, pkt.src_port, self, pkt.ts + EXPECT_WINDOW)
        if new_request:
            self.tftp_flows[(src, pkt.src_port)] = pkt.flow
        self.tftp.packet(src, pkt.src_port, dst, pkt.dest_port, pkt.payload, pkt.ts)

    def _tftp_transfer(self, t: Transfer) -> None:
        client = t.extra.get("client") or [None, None]
        flow = self.tftp_flows.pop((client[0], client[1]), None)
        firmware = self._firmware_id(t)
        if firmware is None or flow is None:
            return
        pull = t.direction == "toclient"  # RRQ: the TFTP client reads
        self._update(flow, t, "tftp", None, "pull" if pull else "push", pull, firmware, None, {})

    # -- DVRIP (Xiongmai) --------------------------------------------------------------------------
    def _dvrip(self, pkt: Any) -> None:
        # Only the client's direction is reassembled (upgrade data flows client -> device); live
        # video in the other direction costs a dict lookup per packet.
        if not pkt.from_originator:
            return
        flow = pkt.flow
        conv = self.dvrip.get(flow.flow_id)
        if conv is not None:
            conv.add_packet(pkt)
            return
        if not pkt.payload_len or "_cw_not_dvrip" in flow.tags:
            return
        if pkt.payload[0] != 0xFF:
            flow.tags["_cw_not_dvrip"] = True
            return
        sink = _DvripUpgrade(self, flow, pkt.ts)
        conv = TcpConversation(sink, _NULL_SINK, budget=self.budget, flow=flow)
        self.dvrip[flow.flow_id] = conv
        conv.add_packet(pkt)

    def _dvrip_done(self, flow: Any, t: Transfer, ts: float) -> None:
        self._update(flow, t, "dvrip", "dvrip-upgrade", "push", False, t.firmware, None, {}, ts=ts)

    # -- verdicts and events -----------------------------------------------------------------------
    def _in_sources(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr.version == n.version and addr in n for n in self.sources)

    def _known_host(self, device: str, ip: str, host: str | None, ts: float) -> str | None:
        """A name for the update source that the upgrade_hosts list or the catalogue vouches for."""
        names = [host.split(":", 1)[0].lower()] if host else []
        dns = getattr(self.ctx, "dns", None)
        if dns is not None:
            names += dns.names_for(device, ip, ts)
        cat = getattr(self.ctx, "catalogue", None)
        for n in names:
            if self.rules.upgrade_hosts is not None and self.rules.upgrade_hosts.match(n):
                return n
            svc = cat.service_for_domain(n) if cat is not None else None
            if svc is not None and svc.service.category == "update":
                return n
        return None

    def _update(
        self,
        flow: Any,
        t: Transfer,
        channel: str,
        rule_id: str | None,
        kind: str,
        pull: bool,
        firmware: str | None,
        host: str | None,
        extra: dict[str, Any],
        *,
        pkt: Any = None,
        ts: float | None = None,
    ) -> None:
        ctx = self.ctx
        ts = ts if ts is not None else (pkt.ts if pkt is not None else self._now or flow.last_ts)
        # Who is updated: the side receiving the image / command. For HTTP, FTP and TFTP the
        # connection originator is the client: a download (pull) goes to it, an upload to the server.
        if t.protocol != "dvrip":
            if pull:
                dev_ip, dev_mac, src_ip, src_port = flow.src_ip, flow.src_mac, flow.dest_ip, flow.dest_port
            else:
                dev_ip, dev_mac, src_ip, src_port = flow.dest_ip, flow.dest_mac, flow.src_ip, flow.src_port
        else:  # dvrip: the client pushes to the device
            dev_ip, dev_mac, src_ip, src_port = flow.dest_ip, flow.dest_mac, flow.src_ip, flow.src_port
        dkey = device_key(dev_mac, dev_ip) or dev_ip
        has_body = t.protocol not in ("tls",) and (firmware is not None or t.size > 0)
        if firmware is None:
            # A channel fact without an image (a command, a query, a check, a TLS session): once
            # per (device, source, rule).
            key = (dkey, src_ip, rule_id, kind, extra.get("version"))
            if key in self.reported:
                return
            if len(self.reported) > 100_000:
                self.reported.clear()
            self.reported.add(key)
        known = self._known_host(dkey, src_ip, host, ts)
        if pull:
            expected = self._in_sources(src_ip) or known is not None
            reason = (
                "update_sources" if self._in_sources(src_ip) else ("known_host" if known else "unknown_host")
            )
        else:
            expected = self._in_sources(src_ip)
            reason = "update_sources" if expected else "not_in_update_sources"
        verdict = "expected" if expected else "unexpected"
        if firmware is None:
            # a command, query or check: the body is not an image, its name and hash say nothing
            t.filename = None
            t.sha256 = None
        hash_verdict = self.hashes.verdict(t.sha256) if t.sha256 else None
        scanning = False
        if firmware is not None and t.kept and t.data and self.worker is not None:
            scanning = True
        body: dict[str, Any] = {}
        if dev_mac and dkey == dev_mac:
            body["device"] = dev_mac
        body.update(
            {
                "channel": channel,
                "rule": rule_id,
                "kind": kind,
                "direction": "pull" if pull else "push",
                "protocol": t.protocol,
                "device_ip": dev_ip,
                "source_ip": src_ip,
                "source_port": src_port,
                "source_name": known or host,
                "method": t.method,
                "uri": t.uri,
                "status": t.status,
                "filename": t.filename,
                "content_type": t.content_type,
                "firmware_format": firmware,
                "size": t.size if has_body else None,
                "declared_size": t.declared_size,
                "complete": t.complete if has_body else None,
                "bytes_missing": t.bytes_missing if has_body else None,
                "sha256": t.sha256,
                "hash_verdict": hash_verdict,
                "verdict": verdict,
                "reason": reason,
                "analysis": ("pending" if scanning else "not-scanned") if firmware is not None else None,
            }
        )
        body.update(extra)
        ctx.emit("update", {k: v for k, v in body.items() if v is not None}, ts=ts, flow=flow, pkt=pkt)
        counters = ctx.counters
        if hasattr(counters, "update_events"):
            counters.update_events[(channel, verdict)] += 1
        # Alerts: one per fact.
        where = f"{src_ip} -> {dkey}"
        # Version checks and queries are recorded (update events), never alerted on their own: the
        # cleartext XMeye check is what every such camera does.
        if not expected and kind in PUSH_KINDS:
            self._alert(
                "CW-UPD-001", f"{where} {rule_id or channel} {t.filename or ''}".rstrip(), flow, ts, body
            )
        elif not expected and kind == "pull" and firmware is not None:
            self._alert("CW-UPD-002", f"{where} {t.filename or t.uri or ''}".rstrip(), flow, ts, body)
        if hash_verdict == "known-bad":
            self._alert("CW-UPD-FW-KNOWN-BAD", f"{t.filename or '?'} sha256 {t.sha256}", flow, ts, body)
        if firmware is None:
            return
        meta = {
            "flow": flow,
            "ts": ts,
            "device": body.get("device"),
            "device_ip": dev_ip,
            "source_ip": src_ip,
            "channel": channel,
            "filename": t.filename,
            "firmware_format": firmware,
            "complete": t.complete,
            "bytes_missing": t.bytes_missing,
            "sha256": t.sha256,
            "hash_verdict": hash_verdict,
        }
        if scanning and self.worker.submit(t.data, meta):
            if self.wait_for_scan:
                for m, summary in self.worker.drain():
                    self._firmware_event(m, summary)
            return
        self._firmware_event(meta, {"error": None, "not_scanned": True})

    def _firmware_event(self, meta: dict[str, Any], summary: dict[str, Any]) -> None:
        flow = meta["flow"]
        ts = meta["ts"]
        complete = bool(meta["complete"])
        hash_verdict = meta["hash_verdict"] or summary.get("hash_verdict") or "unknown"
        max_sev = summary.get("max_severity")
        if summary.get("not_scanned"):
            verdict = "not-scanned"
        elif summary.get("error") and not summary.get("sha256"):
            verdict = "error"
        elif hash_verdict == "known-bad":
            verdict = "known-bad"
        elif max_sev in ("critical", "high"):
            verdict = max_sev
        elif not complete:
            verdict = "incomplete"
        elif max_sev == "medium":
            verdict = "medium"
        elif hash_verdict == "known-good":
            verdict = "known-good"
        else:
            verdict = "clean"
        body: dict[str, Any] = {
            "device": meta.get("device"),
            "device_ip": meta["device_ip"],
            "source_ip": meta["source_ip"],
            "channel": meta["channel"],
            "filename": meta["filename"],
            "firmware_format": meta["firmware_format"],
            "sha256": meta["sha256"] if complete else None,
            # incomplete transfer: hash of the carved copy (holes zero-filled), not of the image
            "carved_sha256": summary.get("sha256") if not complete else None,
            "size": summary.get("size"),
            "complete": complete,
            "bytes_missing": meta["bytes_missing"],
            "hash_verdict": hash_verdict,
            "verdict": verdict,
            "max_severity": max_sev,
            "findings_by_severity": summary.get("findings_by_severity"),
            "findings_total": summary.get("findings_total"),
            "top_findings": summary.get("top_findings"),
            "containers": summary.get("containers"),
            "error": summary.get("error"),
        }
        self.ctx.emit("firmware", {k: v for k, v in body.items() if v is not None}, ts=ts, flow=flow)
        counters = self.ctx.counters
        if hasattr(counters, "firmware_carved"):
            counters.firmware_carved[verdict] += 1
        top = (summary.get("top_findings") or [{}])[0]
        what = f"{meta['filename'] or '?'}: {top.get('rule_id', '')} {top.get('message', '')}".strip()
        if max_sev == "critical":
            self._alert("CW-UPD-FW-CRITICAL", what, flow, ts, body)
        elif max_sev == "high":
            self._alert("CW-UPD-FW-HIGH", what, flow, ts, body)
        if hash_verdict == "known-bad" and meta["hash_verdict"] != "known-bad":
            # only a member matched (the image hash was not on the list)
            self._alert("CW-UPD-FW-KNOWN-BAD", what, flow, ts, body)

    def _alert(self, rule_id: str, detail: str, flow: Any, ts: float, ev: dict[str, Any]) -> None:
        severity, message = UPDATE_RULES[rule_id]
        alert = {
            "rule_id": rule_id,
            "severity": severity,
            "message": f"{message}: {detail}",
            "category": "firmware-update",
            "device": ev.get("device"),
            "channel": ev.get("channel"),
            "source_ip": ev.get("source_ip"),
            "filename": ev.get("filename"),
            "sha256": ev.get("sha256"),
        }
        self.ctx.emit("alert", {k: v for k, v in alert.items() if v is not None}, ts=ts, flow=flow)
        self.ctx.counters.alerts[(rule_id, severity)] += 1
