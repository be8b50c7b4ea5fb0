"""Unit tests of the capture reader: every format variant, damage handling, gzip, chunking."""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import dpkt
import pytest

from agent.capture import writer as w
from agent.capture.pcapfile import MAX_CAPLEN, CaptureReader, RecordBatch, open_capture
from agent.errors import CaptureError

BASE_TS = 1_700_000_000


def frames(n: int, seed: int = 0) -> list[bytes]:
    """n Ethernet/IPv4/UDP-looking frames of varied lengths (60..1514 bytes), all different."""
    out = []
    for i in range(n):
        size = (60, 61, 62, 63, 99, 342, 1514, 64)[(i + seed) % 8]
        head = b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\x08\x00"
        body = bytes((i * 7 + j + seed) & 0xFF for j in range(size - len(head) - 4))
        out.append(head + struct.pack(">I", i) + body)
    return out


def read_all(path: Path, max_records: int = 4096, **kw: int) -> list[tuple[float, bytes, int, int, int]]:
    """(ts, frame, origlen, linktype, interface) of every record."""
    out = []
    with CaptureReader(path, **kw) as reader:
        for batch in reader.batches(max_records):
            for i in range(len(batch)):
                out.append((batch.ts[i], batch.frame(i), batch.origlens[i], batch.linktype, batch.interface))
    return out


def read_until_error(path: Path, **kw: int) -> tuple[list[bytes], CaptureError | None]:
    """Frames read before the first CaptureError (raised by the constructor or by batches())."""
    got: list[bytes] = []
    try:
        reader = CaptureReader(path, **kw)
    except CaptureError as exc:
        return got, exc
    with reader:
        try:
            for batch in reader.batches():
                got.extend(batch.frame(i) for i in range(len(batch)))
        except CaptureError as exc:
            return got, exc
    return got, None


def write_pcap_struct(
    path: Path,
    recs: list[tuple[int, int, bytes]],
    *,
    magic: int,
    order: str,
    linktype: int = 1,
    modified: bool = False,
) -> None:
    """pcap written field by field (independent of PcapWriter), for the byte-order variants."""
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for sec, frac, data in recs:
        out.append(struct.pack(order + "IIII", sec, frac, len(data), len(data)))
        if modified:
            out.append(struct.pack(order + "IHBB", 3, 0x0800, 0, 0))
        out.append(data)
    path.write_bytes(b"".join(out))


# -- pcap -------------------------------------------------------------------------------------------


def test_pcap_written_by_dpkt(tmp_path: Path) -> None:
    path = tmp_path / "a.pcap"
    data = frames(50)
    with path.open("wb") as f:
        wr = dpkt.pcap.Writer(f, snaplen=65535, linktype=dpkt.pcap.DLT_EN10MB)
        for i, fr in enumerate(data):
            wr.writepkt(fr, ts=BASE_TS + i * 0.25 + 0.000001)
    with CaptureReader(path) as reader:
        assert reader.format == "pcap" and not reader.gzip
        assert reader.interfaces[0]["linktype"] == 1
        assert reader.interfaces[0]["snaplen"] == 65535
        recs = read_all(path)
    assert [r[1] for r in recs] == data
    assert [r[2] for r in recs] == [len(d) for d in data]
    for i, rec in enumerate(recs):
        assert rec[0] == pytest.approx(BASE_TS + i * 0.25 + 0.000001, abs=1e-7)
        assert rec[3:] == (1, 0)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, order: str, nano: bool) -> None:
    path = tmp_path / "b.pcap"
    data = frames(9)
    units = 10**9 if nano else 10**6
    recs = [(BASE_TS + i, (123_456_789 if nano else 123_456) + i, d) for i, d in enumerate(data)]
    write_pcap_struct(
        path, recs, magic=w.PCAP_MAGIC_NSEC if nano else w.PCAP_MAGIC_USEC, order=order, linktype=101
    )
    with CaptureReader(path) as reader:
        assert reader.interfaces[0]["tsresol"] == units
    got = read_all(path)
    assert [g[1] for g in got] == data
    for (sec, frac, _), g in zip(recs, got, strict=True):
        assert g[0] == pytest.approx(sec + frac / units, abs=2e-7)
        assert g[3] == 101


