"""Firmware report writers: JSON (versioned schema, docs/firmware-report.md), self-contained HTML with an
entropy plot, a Prometheus textfile, and a terminal summary."""

from __future__ import annotations

import sys

from analyzers.firmware.model import ImageReport

from . import html as _html
from . import jsonout, prom, text
from .common import SCHEMA_VERSION, atomic_write_text

__all__ = ["SCHEMA_VERSION", "summary_text", "write_html", "write_json", "write_prom"]


def write_json(reports: list[ImageReport], dest: str) -> None:
    """JSON document to `dest` ("-" = stdout); files are written atomically."""
    doc = jsonout.dumps(reports)
    if dest == "-":
        sys.stdout.write(doc)
        sys.stdout.flush()
    else:
        atomic_write_text(dest, doc)


def write_html(reports: list[ImageReport], path: str) -> None:
    """Self-contained HTML report (no scripts, no external assets)."""
    atomic_write_text(path, _html.render(reports))


def write_prom(reports: list[ImageReport], path: str) -> None:
    """Prometheus textfile (own CollectorRegistry; atomic temporary file + rename)."""
    prom.write(reports, path)


def summary_text(reports: list[ImageReport]) -> str:
    return text.summary(reports)
