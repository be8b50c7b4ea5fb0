"""Memory with many concurrent flows: peak RSS of a replay holding N live flows at once.

The capture has N UDP flows (1,000 camera addresses x N/1,000 source ports, to 50 outside
destinations), one packet each, all within a few seconds, so every flow is still live when the file
ends. Each run is a fresh process; the flow cap (`flows.max_flows`) is set per run, so a run with
N above the cap shows that memory is bounded by the cap, not by the traffic.

Usage: .venv/bin/python bench/flows_memory.py [--flows 100000 1000000] [--no-doc]
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
DOC = REPO / "docs" / "benchmarks.md"

_REC = struct.Struct("<IIII")


def build(flows: int) -> Path:
    path = OUT / f"flows_{flows}.pcap"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = 1_700_000_000
    with path.open("wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(flows):
            host, port = i % 1000, 10_000 + i // 1000
            src = bytes((10, 20, host >> 8, host & 0xFF))
            dst = bytes((203, 0, 113, 1 + i % 50))
            udp = struct.pack("!HHHH", port, 5004, 8 + 12, 0) + b"\x80" * 12
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, dst)
            mac = b"\x02\x00" + struct.pack("!I", host)
            frame = b"\x00\x00\x5e\x00\x01\x01" + mac + b"\x08\x00" + ip + udp
            ts = i * 3_000_000 // max(flows, 1)  # all flows within 3 s
            fh.write(_REC.pack(t0 + ts // 1_000_000, ts % 1_000_000, len(frame), len(frame)))
            fh.write(frame)
    return path


def run(path: Path, cap: int) -> dict[str, float]:
    state = OUT / "flows_state"
    code = (
        "import json,resource,shutil,sys,time\n"
        "from pathlib import Path\n"
        "from agent.config import Config\n"
        "from agent.engine import Engine\n"
        f"state=Path({str(state)!r}); shutil.rmtree(state, ignore_errors=True); state.mkdir(parents=True)\n"
        f"cfg=Config(); cfg.state_dir=state; cfg.max_flows={cap}; cfg.flow_idle_timeout=3600.0\n"
        "e=Engine(cfg, events=str(state/'events.ndjson'))\n"
        "base=int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])/1024\n"
        "t=time.perf_counter(); e.replay([sys.argv[1]]); dt=time.perf_counter()-t\n"
        "live=len(e.pipeline.flows)\n"
        "peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024\n"
        "e.finish(); e.close()\n"
        "print(json.dumps({'seconds':dt,'live':live,'peak':peak,'base':base}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True, cwd=REPO
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--flows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    rows = []
    for n in args.flows:
        path = build(n)
        for cap in sorted({n + 1000, 200_000}):
            if cap > n + 1000:
                continue
            res = run(path, cap)
            per_flow = (res["peak"] - res["base"]) * 1024 * 1024 / max(res["live"], 1)
            rows.append((n, cap, res, per_flow))
            print(n, cap, res, f"{per_flow:.0f} B/flow", flush=True)
    lines = [
        f"### Memory with many concurrent flows — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "`bench/flows_memory.py`: N single-packet UDP flows within 3 s (1,000 camera addresses, 50 outside "
        "destinations), all live at the end of the file. Peak RSS of the whole agent process (events, "
        "state store, every analyzer); 'after start-up' is RSS once the engine has loaded its rules and "
        "the bundled geo data.",
        "",
        "| Flows in capture | Flow cap | Live flows at end | RSS after start-up | Peak RSS | Per live flow "
        "| Seconds |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, cap, res, per_flow in rows:
        lines.append(
            f"| {n:,} | {cap:,} | {res['live']:,} | {res['base']:.0f} MiB | {res['peak']:.0f} MiB | "
            f"{per_flow:,.0f} B | {res['seconds']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_doc:
        with DOC.open("a", encoding="utf-8") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
