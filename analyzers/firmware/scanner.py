"""Scan orchestration: one image -> one ImageReport; many paths -> a process pool of sandboxed workers.

`scan_image` analyses one file in the current process: SHA-256 and TLSH of the image, the recursive
walk (containers, members, limits, extraction), the inspectors' hooks, and the report. `scan_paths`
expands directories, and runs every image in a worker process that has no network (see sandbox.py)
and its own private temp dir; a worker crash or a damaged file yields `report.error` for that image
only. `cross_image` then runs over all reports.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import hashlib
import multiprocessing
import multiprocessing.util
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, runtime_checkable

from analyzers.firmware.handlers import load_handlers
from analyzers.firmware.handlers.base import ContainerHandler
from analyzers.firmware.model import Finding, ImageReport, Limits, Member, Severity
from analyzers.firmware.offload import Offload, RemoteError, can_fork, default_workers
from analyzers.firmware.safety import LIMIT_TIME, Budget, SafeWriter
from analyzers.firmware.sandbox import SandboxStatus, isolate_network, private_tmpdir, remove_tmpdir
from analyzers.firmware.unpack import Walker, WalkOptions, tlsh_digest

Progress = Callable[[int, int, str], None]


@dataclass(slots=True)
class ScanOptions:
    limits: Limits = field(default_factory=Limits)
    rule_dirs: list[Path] = field(default_factory=list)
    installed_version: str | None = None
    extract_dir: Path | None = None
    jobs: int = 1
    use_binwalk: bool = True
    inspect: bool = True  # run the inspectors (YARA, credentials, crypto, integrity)
    sandbox: bool = True  # isolate the workers' network (scan_paths)
    # helper processes per image for TLSH and YARA-X (offload.py); None: the usable CPUs divided
    # among `jobs` parallel images, less the scanning process's own; 0: all in the scanning process
    member_workers: int | None = None


# ---------------------------------------------------------------------------------------- one image

_SESSIONS: dict[tuple[tuple[str, ...], str | None], Any] = {}
_WORKER: dict[str, Any] = {}  # per worker process: sandbox status, private temp dir


class _HardTimeout(BaseException):
    """Raised by SIGALRM when code that does not check the budget overruns the wall-time limit."""


@functools.cache
def _handlers() -> tuple[ContainerHandler, ...]:
    """Built-in and plug-in handlers, looked up once per process."""
    return load_handlers()


def _session(options: ScanOptions) -> Any:
    """One InspectionSession per process and configuration (compiling rules is not free); sessions
    are reused image after image, `finish` resets their per-image state."""
    from analyzers.firmware.inspect import InspectionSession

    key = (tuple(str(p) for p in options.rule_dirs), options.installed_version)
    if key not in _SESSIONS:
        _SESSIONS[key] = InspectionSession(
            extra_rule_dirs=list(options.rule_dirs) or None, installed_version=options.installed_version
        )
    return _SESSIONS[key]


def _read_image(path: Path, limits: Limits) -> bytes:
    """The whole image, or OSError/ValueError with a one-line reason."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("not a regular file")
    if st.st_size == 0:
        raise ValueError("empty file")
    if st.st_size > limits.max_total_bytes:
        raise ValueError(f"{st.st_size} bytes is larger than the {limits.max_total_bytes}-byte limit")
    with open(path, "rb") as fh:
        return fh.read(limits.max_total_bytes + 1)


def scan_image(
    path: str | Path, options: ScanOptions | None = None, *, extract_name: str | None = None
) -> ImageReport:
    """Analyse one image in this process and return its report (never raises for bad input)."""
    options = options or ScanOptions()
    path = Path(path)
    started = time.monotonic()
    report = ImageReport(path=str(path), size=0, sha256="")
    try:
        image = _read_image(path, options.limits)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        report.error = f"{path}: cannot read image: {reason}"
        return report
    report.size = len(image)
    # helpers start on the image's TLSH (the largest single job) while this process hashes the
    # image and compiles the rules
    offload = _start_offload(options, image)
    report.sha256 = hashlib.sha256(image).hexdigest()
    try:
        _scan_loaded(report, image, path, options, extract_name, offload)
    finally:
        if offload is not None:
            offload.close()
    status = _WORKER.get("sandbox")
    if isinstance(status, SandboxStatus):
        report.integrity.setdefault("analysis_sandbox", status.describe())
        if not status.network_isolated:
            report.findings.append(
                Finding(
                    rule_id="CW-SANDBOX-UNAVAILABLE",
                    severity=Severity.INFO,
                    message=f"image analysed without network isolation: {status.detail}",
                    category="sandbox",
                    source="scanner",
                )
            )
    report.duration_seconds = round(time.monotonic() - started, 6)  # µs: a small image takes under 1 ms
    return report


