"""Terminal output for `camwatch devices` and `camwatch findings`: aligned plain-text tables or JSON.

Values come from the network (model names, DHCP host names, DNS names), so every cell is stripped
of control characters before printing: a device must not be able to move the cursor or recolour
the operator's terminal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from agent.store import StateStore

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
MESSAGE_WIDTH = 100


def clean(value: Any) -> str:
    """One printable line for a cell: '-' for missing values, control characters escaped."""
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, list | tuple | set | frozenset):
        value = ",".join(str(v) for v in value)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else "?", str(value))


def fmt_time(ts: Any) -> str:
    if not isinstance(ts, int | float) or isinstance(ts, bool) or ts <= 0:
        return "-"
    try:
        return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "-"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in (list(headers), *rows):
        cells = [cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _device_ip(rec: dict[str, Any]) -> Any:
    return rec.get("ip") or rec.get("ips") or rec.get("ipv4")


def print_devices(store: StateStore, as_json: bool, out: TextIO) -> None:
    """The device inventory, one row per MAC, with its number of distinct destinations."""
    devices = store.load_devices()
    dest_counts = store.destination_counts()
    if as_json:
        records = []
        for mac, rec in sorted(devices.items()):
            records.append({**rec, "mac": mac, "destinations": dest_counts.get(mac, 0)})
        out.write(json.dumps(records, indent=2, sort_keys=True, default=str) + "\n")
        return
    if not devices:
        out.write(f"No devices recorded yet in {store.path}.\n")
        return
    headers = (
        "MAC",
        "IP",
        "VENDOR",
        "CLASS",
        "MODEL",
        "FIRMWARE",
        "FIRST SEEN (UTC)",
        "LAST SEEN (UTC)",
        "DESTS",
    )
    rows = []
    for mac, rec in sorted(devices.items()):
        rows.append(
            (
                clean(mac),
                clean(_device_ip(rec)),
                clean(rec.get("vendor")),
                clean(rec.get("class", rec.get("device_class"))),
                clean(rec.get("model")),
                clean(rec.get("firmware") or rec.get("firmware_version")),
                fmt_time(rec.get("first_seen")),
                fmt_time(rec.get("last_seen")),
                str(dest_counts.get(mac, 0)),
            )
        )
    out.write(render_table(headers, rows))
    out.write(f"{len(rows)} device{'s' if len(rows) != 1 else ''}\n")


def print_findings(store: StateStore, as_json: bool, severity: str | None, out: TextIO) -> None:
    """Findings, newest first, optionally only those at or above `severity`."""
    findings = store.list_findings(severity_at_least=severity)
    if as_json:
        out.write(json.dumps(findings, indent=2, sort_keys=True, default=str) + "\n")
        return
    if not findings:
        scope = f" at severity {severity} or above" if severity else ""
        out.write(f"No findings{scope} in {store.path}.\n")
        return
    headers = ("TIME (UTC)", "SEVERITY", "RULE", "DEVICE", "SOURCE", "DESTINATION", "MESSAGE")
    rows = []
    for f in findings:
        dest = f.get("dest_ip")
        if dest and f.get("dest_port") is not None:
            dest = f"[{dest}]:{f['dest_port']}" if ":" in dest else f"{dest}:{f['dest_port']}"
        message = clean(f.get("message"))
        if len(message) > MESSAGE_WIDTH:
            message = message[: MESSAGE_WIDTH - 3] + "..."
        rows.append(
            (
                fmt_time(f.get("ts")),
                clean(f.get("severity")),
                clean(f.get("rule_id")),
                clean(f.get("device")),
                clean(f.get("src_ip")),
                clean(dest),
                message,
            )
        )
    out.write(render_table(headers, rows))
    out.write(f"{len(rows)} finding{'s' if len(rows) != 1 else ''}\n")
