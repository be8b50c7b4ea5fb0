"""Small capture writers: a fast pcap writer, and pcapng block builders for fixtures.

`PcapWriter` is what the sample generator uses: one `struct.pack` per record header and
buffered writes, so it costs little per packet. The pcapng builders return the bytes of one block
each, in either byte order, and let a caller override lengths on purpose, so tests can build the
odd and the broken files a capture reader must cope with.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D

BT_SHB = 0x0A0D0D0A
BT_IDB = 1
BT_PB = 2
BT_SPB = 3
BT_NRB = 4
BT_ISB = 5
BT_EPB = 6
BT_DSB = 0x0A
BT_CUSTOM = 0x00000BAD

OPT_COMMENT = 1
OPT_IF_NAME = 2
OPT_IF_TSRESOL = 9
OPT_IF_TSOFFSET = 14


class PcapWriter:
    """Writes a classic pcap file; records are (timestamp seconds, frame bytes[, original length])."""

    def __init__(
        self,
        dest: str | Path | BinaryIO,
        *,
        linktype: int = 1,
        snaplen: int = 262_144,
        nanosecond: bool = False,
        byte_order: str = "<",
    ) -> None:
        if isinstance(dest, str | Path):
            self._file: BinaryIO = open(dest, "wb")  # noqa: SIM115 - closed by close()
            self._owned = True
        else:
            self._file, self._owned = dest, False
        self._units = 1_000_000_000 if nanosecond else 1_000_000
        self._record = struct.Struct(byte_order + "IIII")
        self._snaplen = snaplen
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        magic = PCAP_MAGIC_NSEC if nanosecond else PCAP_MAGIC_USEC
        self._file.write(struct.pack(byte_order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))

    def write(self, ts: float, frame: bytes, origlen: int | None = None) -> None:
        """Append one record; the frame is cut to the snap length, `origlen` defaults to its size."""
        ticks = round(ts * self._units)
        self.write_ticks(ticks // self._units, ticks % self._units, frame, origlen)

    def write_ticks(self, sec: int, frac: int, frame: bytes, origlen: int | None = None) -> None:
        """Append one record with an exact (seconds, fraction) time stamp."""
        wire = len(frame) if origlen is None else origlen
        if len(frame) > self._snaplen:
            frame = frame[: self._snaplen]
        self._pending.append(self._record.pack(sec, frac, len(frame), wire))
        self._pending.append(frame)
        self._pending_bytes += 16 + len(frame)
        if self._pending_bytes >= 1 << 20:
            self.flush()

    def write_many(self, records: Iterable[tuple[float, bytes]]) -> None:
        for ts, frame in records:
            self.write(ts, frame)

    def flush(self) -> None:
        self._file.write(b"".join(self._pending))
        self._pending.clear()
        self._pending_bytes = 0

    def close(self) -> None:
        self.flush()
        if self._owned:
            self._file.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -- pcapng blocks ------------------------------------------------------------------------------


def pcapng_option(code: int, value: bytes, order: str = "<") -> bytes:
    """One option (code, length, value padded to 32 bits)."""
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def pcapng_options(options: Iterable[tuple[int, bytes]], order: str = "<") -> bytes:
    """An option list ending with opt_endofopt (empty when there are no options)."""
    body = b"".join(pcapng_option(code, value, order) for code, value in options)
    return body + struct.pack(order + "HH", 0, 0) if body else b""


def pcapng_block(
    btype: int, body: bytes, order: str = "<", *, length: int | None = None, trailer: int | None = None
) -> bytes:
    """A generic block: type, total length, body padded to 32 bits, total length again.

    `length` / `trailer` override the two length fields (to build damaged files).
    """
    body = body + b"\0" * (-len(body) % 4)
    total = 12 + len(body)
    head = length if length is not None else total
    tail = trailer if trailer is not None else head
    return struct.pack(order + "II", btype, head) + body + struct.pack(order + "I", tail)


def pcapng_shb(order: str = "<", *, version: tuple[int, int] = (1, 0), options: bytes = b"") -> bytes:
    body = struct.pack(order + "IHHq", PCAPNG_BYTE_ORDER_MAGIC, version[0], version[1], -1) + options
    return pcapng_block(BT_SHB, body, order)


def pcapng_idb(
    linktype: int = 1,
    snaplen: int = 0,
    order: str = "<",
    *,
    name: str | None = None,
    tsresol: int | None = None,
    tsoffset: int | None = None,
) -> bytes:
    """Interface Description Block; `tsresol` is the raw option byte (6 = µs, 9 = ns, 0x8a = 2^-10)."""
    opts: list[tuple[int, bytes]] = []
    if name is not None:
        opts.append((OPT_IF_NAME, name.encode()))
    if tsresol is not None:
        opts.append((OPT_IF_TSRESOL, bytes([tsresol])))
    if tsoffset is not None:
        opts.append((OPT_IF_TSOFFSET, struct.pack(order + "q", tsoffset)))
    body = struct.pack(order + "HHI", linktype, 0, snaplen) + pcapng_options(opts, order)
    return pcapng_block(BT_IDB, body, order)


def pcapng_epb(
    iface: int,
    ticks: int,
    frame: bytes,
    order: str = "<",
    *,
    origlen: int | None = None,
    caplen: int | None = None,
    comment: str | None = None,
) -> bytes:
    """Enhanced Packet Block with a time stamp in the interface's units (`ticks`)."""
    wire = len(frame) if origlen is None else origlen
    cap = len(frame) if caplen is None else caplen
    head = struct.pack(order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, cap, wire)
    pad = b"\0" * (-len(frame) % 4)
    opts = pcapng_options([(OPT_COMMENT, comment.encode())], order) if comment else b""
    return pcapng_block(BT_EPB, head + frame + pad + opts, order)


def pcapng_pb(iface: int, ticks: int, frame: bytes, order: str = "<", *, drops: int = 0) -> bytes:
    """Obsolete Packet Block (type 2)."""
    head = struct.pack(
        order + "HHIIII", iface, drops, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)
    )
    return pcapng_block(BT_PB, head + frame, order)


def pcapng_spb(frame: bytes, order: str = "<", *, origlen: int | None = None) -> bytes:
    """Simple Packet Block: original length then the frame (cut to interface 0's snap length)."""
    wire = len(frame) if origlen is None else origlen
    return pcapng_block(BT_SPB, struct.pack(order + "I", wire) + frame, order)


def pcapng_nrb(entries: Iterable[tuple[bytes, str]], order: str = "<") -> bytes:
    """Name Resolution Block with IPv4 records (4-byte address, name)."""
    body = b""
    for addr, name in entries:
        value = addr + name.encode() + b"\0"
        body += struct.pack(order + "HH", 1, len(value)) + value + b"\0" * (-len(value) % 4)
    body += struct.pack(order + "HH", 0, 0)
    return pcapng_block(BT_NRB, body, order)


def pcapng_isb(iface: int, ticks: int, order: str = "<") -> bytes:
    """Interface Statistics Block without options."""
    return pcapng_block(BT_ISB, struct.pack(order + "III", iface, ticks >> 32, ticks & 0xFFFFFFFF), order)
