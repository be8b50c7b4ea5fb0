"""Prometheus textfile for a firmware scan (node_exporter textfile collector).

A custom collector builds fresh metric families from the finished reports, registered in its own
CollectorRegistry (so no process/platform metrics leak in), and prometheus_client's
write_to_textfile writes it atomically (temporary file + rename). Labels are bounded: severity (5
values, all pre-initialised to 0), verdict (3 values) and rule (the rule-ID catalogue). Hashes, paths
and image names never become labels.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from analyzers.firmware.model import ImageReport

from .common import SEVERITIES_DESC

VERDICTS = ("known-good", "known-bad", "unknown")


class FirmwareScanCollector:
    def __init__(self, reports: list[ImageReport], timestamp: float | None = None) -> None:
        self._reports = list(reports)
        self._timestamp = time.time() if timestamp is None else timestamp

    def collect(self) -> Iterator[Metric]:
        reports = self._reports
        yield CounterMetricFamily(
            "camwatch_firmware_images_analyzed",
            "Firmware images analysed by this scan (failed ones included).",
            value=len(reports),
        )
        yield CounterMetricFamily(
            "camwatch_firmware_images_failed",
            "Firmware images that could not be analysed at all.",
            value=sum(1 for r in reports if r.error),
        )
        by_sev = Counter(f.severity.label for r in reports for f in r.findings)
        findings = GaugeMetricFamily(
            "camwatch_firmware_findings",
            "Findings of the last scan by severity.",
            labels=["severity"],
        )
        for sev in SEVERITIES_DESC:
            findings.add_metric([sev.label], by_sev.get(sev.label, 0))
        yield findings
        by_rule = Counter(f.rule_id for r in reports for f in r.findings)
        hits = GaugeMetricFamily(
            "camwatch_firmware_rule_hits",
            "Findings of the last scan by rule ID (bounded by the rule catalogue).",
            labels=["rule"],
        )
        for rule, count in sorted(by_rule.items()):
            hits.add_metric([rule], count)
        yield hits
        by_verdict = Counter(r.hash_verdict for r in reports)
        verdicts = GaugeMetricFamily(
            "camwatch_firmware_images_by_verdict",
            "Images of the last scan by hash-list verdict.",
            labels=["verdict"],
        )
        for verdict in VERDICTS:
            verdicts.add_metric([verdict], by_verdict.get(verdict, 0))
        yield verdicts
        yield GaugeMetricFamily(
            "camwatch_firmware_last_scan_timestamp_seconds",
            "Unix time when this scan's results were written.",
            value=self._timestamp,
        )


def registry_for(reports: list[ImageReport], timestamp: float | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FirmwareScanCollector(reports, timestamp))
    return registry


def write(reports: list[ImageReport], path: str) -> None:
    write_to_textfile(path, registry_for(reports))