def _start_offload(options: ScanOptions, image: bytes) -> Offload | None:
    """Helper processes for this image's TLSH and YARA-X work, or None to do it all here (one CPU,
    or a multi-threaded process that must not fork)."""
    workers = options.member_workers
    if workers is None:
        workers = (default_workers() + 1) // max(1, options.jobs) - 1
    if workers <= 0 or not can_fork():
        return None
    try:
        return Offload(workers, image, tlsh_digest)
    except OSError:  # no memory or no process slots for helpers: do the work here
        return None


@runtime_checkable
class RuleSetLike(Protocol):
    """What the offload needs from a session's rules (a test double may have none)."""

    rules: Any

    def scan_raw(self, data: bytes) -> Any: ...


def _scan_loaded(
    report: ImageReport,
    image: bytes,
    path: Path,
    options: ScanOptions,
    extract_name: str | None,
    offload: Offload | None,
) -> None:
    """scan_image once the image is in memory: walk, inspect, finish."""
    image_tlsh = offload.submit(memoryview(image), tlsh=True, scan=False) if offload else None
    session = _session(options) if options.inspect else None
    if session is not None:
        session.reset()  # sessions are reused: a previous image that failed mid-way must not leak in
    image_scan = None
    rules = getattr(session, "rules", None)
    if (
        offload is not None
        and isinstance(rules, RuleSetLike)
        and offload.set_rules(rules.rules, rules.scan_raw)
    ):
        image_scan = offload.submit(memoryview(image), tlsh=False, scan=True)
    if image_tlsh is None:
        report.tlsh = tlsh_digest(image)
    budget = Budget(options.limits)
    tmp = Path(_WORKER["tmpdir"]) if "tmpdir" in _WORKER else None
    own_tmp: str | None = None
    if tmp is None:
        own_tmp = private_tmpdir_no_env()
        tmp = Path(own_tmp)
    writer = SafeWriter(options.extract_dir) if options.extract_dir is not None else None
    walker = Walker(
        report,
        _handlers(),
        WalkOptions(limits=options.limits, use_binwalk=options.use_binwalk),
        budget=budget,
        inspector=session,
        writer=writer,
        extract_dir=extract_name or path.name,
        tmpdir=tmp,
        image_file=path,
        offload=offload,
    )
    alarm = _arm_hard_timeout(options.limits.max_seconds)
    try:
        view = memoryview(image)
        walker.walk_image(view)
        top = next((c.handler for c in report.containers if c.path == "" and c.offset == 0), None)
        if not report.containers:
            report.findings.append(
                Finding(
                    rule_id="CW-UNPACK-UNRECOGNISED",
                    severity=Severity.INFO,
                    message="no known container or filesystem found in the image (encrypted, compressed "
                    "with an unknown scheme, or not firmware); raw bytes scanned only",
                    category="container",
                    source="handler",
                )
            )
        if offload is not None and image_tlsh is not None:
            report.tlsh = offload.wait(image_tlsh).tlsh
        if session is not None:
            root = Member(path="", size=len(image), sha256=report.sha256, tlsh=report.tlsh, container=top)
            if offload is not None and image_scan is not None:
                result = offload.wait(image_scan)
                if result.error is not None:
                    raise result.error
                hits = session.rules.hits_from_raw(result.hits or [])
                report.findings.extend(session.inspect_member(root, image, hits))
            else:
                report.findings.extend(session.inspect_member(root, image))
            session.finish(report, image)
    except _HardTimeout:
        report.findings.append(
            Finding(
                rule_id=LIMIT_TIME,
                severity=Severity.LOW,
                message=f"wall-time limit of {options.limits.max_seconds:g} s per image reached (hard stop)",
                category="limit",
                source="limits",
            )
        )
    except Exception as exc:  # one image's failure must not stop the others
        kind = exc.type_name if isinstance(exc, RemoteError) else type(exc).__name__
        report.error = f"{path}: analysis failed: {kind}: {exc}"[:300]
    finally:
        _disarm_hard_timeout(alarm)
        if own_tmp is not None:
            remove_tmpdir(own_tmp)


def private_tmpdir_no_env() -> str:
    """A private temp dir for an in-process scan (does not change this process's TMPDIR)."""
    import tempfile

    return tempfile.mkdtemp(prefix="camwatch-fw-")


def _arm_hard_timeout(seconds: float) -> bool:
    """SIGALRM backstop (worker main thread only): parsers that loop without checking the budget."""
    if threading.current_thread() is not threading.main_thread() or "sandbox" not in _WORKER:
        return False

    def fire(_signum: int, _frame: FrameType | None) -> None:
        raise _HardTimeout()

    signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds + 15.0)
    return True


