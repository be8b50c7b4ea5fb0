"""Benchmarks: camwatch's traffic pipeline on the generated 1M-packet camera mix, with peers
timed on the same file in the same run; results appended to docs/benchmarks.md.

Peers: tshark (fields, conversation statistics), `tcpdump -r FILE -w /dev/null` (the I/O limit),
plain dpkt object decode, scapy and pyshark. The Python peers are orders of magnitude slower, so
they read only the first --peer-packets packets of the same file and are reported as packets/s.

Worker scaling: PACKET_FANOUT_HASH gives each worker the flows of one hash class, so the 2-worker
figure runs two pipelines at once, each pinned to its own core, on the two flow-hash halves of
the file (split beforehand, like the kernel does); the aggregate rate is all packets over the
slower worker's time. The kernel's hash is seeded at boot, so which flows share a worker differs
from boot to boot: the split is repeated for --seeds seeds, and each half is also timed alone to
show what that split allows at best.

Usage: .venv/bin/python bench/run.py [--packets N] [--repeat R] [--seeds N] [--peer-packets N] [--no-doc]
Not part of the test-suite: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import struct
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


def camwatch_once(
    path: Path, state: Path, core: int = 0, vectorised: bool = True
) -> tuple[float, float, int]:
    """Full pipeline in a fresh process (pinned to one core): returns (seconds, peak RSS MiB, packets)."""
    shutil.rmtree(state, ignore_errors=True)
    code = (
        "import json,resource,sys,time\n"
        "from agent.config import Config\n"
        "from agent.engine import Engine\n"
        f"cfg=Config(); cfg.state_dir=__import__('pathlib').Path({str(state)!r})\n"
        f"e=Engine(cfg, events={str(state / 'events.ndjson')!r})\n"
        f"e.pipeline.vectorised={vectorised!r}\n"
        "t=time.perf_counter(); errs=e.replay([sys.argv[1]]); e.finish(); dt=time.perf_counter()-t\n"
        "e.close()\n"
        "rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024\n"
        "print(json.dumps({'seconds':dt,'rss':rss,'packets':e.counters.packets,'errors':len(errs)}))\n"
    )
    state.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", code, str(path)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", str(core), *cmd]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
    res = json.loads(out.strip().splitlines()[-1])
    return res["seconds"], res["rss"], res["packets"]


def _flow_key(buf: bytes) -> bytes | None:
    """Direction-free IPv4 5-tuple of an Ethernet frame (None for anything else)."""
    if len(buf) < 38:
        return None
    et = struct.unpack_from("!H", buf, 12)[0]
    off = 18 if et == 0x8100 else 14
    if len(buf) < off + 24:
        return None
    a = buf[off + 12 : off + 16] + buf[off + 20 : off + 22]
    b = buf[off + 16 : off + 20] + buf[off + 22 : off + 24]
    lo, hi = (a, b) if a <= b else (b, a)
    return lo + hi + buf[off + 9 : off + 10]


def _records(path: Path) -> tuple[int, list[tuple[float, bytes, bytes | None]]]:
    """The file's link type and every record (time stamp, frame, flow key), read once by dpkt."""
    import dpkt

    with path.open("rb") as fh:
        reader = dpkt.pcap.Reader(fh)
        return reader.datalink(), [(ts, buf, _flow_key(buf)) for ts, buf in reader]


def split_by_seed(path: Path, seeds: int) -> list[tuple[int, list[Path]]]:
    """For each seed, the two halves a seeded symmetric flow hash gives, as PACKET_FANOUT_HASH does
    (the kernel's flow hash is symmetric and seeded at boot, so which flows share a worker changes
    from one boot to the next; several seeds show the spread)."""
    outs = [(seed, [OUT / f"{path.stem}.seed{seed}.{i}.pcap" for i in (0, 1)]) for seed in range(seeds)]
    if all(p.exists() for _, pair in outs for p in pair):
        return outs
    import dpkt

    linktype, records = _records(path)
    for seed, pair in outs:
        salt = seed.to_bytes(16, "little")
        files = [p.open("wb") for p in pair]
        writers = [dpkt.pcap.Writer(f, snaplen=262144, linktype=linktype) for f in files]
        for ts, buf, key in records:
            half = 0 if key is None else hashlib.blake2b(key, digest_size=8, salt=salt).digest()[0] & 1
            writers[half].writepkt(buf, ts=ts)
        for f in files:
            f.close()
    return outs


def two_workers(halves: list[Path], repeat: int) -> tuple[float, list[float], int, float]:
    """Both halves at once on cores 0 and 1. Returns (the slower worker's seconds, each half's
    seconds when it runs alone on core 0, packets, the larger half's share of the packets)."""
    import concurrent.futures

    alone = [min(camwatch_once(h, OUT / "state_alone", core=0)[0] for _ in range(repeat)) for h in halves]
    best, pkts, share = float("inf"), 0, 0.0
    for _ in range(repeat):
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda i: camwatch_once(halves[i], OUT / f"state{i}", core=i), (0, 1)))
        best = min(best, max(r[0] for r in runs))
        pkts = sum(r[2] for r in runs)
        share = max(r[2] for r in runs) / pkts
    return best, alone, pkts, share


