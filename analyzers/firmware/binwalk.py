"""Signature scan with Debian's binwalk 2.3.4 CLI, for blobs no handler recognised.

binwalk only lists signatures (offset, description); it never extracts (`-e` is not used): the
walker carves the regions a camwatch handler recognises itself. It runs with a timeout, a minimal
environment and HOME pointing into the worker's private temp dir.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(r"^(\d+)\s+0x[0-9A-Fa-f]+\s+(.+?)\s*$")
MAX_ENTRIES = 2000  # binwalk can list thousands of weak matches on large binaries


@dataclass(frozen=True, slots=True)
class Signature:
    offset: int
    description: str


class BinwalkError(Exception):
    """binwalk is missing, timed out or failed; the message says which."""


def binwalk_path() -> str | None:
    return shutil.which("binwalk")


def parse_output(text: str, base: int = 0) -> list[Signature]:
    """Rows of binwalk's default table output. `-o` already makes offsets absolute; `base` is added
    for callers that scanned a sliced copy."""
    found: list[Signature] = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            found.append(Signature(int(match.group(1)) + base, match.group(2)[:300]))
            if len(found) >= MAX_ENTRIES:
                break
    return found


def scan(
    path: Path,
    *,
    offset: int = 0,
    length: int | None = None,
    timeout: float = 120.0,
    home: Path | None = None,
) -> list[Signature]:
    """Run `binwalk --signature` on `path` (optionally only [offset, offset+length))."""
    tool = binwalk_path()
    if tool is None:
        raise BinwalkError("binwalk not installed")
    argv = [tool, "--signature"]
    if offset:
        argv.append(f"--offset={offset}")
    if length is not None:
        argv.append(f"--length={length}")
    argv.append(str(path))
    private = str(home) if home else os.environ.get("TMPDIR", "/tmp")  # noqa: S108 - fallback only
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": private,
        "TMPDIR": private,
        "LC_ALL": "C.UTF-8",
    }
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            timeout=max(1.0, timeout),
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BinwalkError(f"binwalk timed out after {timeout:.0f} s") from None
    except OSError as exc:
        raise BinwalkError(f"binwalk could not run: {exc}") from None
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise BinwalkError(f"binwalk exited with {done.returncode}: {tail[0][:200]}")
    return parse_output(done.stdout.decode("utf-8", "replace"))
