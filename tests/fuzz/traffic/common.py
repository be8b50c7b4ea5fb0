"""Helpers shared by the traffic fuzz targets (not a target itself: no ``fuzz_`` prefix)."""

from __future__ import annotations

import os
import struct
from functools import cache
from pathlib import Path
from typing import Any

from agent.config import RULES_DIR
from analyzers.traffic.fingerprints import FingerprintRules, load_rules

SAMPLE_CAPTURE = Path(__file__).resolve().parents[3] / "agent" / "sample" / "camera_vlan.pcap"
_memfd: int | None = None


def as_file(data: bytes) -> str:
    """A path whose content is `data`: one anonymous in-memory file per process, rewritten per call.

    The capture reader opens paths; a memfd avoids touching the disk a million times."""
    global _memfd
    if _memfd is None:
        _memfd = os.memfd_create("camwatch-fuzz")
    os.ftruncate(_memfd, 0)
    os.pwrite(_memfd, data, 0)
    return f"/proc/self/fd/{_memfd}"


@cache
def fingerprint_rules() -> FingerprintRules:
    return load_rules(str(RULES_DIR))


def fingerprint_strings(*texts: str | None) -> None:
    """Run announced strings through every fingerprint lookup the analyzers use on them."""
    rules = fingerprint_rules()
    for text in texts:
        brand = rules.brand_for(text)
        rules.maker_of(brand)
        rules.brand_for_model(text)
        rules.http_server_maker(text)
        rules.http_realm_maker(text)
        rules.http_path_maker(text)
        rules.rtsp_server_maker(text)
        rules.rtsp_realm_facts(text)
        rules.tls_subject_maker(text)


def pcap_bytes(
    frames: list[bytes], linktype: int = 1, start: float = 1_700_000_000.0, times: list[float] | None = None
) -> bytes:
    """A classic little-endian microsecond pcap holding `frames` one millisecond apart (or at
    `start` + `times`)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)]
    for i, frame in enumerate(frames):
        ts = start + (times[i] if times is not None else i / 1000)
        sec = int(ts)
        out.append(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(frame), len(frame)))
        out.append(frame)
    return b"".join(out)


def sample_frames(limit: int | None = None) -> list[tuple[int, bytes]]:
    """(linktype, frame) of the bundled sample capture, when present."""
    from agent.capture.pcapfile import CaptureReader

    frames: list[tuple[int, bytes]] = []
    if not SAMPLE_CAPTURE.is_file():
        return frames
    with CaptureReader(SAMPLE_CAPTURE) as reader:
        for batch in reader.batches():
            for i in range(len(batch)):
                frames.append((batch.linktype, batch.frame(i)))
                if limit is not None and len(frames) >= limit:
                    return frames
    return frames


def udp_payloads(port: int, limit: int = 8) -> list[bytes]:
    """UDP payloads to or from `port` in the bundled sample (Ethernet, optional 802.1Q tags, IPv4)."""
    out: list[bytes] = []
    for linktype, frame in sample_frames():
        if linktype != 1:
            continue
        pos, ethertype = 12, int.from_bytes(frame[12:14], "big")
        while ethertype in (0x8100, 0x88A8) and len(frame) >= pos + 6:
            pos += 4
            ethertype = int.from_bytes(frame[pos : pos + 2], "big")
        ip = pos + 2
        if ethertype != 0x0800 or len(frame) < ip + 28 or frame[ip + 9] != 17:
            continue
        udp = ip + (frame[ip] & 0x0F) * 4
        sport, dport = struct.unpack_from("!HH", frame, udp)
        if port in (sport, dport) and len(frame) > udp + 8:
            out.append(bytes(frame[udp + 8 :]))
            if len(out) >= limit:
                break
    return out


def touch(*values: Any) -> None:
    """Render values the way events do (str/repr), so lazy properties and formatting run."""
    for value in values:
        str(value)


def read_capture(path: str, chunk_size: int, max_records: int) -> tuple[list[tuple[Any, ...]], Any]:
    """Every record the reader yields (with batch invariants checked) and the error it ended with.

    Only CaptureError is an accepted outcome for bad input; it must be one line."""
    from agent.capture.pcapfile import MAX_CAPLEN, CaptureReader
    from agent.errors import CaptureError

    records: list[tuple[Any, ...]] = []
    error = None
    try:
        with CaptureReader(path, chunk_size=chunk_size) as reader:
            for batch in reader.batches(max_records=max_records):
                n = len(batch)
                assert 0 < n <= max_records, f"batch of {n} records (max {max_records})"
                assert len(batch.ts) == len(batch.caplens) == len(batch.origlens) == n
                assert 0 <= batch.interface < len(reader.interfaces), "batch names an unknown interface"
                for i in range(n):
                    start, cap = batch.offsets[i], batch.caplens[i]
                    assert 0 <= cap <= MAX_CAPLEN and start >= 0 and start + cap <= len(batch.data)
                    records.append((batch.ts[i], batch.frame(i), batch.origlens[i], batch.linktype))
    except CaptureError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(path), f"not a one-line error: {message!r}"
        error = (exc.offset, exc.problem)
    return records, error


def fuzz_capture(data: bytes) -> None:
    """Read `data` as a capture file with tiny chunks (every record bridged) and with the default
    chunk size; both must see the same records and the same damage."""
    import math

    path = as_file(data)
    small, small_error = read_capture(path, 64, 3)
    large, large_error = read_capture(path, 1 << 20, 4096)
    if any(e is not None and "gzip data is corrupt" in e[1] for e in (small_error, large_error)):
        # Decompression stops at the damage with a granularity of one 64-byte step (see
        # CaptureReader._gzip_salvage), and deflate may emit some garbage before it notices: the
        # run with more of that garbage may report it as a damaged record instead. Both must end
        # in an error and agree on everything before it.
        assert small_error is not None and large_error is not None, f"{small_error} vs {large_error}"
        assert abs(len(small) - len(large)) <= 4, f"records before the damage: {len(small)} vs {len(large)}"
        n = min(len(small), len(large))
        small, large = small[:n], large[:n]
    else:
        assert small_error == large_error, f"chunking changed the error: {small_error} vs {large_error}"
    assert len(small) == len(large), f"chunking changed the record count: {len(small)} vs {len(large)}"
    for a, b in zip(small, large, strict=True):
        assert a[1:] == b[1:], "chunking changed a record"
        # the batched fast path divides by a float, the careful path by an int: allow an ulp or two
        assert math.isclose(a[0], b[0], rel_tol=1e-12, abs_tol=1e-9), f"time stamps differ: {a[0]} vs {b[0]}"


class ByteReader:
    """Structure-aware decoding of fuzz bytes without atheris (the regression replay runs without it):
    integers and slices are taken from the front; an exhausted input yields zeros."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def u8(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def uint(self, nbytes: int) -> int:
        chunk = self.data[self.pos : self.pos + nbytes]
        self.pos += len(chunk)
        return int.from_bytes(chunk, "big")

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + max(0, n)]
        self.pos += len(chunk)
        return chunk