def _disarm_hard_timeout(armed: bool) -> None:
    if armed:
        signal.setitimer(signal.ITIMER_REAL, 0)


# ---------------------------------------------------------------------------------------- workers


def _init_worker(sandbox: bool) -> None:
    status = isolate_network() if sandbox else SandboxStatus(False, "none", "disabled by configuration")
    _WORKER["sandbox"] = status
    tmp = private_tmpdir()
    _WORKER["tmpdir"] = tmp
    # workers end through os._exit: multiprocessing finalizers (not atexit) remove the directory
    multiprocessing.util.Finalize(None, remove_tmpdir, args=(tmp,), exitpriority=10)


def _worker_scan(path: str, options: ScanOptions, extract_name: str | None) -> ImageReport:
    return scan_image(path, options, extract_name=extract_name)


def worker_probe() -> dict[str, Any]:
    """Runs inside a worker: what the sandbox looks like from there (used by tests and `--debug`)."""
    import errno
    import socket

    status = _WORKER.get("sandbox")
    described = status.describe() if isinstance(status, SandboxStatus) else "not a worker"
    result: dict[str, Any] = {"sandbox": described, "tmpdir": _WORKER.get("tmpdir")}
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(("127.0.0.1", 9))
        result["connect_errno"] = 0
    except OSError as exc:
        result["connect_errno"] = exc.errno
        result["connect_error"] = errno.errorcode.get(exc.errno or 0, str(exc))
    finally:
        probe.close()
    return result


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork is cheap and safe while this process has a single thread; otherwise (the agent daemon)
    # forkserver avoids forking a process whose other threads may hold locks
    if threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver")


def make_pool(jobs: int, sandbox: bool = True) -> cf.ProcessPoolExecutor:
    return cf.ProcessPoolExecutor(
        max_workers=max(1, jobs), mp_context=_pool_context(), initializer=_init_worker, initargs=(sandbox,)
    )


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; directories recursively (sorted, regular files only, links not followed)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir() and not path.is_symlink():
            for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
                dirnames.sort()
                for name in sorted(filenames):
                    full = Path(dirpath) / name
                    if full.is_file() and not full.is_symlink():
                        out.append(full)
        else:
            out.append(path)
    return out


def _extract_names(paths: Sequence[Path]) -> list[str]:
    """Distinct per-image directory names under --extract (basename, '-2', '-3'... on clashes)."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        base = path.name or "image"
        count = seen.get(base, 0) + 1
        seen[base] = count
        names.append(base if count == 1 else f"{base}-{count}")
    return names


def scan_paths(
    paths: Iterable[str | Path], options: ScanOptions | None = None, *, progress: Progress | None = None
) -> list[ImageReport]:
    """Scan every image under `paths` in sandboxed worker processes; reports in input order."""
    options = options or ScanOptions()
    files = expand_paths(paths)
    names = _extract_names(files)
    reports: list[ImageReport | None] = [None] * len(files)
    done = 0

    def record(index: int, report: ImageReport) -> None:
        nonlocal done
        reports[index] = report
        done += 1
        if progress is not None:
            progress(done, len(files), str(files[index]))

    pending = list(range(len(files)))
    if pending:
        pending = _run_pool(pending, files, names, options, options.jobs, record)
    # after a worker crash, rerun the unfinished images one per pool to pin the culprit
    for index in pending:
        left = _run_pool([index], files, names, options, 1, record)
        for lost in left:
            record(lost, _crashed(files[lost]))
    final = [r if r is not None else _crashed(files[i]) for i, r in enumerate(reports)]
    if options.inspect:
        from analyzers.firmware.inspect import cross_image

        cross_image([r for r in final if r.error is None])
    return final


def _crashed(path: Path) -> ImageReport:
    return ImageReport(path=str(path), size=0, sha256="", error=f"{path}: analysis worker crashed")


def _run_pool(
    indexes: list[int],
    files: Sequence[Path],
    names: Sequence[str],
    options: ScanOptions,
    jobs: int,
    record: Callable[[int, ImageReport], None],
) -> list[int]:
    """Run `indexes` in one pool; returns those left unfinished because the pool broke."""
    unfinished: list[int] = []
    with make_pool(min(jobs, len(indexes)), options.sandbox) as pool:
        futures = {pool.submit(_worker_scan, str(files[i]), options, names[i]): i for i in indexes}
        for future in cf.as_completed(futures):
            index = futures[future]
            try:
                record(index, future.result())
            except BrokenProcessPool:
                unfinished.append(index)
            except Exception as exc:  # e.g. an unpicklable report: keep the others
                report = ImageReport(path=str(files[index]), size=0, sha256="")
                report.error = f"{files[index]}: analysis worker failed: {type(exc).__name__}: {exc}"[:300]
                record(index, report)
    return sorted(unfinished)
