"""JSON report (schema in docs/firmware-report.md): a versioned envelope around ImageReport.to_dict()."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import json
import math
from typing import Any

from analyzers.firmware.model import ImageReport

from .common import SCHEMA_VERSION, max_severity_label, severity_counts


def _default(obj: Any) -> Any:
    # handler metadata is free-form: make anything json can't encode explicit instead of failing
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"base64": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, enum.Enum):
        return obj.name.lower()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, (dt.datetime, dt.date)):
        return obj.isoformat()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return repr(obj)


def _finite(obj: Any) -> Any:
    """JSON has no NaN/Infinity: turn them into null so strict parsers accept the file."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def image_dict(report: ImageReport) -> dict[str, Any]:
    d = report.to_dict()
    d["max_severity"] = max_severity_label(report)
    d["finding_counts"] = severity_counts(report.findings)
    return d


def document(reports: list[ImageReport], generated_at: dt.datetime | None = None) -> dict[str, Any]:
    now = generated_at or dt.datetime.now(dt.UTC)
    all_findings = [f for r in reports for f in r.findings]
    return _finite(
        {
            "schema_version": SCHEMA_VERSION,
            "generator": "camwatch firmware analyser",
            "generated_at": now.isoformat().replace("+00:00", "Z"),
            "summary": {
                "images": len(reports),
                "failed": sum(1 for r in reports if r.error),
                "findings": severity_counts(all_findings),
                "known_bad": sum(1 for r in reports if r.hash_verdict == "known-bad"),
            },
            "images": [image_dict(r) for r in reports],
        }
    )


def dumps(reports: list[ImageReport]) -> str:
    return (
        json.dumps(document(reports), indent=2, default=_default, ensure_ascii=True, allow_nan=False) + "\n"
    )
