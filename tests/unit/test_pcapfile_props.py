"""Property tests of the capture reader: cut-short files and arbitrary garbage."""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.capture import writer as w
from agent.capture.pcapfile import CaptureReader
from agent.errors import CaptureError

# CAMWATCH_HYPOTHESIS_EXAMPLES=3000 for a longer search (e.g. after changing the reader).
SETTINGS = settings(
    max_examples=int(os.environ.get("CAMWATCH_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def captures(draw: st.DrawFn) -> tuple[bytes, list[bytes], list[int], list[int], int]:
    """(file bytes, frames, record ends, starts of all blocks/records after the header, header length)."""
    fmt = draw(st.sampled_from(["pcap", "pcapng"]))
    order = draw(st.sampled_from(["<", ">"]))
    sizes = draw(st.lists(st.integers(min_value=0, max_value=300), min_size=0, max_size=12))
    frames = [bytes((i * 31 + j) & 0xFF for j in range(n)) for i, n in enumerate(sizes)]
    starts, ends = [], []
    if fmt == "pcap":
        nano = draw(st.booleans())
        parts = [
            struct.pack(
                order + "IHHiIII", w.PCAP_MAGIC_NSEC if nano else w.PCAP_MAGIC_USEC, 2, 4, 0, 0, 65535, 1
            )
        ]
        pos = 24
        for i, fr in enumerate(frames):
            parts.append(struct.pack(order + "IIII", 1_700_000_000 + i, i, len(fr), len(fr)) + fr)
            starts.append(pos)
            pos += 16 + len(fr)
            ends.append(pos)
        return b"".join(parts), frames, ends, starts, 24
    n_ifaces = draw(st.integers(min_value=1, max_value=3))
    head = w.pcapng_shb(order) + b"".join(w.pcapng_idb(1 + k * 100, 0, order) for k in range(n_ifaces))
    blocks = [head]
    pos = len(head)
    for i, fr in enumerate(frames):
        kind = draw(st.sampled_from(["epb", "epb", "pb", "isb", "section"]))
        extra = []
        if kind == "isb":  # a non-packet block in between must not disturb anything
            extra = [w.pcapng_isb(0, i, order)]
        elif kind == "section":  # a new section, maybe in the other byte order, with its own interfaces
            order = draw(st.sampled_from(["<", ">"]))
            n_ifaces = draw(st.integers(min_value=1, max_value=2))
            extra = [w.pcapng_shb(order)] + [w.pcapng_idb(113, 0, order) for _ in range(n_ifaces)]
        for block in extra:
            blocks.append(block)
            starts.append(pos)
            pos += len(block)
        iface = draw(st.integers(min_value=0, max_value=n_ifaces - 1))
        block = (w.pcapng_epb if kind != "pb" else w.pcapng_pb)(iface, 10**15 + i, fr, order)
        blocks.append(block)
        starts.append(pos)
        pos += len(block)
        ends.append(pos)
    return b"".join(blocks), frames, ends, starts, len(head)


def _read(path: Path, chunk: int) -> tuple[list[bytes], CaptureError | None]:
    got: list[bytes] = []
    try:
        with CaptureReader(path, chunk_size=chunk) as reader:
            for batch in reader.batches(max_records=3):
                assert batch.linktype == reader.interfaces[batch.interface]["linktype"]
                got.extend(batch.frame(i) for i in range(len(batch)))
    except CaptureError as exc:
        assert "\n" not in str(exc)
        return got, exc
    return got, None


@SETTINGS
@given(
    cap=captures(),
    data=st.data(),
    chunk=st.sampled_from([64, 100, 257, 4096, 1 << 20]),
    compress=st.booleans(),
)
def test_cut_short_capture_yields_exactly_the_complete_records(
    cap: tuple[bytes, list[bytes], list[int], list[int], int], data: st.DataObject, chunk: int, compress: bool
) -> None:
    blob, frames, ends, starts, header_len = cap
    cut = data.draw(st.integers(min_value=header_len, max_value=len(blob)), label="cut")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cut"
        path.write_bytes(gzip.compress(blob[:cut], mtime=0) if compress else blob[:cut])
        got, err = _read(path, chunk)
    complete = sum(1 for e in ends if e <= cut)
    assert got == frames[:complete]
    if cut == len(blob) or cut in starts:
        assert err is None  # the file ends cleanly between two blocks
    else:
        # the damaged block is the one the cut falls into
        assert err is not None
        assert err.offset == max(s for s in starts if s < cut)
        if compress:
            assert "decompressed" in str(err)


@SETTINGS
@given(
    head=st.sampled_from(
        [
            struct.pack("<IHHiIII", w.PCAP_MAGIC_USEC, 2, 4, 0, 0, 65535, 1),
            struct.pack(">IHHiIII", w.PCAP_MAGIC_NSEC, 2, 4, 0, 0, 65535, 1),
            w.pcapng_shb("<") + w.pcapng_idb(1),
            w.pcapng_shb(">") + w.pcapng_idb(1, 0, ">"),
        ]
    ),
    garbage=st.binary(min_size=0, max_size=600),
    chunk=st.sampled_from([64, 4096]),
)
def test_garbage_after_a_header_never_escapes_as_another_exception(
    head: bytes, garbage: bytes, chunk: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "garbage"
        path.write_bytes(head + garbage)
        got, err = _read(path, chunk)
    total = sum(len(g) for g in got)
    assert total <= len(garbage)
    if err is not None:
        assert err.offset is None or len(head) <= err.offset <= len(head) + len(garbage)
