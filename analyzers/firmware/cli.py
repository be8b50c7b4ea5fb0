"""`camwatch firmware scan|info`: the firmware analyser's command line.

`add_firmware_parser(subparsers)` plugs the `firmware` command into the camwatch parser and `run(args)`
executes it; `main(argv)` runs it stand-alone (tests call it directly).
Exit codes: 0 ok; 1 an input was damaged/unreadable or a finding at/over --fail-on exists; 2 usage.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agent.errors import CamwatchError, UsageError
from analyzers.firmware.handlers import load_handlers
from analyzers.firmware.handlers.base import NotMyFormat, UnpackContext
from analyzers.firmware.model import ContainerInfo, Finding, ImageReport, Limits, Severity
from analyzers.firmware.safety import Budget, LimitExceeded
from analyzers.firmware.scanner import ScanOptions, expand_paths, scan_paths

SEVERITIES = tuple(s.label for s in Severity)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'512M', '2GiB', '100000' -> bytes."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512M, 2G, 100000)")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def add_firmware_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `firmware scan` and `firmware info` to a camwatch subparsers object."""
    defaults = Limits()
    fw = subparsers.add_parser("firmware", help="analyse firmware images (Hikvision, Dahua, Xiongmai, ...)")
    sub = fw.add_subparsers(dest="firmware_command", metavar="ACTION")

    scan = sub.add_parser(
        "scan",
        help="unpack and inspect firmware images (directories are scanned recursively)",
        description="Each image is analysed in a worker process without network access.",
    )
    scan.add_argument("paths", nargs="+", metavar="PATH", help="firmware image or directory")
    scan.add_argument("--json", metavar="FILE", help="write the JSON report to FILE ('-' for stdout)")
    scan.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    scan.add_argument("--extract", metavar="DIR", help="also write the unpacked members under DIR (safely)")
    scan.add_argument(
        "--rules", metavar="DIR", action="append", default=[], help="extra rule directory (repeatable)"
    )
    scan.add_argument("--jobs", "-j", type=_positive_int, default=1, metavar="N", help="parallel workers")
    scan.add_argument(
        "--metrics-textfile", metavar="FILE", help="write Prometheus metrics to FILE atomically"
    )
    scan.add_argument(
        "--fail-on",
        choices=SEVERITIES,
        metavar="SEVERITY",
        help="exit 1 when a finding at or above this exists",
    )
    scan.add_argument(
        "--installed-version", metavar="V", help="firmware version on the device (downgrade check)"
    )
    scan.add_argument("--max-depth", type=_positive_int, default=defaults.max_depth, metavar="N")
    scan.add_argument("--max-total-bytes", type=parse_size, default=defaults.max_total_bytes, metavar="SIZE")
    scan.add_argument("--max-file-bytes", type=parse_size, default=defaults.max_file_bytes, metavar="SIZE")
    scan.add_argument("--max-ratio", type=float, default=defaults.max_ratio, metavar="R")
    scan.add_argument("--max-files", type=_positive_int, default=defaults.max_files, metavar="N")
    scan.add_argument(
        "--timeout", type=float, default=defaults.max_seconds, metavar="SECONDS", help="wall time per image"
    )
    scan.add_argument("--no-binwalk", action="store_true", help="do not run binwalk on unrecognised blobs")
    scan.add_argument("--quiet", "-q", action="store_true", help="no summary, no progress")

    info = sub.add_parser("info", help="show the container header of an image (fast, nothing unpacked)")
    info.add_argument("image", metavar="IMAGE")
    info.add_argument("--json", action="store_true", help="JSON output")
    fw.set_defaults(firmware_parser=fw)
    return fw


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "firmware_command", None)
    if command == "scan":
        return _scan(args)
    if command == "info":
        return _info(args)
    parser = getattr(args, "firmware_parser", None)
    if parser is not None:
        parser.print_help(sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: `main(["scan", "image.bin"])` or `main(["firmware", "scan", ...])`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["firmware"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="camwatch")
    add_firmware_parser(parser.add_subparsers(dest="command"))
    try:
        args = parser.parse_args(["firmware", *argv])
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return run(args)
    except CamwatchError as exc:
        print(f"camwatch: {exc}", file=sys.stderr)
        return exc.exit_code


# ------------------------------------------------------------------------------------------- scan


def _options(args: argparse.Namespace) -> ScanOptions:
    limits = Limits(
        max_depth=args.max_depth,
        max_total_bytes=args.max_total_bytes,
        max_file_bytes=args.max_file_bytes,
        max_ratio=args.max_ratio,
        max_files=args.max_files,
        max_seconds=args.timeout,
    )
    if limits.max_ratio <= 1 or limits.max_seconds <= 0:
        raise UsageError("--max-ratio must be above 1 and --timeout above 0")
    rule_dirs = [Path(d) for d in args.rules]
    for rule_dir in rule_dirs:
        if not rule_dir.is_dir():
            raise UsageError(f"{rule_dir}: --rules: not a directory")
    extract = Path(args.extract) if args.extract else None
    if extract is not None and extract.exists() and not extract.is_dir():
        raise UsageError(f"{extract}: --extract: exists and is not a directory")
    return ScanOptions(
        limits=limits,
        rule_dirs=rule_dirs,
        installed_version=args.installed_version,
        extract_dir=extract,
        jobs=args.jobs,
        use_binwalk=not args.no_binwalk,
    )


def _check_rules(options: ScanOptions) -> None:
    """Compile the rules once up front so that a broken rule file is a usage error, not N reports."""
    from analyzers.firmware.inspect import InspectionSession

    try:
        InspectionSession(
            extra_rule_dirs=list(options.rule_dirs) or None, installed_version=options.installed_version
        )
    except Exception as exc:  # any rule loading problem is reported as one line
        where = ", ".join(str(d) for d in options.rule_dirs) or "built-in rules"
        raise UsageError(f"{where}: cannot load rules: {exc}") from None


class _ProgressLine:
    """One self-overwriting stderr line (only on a terminal)."""

    def __init__(self) -> None:
        self.width = 0

    def __call__(self, done: int, total: int, path: str) -> None:
        text = f"[{done}/{total}] {Path(path).name}"[:78]
        sys.stderr.write("\r" + text.ljust(self.width))
        sys.stderr.flush()
        self.width = len(text)

    def clear(self) -> None:
        if self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()


def _scan(args: argparse.Namespace) -> int:
    options = _options(args)
    if not expand_paths(args.paths):
        raise UsageError("no files to scan under the given paths")
    if options.rule_dirs or options.installed_version:
        _check_rules(options)
    progress = _ProgressLine() if sys.stderr.isatty() and not args.quiet else None
    try:
        reports = scan_paths(args.paths, options, progress=progress)
    finally:
        if progress is not None:
            progress.clear()
    from analyzers.firmware import report as writers

    if args.json:
        writers.write_json(reports, args.json)
    if args.html:
        writers.write_html(reports, args.html)
    if args.metrics_textfile:
        writers.write_prom(reports, args.metrics_textfile)
    if not args.quiet:
        text = writers.summary_text(reports)
        stream = sys.stderr if args.json == "-" else sys.stdout
        stream.write(text if text.endswith("\n") else text + "\n")
    for report in reports:
        if report.error:
            print(f"camwatch: {report.error}", file=sys.stderr)
    return exit_code(reports, Severity.parse(args.fail_on) if args.fail_on else None)


def exit_code(reports: list[ImageReport], fail_on: Severity | None) -> int:
    if any(r.error for r in reports):
        return 1
    if fail_on is not None and any(f.severity >= fail_on for r in reports for f in r.findings):
        return 1
    return 0


# ------------------------------------------------------------------------------------------- info


def identify(data: memoryview, limits: Limits | None = None) -> tuple[list[ContainerInfo], list[Finding]]:
    """Header-only parse of the outermost container (nothing is unpacked)."""
    limits = limits or Limits()
    for handler in load_handlers():
        if not handler.matches(data):
            continue
        ctx = UnpackContext(limits=limits, budget=Budget(limits), header_only=True)
        try:
            result = handler.unpack(data, ctx)
        except (NotMyFormat, LimitExceeded):
            continue
        except Exception as exc:  # hostile header: report, do not crash
            info = ContainerInfo(handler=handler.NAME, path="", offset=0, size=None)
            message = f"{handler.NAME}: cannot parse header: {type(exc).__name__}: {exc}"[:300]
            return [info], [
                Finding("CW-UNPACK-ERROR", Severity.LOW, message, category="container", source="handler")
            ]
        return result.containers, list(result.findings)
    return [], []


def _info(args: argparse.Namespace) -> int:
    path = Path(args.image)
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"camwatch: {path}: cannot read image: {exc.strerror or exc}", file=sys.stderr)
        return 1
    size = len(data)
    if size == 0:
        print(f"camwatch: {path}: empty file", file=sys.stderr)
        return 1
    containers, findings = identify(memoryview(data))
    if args.json:
        doc = {
            "path": str(path),
            "size": size,
            "containers": [asdict(c) for c in containers],
            "findings": [f.to_dict() for f in findings],
        }
        print(json.dumps(doc, indent=2, default=str))
        return 0
    print(f"{path}: {size} bytes")
    if not containers:
        print("  no known container header at offset 0 (try `camwatch firmware scan`, which also carves)")
    for info in containers:
        flags = []
        if info.encrypted:
            flags.append("ENCRYPTED")
        if info.signature:
            flags.append(f"signature: {info.signature}")
        extra = f" [{'; '.join(flags)}]" if flags else ""
        length = "?" if info.size is None else str(info.size)
        print(f"  {info.handler} at offset {info.offset}, {length} bytes{extra}")
        for key, value in info.metadata.items():
            text = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
            print(f"    {key}: {text[:300]}")
    for finding in findings:
        print(f"  ! {finding.severity.label}: {finding.rule_id}: {finding.message}")
    return 0
