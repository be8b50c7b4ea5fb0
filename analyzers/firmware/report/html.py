"""Self-contained HTML report: overview, integrity, findings with evidence, an inline-SVG entropy plot,
keys and certificates, containers and the member tree.

Everything that comes from the image (member names, evidence, certificate subjects, metadata) is
hostile input: it goes through `_e()` (control characters neutralised, then HTML-escaped) and the page
carries a Content-Security-Policy that forbids scripts and any network fetch, so even a missed escape
could not run code or phone home. No external assets: styles are inline, the plot is SVG.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

from analyzers.firmware.model import ImageReport, Member

from .common import SEVERITIES_DESC, max_severity_label, safe_text, severity_counts

MAX_TREE_ENTRIES = 5000
MAX_CERT_ROWS = 300
PLOT_W, PLOT_H = 900, 220
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 44, 12, 12, 30

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;padding:0 24px 48px;
color:#1d232b;background:#fbfbfc}
h1{font-size:1.5em;margin:18px 0 4px}
h2{margin-top:36px;border-bottom:2px solid #d0d5dc;padding-bottom:4px;word-break:break-all}
h3{margin-top:22px}
table{border-collapse:collapse;width:100%;margin:6px 0 12px;font-size:.92em}
th,td{border:1px solid #d8dde3;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#eef1f4}
td.path,td.ev,code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em;
word-break:break-all}
.sev{display:inline-block;min-width:62px;text-align:center;border-radius:3px;padding:1px 6px;
font-weight:600;font-size:.85em}
.sev-critical{background:#6b0f1a;color:#fff}
.sev-high{background:#d1342f;color:#fff}
.sev-medium{background:#f0a202;color:#1d232b}
.sev-low{background:#f4e285;color:#1d232b}
.sev-info{background:#cfe3f7;color:#1d232b}
.sev-none{background:#d8f0d2;color:#1d232b}
tr.row-critical td:first-child{border-left:5px solid #6b0f1a}
tr.row-high td:first-child{border-left:5px solid #d1342f}
tr.row-medium td:first-child{border-left:5px solid #f0a202}
tr.row-low td:first-child{border-left:5px solid #e6cf4a}
tr.row-info td:first-child{border-left:5px solid #8fb8e0}
.verdict-known-bad{color:#b00020;font-weight:700}
.verdict-known-good{color:#1b7a1b;font-weight:700}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px}
dl.meta dt{font-weight:600}
dl.meta dd{margin:0;word-break:break-all}
svg.entropy-plot{background:#fff;border:1px solid #d8dde3;max-width:100%;height:auto}
.entropy-line{fill:none;stroke:#1f5fa8;stroke-width:1.2}
.entropy-area{fill:#1f5fa8;fill-opacity:.12;stroke:none}
.threshold{stroke:#d1342f;stroke-dasharray:5 4;stroke-width:1}
.axis{stroke:#6b7480;stroke-width:1}
.grid{stroke:#e3e7ec;stroke-width:1}
svg text{font-size:11px;fill:#4a525c;font-family:sans-serif}
ul.tree{list-style:none;padding-left:16px;margin:2px 0}
ul.tree li{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88em;word-break:break-all}
table.findings td:nth-child(2) code{white-space:nowrap}
.muted{color:#6b7480}
.error{color:#b00020;font-weight:600}
"""


def _e(value: object) -> str:
    """Escape hostile text for HTML element content and quoted attributes."""
    return html.escape(safe_text("" if value is None else value), quote=True)


def _sev_badge(label: str | None) -> str:
    name = label or "none"
    return f'<span class="sev sev-{_e(name)}">{_e(name)}</span>'


def render(reports: list[ImageReport], generated_at: dt.datetime | None = None) -> str:
    now = (generated_at or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # no scripts, no network: only inline styles and data: images are allowed
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>camwatch firmware report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>camwatch firmware report</h1>",
        f'<p class="muted">Generated {_e(now)} &middot; {len(reports)} image(s)</p>',
        _overview(reports),
    ]
    for index, report in enumerate(reports):
        out.append(_image_section(index, report))
    out.append("</body></html>\n")
    return "\n".join(out)


