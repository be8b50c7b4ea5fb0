"""Helpers shared by the report writers: safe text for hostile strings, counts, atomic writes."""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable

from analyzers.firmware.model import Finding, ImageReport, Severity

SCHEMA_VERSION = "1.0"
SEVERITIES_DESC = tuple(sorted(Severity, reverse=True))
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def safe_text(value: object, keep_newlines: bool = False) -> str:
    """Text from the image (member names, evidence) made inert for a terminal or an HTML/JSON sink:
    C0/C1 controls (ANSI escapes!) and lone surrogates become \\xNN / \\uNNNN escapes."""
    text = value if isinstance(value, str) else str(value)

    def esc(m: re.Match[str]) -> str:
        ch = m.group(0)
        if keep_newlines and ch in "\n":
            return ch
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    text = _CONTROL.sub(esc, text)
    return text.replace("\n", "\\n") if not keep_newlines else text


def severity_counts(findings: Iterable[Finding]) -> dict[str, int]:
    counts = Counter(f.severity for f in findings)
    return {s.label: counts.get(s, 0) for s in SEVERITIES_DESC}


def max_severity_label(report: ImageReport) -> str | None:
    sev = report.max_severity()
    return sev.label if sev is not None else None


def atomic_write_text(path: str, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same directory plus rename, so readers
    never see a half-written report."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".camwatch-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
