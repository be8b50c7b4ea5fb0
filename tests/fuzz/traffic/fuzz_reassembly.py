"""TCP reassembly (agent/reassembly.py), structure-aware: the fuzz bytes are a sequence of segments
(direction, sequence offset, flags, payload) fed to a TcpConversation with small caps and a small
shared budget, as the update / exploit analyzers do.

Payload bytes are a function of their sequence number unless a segment is marked "conflicting",
so whenever the input has no conflicting segment the delivered stream is checked byte by byte.
Accounting invariants (delivered + missing = offset, caps, budget, FIN bound, one end()) are
checked after every segment."""

from __future__ import annotations

from agent import reassembly as R
from tests.fuzz.traffic.common import ByteReader

MAX_LEN = 4096
_PERIOD = 251  # prime: the expected byte at sequence s is s % 251
_PATTERN = bytes(range(_PERIOD)) * 8


def _pattern(seq: int, n: int) -> bytes:
    out = bytearray()
    while n > 0:
        start = seq % _PERIOD
        take = min(n, _PERIOD - start, R.SEQ_MOD - seq)  # restart the pattern at the 2^32 wrap
        out += _PATTERN[start : start + take]
        n -= take
        seq = (seq + take) & R.SEQ_MASK
    return bytes(out)


class _Sink:
    """Records what the reassembler delivers; checks content against the sequence pattern."""

    def __init__(self) -> None:
        self.stream: R.StreamReassembler | None = None
        self.position = 0
        self.data_bytes = 0
        self.gap_bytes = 0
        self.ends = 0
        self.check_content = True

    def data(self, chunk: memoryview) -> None:
        assert self.ends == 0, "data after end()"
        assert len(chunk) > 0, "empty data chunk"
        stream = self.stream
        if self.check_content and stream is not None and stream._base is not None:
            seq = (stream._base + self.position) & R.SEQ_MASK
            assert bytes(chunk) == _pattern(seq, len(chunk)), (
                f"wrong bytes delivered at offset {self.position}"
            )
        self.position += len(chunk)
        self.data_bytes += len(chunk)

    def gap(self, length: int) -> None:
        assert self.ends == 0, "gap after end()"
        assert length > 0, f"gap of {length} bytes"
        self.position += length
        self.gap_bytes += length

    def end(self) -> None:
        self.ends += 1


def _check(stream: R.StreamReassembler, sink: _Sink, budget: R.ReassemblyBudget) -> None:
    assert sink.data_bytes == stream.delivered, "sink and stream disagree on delivered bytes"
    assert sink.gap_bytes == stream.bytes_missing, "sink and stream disagree on missing bytes"
    assert stream.delivered <= stream.max_total, "delivered more than max_total"
    if not stream.truncated:
        assert stream.offset == sink.position, f"offset {stream.offset} but sink is at {sink.position}"
    assert stream.buffered <= stream.max_buffered or stream.truncated, "buffered beyond max_buffered"
    assert stream.buffered >= 0 and len(stream.gaps) <= R.MAX_GAP_RECORDS
    if stream.fin_offset is not None:
        assert stream.offset <= stream.fin_offset or stream.truncated, "stream ran past its FIN"
    if stream.ended:
        assert sink.ends == 1 and stream.buffered == 0, "ended stream still holds data or end() count wrong"
    assert budget.used <= budget.max_bytes, f"budget over its cap: {budget.used} > {budget.max_bytes}"
    assert budget.used >= 0


def fuzz_one(data: bytes) -> None:
    r = ByteReader(data)
    max_buffered = r.uint(2) % 4096
    max_total = r.uint(2) % 8192
    budget = R.ReassemblyBudget(max_bytes=1 + r.uint(2) % 6000)
    isns = (r.uint(4), r.uint(4))
    sinks = (_Sink(), _Sink())
    conv = R.TcpConversation(
        sinks[0], sinks[1], max_buffered=max_buffered, max_total=max_total, budget=budget
    )
    sinks[0].stream, sinks[1].stream = conv.toserver, conv.toclient
    while r.left >= 4:
        control = r.u8()
        from_originator = bool(control & 1)
        flags = r.u8() & (R.TCP_SYN | R.TCP_FIN | R.TCP_RST | R.TCP_ACK)
        # anywhere in sequence space (wrap-around included), or near the direction's ISN
        seq = r.uint(4) if control & 2 else (isns[not from_originator] + r.uint(2) - 2048) & R.SEQ_MASK
        length = r.u8() if control & 4 else r.u8() % 32
        sink = sinks[not from_originator]
        if control & 8 and length:
            payload = r.take(length)  # bytes that may contradict earlier copies
            sink.check_content = False
        else:
            # data on a SYN starts one sequence number after it
            payload = _pattern((seq + 1) & R.SEQ_MASK if flags & R.TCP_SYN else seq, length)
        view = memoryview(payload) if control & 16 else payload
        conv.add(from_originator, seq, view, flags)
        for stream, s in ((conv.toserver, sinks[0]), (conv.toclient, sinks[1])):
            _check(stream, s, budget)
    conv.close()
    for stream, s in ((conv.toserver, sinks[0]), (conv.toclient, sinks[1])):
        assert stream.ended and s.ends == 1, "close() did not end the stream exactly once"
        _check(stream, s, budget)
    assert budget.used == 0, f"closed streams still charge {budget.used} bytes to the budget"


def _segment(direction: int, offset: int, flags: int, length: int) -> bytes:
    return bytes([direction, flags]) + (offset + 2048).to_bytes(2, "big") + bytes([length])


def seeds() -> list[bytes]:
    head = (4000).to_bytes(2, "big") + (8000).to_bytes(2, "big") + (5000).to_bytes(2, "big")
    isns = (1000).to_bytes(4, "big") + (0xFFFFFFF0).to_bytes(4, "big")
    in_order = (
        head
        + isns
        + _segment(1, 0, R.TCP_SYN, 0)
        + _segment(1, 1, R.TCP_ACK, 20)
        + _segment(1, 21, R.TCP_FIN, 10)
    )
    out_of_order = (
        head
        + isns
        + _segment(1, 1, R.TCP_SYN, 0)
        + _segment(1, 30, 0, 20)
        + _segment(1, 5, 0, 20)
        + _segment(1, 1, 0, 31)
        + _segment(0, 0, R.TCP_SYN, 0)
        + _segment(0, 1, 0, 25)
        + _segment(0, 3, R.TCP_RST, 0)
    )
    wrap = head + isns + _segment(0, 0, R.TCP_SYN, 0) + _segment(0, 1, 0, 30) + _segment(0, 20, R.TCP_FIN, 30)
    return [in_order, out_of_order, wrap]
