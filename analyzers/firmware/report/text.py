"""Human summary for the terminal. Member names and evidence are hostile: control characters (ANSI
escape sequences included) are escaped so a crafted file name cannot rewrite the operator's screen."""

from __future__ import annotations

from analyzers.firmware.model import ImageReport, Severity

from .common import SEVERITIES_DESC, safe_text, severity_counts

MAX_LISTED = 12


def summary(reports: list[ImageReport]) -> str:
    failed = sum(1 for r in reports if r.error)
    totals = severity_counts(f for r in reports for f in r.findings)
    lines = [
        f"camwatch firmware scan: {len(reports)} image(s), {failed} failed; findings: "
        + ", ".join(f"{totals[s.label]} {s.label}" for s in SEVERITIES_DESC)
    ]
    for r in reports:
        counts = severity_counts(r.findings)
        worst = r.max_severity()
        head = (
            f"\n{safe_text(r.path)}  [{worst.label.upper() if worst is not None else 'NO FINDINGS'}]"
            f"  sha256 {r.sha256[:16]}…  {r.hash_verdict}"
        )
        lines.append(head)
        if r.error:
            lines.append(f"  analysis failed: {safe_text(r.error)}")
        lines.append("  findings: " + ", ".join(f"{counts[s.label]} {s.label}" for s in SEVERITIES_DESC))
        integ = r.integrity or {}
        if integ:
            signed = integ.get("signed")
            signed_txt = "unknown" if signed is None else ("yes" if signed else "no")
            bits = [f"signed: {signed_txt}"]
            if integ.get("signature") and integ.get("signature") != "unknown":
                bits.append(safe_text(integ["signature"]))
            if integ.get("forgeable"):
                bits.append("forgeable")
            if integ.get("region_lock_risk"):
                bits.append(f"region lock risk ({safe_text(integ.get('language'))})")
            if integ.get("downgrade"):
                bits.append(f"DOWNGRADE from {safe_text(integ.get('installed_version'))}")
            if integ.get("encrypted"):
                bits.append("encrypted parts not analysable")
            lines.append("  integrity: " + "; ".join(bits))
        private = [k for k in r.keys if k.get("private")]
        if r.keys or r.certificates:
            lines.append(
                f"  crypto: {len(private)} private key(s), {len(r.keys) - len(private)} public key(s), "
                f"{len(r.certificates)} certificate(s)"
            )
        notable = [f for f in r.findings if f.severity > Severity.INFO]
        for f in notable[:MAX_LISTED]:
            where = safe_text(f.path or "<image>")
            at = f"@0x{f.offset:x}" if f.offset is not None else ""
            lines.append(f"  [{f.severity.label:8}] {f.rule_id} {where}{at}: {safe_text(f.message)}")
            if f.evidence:
                lines.append(f"             evidence: {safe_text(f.evidence)}")
        if len(notable) > MAX_LISTED:
            lines.append(f"  … {len(notable) - MAX_LISTED} more above info (see the JSON/HTML report)")
        info = len(r.findings) - len(notable)
        if info:
            lines.append(f"  ({info} info finding(s) not listed)")
    return "\n".join(lines) + "\n"
