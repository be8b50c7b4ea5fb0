"""Firmware-scan benchmark: a generated ~64 MB camera image (digicap.dav holding a uImage kernel and
a squashfs root filesystem), scanned by camwatch, `binwalk -Me` and `sha256sum` in the same run.

Usage: .venv/bin/python bench/firmware_bench.py [--size-mb 64] [--repeat 3] [--no-doc]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
DOC = REPO / "docs" / "benchmarks.md"
sys.path.insert(0, str(REPO))

WORDS = b"camera stream rtsp onvif config network user admin upgrade sensor video audio motion".split()


def _file_body(rng: random.Random, size: int) -> bytes:
    """Half incompressible (like compiled code/media), half text (like strings and scripts)."""
    half = size // 2
    text = b" ".join(rng.choice(WORDS) for _ in range(half // 6))[:half]
    return rng.randbytes(size - len(text)) + text


def _elf(rng: random.Random, size: int) -> bytes:
    """An ELF-looking executable: header magic, code-like random bytes, a string table."""
    return b"\x7fELF\x01\x01\x01" + b"\x00" * 9 + _file_body(rng, size - 16)


def _realistic_tree(rng: random.Random, size_mb: int) -> dict[str, bytes]:
    """A camera rootfs: many small executables and libraries, init scripts and configs, and web UI
    assets shipped gzip-compressed (each one a nested container for an extractor to find)."""
    tree: dict[str, bytes] = {}
    budget = int(size_mb * 1024 * 1024 / 0.62)
    i = 0
    while budget > 0:
        kind = i % 10
        if kind < 4:
            body = _elf(rng, rng.randint(8, 160) * 1024)
            tree[f"usr/lib/lib{i:05d}.so"] = body
        elif kind < 6:
            body = _elf(rng, rng.randint(4, 64) * 1024)
            tree[f"bin/tool{i:05d}"] = body
        elif kind < 8:
            text = b"\n".join(
                b" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(rng.randint(20, 400))
            )
            body = gzip.compress(text, mtime=0)
            tree[f"web/js/page{i:05d}.js.gz"] = body
        else:
            body = b"\n".join(b"%s=%d" % (rng.choice(WORDS), rng.randint(0, 9999)) for _ in range(50))
            tree[f"etc/config/c{i:05d}.conf"] = body
        budget -= len(body)
        i += 1
    return tree


def _bigfile_tree(rng: random.Random, size_mb: int) -> dict[str, bytes]:
    """A few hundred 256 KiB files: the best case for binwalk (one C unsquashfs does the work)."""
    content = int(size_mb * 1024 * 1024 / 0.6)
    return {f"app/lib/module{i:04d}.so": _file_body(rng, 256 * 1024) for i in range(content // (256 * 1024))}


def build_image(size_mb: int, shape: str) -> Path:
    from tests.firmware.builders import build_squashfs, build_uimage, compress, pack_digicap

    path = OUT / f"firmware_{shape}_{size_mb}mb.dav"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20261123)
    tree: dict[str, bytes] = {
        "etc/init.d/rcS": b"#!/bin/sh\nmount -a\n/bin/syslogd\n/app/ipc_main &\n",
        "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
    }
    tree.update(_realistic_tree(rng, size_mb) if shape == "realistic" else _bigfile_tree(rng, size_mb))
    with tempfile.TemporaryDirectory() as tmp:
        squash = build_squashfs(tree, Path(tmp) / "rootfs.squashfs")
        kernel = build_uimage(
            compress(_file_body(rng, 3 * 1024 * 1024), "gzip"), Path(tmp) / "uImage", comp="gzip"
        )
        files = {"uImage": Path(kernel).read_bytes(), "rootfs.squashfs": Path(squash).read_bytes()}
        path.write_bytes(pack_digicap(files))
    return path


def timed(cmd: list[str], cwd: Path | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mb", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--shape", choices=("realistic", "bigfiles"), default="realistic")
    args = ap.parse_args()
    image = build_image(args.size_mb, args.shape)
    size = image.stat().st_size
    report = OUT / "firmware_report.json"
    cw = [sys.executable, "-m", "agent", "firmware", "scan", str(image), "--json", str(report), "-q"]
    cw_secs = min(timed(cw, cwd=REPO) for _ in range(args.repeat))
    data = json.loads(report.read_text())
    rep = data["images"][0] if "images" in data else data
    unpacked = int(rep.get("bytes_unpacked", 0))
    members = len(rep.get("members", []))
    sha_secs = min(timed(["sha256sum", str(image)]) for _ in range(args.repeat))
    # sha256sum over the bytes camwatch actually read: the image plus everything it unpacked
    read_bytes = size + unpacked
    sha_read_secs = sha_secs * read_bytes / size
    bw_secs = None
    if shutil.which("binwalk"):
        runs = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(timed(["binwalk", "-Me", "-q", "--run-as=root", "-C", tmp, str(image)]))
        bw_secs = min(runs)
    mb = size / 1e6
    lines = [
        f"### Firmware scan — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Image: generated digicap.dav, shape `{args.shape}` ({mb:.1f} MB: uImage kernel + squashfs rootfs, "
        f"{members} members, "
        f"{unpacked / 1e6:.1f} MB unpacked). Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}. Best of {args.repeat} runs. `bench/firmware_bench.py`.",
        "",
        "| Tool | Seconds | MB/s (image) | Relative to camwatch |",
        "|---|---:|---:|---:|",
        f"| camwatch firmware scan (full) | {cw_secs:.2f} | {mb / cw_secs:.1f} | 1.00x |",
    ]
    if bw_secs is not None:
        lines.append(
            f"| binwalk -Me (2.3.4) | {bw_secs:.2f} | {mb / bw_secs:.1f} | {bw_secs / cw_secs:.2f}x |"
        )
    lines.append(
        f"| sha256sum (image only) | {sha_secs:.2f} | {mb / sha_secs:.1f} | {sha_secs / cw_secs:.2f}x |"
    )
    lines.append(
        f"| sha256sum over the {read_bytes / 1e6:.0f} MB camwatch read (scaled) | {sha_read_secs:.2f} | "
        f"{mb / sha_read_secs:.1f} | {sha_read_secs / cw_secs:.2f}x |"
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_doc:
        with DOC.open("a", encoding="utf-8") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
