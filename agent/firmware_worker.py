"""Firmware carved from the wire, analysed off the capture path.

`FirmwareWorker.submit(data, meta)` writes the image to a private temp file and queues
`analyzers.firmware.scanner.scan_image` on it in a one-process pool (the scanner's sandboxed
worker: no network, private temp dir). The capture thread never waits: `poll()` returns the
summaries that are ready, in submission order; `drain()` waits for all of them (end of a replay).
Only a small summary dict crosses the process boundary, never the full report.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import shutil
import tempfile
from collections import Counter, deque
from pathlib import Path
from typing import Any

TOP_FINDINGS = 5
MAX_CONTAINERS = 10
SEVERITY_ORDER = ("info", "low", "medium", "high", "critical")


def summarise(report: Any) -> dict[str, Any]:
    """The parts of an ImageReport an `firmware` event carries (plain JSON types)."""
    by_sev: Counter[str] = Counter(f.severity.label for f in report.findings)
    top = sorted(report.findings, key=lambda f: (-int(f.severity), f.rule_id, f.path))[:TOP_FINDINGS]
    max_sev = report.max_severity()
    return {
        "sha256": report.sha256,
        "size": report.size,
        "hash_verdict": report.hash_verdict,
        "max_severity": max_sev.label if max_sev is not None else None,
        "findings_by_severity": {s: by_sev[s] for s in SEVERITY_ORDER if by_sev[s]},
        "findings_total": len(report.findings),
        "top_findings": [
            {"rule_id": f.rule_id, "severity": f.severity.label, "message": f.message[:200], "path": f.path}
            for f in top
        ],
        "containers": sorted({c.handler for c in report.containers})[:MAX_CONTAINERS],
        "error": report.error,
    }


def scan_summary(path: str, rule_dirs: list[str]) -> dict[str, Any]:
    """Runs in the worker process: scan one image and summarise the report."""
    from analyzers.firmware.scanner import ScanOptions, scan_image

    # one process only: the capture path must keep the other CPUs (no TLSH/YARA-X helpers)
    options = ScanOptions(rule_dirs=[Path(d) for d in rule_dirs], use_binwalk=False, member_workers=0)
    return summarise(scan_image(path, options, extract_name=None))


class FirmwareWorker:
    """One background process scanning carved images; at most `max_pending` queued at a time."""

    def __init__(
        self,
        *,
        sandbox: bool = True,
        rule_dirs: list[str] | None = None,
        max_pending: int = 8,
        in_process: bool = False,
    ) -> None:
        self.sandbox = sandbox
        self.rule_dirs = list(rule_dirs or [])
        self.max_pending = max_pending
        self.in_process = in_process  # tests / debugging: scan synchronously in this process
        self._pool: cf.ProcessPoolExecutor | None = None
        self._pending: deque[tuple[cf.Future[dict[str, Any]], Any, str]] = deque()
        self._tmp: str | None = None
        self.submitted = 0
        self.dropped = 0  # queue full: the image was not scanned

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, data: bytes | bytearray | memoryview, meta: Any) -> bool:
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return False
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="camwatch-carved-")
        self.submitted += 1
        path = os.path.join(self._tmp, f"carved-{self.submitted:06d}.bin")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        future: cf.Future[dict[str, Any]]
        if self.in_process:
            future = cf.Future()
            try:
                future.set_result(scan_summary(path, self.rule_dirs))
            except Exception as exc:  # a scanner bug must not stop the capture
                future.set_exception(exc)
        else:
            future = self._executor().submit(scan_summary, path, self.rule_dirs)
        self._pending.append((future, meta, path))
        return True

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            from analyzers.firmware.scanner import make_pool

            self._pool = make_pool(1, self.sandbox)
        return self._pool

    def poll(self) -> list[tuple[Any, dict[str, Any]]]:
        """Finished analyses, in submission order (stops at the first one still running)."""
        out = []
        while self._pending and self._pending[0][0].done():
            out.append(self._finish(*self._pending.popleft()))
        return out

    def drain(self, timeout: float | None = 900.0) -> list[tuple[Any, dict[str, Any]]]:
        """Wait for every queued analysis (end of a replay)."""
        out = []
        while self._pending:
            future, meta, path = self._pending.popleft()
            with contextlib.suppress(Exception):  # _finish reports the failure
                future.result(timeout=timeout)
            out.append(self._finish(future, meta, path))
        return out

    def _finish(self, future: cf.Future[dict[str, Any]], meta: Any, path: str) -> tuple[Any, dict[str, Any]]:
        try:
            summary = future.result(timeout=0)
        except Exception as exc:
            summary = {"error": f"analysis failed: {type(exc).__name__}: {exc}"[:300]}
        with contextlib.suppress(OSError):
            os.unlink(path)
        return meta, summary

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
