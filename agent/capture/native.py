"""Optional compiled record walker (recwalk.c) for the pcap batch reader, loaded with ctypes.

The walk over record boundaries is the one per-record loop the batch reader cannot vectorise;
in C it costs ~2 ns per record instead of ~300 ns. The library is built by `make setup` (or
`python -m agent.capture.native build`) with the system C compiler. Without it, or with
CAMWATCH_NO_NATIVE=1, the reader uses its pure-Python loop, which gives the same records.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("recwalk.c")
LIBRARY = Path(__file__).with_name("_recwalk.so")

# (buf, end, pos, hlen, swap, units, max_records) -> ((offsets, ts, caplens, origlens), next position)
Headers = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
Walker = Callable[[bytes, int, int, int, bool, float, int], tuple[Headers, int]]


def build(compiler: str | None = None, quiet: bool = False) -> bool:
    """Compile recwalk.c next to this module; False (and a note) when no C compiler is present."""
    cc = compiler or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        if not quiet:
            print(
                "camwatch: no C compiler found; the pure-Python pcap record walk will be used",
                file=sys.stderr,
            )
        return False
    tmp = LIBRARY.with_suffix(".so.tmp")
    cmd = [cc, "-O2", "-shared", "-fPIC", "-o", str(tmp), str(SOURCE)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        if not quiet:
            first = (result.stderr.strip().splitlines() or ["unknown error"])[0]
            print(
                f"camwatch: {SOURCE}: compile failed ({first}); the pure-Python walk will be used",
                file=sys.stderr,
            )
        tmp.unlink(missing_ok=True)
        return False
    os.replace(tmp, LIBRARY)  # atomic: a running reader never loads a half-written library
    return True


def _load() -> Walker | None:
    if os.environ.get("CAMWATCH_NO_NATIVE") or not LIBRARY.is_file():
        return None
    try:
        lib = ctypes.CDLL(str(LIBRARY))
    except OSError:
        return None
    fn = lib.camwatch_pcap_walk
    fn.restype = ctypes.c_long
    fn.argtypes = [
        ctypes.c_char_p,  # buf
        ctypes.c_long,  # end
        ctypes.c_long,  # pos
        ctypes.c_long,  # hlen
        ctypes.c_int,  # swap
        ctypes.c_double,  # units
        ctypes.c_long,  # max_records
        ctypes.c_void_p,  # offsets (int64)
        ctypes.c_void_p,  # ts (float64)
        ctypes.c_void_p,  # caplens (int64)
        ctypes.c_void_p,  # origlens (int64)
        ctypes.POINTER(ctypes.c_long),  # next_pos
    ]

    def walk(
        buf: bytes, end: int, pos: int, hlen: int, swap: bool, units: float, max_records: int
    ) -> tuple[Headers, int]:
        if end > len(buf) or hlen < 16:  # the C loop trusts `end` and needs whole headers
            raise ValueError("bad walk bounds")
        offsets = np.empty(max_records, dtype=np.int64)
        ts = np.empty(max_records, dtype=np.float64)
        caplens = np.empty(max_records, dtype=np.int64)
        origlens = np.empty(max_records, dtype=np.int64)
        nxt = ctypes.c_long(pos)
        # c_char_p over a bytes object passes its buffer without copying.
        n = fn(
            buf,
            end,
            pos,
            hlen,
            int(swap),
            units,
            max_records,
            offsets.ctypes.data,
            ts.ctypes.data,
            caplens.ctypes.data,
            origlens.ctypes.data,
            ctypes.byref(nxt),
        )
        return (offsets[:n], ts[:n], caplens[:n], origlens[:n]), nxt.value

    return walk


pcap_walk: Walker | None = _load()


def main(argv: list[str]) -> int:
    if argv[:1] != ["build"]:
        print("usage: python -m agent.capture.native build", file=sys.stderr)
        return 2
    build()
    return 0  # a missing compiler is not an error: the Python walk is used


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
