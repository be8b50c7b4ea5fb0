"""The compiled pcap record walk (agent/capture/recwalk.c) against the pure-Python walk: same
records, same header fields bit for bit, same errors at the same offsets, on valid, cut-short and
garbage captures in both byte orders, every time-stamp unit and both record-header lengths."""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agent.capture.pcapfile as pcapfile
from agent.capture import native
from agent.errors import CaptureError

SETTINGS = settings(
    max_examples=int(os.environ.get("CAMWATCH_HYPOTHESIS_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# magic (as written in the file's byte order), record header length
VARIANTS = [(0xA1B2C3D4, 16), (0xA1B23C4D, 16), (0xA1B2CD34, 24)]


def test_library_is_built_where_a_compiler_exists() -> None:
    """`make setup` builds the library; without it the reader silently falls back to Python."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine: the pure-Python walk is the only one")
    if os.environ.get("CAMWATCH_NO_NATIVE"):
        pytest.skip("CAMWATCH_NO_NATIVE is set")
    assert native.LIBRARY.is_file(), "run `make setup` (python -m agent.capture.native build)"
    assert native.pcap_walk is not None


needs_native = pytest.mark.skipif(native.pcap_walk is None, reason="compiled record walk not built")


def _read(
    path: Path, chunk: int, use_native: bool
) -> tuple[list[tuple[np.ndarray, ...]], list[bytes], str | None]:
    saved = pcapfile.pcap_walk
    pcapfile.pcap_walk = native.pcap_walk if use_native else None
    arrays: list[tuple[np.ndarray, ...]] = []
    frames: list[bytes] = []
    try:
        with pcapfile.CaptureReader(path, chunk_size=chunk) as reader:
            for batch in reader.batches(max_records=5):
                arrays.append(tuple(a.copy() for a in batch.arrays()))
                frames.extend(batch.frame(i) for i in range(len(batch)))
    except CaptureError as exc:
        return arrays, frames, f"{exc.offset}|{exc}"
    finally:
        pcapfile.pcap_walk = saved
    return arrays, frames, None


def _same(path: Path, chunk: int) -> list[bytes]:
    a_arrays, a_frames, a_err = _read(path, chunk, True)
    b_arrays, b_frames, b_err = _read(path, chunk, False)
    assert a_frames == b_frames
    assert a_err == b_err
    assert len(a_arrays) == len(b_arrays)
    for xs, ys in zip(a_arrays, b_arrays, strict=True):
        for x, y in zip(xs, ys, strict=True):
            assert x.dtype == y.dtype
            assert np.array_equal(x, y)  # float64 time stamps compared exactly
    return a_frames


@st.composite
def pcaps(draw: st.DrawFn) -> bytes:
    magic, hlen = draw(st.sampled_from(VARIANTS))
    order = draw(st.sampled_from(["<", ">"]))
    parts = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 262144, 1)]
    for i in range(draw(st.integers(min_value=0, max_value=20))):
        size = draw(st.integers(min_value=0, max_value=400))
        orig = size + draw(st.integers(min_value=0, max_value=3))
        sec = draw(st.integers(min_value=0, max_value=2**32 - 1))
        frac = draw(st.integers(min_value=0, max_value=2**32 - 1))
        head = struct.pack(order + "IIII", sec, frac, size, orig) + b"\xee" * (hlen - 16)
        parts.append(head + bytes((i + j) & 0xFF for j in range(size)))
    return b"".join(parts)


@needs_native
@SETTINGS
@given(blob=pcaps(), data=st.data(), chunk=st.sampled_from([13, 64, 257, 4096, 1 << 20]))
def test_native_and_python_walks_agree(blob: bytes, data: st.DataObject, chunk: int) -> None:
    cut = data.draw(st.integers(min_value=24, max_value=len(blob)), label="cut")
    flips = data.draw(
        st.lists(st.tuples(st.integers(min_value=24), st.integers(0, 255)), max_size=3), label="flips"
    )
    damaged = bytearray(blob[:cut])
    for at, value in flips:
        if at < len(damaged):
            damaged[at] = value  # may corrupt a length: impossible caplen or a different chain
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "walk.pcap"
        path.write_bytes(bytes(damaged))
        _same(path, chunk)


@needs_native
@SETTINGS
@given(
    variant=st.sampled_from(VARIANTS),
    order=st.sampled_from(["<", ">"]),
    garbage=st.binary(max_size=800),
    chunk=st.sampled_from([64, 4096]),
)
def test_garbage_after_the_header_reads_the_same(
    variant: tuple[int, int], order: str, garbage: bytes, chunk: int
) -> None:
    head = struct.pack(order + "IHHiIII", variant[0], 2, 4, 0, 0, 65535, 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "garbage.pcap"
        path.write_bytes(head + garbage)
        _same(path, chunk)


@needs_native
def test_sample_capture_reads_the_same() -> None:
    sample = Path(__file__).resolve().parents[2] / "agent" / "sample" / "camera_vlan.pcap"
    frames = _same(sample, pcapfile.DEFAULT_CHUNK_SIZE)
    assert len(frames) > 1000


@needs_native
def test_walk_refuses_an_end_past_the_buffer() -> None:
    assert native.pcap_walk is not None
    with pytest.raises(ValueError):
        native.pcap_walk(b"\x00" * 32, 64, 0, 16, False, 1e6, 4)
    (offsets, ts, caplens, origlens), nxt = native.pcap_walk(
        struct.pack("<IIII", 5, 500000, 4, 4) + b"abcd" + b"\x00" * 12, 32, 0, 16, False, 1e6, 8
    )
    assert offsets.tolist() == [16] and caplens.tolist() == [4] and origlens.tolist() == [4]
    assert ts.tolist() == [5.5]
    assert nxt == 20  # the 12 bytes left are a header whose record does not fit
