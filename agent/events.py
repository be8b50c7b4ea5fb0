"""EVE-style NDJSON events: building records (`build_event`) and writing them (`EventWriter`).

Each record is one compact JSON object per line, in the shape Suricata's EVE output made familiar
(timestamp, event_type, flow_id, the 5-tuple, community_id, and a nested object named after the event
type), so Filebeat/Elastic/Splunk/jq pipelines built for EVE accept camwatch's output. The schema of
every event type is in docs/events.md and docs/events.schema.json.

Events are per device / destination / DNS answer / alert, never per packet, but building stays cheap:
plain dicts in a fixed key order, one `json.dumps` per event.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from communityid.error import Error as CommunityIdError

from agent.errors import CamwatchError, StorageError
from agent.model import PROTO_NAMES, mac_text

if TYPE_CHECKING:
    from agent.model import Flow, Packet
    from agent.stats import Counters

# Event types camwatch emits today; the metrics collector pre-initialises its per-type counter
# with these. New types need a schema entry in docs/events.schema.json and a line here.
EVENT_TYPES = ("device", "destination", "dns", "alert", "stats", "update", "firmware", "cloud")

_PORT_PROTOS = frozenset({6, 17, 132})  # TCP, UDP, SCTP carry ports
_ICMP_PROTOS = frozenset({1, 58})  # ICMP / ICMPv6 carry type/code in the flow's port fields


_TAIL_CHUNK = 65536  # bytes read per step when looking for the last newline of a torn file

_MAX_TS = 253402300799.0  # 9999-12-31T23:59:59Z: the last second with a 4-digit year


def rfc3339(ts: float) -> str:
    """Capture time as RFC 3339 UTC with microseconds: 2025-03-02T10:15:04.512311+00:00.

    A damaged capture can carry any timestamp; values outside 1970..9999 (or NaN) are clamped so
    one bad record header cannot stop the event stream."""
    if not 0.0 <= ts <= _MAX_TS:  # also catches NaN
        ts = _MAX_TS if ts > _MAX_TS else 0.0
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="microseconds")


def _tuple_fields(
    event: dict[str, Any], proto: int, src_ip: str, src_port: int, dest_ip: str, dest_port: int
) -> None:
    if src_ip:
        event["src_ip"] = src_ip
    if proto in _PORT_PROTOS:
        event["src_port"] = src_port
    if dest_ip:
        event["dest_ip"] = dest_ip
    if proto in _PORT_PROTOS:
        event["dest_port"] = dest_port
    event["proto"] = PROTO_NAMES.get(proto, str(proto))
    if proto in _ICMP_PROTOS:
        event["icmp_type"] = src_port
        event["icmp_code"] = dest_port


def build_event(
    event_type: str,
    body: dict[str, Any],
    *,
    ts: float,
    flow: Flow | None = None,
    pkt: Packet | None = None,
    in_iface: str | None = None,
    pcap_filename: str | None = None,
) -> dict[str, Any]:
    """One EVE-style record.

    Key order is fixed (golden files compare bytes): timestamp, event_type, flow_id, community_id,
    in_iface, pcap_filename, vlan, src_ip, src_port, dest_ip, dest_port, proto, icmp_type/icmp_code,
    app_proto, ether (non-IP frames only), then `body` under the key `event_type`.

    The tuple comes from `flow` (originator orientation) when given, else from `pkt`. flow_id and
    community_id come from `flow`, or from the packet's flow. Fields without a value are omitted.
    """
    event: dict[str, Any] = {"timestamp": rfc3339(ts), "event_type": event_type}
    ids = flow if flow is not None else (pkt.flow if pkt is not None else None)
    if ids is not None:
        event["flow_id"] = ids.flow_id
        if ids.src_ip and ids.dest_ip:
            # The library refuses some tuples (agent.flowid has no SCTP case yet): losing the
            # correlation id is better than losing the event.
            with contextlib.suppress(CommunityIdError):
                event["community_id"] = ids.community_id
    if in_iface:
        event["in_iface"] = in_iface
    if pcap_filename:
        event["pcap_filename"] = pcap_filename
    if flow is not None:
        if flow.vlan:
            event["vlan"] = list(flow.vlan)
        _tuple_fields(event, flow.proto, flow.src_ip, flow.src_port, flow.dest_ip, flow.dest_port)
        app_proto = flow.tags.get("app_proto")
        if app_proto:
            event["app_proto"] = app_proto
    elif pkt is not None:
        if pkt.vlan:
            event["vlan"] = list(pkt.vlan)
        if pkt.ip_version:
            _tuple_fields(event, pkt.proto, pkt.src_ip, pkt.src_port, pkt.dest_ip, pkt.dest_port)
        else:
            # Non-IP frames (SADP, LLDP...) have no tuple; the MACs and EtherType identify them.
            event["ether"] = {
                "src_mac": mac_text(pkt.src_mac),
                "dest_mac": mac_text(pkt.dest_mac),
                "ether_type": pkt.ethertype,
            }
    event[event_type] = body
    return event


def alert_body(rule_id: str, severity: str, message: str, category: str, **extra: Any) -> dict[str, Any]:
    """The nested `alert` object: rule_id, severity, message, category, then any extra fields."""
    return {"rule_id": rule_id, "severity": severity, "message": message, "category": category, **extra}


def _json_default(value: Any) -> Any:
    """JSON for the few non-JSON types analyzers are likely to put in a body."""
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address | Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"event field of type {type(value).__name__} is not JSON-serialisable")


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_json_default)


def to_json(event: dict[str, Any]) -> str:
    """Compact, ASCII-only JSON (non-ASCII from the wire is \\u-escaped, so lines are always valid
    UTF-8 whatever a device sent)."""
    return _ENCODER.encode(event)


class EventWriter:
    """Appends events as NDJSON to a file, stdout ("-"), an open text stream, or nowhere (None).

    A file is written through its own O_APPEND descriptor, one `write()` per event, so `tail -f` and
    log shippers see each event at once and nothing sits in a user-space buffer when the process is
    killed. The file holds only complete lines for a reader that splits on newlines:

    * a write that fails part-way (disk full) is cut back off the file before the error is raised;
    * an unterminated last line (only a kill during the `write()` itself can leave one) is removed
      the next time a writer opens the file; until then readers that consume only newline-terminated
      lines (Filebeat, Vector, `tail -F | jq`) never see it.

    `flush()` (called at every state-store commit) also fdatasync()s the file, so the events a
    commit covers are on disk before the commit. A write failure raises `StorageError` and sets
    `failed`. `counters`, when given, counts every event by type (also when there is no sink), which
    the metrics collector publishes.
    """

    def __init__(self, dest: str | Path | TextIO | None, *, counters: Counters | None = None) -> None:
        self.dest = dest
        self.counters = counters
        self._owned = False
        self._stream: TextIO | None = None
        self._fd: int | None = None  # files we open: raw descriptor, unbuffered
        self._regular = False
        self.failed = False
        self.lines = 0
        self._open()

    def _open(self) -> None:
        dest = self.dest
        if dest is None:
            self._stream = None
        elif isinstance(dest, str | Path):
            if str(dest) == "-":
                self._stream = sys.stdout
            else:
                path = Path(dest)
                try:
                    if path.parent != Path():
                        path.parent.mkdir(parents=True, exist_ok=True)
                    # Read access too for a regular file: the torn-tail check reads its end.
                    access = os.O_WRONLY if path.exists() and not path.is_file() else os.O_RDWR
                    fd = os.open(path, access | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
                except OSError as exc:
                    raise CamwatchError(f"{path}: cannot open event log: {exc.strerror or exc}") from None
                self._fd = fd
                self._owned = True
                try:
                    self._regular = stat.S_ISREG(os.fstat(fd).st_mode)
                    if self._regular:
                        self._drop_torn_tail(fd, path)
                except OSError as exc:
                    self._fd = None
                    os.close(fd)
                    raise CamwatchError(f"{path}: cannot open event log: {exc.strerror or exc}") from None
        else:
            self._stream = dest

    @staticmethod
    def _drop_torn_tail(fd: int, path: Path) -> None:
        """Cut an unterminated last line (a run killed inside write()) so the next event starts
        on a line of its own. Only a tail that looks like the start of an event is removed; any
        other unterminated text is kept and closed with a newline."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        start = size
        while start > 0:
            chunk_start = max(0, start - _TAIL_CHUNK)
            chunk = os.pread(fd, start - chunk_start, chunk_start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                start = chunk_start + nl + 1
                break
            start = chunk_start
        if os.pread(fd, 2, start) == b'{"':
            os.ftruncate(fd, start)
            print(
                f"camwatch: {path}: removed an incomplete last line ({size - start} bytes) "
                "left by an interrupted run",
                file=sys.stderr,
            )
        else:
            os.write(fd, b"\n")

    @property
    def enabled(self) -> bool:
        return self._fd is not None or self._stream is not None

    def write(self, event: dict[str, Any]) -> None:
        """Write one already-built event."""
        if self.counters is not None:
            self.counters.events[event.get("event_type", "unknown")] += 1
        if self._fd is not None:
            self._write_fd(self._fd, (to_json(event) + "\n").encode("ascii"))
            self.lines += 1
            return
        stream = self._stream
        if stream is None:
            return
        try:
            stream.write(to_json(event) + "\n")
            # Foreign streams (stdout to a pipe) are block-buffered; flush per line so a consumer
            # like `jq` sees events as they happen.
            stream.flush()
        except OSError as exc:
            self.failed = True
            raise self._storage_error("cannot write event", exc) from None
        self.lines += 1

    def _write_fd(self, fd: int, data: bytes) -> None:
        written = 0
        try:
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError as exc:
            self.failed = True
            if written and self._regular:
                # Take the partial line back off: readers must never see half an event. The file
                # size (not a remembered offset) is the reference, so a copytruncate by logrotate
                # in between cannot make us extend the file.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, max(0, os.fstat(fd).st_size - written))
            raise self._storage_error("cannot write event", exc) from None

    def emit(
        self,
        event_type: str,
        body: dict[str, Any],
        *,
        ts: float,
        flow: Flow | None = None,
        pkt: Packet | None = None,
        in_iface: str | None = None,
        pcap_filename: str | None = None,
    ) -> dict[str, Any]:
        """Build and write one event; returns it (e.g. to store alerts as findings)."""
        event = build_event(
            event_type, body, ts=ts, flow=flow, pkt=pkt, in_iface=in_iface, pcap_filename=pcap_filename
        )
        self.write(event)
        return event

    def flush(self) -> None:
        """Make what was written durable: fdatasync() a file (nothing is buffered in the process),
        flush a stream."""
        try:
            if self._fd is not None:
                if self._regular:
                    os.fdatasync(self._fd)
            elif self._stream is not None:
                self._stream.flush()
        except OSError as exc:
            self.failed = True
            raise self._storage_error("cannot write event", exc) from None

    def reopen(self) -> None:
        """Close and reopen an owned file (after logrotate moved it); other sinks just flush."""
        if self._owned:
            self.close()
            self._open()
        else:
            self.flush()

    def close(self) -> None:
        """Flush, and close the file if this writer opened it; safe to call twice."""
        fd, self._fd = self._fd, None
        stream, self._stream = self._stream, None
        try:
            if fd is not None:
                try:
                    if self._regular and not self.failed:
                        os.fdatasync(fd)
                finally:
                    os.close(fd)
            elif stream is not None:
                stream.flush()
        except OSError as exc:
            self.failed = True
            raise self._storage_error("cannot write event", exc) from None
        finally:
            self._owned = False

    def _storage_error(self, what: str, exc: OSError) -> StorageError:
        return StorageError(f"{self._name()}: {what}: {describe_os_error(exc)}")

    def _name(self) -> str:
        if isinstance(self.dest, str | Path):
            return "<stdout>" if str(self.dest) == "-" else str(self.dest)
        return getattr(self.dest, "name", "<event stream>")

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def describe_os_error(exc: OSError) -> str:
    """Lower-case reason of a write failure; a full disk is always spelt "no space left on device"."""
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded (no space left for this user)"
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]