def test_pcap_nanosecond_written_by_dpkt(tmp_path: Path) -> None:
    path = tmp_path / "n.pcap"
    with path.open("wb") as f:
        wr = dpkt.pcap.Writer(f, nano=True)
        wr.writepkt(frames(1)[0], ts=BASE_TS + 0.123456789)
    (rec,) = read_all(path)
    assert rec[0] == pytest.approx(BASE_TS + 0.123456789, abs=2e-7)


def test_modified_pcap_variant(tmp_path: Path) -> None:
    path = tmp_path / "m.pcap"
    data = frames(5)
    write_pcap_struct(
        path, [(BASE_TS, i, d) for i, d in enumerate(data)], magic=0xA1B2CD34, order="<", modified=True
    )
    assert [r[1] for r in read_all(path)] == data


def test_pcap_writer_round_trip_and_snaplen(tmp_path: Path) -> None:
    path = tmp_path / "s.pcap"
    data = frames(8)
    with w.PcapWriter(path, snaplen=100) as wr:
        for i, d in enumerate(data):
            wr.write(BASE_TS + i / 3, d)
    got = read_all(path)
    assert [g[1] for g in got] == [d[:100] for d in data]
    assert [g[2] for g in got] == [len(d) for d in data]  # original length kept


def test_pcap_linktype_upper_bits_are_not_the_link_type(tmp_path: Path) -> None:
    path = tmp_path / "fcs.pcap"
    # bits 26-31 carry the FCS length; the link type is the low 16 bits
    path.write_bytes(struct.pack("<IHHiIII", w.PCAP_MAGIC_USEC, 2, 4, 0, 0, 65535, (1 << 28) | (4 << 26) | 1))
    with CaptureReader(path) as reader:
        assert reader.interfaces[0]["linktype"] == 1


# -- pcapng -------------------------------------------------------------------------------------------


