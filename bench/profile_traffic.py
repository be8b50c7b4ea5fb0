"""Where the traffic pipeline's time goes: py-spy samples of one replay of the generated camera
mix, grouped into the hot path's stages, as a markdown table (appended to docs/benchmarks.md).

Usage: .venv/bin/python bench/profile_traffic.py [--packets N] [--rate HZ] [--no-doc]
Needs py-spy (`pip install -e '.[bench]'`); reads the capture written by bench/run.py.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
DOC = REPO / "docs" / "benchmarks.md"

# Stage -> frames that mark it (first match from the leaf's side wins). Order matters: analyzers
# are called from the per-packet path, which runs inside the vectorised path.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    (
        "analyzers (per-packet work of DNS, DHCP, exploits, updates, fingerprints, destinations)",
        ("Analyzer.", "Engine.emit", "Pipeline._clock"),
    ),
    (
        "per-packet path (decode, flow lookup, dispatch) for subscribed and new-flow packets",
        ("Pipeline._run_records",),
    ),
    ("vectorised path: field gathers (decode_fast)", ("decode_fast",)),
    ("vectorised path: plan (flow-key grouping, np.unique) and bulk counting", ("Pipeline._plan", "_Span.")),
    ("reader: pcap record headers gathered with NumPy", ("record_headers",)),
    ("reader: file read()", ("CaptureReader._read",)),
    ("reader: compiled record walk + header gather (recwalk.c via ctypes)", ("walk",)),
    ("reader: record boundary walk (Python loop; when recwalk.c is not built)", ("_PcapParser.parse",)),
    ("other replay work (batch set-up, store commits, event flushes)", ("Engine.replay",)),
]


def stage_of(frames: list[str]) -> str | None:
    if not any(f.startswith("Engine.replay") for f in frames):
        return None
    for name, marks in STAGES:
        if any(any(f.startswith(m) or (m.endswith(".") and m in f) for m in marks) for f in frames):
            return name
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    capture = OUT / f"camera_mix_{args.packets}.pcap"
    if not capture.exists():
        raise SystemExit(f"{capture} missing: run bench/run.py --packets {args.packets} first")
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    state = OUT / "profile_state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from agent.config import Config\nfrom agent.engine import Engine\n"
        f"cfg=Config(); cfg.state_dir=Path({str(state)!r})\n"
        f"e=Engine(cfg, events={str(state / 'events.ndjson')!r})\n"
        "e.replay([sys.argv[1]]); e.finish(); e.close()\n"
    )
    raw = OUT / "profile.txt"
    subprocess.run(
        [
            spy,
            "record",
            "-r",
            str(args.rate),
            "-f",
            "raw",
            "-o",
            str(raw),
            "--",
            sys.executable,
            "-c",
            code,
            str(capture),
        ],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    shares: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.split(" (")[0] for f in stack.split(";")]
        stage = stage_of(frames)
        if stage is None:
            continue
        shares[stage] += int(count)
        total += int(count)
    lines = [
        f"### Traffic profile — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"`bench/profile_traffic.py`: py-spy at {args.rate} Hz over one replay of the generated "
        f"{args.packets:,}-packet camera mix ({total:,} samples inside `Engine.replay`).",
        "",
        "| Share | Stage |",
        "|---:|---|",
    ]
    for name, _marks in STAGES:
        if shares[name]:
            lines.append(f"| {100 * shares[name] / total:.1f}% | {name} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_doc:
        with DOC.open("a", encoding="utf-8") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
