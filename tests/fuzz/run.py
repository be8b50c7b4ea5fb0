"""Run every fuzz target under atheris for a fixed budget; keep crashing inputs as regressions.

``python -m tests.fuzz.run [--seconds S] [--runs N] [--only SUBSTR] [--area traffic|firmware]``

Each target (``tests/fuzz/<area>/fuzz_<name>.py``) runs in its own subprocess
(``tests.fuzz.atheris_main``), so a target that fails to import or crashes never stops the
others. After a crash the target is restarted on its grown corpus for the rest of its budget
(at most ``--max-restarts`` times), so one shallow bug does not hide the deeper ones.
Crashing / timing-out / out-of-memory inputs are copied to
``tests/fuzz/regressions/<area>/<name>/<sha1>.bin`` and replayed by
``tests/unit/test_fuzz_regressions.py``. Results are printed as a table and merged into
``bench/out/fuzz/results.json``. Exit status 1 when any target found something or failed.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FUZZ_DIR = Path(__file__).resolve().parent
AREAS = ("traffic", "firmware")
DEFAULT_SECONDS = 60
DEFAULT_RSS_LIMIT_MB = 2048
EXIT_IMPORT_ERROR = 3  # mirrors tests.fuzz.atheris_main.EXIT_IMPORT_ERROR
ARTIFACT_KINDS = {"crash": "crash", "timeout": "timeout", "oom": "oom", "leak": "crash"}
# Extra wall-clock time a segment may take beyond its fuzzing budget (imports, seeding, shutdown).
WALL_SLACK_S = 300

_STAT_RE = re.compile(r"^stat::(\w+):\s+(\d+)", re.MULTILINE)
_COV_RE = re.compile(r"\bcov: (\d+)\b")
_FT_RE = re.compile(r"\bft: (\d+)\b")
_STATUS_EXECS_RE = re.compile(r"^#(\d+)\s", re.MULTILINE)
_ARTIFACT_RE = re.compile(r"Test unit written to (\S+)")
_FRAME_RE = re.compile(r'^  File "([^"]+", line \d+)', re.MULTILINE)
_DONE_RE = re.compile(r"^Done (\d+) runs in (\d+) second", re.MULTILINE)


@dataclass(frozen=True)
class Target:
    """One fuzz target module."""

    area: str
    name: str
    module: str

    @property
    def key(self) -> str:
        return f"{self.area}/{self.name}"


@dataclass
class Finding:
    """One saved input that crashed, hung or exhausted memory."""

    kind: str
    file: str
    summary: str
    signature: str = ""


@dataclass
class Result:
    """What one target's fuzzing run measured."""

    area: str
    target: str
    status: str = "ok"  # ok | findings | import-error | error
    executions: int = 0
    seconds: float = 0.0
    exec_per_s: float = 0.0
    coverage: int | None = None
    features: int | None = None
    corpus: int = 0
    crashes: int = 0
    timeouts: int = 0
    ooms: int = 0
    peak_rss_mb: int | None = None
    segments: int = 0
    findings: list[Finding] = field(default_factory=list)
    error: str = ""
    finished_at: str = ""


def discover_targets(area: str | None = None, only: str | None = None) -> list[Target]:
    """All ``fuzz_*.py`` modules under the area packages, filtered by ``only`` (substring)."""
    targets = []
    for area_name in AREAS:
        if area and area != area_name:
            continue
        directory = FUZZ_DIR / area_name
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("fuzz_*.py")):
            name = path.stem.removeprefix("fuzz_")
            target = Target(area_name, name, f"tests.fuzz.{area_name}.{path.stem}")
            if only and only not in name and only not in target.key:
                continue
            targets.append(target)
    exact = [t for t in targets if only in (t.name, t.key)]
    return exact or targets  # "--only pcap" means pcap, not pcap and pcapng


def _crash_signature(log: str) -> str:
    """Exception type plus the innermost frame: inputs sharing it are one bug, kept once."""
    frames = _FRAME_RE.findall(log)
    return f"{_summarise_crash(log).split(':', 1)[0]} at {frames[-1] if frames else '?'}"