def _overview(reports: list[ImageReport]) -> str:
    rows = []
    head = "".join(f"<th>{_e(s.label)}</th>" for s in SEVERITIES_DESC)
    for index, r in enumerate(reports):
        counts = severity_counts(r.findings)
        cells = "".join(f"<td>{counts[s.label]}</td>" for s in SEVERITIES_DESC)
        status = (
            f'<span class="error">failed: {_e(r.error)}</span>'
            if r.error
            else _sev_badge(max_severity_label(r))
        )
        rows.append(
            f'<tr><td class="path"><a href="#image-{index}">{_e(r.path)}</a></td><td>{status}</td>'
            f'<td class="verdict-{_e(r.hash_verdict)}">{_e(r.hash_verdict)}</td>{cells}</tr>'
        )
    return (
        '<table class="overview"><thead><tr><th>Image</th><th>Max severity</th><th>Hash verdict</th>'
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _image_section(index: int, r: ImageReport) -> str:
    parts = [f'<section class="image" id="image-{index}">', f"<h2>{_e(r.path)}</h2>"]
    meta = [
        ("Size", f"{r.size:,} bytes"),
        ("SHA-256", r.sha256),
        ("TLSH", r.tlsh or "—"),
        ("Hash verdict", r.hash_verdict),
        ("Members", str(len(r.members))),
        ("Unpacked", f"{r.bytes_unpacked:,} bytes"),
        ("Duration", f"{r.duration_seconds:.2f} s"),
    ]
    parts.append(
        '<dl class="meta">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in meta) + "</dl>"
    )
    if r.error:
        parts.append(f'<p class="error">Analysis failed: {_e(r.error)}</p>')
    parts.append(_integrity(r.integrity))
    parts.append(_findings(r))
    parts.append("<h3>Entropy</h3>")
    parts.append(entropy_svg(r.entropy, r.entropy_block_size, r.size, f"entropy-{index}"))
    parts.append(_keys(r))
    parts.append(_containers(r))
    parts.append(_tree(r.members))
    parts.append("</section>")
    return "\n".join(parts)


def _integrity(integrity: dict[str, Any]) -> str:
    if not integrity:
        return '<h3>Integrity</h3><p class="muted">No container verdicts.</p>'
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in integrity.items())
    return f'<h3>Integrity</h3><table class="integrity">{rows}</table>'