def test_pcapng_written_by_dpkt(tmp_path: Path) -> None:
    path = tmp_path / "a.pcapng"
    data = frames(40)
    with path.open("wb") as f:
        wr = dpkt.pcapng.Writer(f, snaplen=65535, linktype=dpkt.pcap.DLT_EN10MB)
        for i, d in enumerate(data):
            wr.writepkt(d, ts=BASE_TS + i * 0.5 + 0.000002)
    with CaptureReader(path) as reader:
        assert reader.format == "pcapng"
        assert len(reader.interfaces) == 1 and reader.interfaces[0]["linktype"] == 1
    got = read_all(path)
    assert [g[1] for g in got] == data
    for i, g in enumerate(got):
        assert g[0] == pytest.approx(BASE_TS + i * 0.5 + 0.000002, abs=1e-7)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize(
    ("tsresol", "units"), [(None, 10**6), (3, 10**3), (9, 10**9), (0x8A, 2**10), (0x94, 2**20)]
)
def test_pcapng_time_resolutions(tmp_path: Path, order: str, tsresol: int | None, units: int) -> None:
    path = tmp_path / "r.pcapng"
    data = frames(6)
    ticks = [(BASE_TS + i) * units + units // 3 + i for i in range(len(data))]
    blob = w.pcapng_shb(order) + w.pcapng_idb(1, 0, order, name="eth9", tsresol=tsresol)
    blob += b"".join(w.pcapng_epb(0, t, d, order) for t, d in zip(ticks, data, strict=True))
    path.write_bytes(blob)
    with CaptureReader(path) as reader:
        assert reader.interfaces == [
            {
                "linktype": 1,
                "name": "eth9",
                "snaplen": 0,
                "tsresol": units,
                "tsoffset": 0,
                "section": 0,
                "id": 0,
            }
        ]
    got = read_all(path)
    assert [g[1] for g in got] == data
    for t, g in zip(ticks, got, strict=True):
        assert g[0] == pytest.approx(t / units, abs=2e-7)


def test_pcapng_tsoffset(tmp_path: Path) -> None:
    path = tmp_path / "o.pcapng"
    path.write_bytes(
        w.pcapng_shb() + w.pcapng_idb(1, tsoffset=BASE_TS) + w.pcapng_epb(0, 1_500_000, frames(1)[0])
    )
    (rec,) = read_all(path)
    assert rec[0] == pytest.approx(BASE_TS + 1.5)


def test_pcapng_interfaces_of_different_link_types_split_batches(tmp_path: Path) -> None:
    path = tmp_path / "multi.pcapng"
    data = frames(12)
    blob = w.pcapng_shb() + w.pcapng_idb(1, name="eth0") + w.pcapng_idb(101, name="tun0")
    ifaces = [0, 0, 1, 1, 1, 0, 1, 0, 0, 0, 1, 1]
    blob += b"".join(
        w.pcapng_epb(i, (BASE_TS + k) * 10**6, d) for k, (i, d) in enumerate(zip(ifaces, data, strict=True))
    )
    path.write_bytes(blob)
    with CaptureReader(path) as reader:
        assert [i["name"] for i in reader.interfaces] == ["eth0", "tun0"]
        batches = list(reader.batches())
    assert [b.interface for b in batches] == [0, 1, 0, 1, 0, 1]
    assert [b.linktype for b in batches] == [1, 101, 1, 101, 1, 101]
    assert all(b.linktype == reader.interfaces[b.interface]["linktype"] for b in batches)
    assert [b.frame(i) for b in batches for i in range(len(b))] == data


def test_pcapng_several_sections_both_byte_orders(tmp_path: Path) -> None:
    path = tmp_path / "sections.pcapng"
    data = frames(6)
    blob = w.pcapng_shb("<") + w.pcapng_idb(1, 0, "<", name="a")
    blob += w.pcapng_epb(0, BASE_TS * 10**6, data[0], "<") + w.pcapng_epb(
        0, BASE_TS * 10**6 + 1, data[1], "<"
    )
    blob += (
        w.pcapng_shb(">") + w.pcapng_idb(113, 0, ">", name="b") + w.pcapng_idb(1, 0, ">", name="c", tsresol=9)
    )
    blob += w.pcapng_epb(1, (BASE_TS + 1) * 10**9, data[2], ">") + w.pcapng_epb(
        0, (BASE_TS + 2) * 10**6, data[3], ">"
    )
    blob += (
        w.pcapng_shb("<")
        + w.pcapng_idb(1, 0, "<", name="d")
        + w.pcapng_epb(0, (BASE_TS + 3) * 10**6, data[4], "<")
    )
    blob += w.pcapng_epb(0, (BASE_TS + 4) * 10**6, data[5], "<")
    path.write_bytes(blob)
    got = read_all(path)
    assert [g[1] for g in got] == data
    # interface numbers run across sections, as Wireshark's frame.interface_id does
    assert [g[4] for g in got] == [0, 0, 2, 1, 3, 3]
    assert [g[3] for g in got] == [1, 1, 1, 113, 1, 1]
    assert [round(g[0], 6) for g in got] == [
        BASE_TS,
        BASE_TS + 1e-6,
        BASE_TS + 1,
        BASE_TS + 2,
        BASE_TS + 3,
        BASE_TS + 4,
    ]
    with CaptureReader(path) as reader:
        list(reader.batches())
        assert [(i["name"], i["section"], i["id"]) for i in reader.interfaces] == [
            ("a", 0, 0),
            ("b", 1, 0),
            ("c", 1, 1),
            ("d", 2, 0),
        ]


def test_pcapng_simple_and_obsolete_packet_blocks(tmp_path: Path) -> None:
    path = tmp_path / "spb.pcapng"
    data = frames(4, seed=4)  # 99, 342, 1514 and 64 bytes
    blob = w.pcapng_shb() + w.pcapng_idb(1, snaplen=80)
    blob += w.pcapng_epb(0, (BASE_TS + 7) * 10**6, data[0][:80], origlen=len(data[0]))
    blob += w.pcapng_spb(data[1][:80], origlen=len(data[1]))  # cut to the snap length of interface 0
    blob += w.pcapng_spb(data[2][:60])  # shorter than the snap length
    blob += w.pcapng_pb(0, (BASE_TS + 9) * 10**6, data[3][:64], drops=2)
    path.write_bytes(blob)
    got = read_all(path)
    assert [g[1] for g in got] == [data[0][:80], data[1][:80], data[2][:60], data[3][:64]]
    assert [g[2] for g in got] == [len(data[0]), len(data[1]), 60, 64]
    # simple packet blocks have no time stamp: they keep the previous one
    assert [g[0] for g in got] == [BASE_TS + 7, BASE_TS + 7, BASE_TS + 7, BASE_TS + 9]


def test_pcapng_spb_data_longer_than_snaplen_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "spb2.pcapng"
    data = frames(1)[0]
    path.write_bytes(w.pcapng_shb() + w.pcapng_idb(1, snaplen=64) + w.pcapng_spb(data))
    (rec,) = read_all(path)
    assert rec[1] == data[:64] and rec[2] == len(data)


def test_pcapng_other_blocks_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "skip.pcapng"
    data = frames(3)
    blob = w.pcapng_shb(options=w.pcapng_options([(4, b"camwatch-test")]))
    blob += w.pcapng_nrb([(b"\xc0\xa8\x0a\x01", "gw.lan")])
    blob += w.pcapng_idb(1, name="eth0") + w.pcapng_epb(0, BASE_TS * 10**6, data[0], comment="first")
    blob += w.pcapng_isb(0, BASE_TS * 10**6)
    blob += w.pcapng_block(w.BT_DSB, struct.pack("<II", 0x544C534B, 4) + b"abcd")  # TLS key log secrets
    blob += w.pcapng_block(w.BT_CUSTOM, struct.pack("<I", 32473) + b"vendor data")
    blob += w.pcapng_block(0x12345678, b"")  # unknown type, empty body
    blob += w.pcapng_epb(0, BASE_TS * 10**6, data[1]) + w.pcapng_epb(0, BASE_TS * 10**6, data[2])
    path.write_bytes(blob)
    assert [g[1] for g in read_all(path)] == data


def test_batches_respect_max_records_and_share_chunks(tmp_path: Path) -> None:
    path = tmp_path / "many.pcap"
    data = frames(100)
    with w.PcapWriter(path) as wr:
        for i, d in enumerate(data):
            wr.write(BASE_TS + i, d)
    with CaptureReader(path) as reader:
        batches = list(reader.batches(max_records=7))
    assert all(1 <= len(b) <= 7 for b in batches)
    assert sum(len(b) for b in batches) == 100
    # a batch points into its chunk: no copies per record
    assert isinstance(batches[0].data, bytes)  # what the pipeline wants: no conversion per batch
    assert batches[0].data is batches[1].data
    first = batches[0]
    assert first.file_offset == 0 and first.offsets[0] == 24 + 16
    assert bytes(first.data[first.offsets[0] : first.offsets[0] + first.caplens[0]]) == data[0]
    assert isinstance(first, RecordBatch)


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_every_chunk_size_gives_the_same_records(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"c.{fmt}"
    data = frames(30)
    if fmt == "pcap":
        with w.PcapWriter(path) as wr:
            for i, d in enumerate(data):
                wr.write(BASE_TS + i, d)
    else:
        blob = w.pcapng_shb() + w.pcapng_idb(1) + w.pcapng_idb(101)
        blob += b"".join(w.pcapng_epb(i % 3 // 2, (BASE_TS + i) * 10**6, d) for i, d in enumerate(data))
        path.write_bytes(blob)
    expected = read_all(path)
    assert [e[1] for e in expected] == data
    for chunk in [64, 65, 100, 127, 333, 1000, 1600, 4096]:
        assert read_all(path, chunk_size=chunk) == expected, chunk
        # file offsets of the chunks: every frame's bytes are found again in the file
        blob = path.read_bytes()
        with CaptureReader(path, chunk_size=chunk) as reader:
            for batch in reader.batches(max_records=5):
                for i in range(len(batch)):
                    at = batch.file_offset + batch.offsets[i]
                    assert blob[at : at + batch.caplens[i]] == batch.frame(i)


def test_batches_can_be_read_twice(tmp_path: Path) -> None:
    path = tmp_path / "twice.pcap"
    with w.PcapWriter(path) as wr:
        for i, d in enumerate(frames(5)):
            wr.write(BASE_TS + i, d)
    with CaptureReader(path, chunk_size=100) as reader:
        first = [b.frame(i) for b in reader.batches() for i in range(len(b))]
        second = [b.frame(i) for b in reader.batches() for i in range(len(b))]
    assert first == second == frames(5)


# -- empty, header-only, not a capture ------------------------------------------------------------


def test_empty_file_has_no_records(tmp_path: Path) -> None:
    path = tmp_path / "empty.pcap"
    path.write_bytes(b"")
    with open_capture(path) as reader:
        assert reader.format == "empty"
        assert list(reader.batches()) == []


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_header_only_file_has_no_records(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"h.{fmt}"
    if fmt == "pcap":
        w.PcapWriter(path, linktype=113).close()
    else:
        path.write_bytes(w.pcapng_shb() + w.pcapng_idb(113, name="any"))
    with CaptureReader(path) as reader:
        assert reader.format == fmt
        assert reader.interfaces[0]["linktype"] == 113
        assert list(reader.batches()) == []


def test_html_file_is_refused_with_its_first_bytes(tmp_path: Path) -> None:
    path = tmp_path / "page.pcap"
    path.write_text("<!DOCTYPE html><html></html>")
    with pytest.raises(CaptureError) as info:
        CaptureReader(path)
    assert str(info.value) == f"{path}: not a pcap or pcapng file (starts with 3c 21 44 4f)"


def test_compressed_with_something_else_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 40)
    with pytest.raises(CaptureError, match="zstd-compressed; decompress it first"):
        CaptureReader(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="no such file"):
        CaptureReader(tmp_path / "nope.pcap")
    with pytest.raises(CaptureError, match="is a directory"):
        CaptureReader(tmp_path)


def test_short_pcap_header(tmp_path: Path) -> None:
    path = tmp_path / "short.pcap"
    path.write_bytes(struct.pack("<IHH", w.PCAP_MAGIC_USEC, 2, 4))
    with pytest.raises(CaptureError, match="truncated pcap file header: 8 of 24 bytes"):
        CaptureReader(path)


def test_unsupported_pcap_version(tmp_path: Path) -> None:
    path = tmp_path / "v.pcap"
    path.write_bytes(struct.pack("<IHHiIII", w.PCAP_MAGIC_USEC, 1, 0, 0, 0, 65535, 1))
    with pytest.raises(CaptureError, match=r"at byte 4: unsupported pcap version 1\.0"):
        CaptureReader(path)


# -- damage -----------------------------------------------------------------------------------------


def _pcap_bytes(data: list[bytes]) -> bytes:
    out = [struct.pack("<IHHiIII", w.PCAP_MAGIC_USEC, 2, 4, 0, 0, 262144, 1)]
    for i, d in enumerate(data):
        out.append(struct.pack("<IIII", BASE_TS + i, i, len(d), len(d)) + d)
    return b"".join(out)


def _record_starts(data: list[bytes]) -> list[int]:
    starts, pos = [], 24
    for d in data:
        starts.append(pos)
        pos += 16 + len(d)
    return starts


def test_truncated_record_message(tmp_path: Path) -> None:
    data = frames(3)
    data[2] = (data[2] + bytes(1514))[:1514]
    blob = _pcap_bytes(data)
    cut = _record_starts(data)[2] + 16 + 200
    path = tmp_path / "cut.pcap"
    path.write_bytes(blob[:cut])
    got, err = read_until_error(path)
    assert got == data[:2]
    assert err is not None
    assert (
        str(err)
        == f"{path} at byte {_record_starts(data)[2]}: truncated record: header says 1514 bytes, 200 left"
    )
    assert err.offset == _record_starts(data)[2]


def test_truncated_record_header_message(tmp_path: Path) -> None:
    data = frames(2)
    path = tmp_path / "cuthdr.pcap"
    path.write_bytes(_pcap_bytes(data) + b"\x01" * 7)
    got, err = read_until_error(path)
    assert got == data
    assert err is not None and "truncated record header: 7 of 16 bytes" in str(err)


@pytest.mark.parametrize("bad_caplen", [MAX_CAPLEN + 1, 0xFFFFFFFF])
@pytest.mark.parametrize("chunk", [64, 1 << 20])
def test_impossible_caplen_in_pcap(tmp_path: Path, bad_caplen: int, chunk: int) -> None:
    data = frames(6)
    blob = bytearray(_pcap_bytes(data) + bytes(MAX_CAPLEN + 100))  # room, so only the value is wrong
    at = _record_starts(data)[4]
    struct.pack_into("<I", blob, at + 8, bad_caplen)
    path = tmp_path / "caplen.pcap"
    path.write_bytes(bytes(blob))
    got, err = read_until_error(path, chunk_size=chunk)
    assert got == data[:4]
    assert err is not None and err.offset == at
    assert f"impossible captured length {bad_caplen}" in str(err)


def _ng(data: list[bytes]) -> tuple[bytes, list[int]]:
    blocks = [w.pcapng_shb(), w.pcapng_idb(1, name="eth0")]
    blocks += [w.pcapng_epb(0, (BASE_TS + i) * 10**6, d) for i, d in enumerate(data)]
    starts, pos = [], 0
    for b in blocks:
        starts.append(pos)
        pos += len(b)
    return b"".join(blocks), starts[2:]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (lambda b, at: struct.pack_into("<I", b, at + 4, 13), "bad block length 13 in enhanced packet block"),
        (lambda b, at: struct.pack_into("<I", b, at + 4, 8), "bad block length 8 in enhanced packet block"),
        (lambda b, at: struct.pack_into("<I", b, at + 4, 24), "bad block length 24 in enhanced packet block"),
        (lambda b, at: struct.pack_into("<I", b, at + 4, 1 << 30), "bad block length 1073741824"),
        (lambda b, at: struct.pack_into("<I", b, at + 20, 5000), "impossible captured length 5000 in a"),
        (
            lambda b, at: struct.pack_into("<I", b, at + 8, 3),
            "interface 3, but the section has described only 1",
        ),
        (
            lambda b, at: struct.pack_into("<I", b, at + 4, struct.unpack_from("<I", b, at + 4)[0] + 4),
            "bad block length: header says",
        ),
    ],
)
def test_pcapng_damage(tmp_path: Path, patch: Callable[[bytearray, int], None], message: str) -> None:
    data = frames(6)
    raw, starts = _ng(data)
    blob = bytearray(raw)
    patch(blob, starts[3])
    path = tmp_path / "bad.pcapng"
    path.write_bytes(bytes(blob))
    for chunk in (64, 1 << 20):
        got, err = read_until_error(path, chunk_size=chunk)
        assert got == data[:3]
        assert err is not None and message in str(err), str(err)
        assert err.offset == starts[3]


def test_pcapng_packet_before_any_interface(tmp_path: Path) -> None:
    path = tmp_path / "noidb.pcapng"
    path.write_bytes(w.pcapng_shb() + w.pcapng_epb(0, 0, frames(1)[0]))
    got, err = read_until_error(path)
    assert got == []
    assert err is not None and "bad block order" in str(err) and err.offset == 28


def test_pcapng_bad_second_section_header(tmp_path: Path) -> None:
    data = frames(2)
    raw, _ = _ng(data)
    bad_shb = bytearray(w.pcapng_shb())
    bad_shb[8:12] = b"\x01\x02\x03\x04"
    path = tmp_path / "badshb.pcapng"
    path.write_bytes(raw + bytes(bad_shb))
    got, err = read_until_error(path)
    assert got == data
    assert err is not None and err.offset == len(raw) and "byte-order magic is 01 02 03 04" in str(err)


def test_pcapng_unsupported_version(tmp_path: Path) -> None:
    path = tmp_path / "ver.pcapng"
    path.write_bytes(w.pcapng_shb(version=(2, 0)) + w.pcapng_idb())
    with CaptureReader(path) as reader, pytest.raises(CaptureError, match=r"unsupported pcapng version 2\.0"):
        list(reader.batches())


def test_pcapng_truncated_block_message(tmp_path: Path) -> None:
    data = frames(3)
    raw, starts = _ng(data)
    path = tmp_path / "cut.pcapng"
    path.write_bytes(raw[: starts[2] + 40])
    got, err = read_until_error(path)
    assert got == data[:2]
    size = len(w.pcapng_epb(0, 0, data[2]))
    assert err is not None
    assert str(err) == f"{path} at byte {starts[2]}: truncated block: header says {size} bytes, 40 left"


# -- truncation at every byte ------------------------------------------------------------------------


def _complete_before(ends: list[int], cut: int) -> int:
    return sum(1 for e in ends if e <= cut)


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_truncation_at_every_byte(tmp_path: Path, fmt: str) -> None:
    data = [d[:70] for d in frames(5)]  # small records keep the file (and the test) short
    if fmt == "pcap":
        blob = _pcap_bytes(data)
        starts = _record_starts(data)
        ends = [s + 16 + len(d) for s, d in zip(starts, data, strict=True)]
        header_len = 24
    else:
        blob, starts = _ng(data)
        ends = [*starts[1:], len(blob)]
        header_len = starts[0]
    path = tmp_path / f"t.{fmt}"
    for cut in range(len(blob) + 1):
        path.write_bytes(blob[:cut])
        if 0 < cut < header_len:
            # the file header (pcap) or the section header / interface block (pcapng) is cut
            got, err = read_until_error(path)
            assert got == [], cut
            if fmt == "pcapng" and cut == 28:
                assert err is None  # a section header alone is a complete (empty) capture
            else:
                assert err is not None and err.offset in (None, 0, 28), (cut, err)
            continue
        for chunk in (64, 1 << 20):
            got, err = read_until_error(path, chunk_size=chunk)
            n = _complete_before(ends, cut)
            assert got == data[:n], (cut, chunk)
            at_boundary = cut in (0, header_len, *ends)
            if at_boundary:
                assert err is None, (cut, err)
            else:
                assert err is not None, cut
                expected = starts[n] if n < len(starts) else len(blob)
                assert err.offset == expected, (cut, err)
                assert str(err).count("\n") == 0


# -- gzip ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_gzip_detected_by_magic_not_name(tmp_path: Path, fmt: str) -> None:
    data = frames(20)
    plain = _pcap_bytes(data) if fmt == "pcap" else _ng(data)[0]
    path = tmp_path / f"capture.{fmt}"  # no .gz suffix on purpose
    path.write_bytes(gzip.compress(plain))
    with CaptureReader(path) as reader:
        assert reader.gzip and reader.format == fmt
    assert [g[1] for g in read_all(path, chunk_size=100)] == data
    assert [g[1] for g in read_all(path)] == data


def test_gzip_of_a_multi_member_stream(tmp_path: Path) -> None:
    data = frames(10)
    plain = _pcap_bytes(data)
    path = tmp_path / "multi.pcap.gz"
    path.write_bytes(gzip.compress(plain[:500]) + gzip.compress(plain[500:]))
    assert [g[1] for g in read_all(path)] == data


def test_gzip_cut_short_keeps_the_decompressed_records(tmp_path: Path) -> None:
    data = frames(200)
    plain = _pcap_bytes(data)
    packed = gzip.compress(plain, compresslevel=1)
    path = tmp_path / "cut.pcap.gz"
    path.write_bytes(packed[: len(packed) * 2 // 3])
    got, err = read_until_error(path, chunk_size=4096)
    assert err is not None
    assert "decompressed" in str(err)
    assert 0 < len(got) < len(data)
    assert got == data[: len(got)]
    # nothing decompressible was dropped: the records lost are only those past the cut
    d = zlib.decompressobj(wbits=31)
    available = len(d.decompress(packed[: len(packed) * 2 // 3]))
    ends = [s + 16 + len(x) for s, x in zip(_record_starts(data), data, strict=True)]
    assert len(got) == _complete_before(ends, available)


def test_gzip_corrupt_in_the_middle(tmp_path: Path) -> None:
    data = frames(300)
    packed = bytearray(gzip.compress(_pcap_bytes(data), compresslevel=1))
    for i in range(len(packed) // 2, len(packed) // 2 + 64):
        packed[i] ^= 0x5A
    path = tmp_path / "bad.pcap.gz"
    path.write_bytes(bytes(packed))
    got, err = read_until_error(path)
    assert err is not None and "(offset in the decompressed data)" in str(err)
    # deflate may turn the damaged part into garbage before the check fails; the part before
    # the damage must come through intact
    assert len(got) > 50 and got[:50] == data[:50]


def test_gzip_of_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "page.gz"
    path.write_bytes(gzip.compress(b"<html>hello</html>"))
    with pytest.raises(
        CaptureError,
        match=r"gzip-compressed file that is not a pcap or pcapng file \(starts with 3c 68 74 6d\)",
    ):
        CaptureReader(path)


def test_broken_gzip_header(tmp_path: Path) -> None:
    path = tmp_path / "broken.gz"
    path.write_bytes(b"\x1f\x8b\x08" + b"\xff" * 5)
    with pytest.raises(CaptureError, match="gzip"):
        CaptureReader(path)


@pytest.mark.parametrize("which", [0, 3, 5])  # first, middle and last block of the run
@pytest.mark.parametrize("chunk", [64, 1 << 20])
def test_pcapng_wrong_trailing_length_is_caught_in_a_run_of_blocks(
    tmp_path: Path, which: int, chunk: int
) -> None:
    data = frames(6)
    raw, starts = _ng(data)
    blob = bytearray(raw)
    end_of_block = starts[which + 1] if which + 1 < len(starts) else len(blob)
    struct.pack_into("<I", blob, end_of_block - 4, 4)
    path = tmp_path / "trailer.pcapng"
    path.write_bytes(bytes(blob))
    got, err = read_until_error(path, chunk_size=chunk)
    assert got == data[:which]
    assert err is not None and err.offset == starts[which]
    assert "trailer says 4" in str(err)


@pytest.mark.parametrize("chunk", [64, 1 << 20])
def test_pcapng_caplen_over_the_limit_in_a_well_formed_block(tmp_path: Path, chunk: int) -> None:
    """A block whose lengths agree but whose frame is bigger than any real link allows."""
    data = frames(5)
    huge = bytes(MAX_CAPLEN + 100)
    blocks = [w.pcapng_shb(), w.pcapng_idb(1)]
    blocks += [w.pcapng_epb(0, i, d) for i, d in enumerate(data[:3])]
    blocks += [w.pcapng_epb(0, 3, huge), w.pcapng_epb(0, 4, data[4])]
    path = tmp_path / "huge.pcapng"
    path.write_bytes(b"".join(blocks))
    got, err = read_until_error(path, chunk_size=chunk)
    assert got == data[:3]
    assert err is not None and err.offset == sum(len(b) for b in blocks[:5])
    assert f"impossible captured length {MAX_CAPLEN + 100} (more than {MAX_CAPLEN})" in str(err)
