"""Capture-file reader: pcap and pcapng (optionally gzip-compressed) as batches of record offsets.

The reader is the first stage of the hot path, so it never builds an object or copies bytes per
record. It reads the file in large chunks (plain `read()` into a new bytes object: the cheapest way
Python has to get file data). For classic pcap only the record boundaries are found in Python (one
caplen read per record, since they chain); the header fields of the whole batch are then gathered
with NumPy (agent/vectordecode.py). pcapng blocks are walked with precompiled `struct` calls.
Either way the result is a `RecordBatch`: the chunk plus the time stamp, offset, captured length and
original length of each record in it. A record that spans two chunks is copied alone into a small
"bridge" buffer, so chunks themselves are never copied.

Formats:
* pcap in both byte orders, microsecond (a1b2c3d4) and nanosecond (a1b23c4d) magics, and the
  "modified" pcap variant (a1b2cd34, 24-byte record headers) that Wireshark also reads;
* pcapng: Section Header Blocks in both byte orders and any number of sections, Interface
  Description Blocks (if_name, if_tsresol including power-of-two resolutions, if_tsoffset),
  Enhanced, Simple and obsolete Packet Blocks; every other block type is skipped;
* either of them gzip-compressed (detected by the 1f 8b magic, not by the file name).

Damage (a cut-short file, an impossible captured length, a bad block length, a packet block naming
an interface that was never described...) ends the iteration: every complete record before the
damage is yielded first, then `CaptureError` is raised with the byte offset of the damaged record
(in the decompressed stream for gzip files, and the message says so) and one line saying what is
wrong.

A zero-byte file is read as a capture with no records, as tshark does; so is a file holding only a
header.
"""

from __future__ import annotations

import gzip
import struct
import sys
import zlib
from collections.abc import Generator, Iterator
from io import BufferedReader
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from agent.capture.native import pcap_walk
from agent.errors import CaptureError
from agent.vectordecode import record_headers

__all__ = ["DEFAULT_CHUNK_SIZE", "MAX_CAPLEN", "CaptureReader", "RecordBatch", "open_capture"]

# 4 MiB: large enough that the vectorised path's per-batch NumPy set-up is spread over thousands of
# records, small enough for the chunk to stay in the L2/L3 cache while it is decoded.
DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
# Records per batch (a batch never spans two chunks, so with 4 MiB chunks this rarely binds).
DEFAULT_MAX_RECORDS = 16384
# Wireshark's limit for ordinary link types (WTAP_MAX_PACKET_SIZE_STANDARD); a larger captured
# length means the header is garbage, and trusting it would make the reader swallow the file.
MAX_CAPLEN = 262_144
# Upper bound for one pcapng block, so a corrupt length cannot make us buffer the whole file.
MAX_BLOCK_LEN = 16 * 1024 * 1024

_GZIP_MAGIC = b"\x1f\x8b"
_SHB_MAGIC = b"\x0a\x0d\x0d\x0a"
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_GZIP_ERRORS = (OSError, EOFError, zlib.error)

# pcap magic -> (struct byte order, time stamp units per second, record header length)
_PCAP_MAGICS: dict[bytes, tuple[str, int, int]] = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000, 16),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000, 16),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000, 16),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000, 16),
    b"\x34\xcd\xb2\xa1": ("<", 1_000_000, 24),
    b"\xa1\xb2\xcd\x34": (">", 1_000_000, 24),
}
# Other common magics, only to make the refusal message more helpful.
_OTHER_MAGICS = (
    (b"\x28\xb5\x2f\xfd", "zstd-compressed; decompress it first"),
    (b"\xfd7zXZ", "xz-compressed; decompress it first"),
    (b"BZh", "bzip2-compressed; decompress it first"),
    (b"PK\x03\x04", "like a zip archive"),
    (b"\x04\x22\x4d\x18", "lz4-compressed; decompress it first"),
)

_BT_IDB = 1
_BT_PB = 2
_BT_SPB = 3
_BT_EPB = 6
_BT_SHB = 0x0A0D0D0A

_OPT_ENDOFOPT = 0
_OPT_IF_NAME = 2
_OPT_IF_TSRESOL = 9
_OPT_IF_TSOFFSET = 14

