"""pcapng reader (agent/capture/pcapfile.py): sections in both byte orders, IDB options, EPB / PB /
SPB, skipped blocks, the batched EPB fast path. Bad input may only end in a one-line CaptureError."""

from __future__ import annotations

import gzip

from agent.capture import writer as W
from tests.fuzz.traffic.common import fuzz_capture, sample_frames

MAX_LEN = 16384
START_NS = 1_700_000_000_000_000_000

fuzz_one = fuzz_capture


def seeds() -> list[bytes]:
    frames = [frame for _, frame in sample_frames(4)] or [bytes(60), bytes(range(64))]
    little = (
        W.pcapng_shb()
        + W.pcapng_idb(1, 65535, name="eth0", tsresol=9, tsoffset=5)
        + b"".join(W.pcapng_epb(0, START_NS + i, f, comment="x") for i, f in enumerate(frames))
        + W.pcapng_nrb([(b"\x0a\0\0\1", "cam.local")])
        + W.pcapng_isb(0, 1)
    )
    big = (
        W.pcapng_shb(">")
        + W.pcapng_idb(101, 0, ">", tsresol=0x8A)
        + W.pcapng_idb(1, 128, ">")
        + W.pcapng_pb(0, 12345, frames[0], ">")
        + W.pcapng_spb(frames[-1], ">")
        + W.pcapng_epb(1, 99, frames[0], ">")
    )
    return [little, big, little + big, gzip.compress(little, mtime=0)]
