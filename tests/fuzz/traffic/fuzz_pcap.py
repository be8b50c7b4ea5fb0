"""Classic pcap reader (agent/capture/pcapfile.py): every magic / byte order, gzip, record walking,
chunk bridging. Bad input may only end in a one-line CaptureError, after the records before it."""

from __future__ import annotations

import gzip
import struct

from tests.fuzz.traffic.common import fuzz_capture, pcap_bytes, sample_frames

MAX_LEN = 16384

fuzz_one = fuzz_capture


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