_BLOCK_NAMES = {
    _BT_IDB: "interface description",
    _BT_PB: "packet",
    _BT_SPB: "simple packet",
    _BT_EPB: "enhanced packet",
    _BT_SHB: "section header",
}
# Smallest legal total length of each block type we interpret.
_MIN_BLOCK_LEN = {_BT_SHB: 28, _BT_IDB: 20, _BT_PB: 32, _BT_SPB: 16, _BT_EPB: 32}

# parse(buf, base, pos) -> yields batches, returns (position reached, bytes needed from there)
_ParseResult = Generator["RecordBatch", None, tuple[int, int]]


class RecordBatch:
    """Records of one chunk sharing a link type and interface.

    The per-record values are available both as parallel Python lists (`ts`, `offsets`,
    `caplens`, `origlens`: what the per-packet path iterates) and as NumPy arrays (`arrays()`:
    what the vectorised path gathers with). A reader fills whichever it produces natively and the
    other form is built on first use.
    """

    __slots__ = ("_arrays", "_caplens", "_offsets", "_origlens", "_ts", "data", "file_offset",
                 "interface", "linktype")

    def __init__(
        self,
        data: bytes | memoryview,
        linktype: int,
        interface: int,
        ts: list[float] | None,
        offsets: list[int] | None,
        caplens: list[int] | None,
        origlens: list[int] | None,
        file_offset: int,
        arrays: tuple[Any, Any, Any, Any] | None = None,
    ) -> None:
        self.data = data  # one chunk of the (decompressed) file holding the records' bytes
        self.linktype = linktype  # pcap LINKTYPE_* of every record in the batch
        # Index into CaptureReader.interfaces: the pcapng interface id, counted across sections so
        # that it stays unique when a file has several (0 for pcap).
        self.interface = interface
        self._ts = ts  # seconds since the epoch
        self._offsets = offsets  # start of each frame within `data`
        self._caplens = caplens  # captured lengths
        self._origlens = origlens  # original lengths on the wire
        self.file_offset = file_offset  # offset of data[0] in the (decompressed) file
        self._arrays = arrays

    @classmethod
    def from_arrays(
        cls, data: bytes, linktype: int, interface: int, ts: Any, offsets: Any, caplens: Any,
        origlens: Any, file_offset: int,
    ) -> RecordBatch:
        return cls(data, linktype, interface, None, None, None, None, file_offset,
                   (ts, offsets, caplens, origlens))

    def _list(self, i: int) -> list[Any]:
        assert self._arrays is not None
        return self._arrays[i].tolist()

    @property
    def ts(self) -> list[float]:
        if self._ts is None:
            self._ts = self._list(0)
        return self._ts

    @property
    def offsets(self) -> list[int]:
        if self._offsets is None:
            self._offsets = self._list(1)
        return self._offsets

    @property
    def caplens(self) -> list[int]:
        if self._caplens is None:
            self._caplens = self._list(2)
        return self._caplens

    @property
    def origlens(self) -> list[int]:
        if self._origlens is None:
            self._origlens = self._list(3)
        return self._origlens

    def arrays(self) -> tuple[Any, Any, Any, Any]:
        """(ts float64, offsets int64, caplens int64, origlens int64) as NumPy arrays."""
        if self._arrays is None:
            import numpy as np

            self._arrays = (
                np.array(self.ts, dtype=np.float64),
                np.array(self.offsets, dtype=np.int64),
                np.array(self.caplens, dtype=np.int64),
                np.array(self.origlens, dtype=np.int64),
            )
        return self._arrays

    def __len__(self) -> int:
        if self._offsets is None and self._arrays is not None:
            return len(self._arrays[1])
        return len(self.offsets)

    def frame(self, i: int) -> bytes:
        """Captured bytes of record `i` (a copy; for tests and slow paths, not the hot path)."""
        start = self.offsets[i]
        return bytes(self.data[start : start + self.caplens[i]])


