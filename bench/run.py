"""Benchmarks: camwatch's traffic pipeline on the generated 1M-packet camera mix, with peers
(tshark, tcpdump) timed on the same file in the same run; results appended to docs/benchmarks.md.

Usage: .venv/bin/python bench/run.py [--packets N] [--repeat R] [--no-doc]
Not part of the test-suite: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
DOC = REPO / "docs" / "benchmarks.md"
sys.path.insert(0, str(REPO))


def generate(packets: int) -> Path:
    path = OUT / f"camera_mix_{packets}.pcap"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "agent.samplegen", "--out", str(path), "--packets", str(packets)],
            check=True,
            cwd=REPO,
        )
        print(f"generated {path.name} in {time.perf_counter() - t:.1f} s", flush=True)
    return path


def time_cmd(cmd: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t)
    return best


def camwatch_once(path: Path, state: Path) -> tuple[float, float, int]:
    """Full pipeline in a fresh process (pinned to one core): returns (seconds, peak RSS MiB, packets)."""
    shutil.rmtree(state, ignore_errors=True)
    code = (
        "import json,resource,sys,time\n"
        "from agent.config import Config\n"
        "from agent.engine import Engine\n"
        f"cfg=Config(); cfg.state_dir=__import__('pathlib').Path({str(state)!r})\n"
        f"e=Engine(cfg, events={str(state / 'events.ndjson')!r})\n"
        "t=time.perf_counter(); errs=e.replay([sys.argv[1]]); e.finish(); dt=time.perf_counter()-t\n"
        "e.close()\n"
        "rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024\n"
        "print(json.dumps({'seconds':dt,'rss':rss,'packets':e.counters.packets,'errors':len(errs)}))\n"
    )
    state.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", code, str(path)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
    res = json.loads(out.strip().splitlines()[-1])
    return res["seconds"], res["rss"], res["packets"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-doc", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = ap.parse_args()
    path = generate(args.packets)
    size = path.stat().st_size
    rows = []
    runs = [camwatch_once(path, OUT / "state") for _ in range(args.repeat)]
    secs = min(r[0] for r in runs)
    pkts = runs[0][2]
    rows.append(("camwatch replay (full pipeline, 1 core)", secs, max(r[1] for r in runs)))
    peers = []
    if shutil.which("tshark"):
        # -q alone lets tshark skip most dissection; asking for fields makes it dissect every packet
        fields = ["-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "tcp.srcport", "-e", "udp.srcport"]
        peers.append(
            ("tshark -n -r FILE -T fields (ip/port fields)", ["tshark", "-n", "-r", str(path), *fields])
        )
        peers.append(
            (
                "tshark -n -r FILE -q -z conv,ip (conversations)",
                ["tshark", "-n", "-r", str(path), "-q", "-z", "conv,ip"],
            )
        )
    if shutil.which("tcpdump"):
        peers.append(
            ("tcpdump -r FILE -w /dev/null (I/O limit)", ["tcpdump", "-r", str(path), "-w", "/dev/null"])
        )
    for name, cmd in peers:
        rows.append((name, time_cmd(cmd, args.repeat), None))
    base = rows[0][1]
    lines = [
        f"### Traffic pipeline — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"File: generated camera mix, {pkts:,} packets, {size / 1e6:.1f} MB "
        f"(`python -m agent.samplegen --packets {args.packets}`). Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}. Best of {args.repeat} runs.",
        "",
        "| Tool | Seconds | Packets/s | Relative to camwatch | Peak RSS |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, secs_, rss in rows:
        rate = pkts / secs_ if secs_ else 0
        rss_text = f"{rss:.0f} MiB" if rss else "—"
        lines.append(f"| {name} | {secs_:.2f} | {rate:,.0f} | {secs_ / base:.2f}x time | {rss_text} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_doc:
        with DOC.open("a", encoding="utf-8") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
