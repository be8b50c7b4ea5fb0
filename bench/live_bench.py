"""Live-capture drop benchmark: `camwatch run` on a veth pair inside a network namespace this script
creates, fed by tcpreplay at increasing packet rates, with 1 and then 2 worker processes.

For every step the first LIMIT packets of the generated 1M-packet capture are replayed with
`tcpreplay --limit LIMIT --pps RATE` (then `--topspeed`); after the daemon has drained, the kernel
drops (`camwatch_capture_kernel_drops_total`) and worker-queue drops
(`camwatch_worker_queue_dropped_packets_total`) of that step are read from /metrics inside the
namespace. The highest rate with zero drops is recorded per worker count and a section is appended
to docs/benchmarks.md. Needs root (namespaces, veth) and tcpreplay. The namespace and the daemon are
always removed. Usage: `python bench/live_bench.py [--no-append] [--limit N] [--rates 20000,50000]`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from netns import namespace, sh

REPO = Path(__file__).resolve().parents[1]
PCAP = REPO / "bench" / "out" / "camera_mix_1000000.pcap"
DOC = REPO / "docs" / "benchmarks.md"
CAMWATCH = str(Path(sys.executable).with_name("camwatch"))
RATES = (20_000, 50_000, 100_000, 150_000, 200_000)
LIMIT = 200_000
DRAIN_WAIT = 90.0  # seconds: longest wait for the daemon to catch up after a step
STATS_SETTLE = 1.5  # seconds: one PACKET_STATISTICS read after the last packet


@dataclass
class Step:
    offered: str
    achieved_pps: float
    sent: int
    captured: int
    kernel_drops: int
    queue_drops: int


def scrape(ns: str, url: str) -> str:
    code = (
        "import urllib.request\n"
        "try:\n"
        f"    print(urllib.request.urlopen({url!r}, timeout=3).read().decode())\n"
        "except OSError:\n"
        "    pass\n"
    )
    return sh(["ip", "netns", "exec", ns, sys.executable, "-c", code], timeout=15).stdout


def total(body: str, name: str) -> int:
    """Sum of every series of `name` (all interfaces / workers)."""
    return int(sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", body, re.M)))


def tcpreplay(ns: str, tx: str, rate: int | None, limit: int) -> tuple[int, float]:
    speed = ["--topspeed"] if rate is None else [f"--pps={rate}"]
    cmd = ["ip", "netns", "exec", ns, "tcpreplay", "-i", tx, f"--limit={limit}", *speed, str(PCAP)]
    res = sh(cmd, timeout=600)
    if res.returncode != 0:
        raise SystemExit(f"tcpreplay failed: {res.stderr.strip() or res.stdout.strip()}")
    sent = re.search(r"Actual: (\d+) packets", res.stdout)
    pps = re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", res.stdout)
    return (int(sent.group(1)) if sent else 0), (float(pps.group(1)) if pps else 0.0)


def run_workers(workers: int, rates: list[int | None], limit: int) -> list[Step]:
    steps: list[Step] = []
    with namespace("cwbench") as (ns, tx, rx), tempfile.TemporaryDirectory(prefix="camwatch-bench-") as tmp:
        port = 19000 + uuid.uuid4().int % 900
        url = f"http://127.0.0.1:{port}"
        log = Path(tmp) / "daemon.log"
        cmd = ["ip", "netns", "exec", ns, CAMWATCH, "run", "-i", rx, "--workers", str(workers)]
        cmd += ["--state-dir", f"{tmp}/state", "--listen", f"127.0.0.1:{port}"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 30
                while "camwatch_up 1.0" not in scrape(ns, f"{url}/metrics"):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"daemon did not start:\n{log.read_text()[-2000:]}")
                    time.sleep(0.3)
                before = scrape(ns, f"{url}/metrics")
                for rate in rates:
                    sent, achieved = tcpreplay(ns, tx, rate, limit)
                    # drained: the captured count stops moving (or reaches what the kernel accepted)
                    deadline = time.monotonic() + DRAIN_WAIT
                    last = -1
                    while time.monotonic() < deadline:
                        time.sleep(STATS_SETTLE)
                        body = scrape(ns, f"{url}/metrics")
                        got = total(body, "camwatch_capture_packets_total")
                        if got == last:
                            break
                        last = got
                    step = Step(
                        offered="topspeed" if rate is None else f"{rate:,}",
                        achieved_pps=achieved,
                        sent=sent,
                        captured=got - total(before, "camwatch_capture_packets_total"),
                        kernel_drops=total(body, "camwatch_capture_kernel_drops_total")
                        - total(before, "camwatch_capture_kernel_drops_total"),
                        queue_drops=total(body, "camwatch_worker_queue_dropped_packets_total")
                        - total(before, "camwatch_worker_queue_dropped_packets_total"),
                    )
                    steps.append(step)
                    print(f"workers={workers} {step}", flush=True)
                    before = body
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=10)
    return steps


def best(steps: list[Step]) -> str:
    ok = "none"
    for s in steps:
        if s.kernel_drops or s.queue_drops:
            break
        ok = s.offered if s.offered == "topspeed" else f"{s.offered} pps"
    return ok


def section(results: dict[int, list[Step]], limit: int) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cpu = "?"
    with contextlib.suppress(OSError):
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1).strip() if m else cpu
    lines = [
        f"### Live capture drops — {when}",
        "",
        f"`camwatch run --workers N` (afpacket, default ring) on one end of a veth pair in a private "
        f"network namespace; `tcpreplay --limit {limit:,} --pps RATE` (then `--topspeed`) sends the "
        f"first {limit:,} packets of the generated 1M-packet camera mix into the other end, step after "
        f"step on the same daemon. Drops are the per-step increase of "
        f"`camwatch_capture_kernel_drops_total` and `camwatch_worker_queue_dropped_packets_total`. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores ({cpu}), Python "
        f"{platform.python_version()}, Linux {platform.release()}. `bench/live_bench.py`.",
        "",
        f"**tcpreplay and camwatch share the {os.cpu_count()} cores of this VM** (with 2 workers there "
        "are three busy processes: tcpreplay, two workers, plus the analysis parent), so these rates "
        "are a lower bound for a sensor whose traffic arrives on a NIC.",
        "",
        "Highest offered rate with zero drops: "
        + "; ".join(f"{w} worker{'s' if w > 1 else ''}: **{best(s)}**" for w, s in results.items())
        + ".",
        "",
    ]
    for workers, steps in results.items():
        lines += [
            f"`--workers {workers}`:",
            "",
            "| Rate offered (pps) | Achieved by tcpreplay (pps) | Sent | Captured | Kernel drops "
            "| Queue drops |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {s.offered} | {s.achieved_pps:,.0f} | {s.sent:,} | {s.captured:,} | {s.kernel_drops:,} "
            f"| {s.queue_drops:,} |"
            for s in steps
        ]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--limit", type=int, default=LIMIT, help="packets replayed per step")
    ap.add_argument("--rates", default=",".join(str(r) for r in RATES), help="pps steps, comma-separated")
    ap.add_argument("--no-topspeed", action="store_true", help="skip the final --topspeed step")
    ap.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    ap.add_argument("--no-append", action="store_true", help=f"print only; do not append to {DOC}")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: creates a network namespace and a veth pair")
    for tool in ("ip", "tcpreplay"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found")
    if not PCAP.is_file():
        PCAP.parent.mkdir(parents=True, exist_ok=True)
        gen = [sys.executable, "-m", "agent.samplegen", "--out", str(PCAP), "--packets", "1000000"]
        subprocess.run(gen, check=True, cwd=REPO)
    rates: list[int | None] = [int(r) for r in args.rates.split(",") if r]
    if not args.no_topspeed:
        rates.append(None)
    results = {int(w): run_workers(int(w), rates, args.limit) for w in args.workers.split(",")}
    text = section(results, args.limit)
    print(text)
    if not args.no_append:
        with DOC.open("a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
