"""Lower bound of a full firmware scan on this machine, next to `binwalk -Me` in the same run.

A full scan must at least: inflate every squashfs block (and every nested gzip member), SHA-256
the image and every member, run the YARA-X rules over every byte, and TLSH the image and every
executable. This script times exactly that work with the C implementations alone, no camwatch
code in between: `unsquashfs -p 1` (one thread, into tmpfs) for the squashfs, and one Python
process calling hashlib, zlib/gzip, yara_x and py-tlsh over the extracted files. The sum of the
CPU seconds, spread perfectly over every core, is the fastest any scan could be here; comparing
it with binwalk -Me / 5 tells whether the ">= 5x binwalk" target is reachable at all.

Usage: .venv/bin/python bench/firmware_floor.py [--shape realistic|bigfiles] [--repeat 3] [--no-doc]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.firmware_bench import DOC, SCRATCH, build_image, timed  # noqa: E402

SQUASHFS_MAGIC = b"hsqs"

# Runs in a fresh interpreter so its imports and rule compile count, like a scan's would.
WORKER = r"""
import gzip, hashlib, json, os, sys, time
t0 = time.process_time()
import tlsh, yara_x
from analyzers.firmware.inspect.engine import load_rules, new_scanner
cpu = {"imports": time.process_time() - t0}
def timed(name, fn, *a):
    t = time.process_time(); out = fn(*a); cpu[name] = cpu.get(name, 0.0) + time.process_time() - t
    return out
image_path, root = sys.argv[1], sys.argv[2]
rules = timed("YARA-X rule compile", load_rules)
scanner = new_scanner(rules.rules)
def tl(data):
    h = tlsh.Tlsh()
    for i in range(0, len(data), 1 << 20):
        h.update(data[i:i + (1 << 20)])
    h.final()
def member(data):
    timed("SHA-256", lambda: hashlib.sha256(data).digest())
    timed("YARA-X scan", scanner.scan, data)
    if data[:4] == b"\x7fELF":
        timed("TLSH", tl, data)
def rewrite(path, data):
    with open(path + ".copy", "wb") as fh:
        fh.write(data)
    os.unlink(path + ".copy")
image = open(image_path, "rb").read()
timed("SHA-256", lambda: hashlib.sha256(image).digest())
timed("YARA-X scan", scanner.scan, image)
timed("TLSH", tl, image)
count = 0
unpacked = 0
for dirpath, _, names in os.walk(root):
    for name in names:
        path = os.path.join(dirpath, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        data = timed("tmpfs read (not counted)", lambda: open(path, "rb").read())
        timed("tmpfs create + write (subtracted from unsquashfs)", rewrite, path, data)
        member(data)
        count += 1
        unpacked += len(data)
        if name.endswith(".gz"):
            inner = timed("gzip inflate (nested members)", gzip.decompress, data)
            member(inner)
            count += 1
            unpacked += len(inner)
print(json.dumps({"cpu": cpu, "members": count, "unpacked": unpacked}))
"""


def squashfs_offset(image: Path) -> int:
    data = image.read_bytes()
    at = data.find(SQUASHFS_MAGIC)
    if at < 0:
        raise SystemExit(f"{image}: no squashfs superblock found")
    return at


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mb", type=int, default=64)
    ap.add_argument("--shape", choices=("realistic", "bigfiles"), default="realistic")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-doc", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = ap.parse_args()
    for tool in ("unsquashfs", "binwalk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not installed (make setup installs it)")
    image = build_image(args.size_mb, args.shape)
    offset = squashfs_offset(image)
    best: dict[str, float] = {}
    binwalk_runs: list[float] = []
    worker_out: dict = {}
    for _ in range(args.repeat):  # interleaved with binwalk, best of each
        with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
            root = Path(tmp) / "root"
            _, cpu = timed(
                ["unsquashfs", "-no-progress", "-p", "1", "-o", str(offset), "-d", str(root), str(image)]
            )
            best["squashfs inflate + write to tmpfs (unsquashfs -p 1)"] = min(
                cpu, best.get("squashfs inflate + write to tmpfs (unsquashfs -p 1)", float("inf"))
            )
            proc = subprocess.run(
                [sys.executable, "-c", WORKER, str(image), str(root)],
                cwd=REPO,
                check=True,
                capture_output=True,
                text=True,
            )
            worker_out = json.loads(proc.stdout)
            for name, secs in worker_out["cpu"].items():
                best[name] = min(secs, best.get(name, float("inf")))
        with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:  # tmpfs: binwalk's writes cost no disk I/O
            wall, _ = timed(["binwalk", "-Me", "-q", "--run-as=root", "-C", tmp, str(image)])
            binwalk_runs.append(wall)
    start, _ = timed([sys.executable, "-c", "pass"])
    best["Python start-up"] = start
    unsquash = "squashfs inflate + write to tmpfs (unsquashfs -p 1)"
    writes = best.pop("tmpfs create + write (subtracted from unsquashfs)")
    best.pop("tmpfs read (not counted)")
    best["squashfs inflate (unsquashfs -p 1, minus file writes)"] = max(0.0, best.pop(unsquash) - writes)
    total = sum(best.values())
    cores = os.cpu_count() or 1
    floor = total / cores
    binwalk = min(binwalk_runs)
    target = binwalk / 5
    lines = [
        f"### Firmware scan floor — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Image: generated digicap.dav, shape `{args.shape}` ({image.stat().st_size / 1e6:.1f} MB, "
        f"{worker_out['members']} members, {worker_out['unpacked'] / 1e6:.1f} MB unpacked). Machine: "
        f"{platform.machine()}, {cores} cores, Python {platform.python_version()}, load average "
        f"{os.getloadavg()[0]:.1f} at the end. Best of {args.repeat} interleaved runs. "
        "`bench/firmware_floor.py`: the work a full scan cannot skip, done by the C libraries alone.",
        "",
        "| Mandatory work (C implementation) | CPU seconds |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {secs:.2f} |" for name, secs in sorted(best.items(), key=lambda kv: -kv[1])]
    lines += [
        f"| **total** | **{total:.2f}** |",
        "",
        f"Spread perfectly over {cores} cores with no coordination cost, the floor is **{floor:.2f} s**. "
        f"binwalk -Me took {binwalk:.2f} s in the same run, so >= 5x binwalk means <= {target:.2f} s: "
        + (
            f"**out of reach on this machine** (the floor alone is {floor / target:.1f}x the target)."
            if floor > target
            else f"reachable in principle (floor {floor:.2f} s)."
        ),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_doc:
        with DOC.open("a", encoding="utf-8") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
