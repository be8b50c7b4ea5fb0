"""The `camwatch` command line: replay, demo, run, devices, findings, policy, rules, firmware.

Exit codes: 0 ok; 1 input damaged, or findings at/over --fail-on; 2 usage or configuration error;
3 state store or event file not writable (disk full).
User errors are printed as one line (`camwatch: <file>: <problem>`), never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent import __version__
from agent.errors import CamwatchError, UsageError

SEVERITY_CHOICES = ("info", "low", "medium", "high", "critical")

EPILOG = """exit codes:
  0  success
  1  an input was damaged (everything before the damage was processed and kept),
     or a finding at or above --fail-on was raised
  2  usage or configuration error
  3  the state store or the event file could not be written (disk full, I/O error);
     everything committed before is intact, a rerun continues from there
"""


def _common_replay_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML configuration (networks, policy, rules, state dir)")
    p.add_argument(
        "--policy",
        metavar="FILE",
        action="append",
        help="destination policy YAML (repeatable; replaces the configured policy)",
    )
    p.add_argument("--state-dir", metavar="DIR", help="state directory (SQLite store); default from config")
    p.add_argument("--events", metavar="FILE", help="write NDJSON events to FILE ('-' for stdout)")
    p.add_argument(
        "--evidence-pcap",
        metavar="FILE",
        help="write packets of flows that raised alerts to FILE (pcap; bounded ring, rewritten as it grows)",
    )
    p.add_argument(
        "--metrics-textfile",
        metavar="FILE",
        help="write the final Prometheus exposition to FILE atomically (textfile collector)",
    )
    p.add_argument(
        "--per-device-metrics",
        action="store_true",
        help="add per-device series (capped; off by default to bound cardinality)",
    )
    p.add_argument(
        "--fail-on",
        metavar="SEVERITY",
        choices=SEVERITY_CHOICES,
        help="exit 1 when an alert at or above this severity was raised",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no summary on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camwatch",
        description="Traffic and firmware integrity monitor for IP cameras and NVRs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"camwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "replay",
        help="analyse capture files (pcap, pcapng, gzip)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "captures", nargs="+", metavar="CAPTURE", help="pcap or pcapng file (may be gzip-compressed)"
    )
    _common_replay_options(p)
    p.add_argument(
        "--serve",
        nargs="?",
        const="",
        metavar="ADDR:PORT",
        help="after the replay keep serving /metrics until interrupted (default address from config)",
    )

    p = sub.add_parser(
        "demo",
        help="replay the bundled sample camera-VLAN capture and serve its metrics",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_replay_options(p)
    p.add_argument("--once", action="store_true", help="exit after printing the summary (do not serve)")
    p.add_argument("--listen", metavar="ADDR:PORT", help="metrics address (default from config)")

    p = sub.add_parser(
        "run",
        help="capture live from network interfaces and serve metrics (daemon; see docs/live-capture.md)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="YAML configuration (capture, networks, policy, metrics)")
    p.add_argument(
        "--interface",
        "-i",
        metavar="IFACE",
        action="append",
        help="interface to capture (repeatable; replaces capture.interfaces)",
    )
    p.add_argument("--filter", metavar="BPF", help="capture filter, tcpdump syntax (replaces capture.filter)")
    p.add_argument(
        "--backend",
        choices=("afpacket", "dumpcap"),
        default="afpacket",
        help="AF_PACKET TPACKET_V3 ring (default) or a dumpcap child process",
    )
    p.add_argument("--listen", metavar="ADDR:PORT", help="metrics address (default from config)")
    p.add_argument("--state-dir", metavar="DIR", help="state directory (SQLite store); default from config")
    p.add_argument("--events", metavar="FILE", help="write NDJSON events to FILE ('-' for stdout)")
    p.add_argument(
        "--evidence-pcap",
        metavar="FILE",
        help="write packets of flows that raised alerts to FILE (pcap; bounded ring, rewritten as it grows)",
    )
    p.add_argument("--policy", metavar="FILE", action="append", help="destination policy YAML (repeatable)")
    p.add_argument(
        "--user",
        metavar="USER",
        help="when started as root: switch to USER after opening the capture, keeping only CAP_NET_RAW",
    )
    p.add_argument(
        "--ring-size",
        metavar="MIB",
        type=int,
        help="kernel capture ring (afpacket) or dumpcap buffer per interface, MiB "
        "(replaces capture.ring_size; default 32)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="capture worker processes joined by PACKET_FANOUT (afpacket backend; default from config, 1)",
    )

    p = sub.add_parser("devices", help="list devices from the state store")
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--state-dir", metavar="DIR")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")

    p = sub.add_parser("findings", help="list alerts and findings from the state store")
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--state-dir", metavar="DIR")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.add_argument("--severity", choices=SEVERITY_CHOICES, help="only findings at or above this severity")

    p = sub.add_parser("policy", help="destination policy tools")
    psub = p.add_subparsers(dest="policy_command", metavar="ACTION")
    imp = psub.add_parser("import-mud", help="turn an RFC 8520 MUD file into a policy group")
    imp.add_argument("mud_file", metavar="FILE", help="MUD JSON file")
    imp.add_argument("--group", required=True, help="name of the policy group to create")
    imp.add_argument(
        "--into",
        metavar="POLICY",
        help="merge into this policy YAML file (written atomically); default: print YAML",
    )

    from agent.rulebundle import add_rules_parser

    add_rules_parser(sub)

    try:
        from analyzers.firmware.cli import add_firmware_parser
    except ImportError:  # pragma: no cover - the firmware analyzer ships with camwatch
        pass
    else:
        add_firmware_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return _dispatch(args, parser)
    except CamwatchError as exc:
        print(f"camwatch: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command in ("replay", "demo"):
        from agent.engine import run_demo, run_replay

        return run_replay(args) if args.command == "replay" else run_demo(args)
    if args.command == "run":
        from agent.daemon import run as run_daemon

        return run_daemon(args)
    if args.command in ("devices", "findings"):
        from agent.engine import show_table

        return show_table(args)
    if args.command == "policy":
        if args.policy_command != "import-mud":
            parser.parse_args(["policy", "--help"])
            return 2
        return _import_mud(args)
    if args.command == "rules":
        from agent.rulebundle import run_cli as run_rules

        return run_rules(args)
    if args.command == "firmware":
        from analyzers.firmware.cli import run as run_firmware

        return int(run_firmware(args))
    raise UsageError(f"unknown command {args.command!r}")


def _import_mud(args: argparse.Namespace) -> int:
    import yaml

    from agent.policy import import_mud, merge_policy_group

    group = import_mud(Path(args.mud_file), args.group)
    if args.into:
        merge_policy_group(Path(args.into), group)
        print(f"camwatch: policy group {args.group!r} written to {args.into}")
    else:
        sys.stdout.write(yaml.safe_dump(group, sort_keys=False))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