def python_peer(kind: str, path: Path, limit: int) -> float:
    """Seconds for a Python peer to decode the first `limit` packets in a fresh process."""
    if kind == "dpkt":
        body = (
            "import dpkt\n"
            "with open(p,'rb') as fh:\n"
            "    for i,(ts,buf) in enumerate(dpkt.pcap.Reader(fh)):\n"
            "        if i>=n: break\n"
            "        eth=dpkt.ethernet.Ethernet(buf); ip=eth.data\n"
            "        l4=getattr(ip,'data',None); getattr(l4,'sport',None)\n"
        )
    elif kind == "scapy":
        body = (
            "from scapy.all import PcapReader\n"
            "for i,pkt in enumerate(PcapReader(p)):\n"
            "    if i>=n: break\n"
            "    pkt.summary()\n"
        )
    else:
        body = (
            "import pyshark\n"
            "cap=pyshark.FileCapture(p, keep_packets=False)\n"
            "for i,pkt in enumerate(cap):\n"
            "    if i>=n: break\n"
            "    getattr(pkt,'ip',None)\n"
            "cap.close()\n"
        )
    head = f"import sys,time\np={str(path)!r}; n={limit}\nt=time.perf_counter()\n"
    code = f"{head}{body}print(time.perf_counter()-t)\n"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--peer-packets", type=int, default=50_000, help="packets read by the Python peers")
    ap.add_argument("--seeds", type=int, default=5, help="flow-hash seeds for the two-worker runs")
    ap.add_argument("--no-doc", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = ap.parse_args()
    path = generate(args.packets)
    size = path.stat().st_size
    rows = []
    runs = [camwatch_once(path, OUT / "state") for _ in range(args.repeat)]
    secs = min(r[0] for r in runs)
    pkts = runs[0][2]
    rows.append(("camwatch replay (full pipeline, 1 core)", secs, max(r[1] for r in runs)))
    ref = [camwatch_once(path, OUT / "state", vectorised=False) for _ in range(args.repeat)]
    ref_secs, ref_rss = min(r[0] for r in ref), max(r[1] for r in ref)
    rows.append(("camwatch, per-packet path only (vectorised off)", ref_secs, ref_rss))
    seeds: list[tuple[int, float, list[float], float]] = []
    for seed, halves in split_by_seed(path, args.seeds):
        two_secs, alone, two_pkts, share = two_workers(halves, args.repeat)
        if two_pkts != pkts:
            raise SystemExit(f"seed {seed} halves hold {two_pkts} packets, the file {pkts}")
        seeds.append((seed, two_secs, alone, share))
    median_seed = sorted(seeds, key=lambda row: row[1])[(len(seeds) - 1) // 2]
    rows.append((f"camwatch, 2 workers (flow-hash halves, median of {len(seeds)} hash seeds, 2 cores)",
                 median_seed[1], None))
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
    sampled = []
    for kind, label in (("dpkt", "dpkt object decode (Ethernet/IP/L4)"), ("scapy", "scapy PcapReader"),
                        ("pyshark", "pyshark FileCapture")):
        try:
            secs_k = python_peer(kind, path, args.peer_packets)
        except subprocess.CalledProcessError as exc:
            print(f"{kind}: failed ({exc.stderr.strip().splitlines()[-1] if exc.stderr else exc})")
            continue
        sampled.append((f"{label}, first {args.peer_packets:,} packets", secs_k * pkts / args.peer_packets))
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
    for name, est in sampled:
        lines.append(f"| {name} | {est:.2f} (scaled) | {pkts / est:,.0f} | {est / base:.2f}x time | — |")
    lines.append("")
    lines += [
        "Two workers (PACKET_FANOUT_HASH model: each seed of a symmetric flow hash splits the file into"
        " the two halves the kernel would give two workers; both halves replayed at once, each on its own"
        " core). 'Split allows' is one worker's time over the slower half's time when that half runs"
        " alone: the best any two workers could do with that split.",
        "",
        "| Seed | Larger half (packets) | Halves alone (s) | Both at once (s) | Packets/s aggregate |"
        " Speed-up | Split allows | Reached |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for seed, two_secs, alone, share in seeds:
        speedup, allows = base / two_secs, base / max(alone)
        lines.append(
            f"| {seed} | {share:.0%} | {alone[0]:.3f} / {alone[1]:.3f} | {two_secs:.3f} | "
            f"{pkts / two_secs:,.0f} | {speedup:.2f}x | {allows:.2f}x | {speedup / allows:.0%} |"
        )
    fastest, slowest = min(row[1] for row in seeds), max(row[1] for row in seeds)
    lines += [
        "",
        f"Speed-up with two workers: median {base / median_seed[1]:.2f}x, range {base / slowest:.2f}x-"
        f"{base / fastest:.2f}x over {len(seeds)} hash seeds (ideal 2.00x).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_doc:
        with DOC.open("a", encoding="utf-8") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