def _table(cls: str, head: tuple[str, ...], rows: list[str]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _fmt(value: object) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "—"
    return str(value)


def _findings(r: ImageReport) -> str:
    if not r.findings:
        return '<h3>Findings (0)</h3><p class="muted">No findings.</p>'
    rows = []
    for f in r.findings:
        label = f.severity.label
        offset = "" if f.offset is None else f"0x{f.offset:x}"
        cve = f'<br><span class="muted">{_e(", ".join(f.cve))}</span>' if f.cve else ""
        ref = f'<br><span class="muted">{_e(f.reference)}</span>' if f.reference else ""
        rows.append(
            f'<tr class="finding row-{_e(label)}"><td>{_sev_badge(label)}</td>'
            f"<td><code>{_e(f.rule_id)}</code></td><td>{_e(f.message)}{cve}{ref}</td>"
            f'<td class="path">{_e(f.path or "<image>")}</td><td><code>{_e(offset)}</code></td>'
            f'<td class="ev">{_e(f.evidence)}</td></tr>'
        )
    head = ("Severity", "Rule", "Message", "Path", "Offset", "Evidence")
    return f"<h3>Findings ({len(r.findings)})</h3>" + _table("findings", head, rows)


def entropy_svg(points: list[float], block_size: int, total: int, element_id: str) -> str:
    """Inline SVG line plot of block entropy (0..8 bits/byte) with the 7.0 'encrypted or compressed'
    threshold; x axis in bytes."""
    if not points:
        return '<p class="muted">No entropy profile.</p>'
    w, h = PLOT_W - MARGIN_L - MARGIN_R, PLOT_H - MARGIN_T - MARGIN_B
    n = len(points)

    def x(i: float) -> float:
        return MARGIN_L + (w * i / max(n - 1, 1))

    def y(v: float) -> float:
        return MARGIN_T + h * (1 - max(0.0, min(8.0, v)) / 8.0)

    coords = [f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(points)]
    line = "M" + " L".join(coords)
    area = f"M{x(0):.1f},{y(0):.1f} L" + " L".join(coords) + f" L{x(n - 1):.1f},{y(0):.1f} Z"
    grid = "".join(
        f'<line class="grid" x1="{MARGIN_L}" x2="{MARGIN_L + w}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>'
        f'<text x="{MARGIN_L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>'
        for v in (0, 2, 4, 6, 8)
    )
    span = block_size * n if block_size else total
    ticks = "".join(
        f'<text x="{x((n - 1) * frac):.1f}" y="{PLOT_H - 10}" text-anchor="middle">'
        f"{_e(_size(span * frac))}</text>"
        for frac in (0, 0.25, 0.5, 0.75, 1)
    )
    high = sum(1 for v in points if v > 7.0)
    label = (
        f"Block entropy of the image: {n} blocks of {block_size} bytes; "
        f"{high} block(s) above 7.0 bits/byte (compressed or encrypted)"
    )
    return (
        f'<svg id="{_e(element_id)}" class="entropy-plot" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {PLOT_W} {PLOT_H}" width="{PLOT_W}" height="{PLOT_H}" role="img" '
        f'aria-label="{_e(label)}">'
        f"<title>{_e(label)}</title>{grid}"
        f'<line class="axis" x1="{MARGIN_L}" x2="{MARGIN_L}" y1="{MARGIN_T}" y2="{MARGIN_T + h}"/>'
        f'<line class="axis" x1="{MARGIN_L}" x2="{MARGIN_L + w}" y1="{MARGIN_T + h}" y2="{MARGIN_T + h}"/>'
        f'<path class="entropy-area" d="{area}"/>'
        f'<path class="entropy-line" d="{line}" data-points="{n}"/>'
        f'<line class="threshold" x1="{MARGIN_L}" x2="{MARGIN_L + w}" y1="{y(7.0):.1f}" '
        f'y2="{y(7.0):.1f}"/><text x="{MARGIN_L + w - 4}" y="{y(7.0) - 4:.1f}" text-anchor="end">'
        "7.0: compressed / encrypted</text>"
        f"{ticks}</svg>"
        f'<p class="muted">{_e(label)}.</p>'
    )


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _keys(r: ImageReport) -> str:
    parts = []
    if r.keys:
        rows = []
        for k in r.keys:
            kind = f"{_e(k.get('type'))} {_e(k.get('bits'))}" + (
                f" {_e(k.get('curve'))}" if k.get("curve") else ""
            )
            shared = _fmt(k.get("shared_with")) if k.get("shared_with") else ""
            rows.append(
                f"<tr><td>{'private' if k.get('private') else 'public'}</td><td>{kind}</td>"
                f"<td>{_e(k.get('format'))}</td><td>{_e(_fmt(k.get('encrypted')))}</td>"
                f'<td class="path">{_e(k.get("path") or "<image>")}</td>'
                f"<td><code>0x{int(k.get('offset') or 0):x}</code></td>"
                f'<td class="ev">{_e(k.get("fingerprint_sha256"))}</td><td>{_e(shared)}</td></tr>'
            )
        key_head = ("Kind", "Type", "Format", "Encrypted", "Path", "Offset", "SHA-256 fingerprint", "Also in")
        parts.append(f"<h3>Keys ({len(r.keys)})</h3>" + _table("keys", key_head, rows))
    if r.certificates:
        shown = r.certificates[:MAX_CERT_ROWS]
        rows = [
            f"<tr><td>{_e(c.get('subject'))}</td><td>{_e(c.get('issuer'))}</td>"
            f"<td>{_e(_fmt(c.get('self_signed')))}</td><td>{_e(_fmt(c.get('is_ca')))}</td>"
            f"<td>{_e(c.get('key_type'))} {_e(c.get('key_bits'))}</td><td>{_e(c.get('signature_hash'))}</td>"
            f"<td>{_e(c.get('not_before'))} → {_e(c.get('not_after'))}</td>"
            f"<td>{_e(_fmt(c.get('weak')) if c.get('weak') else '')}</td>"
            f'<td class="path">{_e(c.get("path") or "<image>")}</td></tr>'
            for c in shown
        ]
        head = ("Subject", "Issuer", "Self-signed", "CA", "Key", "Signature hash", "Validity", "Weak", "Path")
        parts.append(f"<h3>Certificates ({len(r.certificates)})</h3>" + _table("certs", head, rows))
        if len(r.certificates) > len(shown):
            parts.append(f'<p class="muted">{len(r.certificates) - len(shown)} more in the JSON report.</p>')
    return "\n".join(parts)


def _containers(r: ImageReport) -> str:
    if not r.containers:
        return ""
    rows = "".join(
        f'<tr><td><code>{_e(c.handler)}</code></td><td class="path">{_e(c.path or "<image>")}</td>'
        f"<td><code>0x{c.offset:x}</code></td><td>{_e(c.size)}</td><td>{_e(c.signature or '—')}</td>"
        f"<td>{_e(_fmt(c.encrypted))}</td></tr>"
        for c in r.containers
    )
    return (
        f'<h3>Containers ({len(r.containers)})</h3><table class="containers"><thead><tr><th>Handler</th>'
        "<th>Path</th><th>Offset</th><th>Size</th><th>Signature</th><th>Encrypted</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _tree(members: list[Member]) -> str:
    """Nested lists built from member paths ('/' directories, '!' nesting levels)."""
    if not members:
        return '<h3>File tree</h3><p class="muted">No members.</p>'
    root: dict[str, Any] = {}
    shown = members[:MAX_TREE_ENTRIES]
    for m in shown:
        node = root
        parts = [p for p in m.path.replace("!/", "!").replace("!", "/!/").split("/") if p] or ["<image>"]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        leaf = node.setdefault(parts[-1], {})
        leaf.setdefault("\0member", m)

    def render_node(node: dict[str, Any]) -> str:
        items = []
        for name in sorted(k for k in node if k != "\0member"):
            child = node[name]
            member: Member | None = child.get("\0member")
            label = "⤷ contents" if name == "!" else name
            info = ""
            if member is not None:
                extra = f" → {member.link_target}" if member.link_target else ""
                info = f' <span class="muted">{_e(member.kind)}, {member.size:,} B{_e(extra)}</span>'
            sub = {k: v for k, v in child.items() if k != "\0member"}
            inner = f'<ul class="tree">{render_node(sub)}</ul>' if sub else ""
            items.append(f"<li>{_e(label)}{info}{inner}</li>")
        return "".join(items)

    note = (
        f'<p class="muted">Showing {len(shown)} of {len(members)} members.</p>'
        if len(members) > len(shown)
        else ""
    )
    return f'<h3>File tree ({len(members)} members)</h3>{note}<ul class="tree">{render_node(root)}</ul>'
