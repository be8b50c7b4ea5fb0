"""Vectorised (NumPy) decode of a whole record batch: the bulk half of the hot path.

Most packets on a camera VLAN are the middle of long video streams: no analyzer wants them, they
only add to their flow's counters. Decoding them one at a time in Python costs about 2 us each;
here the fields the flow table needs are gathered for the whole batch at once with strided
big-endian views of the chunk (one fancy-index gather per field group), so the per-packet cost is
a few NumPy element operations. Packets that need more than counting (new flows, subscribed ports,
the first payload packets of a flow, anything that is not plain Ethernet/802.1Q + IPv4 + TCP/UDP)
are handed back to the per-packet path in agent/pipeline.py, which stays the reference
implementation: both paths must produce identical flows and events (tests/unit/test_vector_path.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FastFields", "decode_fast", "record_headers"]

_TCP, _UDP = 6, 17


def _strided(data: bytes | memoryview, dtype: str, width: int) -> np.ndarray:
    """A read-only view with one `dtype` element starting at every byte of `data`."""
    count = len(data) - width + 1
    if count <= 0:
        return np.zeros(0, dtype=dtype)
    return np.ndarray(shape=(count,), dtype=dtype, buffer=data, strides=(1,))


def record_headers(
    data: bytes, positions: np.ndarray, little_endian: bool, hlen: int, units: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gather classic-pcap record headers at `positions`: (ts, frame offsets, caplens, origlens).

    Time stamps are computed as `sec + frac / units` in float64, exactly the Python expression
    the per-record reader uses, so both readers give bit-identical times.
    """
    words = _strided(data, "<u8" if little_endian else ">u8", 8)
    first = words[positions]
    second = words[positions + 8]
    if little_endian:
        sec, frac = first & 0xFFFFFFFF, first >> 32
        cap, orig = second & 0xFFFFFFFF, second >> 32
    else:
        sec, frac = first >> 32, first & 0xFFFFFFFF
        cap, orig = second >> 32, second & 0xFFFFFFFF
    ts = sec.astype(np.float64) + frac.astype(np.float64) / units
    return ts, positions + hlen, cap.astype(np.int64), orig.astype(np.int64)


@dataclass(slots=True)
class FastFields:
    """Per-record fields of the fast-path packets of one batch (arrays run over all records)."""

    fast: np.ndarray  # bool: Ethernet (untagged or one 802.1Q tag), IPv4 IHL 5, TCP/UDP, whole L4 header
    tagged: np.ndarray  # bool: one 802.1Q tag
    tci: np.ndarray  # int64: the tag's TCI (meaningful where tagged)
    proto: np.ndarray  # int64
    # The flow key packed in two words (equal words <=> equal flow-key tuples, for fast records):
    key_hi: np.ndarray  # uint64: source address, protocol, tagged bit, VLAN id
    key_lo: np.ndarray  # uint64: destination address, source port, destination port
    sport: np.ndarray  # int64
    dport: np.ndarray  # int64
    flags: np.ndarray  # int64: TCP flags (0 for UDP)
    paylen: np.ndarray  # int64: L4 payload length after removing Ethernet padding


def decode_fast(data: bytes, offsets: np.ndarray, caplens: np.ndarray) -> FastFields:
    """Decode, for every record, what the per-packet fast path decodes; `fast` marks the records
    for which the result is valid. Mirrors Pipeline.run_batch's fast path rule for rule."""
    n = len(offsets)
    size = len(data)
    if n == 0 or size < 64:
        no = np.zeros(n, dtype=bool)
        zero = np.zeros(n, dtype=np.int64)
        addr = np.zeros(n, dtype=np.uint64)
        return FastFields(no, no, zero, zero, addr, addr, zero, zero, zero, zero)
    u64 = _strided(data, ">u8", 8)
    # Every gather below reads within 56 bytes of the frame start. A frame closer than that to the
    # end of the chunk is gathered from offset 0 instead (garbage) and left to the per-packet path.
    inside = offsets <= size - 56
    at = np.where(inside, offsets, 0)
    w12 = u64[at + 12]  # ethertype or TPID, TCI, inner ethertype, ...
    tpid = w12 >> np.uint64(48)
    untagged = tpid == 0x0800
    tagged = (tpid == 0x8100) & (((w12 >> np.uint64(16)) & np.uint64(0xFFFF)) == 0x0800)
    tag4 = tagged.view(np.int8).astype(np.int64) << 2  # 4 where one 802.1Q tag precedes the IP header
    tci = ((w12 >> np.uint64(32)) & np.uint64(0xFFFF)).view(np.int64)  # values < 2**63: view, no copy
    base = at + tag4  # where an untagged frame's fields would be
    w14 = u64[base + 14]  # vihl, tos, total length, ident, flags/fragment
    w22 = u64[base + 22]  # ttl, proto, checksum, source address
    w30 = u64[base + 30]  # destination address, source port, destination port
    w46 = (u64[base + 40] & np.uint64(0xFFFF)).view(np.int64)  # bytes 46, 47: TCP data offset, flags
    tlen = ((w14 >> np.uint64(32)) & np.uint64(0xFFFF)).view(np.int64)
    proto = ((w22 >> np.uint64(48)) & np.uint64(0xFF)).view(np.int64)
    # Tagged bit and VLAN id; untagged frames have IP header bytes where the TCI would be.
    vlan_code = np.where(
        tagged, ((w12 >> np.uint64(32)) & np.uint64(0x0FFF)) | np.uint64(0x1000), np.uint64(0)
    )
    key_hi = (w22 << np.uint64(32)) | ((w22 >> np.uint64(32)) & np.uint64(0xFF0000)) | vlan_code
    sport = ((w30 >> np.uint64(16)) & np.uint64(0xFFFF)).view(np.int64)
    dport = (w30 & np.uint64(0xFFFF)).view(np.int64)
    is_tcp = proto == _TCP
    fast = (
        inside
        & (caplens >= 42)
        & (untagged | tagged)
        & ((w14 >> np.uint64(56)) == 0x45)  # IPv4, IHL 5
        & ((w14 & np.uint64(0x1FFF)) == 0)  # not a non-first fragment
        & (is_tcp | (proto == _UDP))
    )
    l3 = tag4 + 14  # IP header start, relative to the frame
    end = caplens.copy()
    trim = (tlen >= 20) & (tlen < end - l3)
    end[trim] = l3[trim] + tlen[trim]  # drop Ethernet padding after short packets
    l4 = l3 + 20
    fast &= np.where(is_tcp, l4 + 20 <= end, l4 + 8 <= end)
    pay = np.where(is_tcp, l4 + ((w46 >> 12) << 2), l4 + 8)
    np.minimum(pay, end, out=pay)
    flags = np.where(is_tcp, w46 & 0xFF, 0)
    return FastFields(fast, tagged, tci, proto, key_hi, w30, sport, dport, flags, end - pay)