def _summarise_crash(log: str) -> str:
    """The most useful single line of a libFuzzer/atheris crash log (the exception or error)."""
    lines = log.splitlines()
    for index, line in enumerate(lines):
        if "Uncaught Python exception" in line:
            # The exception line is the last non-indented line of the traceback that follows.
            for candidate in lines[index + 1 :]:
                if candidate.startswith("==") or candidate.startswith("MS:"):
                    break
                if candidate and not candidate.startswith((" ", "Traceback")):
                    summary = candidate
            return summary[:300] if "summary" in locals() else "uncaught Python exception"
    for line in lines:
        if "ERROR: libFuzzer:" in line:
            return line.split("ERROR: libFuzzer:", 1)[1].strip()[:300]
    return "unknown failure (see log)"


class _Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out_dir = Path(args.out).resolve()
        self.regressions = Path(args.regressions).resolve()
        self.print_lock = threading.Lock()

    def run_target(self, target: Target) -> Result:
        try:
            return self._run_target(target)
        except Exception as exc:  # the runner's own failure must not stop the other targets
            with self.print_lock:
                print(f"[error] {target.key}: runner failed: {type(exc).__name__}: {exc}", flush=True)
            return Result(
                area=target.area,
                target=target.name,
                status="error",
                error=f"runner failed: {type(exc).__name__}: {exc}",
            )

    def _run_target(self, target: Target) -> Result:
        result = Result(area=target.area, target=target.name)
        workdir = self.out_dir / target.area / target.name
        corpus = workdir / "corpus"
        artifacts = workdir / "artifacts"
        corpus.mkdir(parents=True, exist_ok=True)
        artifacts.mkdir(parents=True, exist_ok=True)
        for stale in artifacts.iterdir():
            stale.unlink()

        seconds_left: float | None = self.args.seconds
        runs_left: int | None = self.args.runs
        if seconds_left is None and runs_left is None:
            seconds_left = DEFAULT_SECONDS
        started = time.monotonic()
        while True:
            flags = [
                f"-rss_limit_mb={self.args.rss_limit_mb}",
                f"-artifact_prefix={artifacts}/",
                "-print_final_stats=1",
            ]
            if seconds_left is not None:
                flags.append(f"-max_total_time={max(1, int(seconds_left))}")
            if runs_left is not None:
                flags.append(f"-runs={runs_left}")
            if self.args.timeout is not None:
                flags.append(f"-timeout={self.args.timeout}")
            command = [sys.executable, "-m", "tests.fuzz.atheris_main", target.module, str(corpus), *flags]
            wall = None if seconds_left is None else seconds_left + WALL_SLACK_S
            segment_start = time.monotonic()
            log_path = workdir / f"log-{result.segments}.txt"
            killed = False
            with log_path.open("w") as log_file:
                process = subprocess.Popen(
                    command,
                    cwd=REPO_ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
                try:
                    returncode = process.wait(timeout=wall)
                except subprocess.TimeoutExpired:
                    process.kill()
                    returncode = process.wait()
                    killed = True
            elapsed = time.monotonic() - segment_start
            result.segments += 1
            log = log_path.read_text(errors="replace")

            if returncode == EXIT_IMPORT_ERROR and "FUZZ-IMPORT-ERROR" in log:
                result.status = "import-error"
                result.error = (
                    next(line for line in log.splitlines() if line.startswith("FUZZ-IMPORT-ERROR"))
                    .split(":", 1)[1]
                    .strip()
                )
                break
            self._account(result, log, elapsed)
            new = self._collect_artifacts(target, log, result)
            if killed:
                result.status = "error"
                result.error = f"segment exceeded its wall-clock limit ({wall:.0f} s) and was killed"
                break
            if returncode != 0 and not new:
                if "Uncaught Python exception" not in log and "ERROR: libFuzzer" not in log:
                    result.status = "error"
                    result.error = f"exit status {returncode}: {_summarise_crash(log)} (log {log_path})"
                    break
                # libFuzzer died before writing the input (e.g. its timer fired while it was
                # reporting): still a finding, counted once per signature, and the target restarts.
                signature = _crash_signature(log)
                if not any(finding.signature == signature for finding in result.findings):
                    saved = f"(input not saved; log {_display_path(log_path)})"
                    result.findings.append(Finding("crash", saved, _summarise_crash(log), signature))
                    result.crashes += 1
                new = 1
            if not new:
                break
            if seconds_left is not None:
                seconds_left = self.args.seconds - (time.monotonic() - started)
                if seconds_left < 2:
                    break
            if runs_left is not None:
                runs_left = self.args.runs - result.executions
                if runs_left <= 0:
                    break
            if result.segments > self.args.max_restarts:
                break

        result.exec_per_s = round(result.executions / result.seconds, 1) if result.seconds else 0.0
        result.seconds = round(result.seconds, 1)
        result.corpus = sum(1 for _ in corpus.iterdir())
        if result.status == "ok" and result.findings:
            result.status = "findings"
        result.finished_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        with self.print_lock:
            print(
                f"[{result.status}] {target.key}: {result.executions} execs in {result.seconds} s"
                + (f"; {len(result.findings)} finding(s)" if result.findings else "")
                + (f"; {result.error}" if result.error else ""),
                flush=True,
            )
        return result

    @staticmethod
    def _account(result: Result, log: str, elapsed: float) -> None:
        stats = {name: int(value) for name, value in _STAT_RE.findall(log)}
        executions = stats.get("number_of_executed_units")
        if executions is None:
            done = _DONE_RE.findall(log)
            status_lines = _STATUS_EXECS_RE.findall(log)
            if done:
                executions = int(done[-1][0])
            elif status_lines:
                executions = int(status_lines[-1])
            else:
                executions = 0
        result.executions += executions
        result.seconds += elapsed
        covs = [int(value) for value in _COV_RE.findall(log)]
        if covs:
            result.coverage = max(result.coverage or 0, max(covs))
        fts = [int(value) for value in _FT_RE.findall(log)]
        if fts:
            result.features = max(result.features or 0, max(fts))
        if "peak_rss_mb" in stats:
            result.peak_rss_mb = max(result.peak_rss_mb or 0, stats["peak_rss_mb"])

    def _collect_artifacts(self, target: Target, log: str, result: Result) -> int:
        """Copy the inputs this segment's log says it wrote; returns how many it wrote."""
        written = 0
        summary = _summarise_crash(log)
        signature = _crash_signature(log)
        for match in _ARTIFACT_RE.finditer(log):
            path = Path(match.group(1).strip())
            kind = ARTIFACT_KINDS.get(path.name.split("-", 1)[0])
            if kind is None or not path.is_file():
                continue  # slow-unit and similar reports are not findings
            written += 1
            data = path.read_bytes()
            digest = hashlib.sha1(data).hexdigest()  # a file name, not security
            destination = self.regressions / target.area / target.name / f"{digest}.bin"
            if any(finding.signature == signature for finding in result.findings):
                continue  # the same bug found again after a restart: one regression input is enough
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
            result.findings.append(Finding(kind, _display_path(destination), summary, signature))
            if kind == "crash":
                result.crashes += 1
            elif kind == "timeout":
                result.timeouts += 1
            else:
                result.ooms += 1
        return written


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _format_table(results: list[Result]) -> str:
    headers = (
        "target",
        "status",
        "executions",
        "exec/s",
        "seconds",
        "cov",
        "ft",
        "corpus",
        "crash",
        "timeout",
        "oom",
        "rss MB",
    )
    rows = [
        (
            f"{r.area}/{r.target}",
            r.status,
            str(r.executions),
            f"{r.exec_per_s:.0f}",
            f"{r.seconds:.0f}",
            "-" if r.coverage is None else str(r.coverage),
            "-" if r.features is None else str(r.features),
            str(r.corpus),
            str(r.crashes),
            str(r.timeouts),
            str(r.ooms),
            "-" if r.peak_rss_mb is None else str(r.peak_rss_mb),
        )
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    for r in results:
        for finding in r.findings:
            lines.append(f"  {r.area}/{r.target}: {finding.kind}: {finding.summary} -> {finding.file}")
        if r.error:
            lines.append(f"  {r.area}/{r.target}: {r.status}: {r.error}")
    return "\n".join(lines)


def _write_results(out_dir: Path, results: list[Result]) -> Path:
    """Merge this run's results into results.json, so targets run separately accumulate.

    `campaign_executions` / `campaign_seconds` add up every run of a target on its persistent
    corpus (bench/out/fuzz/<area>/<target>/corpus); the other fields describe the latest run.
    A lock file keeps two concurrent runners from losing each other's entries."""
    path = out_dir / "results.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "results.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged: dict[str, dict] = {}
        if path.exists():
            try:
                for entry in json.loads(path.read_text()):
                    merged[f"{entry['area']}/{entry['target']}"] = entry
            except (ValueError, KeyError, TypeError):
                merged = {}
        for result in results:
            key = f"{result.area}/{result.target}"
            entry = asdict(result)
            previous = merged.get(key) or {}
            before_execs = previous.get("campaign_executions", previous.get("executions", 0))
            before_seconds = previous.get("campaign_seconds", previous.get("seconds", 0.0))
            entry["campaign_executions"] = before_execs + result.executions
            entry["campaign_seconds"] = round(before_seconds + result.seconds, 1)
            merged[key] = entry
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([merged[key] for key in sorted(merged)], indent=2) + "\n")
        tmp.replace(path)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, help=f"fuzzing budget per target (default {DEFAULT_SECONDS})"
    )
    parser.add_argument("--runs", type=int, help="stop each target after this many executions")
    parser.add_argument(
        "--only", help="run only the target of this name, or else those whose name contains it"
    )
    parser.add_argument("--area", choices=AREAS, help="run only this area's targets")
    parser.add_argument("--jobs", type=int, default=1, help="targets fuzzed in parallel (default 1)")
    parser.add_argument("--timeout", type=int, help="per-input timeout in seconds (default: the target's)")
    parser.add_argument("--rss-limit-mb", type=int, default=DEFAULT_RSS_LIMIT_MB)
    parser.add_argument("--max-restarts", type=int, default=5, help="restarts after crashes per target")
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "out" / "fuzz"))
    parser.add_argument("--regressions", default=str(FUZZ_DIR / "regressions"))
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print the last run of each target in OUT/results.json as a Markdown table and exit",
    )
    return parser.parse_args(argv)