class CaptureReader:
    """Sequential reader of one pcap / pcapng file (plain or gzip-compressed).

    Attributes:
        path: the file name as given.
        format: "pcap", "pcapng", or "empty" for a zero-byte file.
        gzip: True when the file is gzip-compressed.
        interfaces: one dict per interface: linktype, name (if_name or None), snaplen,
            tsresol (time stamp units per second), tsoffset (seconds), section (0-based) and id
            (the interface id within its section, as in Wireshark's frame.interface_id). A pcap
            file has one entry; a pcapng file one per Interface Description Block, in file order,
            so that `interfaces[batch.interface]` describes a batch even in multi-section files.
            Entries before the first packet are known after construction, later ones once
            `batches()` has passed them.
    """

    def __init__(self, path: str | Path, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.path = str(path)
        self.format = "empty"
        self.gzip = False
        self.interfaces: list[dict[str, Any]] = []
        self._chunk_size = max(64, chunk_size)
        self._raw: BufferedReader | None = None
        self._stream: Any = None
        self._first = b""
        self._first_problem: str | None = None
        self._gzip_pos = 0  # decompressed bytes read so far (gzip files)
        self._used = False
        self._open()

    # -- public API -----------------------------------------------------------------------------

    def batches(self, max_records: int = DEFAULT_MAX_RECORDS) -> Iterator[RecordBatch]:
        """Yield every complete record, in file order, in batches of at most `max_records`.

        Raises CaptureError after yielding the records before the first damage. A second call
        starts again from the beginning of the file (regular files only).
        """
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        if self._used:
            self._rewind()
        self._used = True
        if self.format == "pcap":
            return self._drive(_PcapParser(self, max_records))
        if self.format == "pcapng":
            return self._drive(_PcapngParser(self, max_records))
        return iter(())

    def close(self) -> None:
        if self._stream is not None and self._stream is not self._raw:
            self._stream.close()
        if self._raw is not None:
            self._raw.close()
        self._stream = self._raw = None

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        gz = "+gzip" if self.gzip else ""
        return f"<CaptureReader {self.path!r} {self.format}{gz}, {len(self.interfaces)} interface(s)>"

    # -- opening --------------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            raw = open(self.path, "rb")  # noqa: SIM115 - kept open until close()
        except OSError as exc:
            raise CaptureError(self.path, None, _os_problem(exc)) from None
        self._raw = raw
        try:
            self.gzip = raw.peek(2)[:2] == _GZIP_MAGIC
            self._stream = gzip.GzipFile(fileobj=raw, mode="rb") if self.gzip else raw
            first, problem = self._read(self._chunk_size)
        except OSError as exc:
            self.close()
            raise CaptureError(self.path, None, _os_problem(exc)) from None
        if problem is not None and not first:
            self.close()
            raise CaptureError(self.path, None, problem)
        self._first, self._first_problem = first, problem
        try:
            self._detect(first)
        except CaptureError:
            self.close()
            raise

    def _detect(self, head: bytes) -> None:
        if not head:
            self.format = "empty"
            return
        magic = head[:4]
        if magic in _PCAP_MAGICS:
            self.format = "pcap"
            self._parse_pcap_header(head)
        elif magic == _SHB_MAGIC:
            self.format = "pcapng"
            self._prescan_pcapng(head)
        else:
            what = "a gzip-compressed file that is " if self.gzip else ""
            hint = next(
                (f"; it looks {text}" for prefix, text in _OTHER_MAGICS if head.startswith(prefix)), ""
            )
            raise CaptureError(
                self.path, None, f"{what}not a pcap or pcapng file (starts with {magic.hex(' ')}){hint}"
            )

    def _parse_pcap_header(self, head: bytes) -> None:
        if len(head) < 24:
            raise self._damage(0, f"truncated pcap file header: {len(head)} of 24 bytes")
        order, units, _ = _PCAP_MAGICS[head[:4]]
        major, minor, _zone, _sigfigs, snaplen, linktype = struct.unpack_from(order + "HHiIII", head, 4)
        if major != 2:
            raise self._damage(4, f"unsupported pcap version {major}.{minor} (only 2.x exists)")
        self.interfaces = [
            {
                "linktype": linktype & 0xFFFF,  # upper bits carry FCS information, not the type
                "name": None,
                "snaplen": snaplen,
                "tsresol": units,
                "tsoffset": 0,
                "section": 0,
                "id": 0,
            }
        ]

    def _prescan_pcapng(self, head: bytes) -> None:
        """Fill `interfaces` from the blocks before the first packet; damage is left to batches()."""
        pos = 0
        end = len(head)
        section: _Section | None = None
        n_sections = 0
        try:
            while end - pos >= 12:
                if head[pos : pos + 4] == _SHB_MAGIC:
                    base = 0 if section is None else section.iface_base + section.n_ifaces
                    section, blen = self._parse_shb(head, pos, end, base, 0)
                    n_sections += 1
                elif section is None:
                    return
                else:
                    btype, blen = section.block_hdr.unpack_from(head, pos)
                    self._check_block_len(pos, btype, blen)
                    if btype in (_BT_EPB, _BT_PB, _BT_SPB) or pos + blen > end:
                        return
                    self._check_trailer(head, pos, blen, section, 0)
                    if btype == _BT_IDB:
                        self._parse_idb(head, pos, blen, section, n_sections - 1)
                pos += blen
        except CaptureError:
            return

    # -- reading ----------------------------------------------------------------------------------

    def _read(self, size: int) -> tuple[bytes, str | None]:
        """Up to `size` bytes (fewer only at the end of the data).

        Returns (data, problem); `problem` says why gzip data ended early. For gzip the data comes
        from read1() calls, one decompression step each, so what was decompressed before a corrupt
        or cut-short spot is returned rather than lost with the exception.
        """
        stream = self._stream
        if stream is None:
            raise CaptureError(self.path, None, "reader is closed")
        if not self.gzip:
            return stream.read(size), None
        parts: list[bytes] = []
        have = 0
        problem = None
        while have < size:
            try:
                data = stream.read1(size - have)
            except _GZIP_ERRORS as exc:
                problem = f"gzip data is corrupt or cut short ({exc})"
                # the failed step's output went with the exception: recover it in small steps
                data = self._gzip_salvage(self._gzip_pos, size - have)
                if data:
                    parts.append(data)
                    self._gzip_pos += len(data)
                break
            if not data:
                break
            parts.append(data)
            have += len(data)
            self._gzip_pos += len(data)
        return (parts[0] if len(parts) == 1 else b"".join(parts)), problem

    def _gzip_salvage(self, start: int, limit: int) -> bytes:
        """Decompressed bytes from offset `start` up to the damage (at most `limit`), decompressing
        the file again in 64-byte steps; b"" when that is not possible. Error path only."""
        out = bytearray()
        if self._raw is None:
            return b""
        try:
            self._raw.seek(0)
            stream = gzip.GzipFile(fileobj=self._raw, mode="rb")
            skip = start
            while skip > 0:
                got = stream.read1(min(skip, DEFAULT_CHUNK_SIZE))
                if not got:
                    return b""
                skip -= len(got)
            while len(out) < limit:
                got = stream.read1(min(64, limit - len(out)))
                if not got:
                    break
                out += got
        except _GZIP_ERRORS:
            pass  # the damage itself, or a file that cannot be read again (a pipe)
        return bytes(out)

    def _rewind(self) -> None:
        if self._raw is None:
            raise CaptureError(self.path, None, "reader is closed")
        try:
            self._raw.seek(0)
        except OSError as exc:
            raise CaptureError(self.path, None, f"cannot read the file a second time: {exc}") from None
        if self._stream is not self._raw:
            self._stream.close()
        self._stream = gzip.GzipFile(fileobj=self._raw, mode="rb") if self.gzip else self._raw
        self._gzip_pos = 0
        self._first, self._first_problem = self._read(self._chunk_size)

    def _damage(self, offset: int, problem: str) -> CaptureError:
        if self.gzip:
            problem += " (offset in the decompressed data)"
        return CaptureError(self.path, offset, problem)

    def _drive(self, parser: _PcapParser | _PcapngParser) -> Iterator[RecordBatch]:
        """Feed the parser chunk after chunk; bridge the records that span two chunks."""
        buf, problem = self._first, self._first_problem
        self._first, self._first_problem = b"", None
        base = 0  # file offset of buf[0]
        pos = parser.start
        while True:
            try:
                pos, need = yield from parser.parse(buf, base, pos)
            except CaptureError:
                yield from parser.flush()  # the records before the damage still count
                raise
            yield from parser.flush()  # a batch never spans two buffers
            # `need` bytes from `pos` make the next complete unit; the buffer holds fewer.
            left = buf[pos:]
            left_at = base + pos
            if problem is not None:
                raise self._damage(base + len(buf), problem)
            data, problem = self._read(max(self._chunk_size, need - len(left)))
            data_at = left_at + len(left)
            dpos = 0
            while left:
                take = need - len(left)
                if len(data) - dpos < take:
                    # The unit needs more than this chunk holds: tiny chunks, huge blocks, or the end.
                    if problem is not None or len(data) - dpos == 0:
                        whole = left + data[dpos:]
                        if problem is not None:
                            raise self._damage(left_at + len(whole), problem)
                        raise self._damage(left_at, parser.truncated(len(whole), need))
                    more, problem = self._read(max(self._chunk_size, take - (len(data) - dpos)))
                    if not more and problem is None:
                        whole = left + data[dpos:]
                        raise self._damage(left_at, parser.truncated(len(whole), need))
                    data_at += dpos
                    data, dpos = data[dpos:] + more, 0
                    continue
                bridge = left + data[dpos : dpos + take]
                dpos += take
                try:
                    bpos, bneed = yield from parser.parse(bridge, left_at, 0)
                except CaptureError:
                    yield from parser.flush()
                    raise
                yield from parser.flush()
                # Either the bridge held the whole unit, or only its header (now we know its size).
                left, left_at, need = bridge[bpos:], left_at + bpos, bneed
            if not data:
                if problem is not None:
                    raise self._damage(data_at, problem)
                return
            buf, base, pos = data, data_at, dpos

    # -- pcapng block helpers ---------------------------------------------------------------------

    def _parse_shb(self, buf: bytes, pos: int, end: int, iface_base: int, base: int) -> tuple[_Section, int]:
        """Parse the Section Header Block at `pos` (at least 12 bytes available)."""
        if struct.unpack_from("<I", buf, pos + 8)[0] == _BYTE_ORDER_MAGIC:
            order = "<"
        elif struct.unpack_from(">I", buf, pos + 8)[0] == _BYTE_ORDER_MAGIC:
            order = ">"
        else:
            magic = buf[pos + 8 : pos + 12].hex(" ")
            raise self._damage(base + pos, f"bad section header block: byte-order magic is {magic}")
        section = _Section(order, iface_base)
        blen = section.u32.unpack_from(buf, pos + 4)[0]
        self._check_block_len(base + pos, _BT_SHB, blen)
        if pos + blen <= end:
            self._check_trailer(buf, pos, blen, section, base)
            major, minor = struct.unpack_from(order + "HH", buf, pos + 12)
            if major != 1:
                raise self._damage(base + pos, f"unsupported pcapng version {major}.{minor}")
        return section, blen

    def _check_block_len(self, offset: int, btype: int, blen: int) -> None:
        minimum = _MIN_BLOCK_LEN.get(btype, 12)
        if blen < minimum or blen % 4 or blen > MAX_BLOCK_LEN:
            name = _BLOCK_NAMES.get(btype, f"type 0x{btype:08x}")
            raise self._damage(offset, f"bad block length {blen} in {name} block")

    def _check_trailer(self, buf: bytes, pos: int, blen: int, section: _Section, base: int) -> None:
        trailer = section.u32.unpack_from(buf, pos + blen - 4)[0]
        if trailer != blen:
            raise self._damage(base + pos, f"bad block length: header says {blen}, trailer says {trailer}")

    def _parse_idb(self, buf: bytes, pos: int, blen: int, section: _Section, section_no: int) -> None:
        linktype, _reserved, snaplen = struct.unpack_from(section.order + "HHI", buf, pos + 8)
        info: dict[str, Any] = {
            "linktype": linktype,
            "name": None,
            "snaplen": snaplen,
            "tsresol": 1_000_000,
            "tsoffset": 0,
            "section": section_no,
            "id": section.n_ifaces,
        }
        for code, value in _options(buf, pos + 16, pos + blen - 4, section.order):
            if code == _OPT_IF_NAME:
                info["name"] = value.rstrip(b"\0").decode("utf-8", "replace")
            elif code == _OPT_IF_TSRESOL and value:
                exp = value[0]
                # high bit set: a negative power of 2, else of 10
                info["tsresol"] = 2 ** (exp & 0x7F) if exp & 0x80 else 10**exp
            elif code == _OPT_IF_TSOFFSET and len(value) == 8:
                info["tsoffset"] = struct.unpack(section.order + "q", value)[0]
        index = section.iface_base + section.n_ifaces
        section.n_ifaces += 1
        if index < len(self.interfaces):
            self.interfaces[index] = info  # seen already by the pre-scan or an earlier pass
        else:
            self.interfaces.append(info)


class _PcapParser:
    """Record walker for classic pcap files."""

    def __init__(self, reader: CaptureReader, max_records: int) -> None:
        order, units, hlen = _PCAP_MAGICS[reader._first[:4]]
        self.reader = reader
        self.max_records = max_records
        self.start = 24
        self.hlen = hlen
        self.div = float(units)
        self.linktype = reader.interfaces[0]["linktype"]
        self.little = order == "<"
        self.caplen_at = struct.Struct(order + "I").unpack_from

    def flush(self) -> Iterator[RecordBatch]:
        return iter(())  # parse() yields every batch it starts

    def truncated(self, have: int, need: int) -> str:
        hlen = self.hlen
        if have < hlen:
            return f"truncated record header: {have} of {hlen} bytes"
        return f"truncated record: header says {need - hlen} bytes, {have - hlen} left"

    def parse(self, buf: bytes, base: int, pos: int) -> _ParseResult:
        # Record boundaries chain (each caplen gives the next offset), so they are walked one by one:
        # in C when agent/capture/native.py could load it (headers gathered on the way), else in
        # Python, with the header fields then gathered for the whole batch at once with NumPy.
        caplen_at, hlen, div, linktype = self.caplen_at, self.hlen, self.div, self.linktype
        max_records = self.max_records
        end = len(buf)
        native = pcap_walk if type(buf) is bytes else None
        swap = self.little != (sys.byteorder == "little")
        while True:
            if native is not None:
                (offsets, ts, caplens, origlens), pos = native(buf, end, pos, hlen, swap, div, max_records)
                count = len(offsets)
            else:
                positions: list[int] = []
                add = positions.append
                try:
                    for _ in range(max_records):
                        nxt = pos + hlen + caplen_at(buf, pos + 8)[0]
                        if nxt > end:
                            break
                        add(pos)
                        pos = nxt
                except struct.error:
                    pass  # fewer than 12 bytes left: the header continues in the next chunk
                count = len(positions)
                if count:
                    ts, offsets, caplens, origlens = record_headers(
                        buf, np.array(positions, dtype=np.int64), self.little, hlen, div
                    )
            if count:
                # Checked per batch (C speed) rather than per record; see MAX_CAPLEN.
                if int(caplens.max()) > MAX_CAPLEN:
                    bad = int(np.argmax(caplens > MAX_CAPLEN))
                    if bad:
                        yield RecordBatch.from_arrays(
                            buf, linktype, 0, ts[:bad], offsets[:bad], caplens[:bad], origlens[:bad], base
                        )
                    at = base + int(offsets[bad]) - hlen
                    raise self.reader._damage(at, _impossible_caplen(int(caplens[bad])))
                yield RecordBatch.from_arrays(buf, linktype, 0, ts, offsets, caplens, origlens, base)
                if count == max_records:
                    continue
            # The record at `pos` is incomplete in this buffer.
            if end - pos < hlen:
                return pos, hlen
            cap = caplen_at(buf, pos + 8)[0]
            if cap > MAX_CAPLEN:
                raise self.reader._damage(base + pos, _impossible_caplen(cap))
            return pos, hlen + cap


class _Section:
    """Byte-order specific structs of one pcapng section, and where its interfaces start."""

    __slots__ = ("block_hdr", "epb", "epb_run", "iface_base", "n_ifaces", "order", "pb", "u32")

    def __init__(self, order: str, iface_base: int) -> None:
        self.order = order
        self.block_hdr = struct.Struct(order + "II")
        # type, total length, interface, ts high, ts low, captured length, original length
        self.epb = struct.Struct(order + "IIIIIII")
        # the same, preceded by the trailing length of the block before
        self.epb_run = struct.Struct(order + "IIIIIIII")
        # type, total length, interface, drops, ts high, ts low, captured length, original length
        self.pb = struct.Struct(order + "IIHHIIII")
        self.u32 = struct.Struct(order + "I")
        self.iface_base = iface_base
        self.n_ifaces = 0


class _PcapngParser:
    """Block walker for pcapng files; keeps the batch being filled across calls to parse()."""

    def __init__(self, reader: CaptureReader, max_records: int) -> None:
        self.reader = reader
        self.max_records = max_records
        self.start = 0
        self.section: _Section | None = None
        self.n_sections = 0
        self.last_ts = 0.0
        # The batch being filled (records of interface `iface` in `buf`).
        self.buf = b""
        self.base = 0
        self.iface = -1
        self.linktype = 0
        self._new_lists()

    def _new_lists(self) -> None:
        self.ts: list[float] = []
        self.offsets: list[int] = []
        self.caplens: list[int] = []
        self.origlens: list[int] = []

    def flush(self) -> Iterator[RecordBatch]:
        offsets, caplens = self.offsets, self.caplens
        if not offsets:
            return
        bad = -1
        if max(caplens) > MAX_CAPLEN:  # checked per batch, at C speed, rather than per record
            bad = next(i for i, c in enumerate(caplens) if c > MAX_CAPLEN)
            bad_cap, bad_at = caplens[bad], self.base + offsets[bad] - 28
            del self.ts[bad:], offsets[bad:], caplens[bad:], self.origlens[bad:]
        if offsets:
            yield RecordBatch(
                self.buf, self.linktype, self.iface, self.ts, offsets, caplens, self.origlens, self.base
            )
        self._new_lists()
        if bad >= 0:
            raise self.reader._damage(bad_at, _impossible_caplen(bad_cap))

    def truncated(self, have: int, need: int) -> str:
        if have < 12:
            return f"truncated block header: {have} of 12 bytes"
        return f"truncated block: header says {need} bytes, {have} left"

    def parse(self, buf: bytes, base: int, pos: int) -> _ParseResult:
        reader = self.reader
        self.buf, self.base = buf, base
        end = len(buf)
        max_records = self.max_records
        while True:
            section = self.section
            # Fast path: a run of Enhanced Packet Blocks on the interface of the current batch. One
            # unpack per block reads the previous block's trailing length together with this block's
            # header; the caplen limit is checked per batch in flush().
            if section is not None and self.iface >= 0 and pos >= 4:
                run = section.epb_run.unpack_from
                u32 = section.u32.unpack_from
                local_iface = self.iface - section.iface_base
                info = reader.interfaces[self.iface]
                units = float(info["tsresol"])
                tsoff = info["tsoffset"]
                ts, offsets, caplens, origlens = self.ts, self.offsets, self.caplens, self.origlens
                ts_add, off_add = ts.append, offsets.append
                cap_add, orig_add = caplens.append, origlens.append
                taken = len(offsets)
                prev_pos, prev_len = -1, u32(buf, pos - 4)[0]  # the block before was checked already
                try:
                    for _ in range(max_records - taken):
                        trailer, btype, blen, ifc, hi, lo, cap, orig = run(buf, pos - 4)
                        nxt = pos + blen
                        if (
                            trailer != prev_len
                            or btype != _BT_EPB
                            or ifc != local_iface
                            or nxt > end
                            or blen & 3
                            or cap > blen - 32
                        ):
                            break  # anything unusual goes through the careful path below
                        ts_add(((hi << 32) | lo) / units + tsoff)
                        off_add(pos + 28)
                        cap_add(cap)
                        orig_add(orig)
                        prev_pos, prev_len = pos, blen
                        pos = nxt
                except struct.error:
                    pass  # fewer than 28 bytes left
                if len(offsets) > taken:
                    if u32(buf, pos - 4)[0] != prev_len:
                        # the last block taken ends in a wrong length: give it back to the careful path
                        del ts[-1], offsets[-1], caplens[-1], origlens[-1]
                        pos = prev_pos
                    if ts:
                        self.last_ts = ts[-1]
                if len(offsets) >= max_records:
                    yield from self.flush()
                    continue

            # Careful path: exactly one block, of any type.
            if end - pos < 12:
                return pos, 12
            if buf[pos : pos + 4] == _SHB_MAGIC:
                iface_base = 0 if section is None else section.iface_base + section.n_ifaces
                new_section, blen = reader._parse_shb(buf, pos, end, iface_base, base)
                if pos + blen > end:
                    return pos, blen
                yield from self.flush()
                self.section = new_section
                self.n_sections += 1
                self.iface = -1
                pos += blen
                continue
            if section is None:
                raise reader._damage(
                    base + pos, "bad block order: the first block is not a section header block"
                )
            btype, blen = section.block_hdr.unpack_from(buf, pos)
            reader._check_block_len(base + pos, btype, blen)
            if pos + blen > end:
                return pos, blen
            reader._check_trailer(buf, pos, blen, section, base)
            if btype == _BT_IDB:
                reader._parse_idb(buf, pos, blen, section, self.n_sections - 1)
            elif btype in (_BT_EPB, _BT_PB, _BT_SPB):
                yield from self._packet_block(buf, base, pos, btype, blen, section)
            # other block types (name resolution, statistics, secrets, custom...) are skipped
            pos += blen

    def _packet_block(
        self, buf: bytes, base: int, pos: int, btype: int, blen: int, section: _Section
    ) -> Iterator[RecordBatch]:
        reader = self.reader
        if btype == _BT_SPB:
            ifc = 0
            (orig,) = section.u32.unpack_from(buf, pos + 8)
            data_off = pos + 12
            cap = min(orig, blen - 16)
        else:
            if btype == _BT_EPB:
                _, _, ifc, hi, lo, cap, orig = section.epb.unpack_from(buf, pos)
            else:
                _, _, ifc, _drops, hi, lo, cap, orig = section.pb.unpack_from(buf, pos)
            data_off = pos + 28
            if cap > blen - 32:
                name = _BLOCK_NAMES[btype]
                raise reader._damage(
                    base + pos, f"impossible captured length {cap} in a {blen}-byte {name} block"
                )
            if cap > MAX_CAPLEN:
                raise reader._damage(base + pos, _impossible_caplen(cap))
        if ifc >= section.n_ifaces:
            raise reader._damage(
                base + pos,
                f"bad block order: {_BLOCK_NAMES[btype]} block for interface {ifc}, "
                f"but the section has described only {section.n_ifaces} interface(s) before it",
            )
        global_iface = section.iface_base + ifc
        info = reader.interfaces[global_iface]
        if btype == _BT_SPB:
            if info["snaplen"]:
                cap = min(cap, info["snaplen"])
            stamp = self.last_ts  # a simple packet block has no time stamp; keep time monotonic
        else:
            stamp = (hi * 4294967296 + lo) / info["tsresol"] + info["tsoffset"]
        if global_iface != self.iface or len(self.offsets) >= self.max_records:
            yield from self.flush()
            self.iface = global_iface
            self.linktype = info["linktype"]
        self.ts.append(stamp)
        self.offsets.append(data_off)
        self.caplens.append(cap)
        self.origlens.append(orig)
        self.last_ts = stamp


def _options(buf: bytes, pos: int, end: int, order: str) -> Iterator[tuple[int, bytes]]:
    """(code, value) pairs of a pcapng option list; stops quietly at a malformed option."""
    hdr = struct.Struct(order + "HH")
    while pos + 4 <= end:
        code, length = hdr.unpack_from(buf, pos)
        if code == _OPT_ENDOFOPT:
            return
        value_end = pos + 4 + length
        if value_end > end:
            return
        yield code, bytes(buf[pos + 4 : value_end])
        pos = value_end + (-length % 4)


def _impossible_caplen(cap: int) -> str:
    return f"impossible captured length {cap} (more than {MAX_CAPLEN})"


def _os_problem(exc: OSError) -> str:
    return exc.strerror.lower() if exc.strerror else str(exc)


def open_capture(path: str | Path) -> CaptureReader:
    """Open a pcap / pcapng file (plain or gzip); raises CaptureError if it is not one."""
    return CaptureReader(path)


def _main(argv: list[str]) -> int:
    """`python -m agent.capture.pcapfile FILE...`: record count and read speed of each file."""
    import time

    status = 0
    for name in argv:
        t0 = time.perf_counter()
        n = 0
        try:
            with CaptureReader(name) as reader:
                for batch in reader.batches():
                    n += len(batch)
        except CaptureError as exc:
            print(f"{exc} (after {n} records)")
            status = 1
            continue
        dt = time.perf_counter() - t0
        kind = reader.format + ("+gzip" if reader.gzip else "")
        print(f"{name}: {kind}, {n} records, {dt:.3f} s, {n / dt if dt else 0:,.0f} records/s")
    return status


if __name__ == "__main__":
    import sys

    raise SystemExit(_main(sys.argv[1:]))
