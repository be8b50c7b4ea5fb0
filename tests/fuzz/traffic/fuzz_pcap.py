"""Classic pcap reader (agent/capture/pcapfile.py): every magic / byte order, gzip, record walking,
chunk bridging. Bad input may only end in a one-line CaptureError, after the records before it.
When the compiled record walk (agent/capture/recwalk.c) is built, every input is also read with the
pure-Python walk: both must give the same records, time stamps and error, exactly."""

from __future__ import annotations

import gzip
import struct

import agent.capture.pcapfile as pcapfile
from agent.capture import native
from tests.fuzz.traffic.common import as_file, fuzz_capture, pcap_bytes, read_capture, sample_frames

MAX_LEN = 16384


def fuzz_one(data: bytes) -> None:
    fuzz_capture(data)  # reads with the compiled walk when it is built
    if native.pcap_walk is None:
        return
    path = as_file(data)
    compiled = read_capture(path, 1 << 20, 4096)
    pcapfile.pcap_walk = None
    try:
        python = read_capture(path, 1 << 20, 4096)
    finally:
        pcapfile.pcap_walk = native.pcap_walk
    assert compiled == python, f"compiled and Python record walks differ: {compiled[1]} vs {python[1]}"


def seeds() -> list[bytes]:
    frames = [frame for _, frame in sample_frames(6)] or [bytes(60), bytes(range(64))]
    plain = pcap_bytes(frames)
    out = [plain, pcap_bytes(frames[:2], linktype=113), gzip.compress(plain, mtime=0)]
    # nanosecond big-endian and the 24-byte-record "modified" variant
    big = struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1)
    big += b"".join(struct.pack(">IIII", 1, 2, len(f), len(f)) + f for f in frames[:3])
    modified = struct.pack("<IHHiIII", 0xA1B2CD34, 2, 4, 0, 0, 65535, 1)
    modified += b"".join(struct.pack("<IIII8x", 1, 2, len(f), len(f)) + f for f in frames[:3])
    return [*out, big, modified]