def markdown_table(entries: list[dict]) -> str:
    """The results.json entries as the Markdown table kept in docs/reliability.md."""
    lines = [
        "| Target | Executions | exec/s | Seconds | Coverage (cov / ft) | Corpus | Peak RSS | "
        "Crashes / hangs / OOM | Finished |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for e in entries:
        cov = f"{e.get('coverage') or '-'} / {e.get('features') or '-'}"
        rss = f"{e['peak_rss_mb']} MB" if e.get("peak_rss_mb") else "-"
        lines.append(
            f"| `{e['area']}/{e['target']}` | {e['executions']:,} | {e['exec_per_s']:,.0f} | "
            f"{e['seconds']:,.0f} | {cov} | {e.get('corpus', 0):,} | {rss} | "
            f"{e['crashes']} / {e['timeouts']} / {e['ooms']} | {e.get('finished_at', '')[:16]} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.markdown:
        results = Path(args.out) / "results.json"
        if not results.is_file():
            print(f"{results}: no fuzz results yet (run the targets first)", file=sys.stderr)
            return 2
        print(markdown_table(json.loads(results.read_text())))
        return 0
    targets = discover_targets(args.area, args.only)
    if args.list:
        for target in targets:
            print(f"{target.key}\t{target.module}")
        return 0
    if not targets:
        print("no fuzz targets match", file=sys.stderr)
        return 2
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed: pip install -e '.[fuzz]' (or `make fuzz`)", file=sys.stderr)
        return 2
    runner = _Runner(args)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(runner.run_target, targets))
    print()
    print(_format_table(results))
    path = _write_results(runner.out_dir, results)
    print(f"\nresults: {path}")
    return 1 if any(r.status != "ok" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
