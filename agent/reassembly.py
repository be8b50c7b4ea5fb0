"""TCP stream reassembly for the flows an analyzer selected (update channels, FTP, HTTP uploads).

`StreamReassembler` turns one direction's segments into an in-order byte stream with explicit
gaps; `TcpConversation` pairs two of them for a flow; `ReassemblyBudget` caps the memory all
streams may hold out of order. Policy and caps are described in docs/reassembly.md.
"""

from __future__ import annotations

import struct
import weakref
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import dpkt

if TYPE_CHECKING:
    from agent.model import Flow, Packet

MiB = 1 << 20
DEFAULT_MAX_BUFFERED = 4 * MiB  # out-of-order bytes held per stream direction
DEFAULT_MAX_TOTAL = 512 * MiB  # bytes delivered per stream direction, then truncated
DEFAULT_BUDGET = 64 * MiB  # out-of-order bytes held by all streams together
MAX_GAP_RECORDS = 256  # gap list entries kept per stream; later gaps are only counted

SEQ_MOD = 1 << 32
SEQ_MASK = SEQ_MOD - 1
SEQ_HALF = 1 << 31
# The largest window TCP can advertise (65535 << 14). Data further ahead than this cannot be
# legitimate, so it is dropped instead of being allowed to force a huge gap.
MAX_WINDOW = 1 << 30

TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10

_U32 = struct.Struct("!I")
_PORTS = struct.Struct("!HH")


class StreamSink(Protocol):
    """Consumer of one reassembled direction. `data` gets a memoryview valid only during the
    call (copy what you keep); `gap` says `length` bytes are missing at the current position;
    `end` is called once, when the stream finished (FIN reached, RST, or close())."""

    def data(self, chunk: memoryview) -> None: ...

    def gap(self, length: int) -> None: ...

    def end(self) -> None: ...


class _Collector:
    """Default sink: keeps delivered bytes for `StreamReassembler.read()` (gaps are skipped)."""

    __slots__ = ("buf", "ended")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.ended = False

    def data(self, chunk: memoryview) -> None:
        self.buf += chunk

    def gap(self, length: int) -> None:
        pass

    def end(self) -> None:
        self.ended = True


class ReassemblyBudget:
    """Global cap on out-of-order bytes held by every stream that shares this budget.

    When the total goes over `max_bytes`, the stream holding the most is flushed: its holes are
    declared gaps and its buffered data delivered (nothing buffered is thrown away)."""

    def __init__(self, max_bytes: int = DEFAULT_BUDGET) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self.used = 0
        self.peak = 0  # highest `used` left after any segment was processed
        self.forced_flushes = 0
        self.bytes_flushed = 0  # buffered bytes delivered early because of the budget
        self.gap_bytes = 0  # bytes declared missing by those flushes
        self._streams: weakref.WeakSet[StreamReassembler] = weakref.WeakSet()
        self._enforcing = False

    @property
    def streams(self) -> int:
        return len(self._streams)

    def _register(self, stream: StreamReassembler) -> None:
        self._streams.add(stream)

    def _forget(self, stream: StreamReassembler) -> None:
        self.used -= stream._charged
        stream._charged = 0
        self._streams.discard(stream)

    def _sync(self, stream: StreamReassembler) -> None:
        delta = stream._buffered - stream._charged
        if delta:
            stream._charged = stream._buffered
            self.used += delta
        if self.used > self.max_bytes and not self._enforcing:
            self._enforcing = True
            try:
                while self.used > self.max_bytes:
                    victim = max(self._streams, key=_buffered_of, default=None)
                    if victim is None or victim._buffered == 0:
                        break
                    before_missing = victim.bytes_missing
                    self.bytes_flushed += victim._buffered
                    victim._flush_pending()
                    self.gap_bytes += victim.bytes_missing - before_missing
                    self.forced_flushes += 1
                    victim.budget_flushes += 1
                    self._sync(victim)
            finally:
                self._enforcing = False
        if self.used > self.peak:
            self.peak = self.used


def _buffered_of(stream: StreamReassembler) -> int:
    return stream._buffered


class StreamReassembler:
    """One direction of a TCP connection, reassembled into an in-order byte stream.

    `isn` is the sequence number of the SYN (first data byte is isn + 1); None means "learn it":
    from a SYN if one is added, otherwise the first segment's sequence number (mid-stream join).

    Policy: the first copy of a byte to arrive wins. Later copies that overlap delivered or
    buffered data are trimmed; conflicting bytes inside the buffer are counted in
    `overlap_conflicts`. Out-of-order data is held up to `max_buffered` bytes; beyond that the
    hole in front of the buffer is declared a gap. At most `max_total` bytes are delivered; then
    the stream is `truncated` and further data ignored.
    """

    __slots__ = (
        "__weakref__",
        "_base",
        "_buffered",
        "_charged",
        "_chunks",
        "_collector",
        "_ended",
        "_next",
        "_on_data",
        "_on_end",
        "_on_gap",
        "_starts",
        "budget",
        "budget_flushes",
        "bytes_missing",
        "cap_flushes",
        "delivered",
        "duplicate_bytes",
        "fin_offset",
        "gap_count",
        "gaps",
        "max_buffered",
        "max_total",
        "out_of_window",
        "overlap_conflicts",
        "peak_buffered",
        "reset",
        "segments",
        "syn_seen",
        "truncated",
    )

    def __init__(
        self,
        isn: int | None = None,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        max_total: int = DEFAULT_MAX_TOTAL,
        *,
        sink: StreamSink | None = None,
        budget: ReassemblyBudget | None = None,
    ) -> None:
        if max_buffered < 0 or max_total < 0:
            raise ValueError("caps must not be negative")
        self.max_buffered = max_buffered
        self.max_total = max_total
        self._base: int | None = None if isn is None else (isn + 1) & SEQ_MASK
        self.syn_seen = isn is not None
        self._next = 0  # stream offset of the next byte to deliver
        self._starts: list[int] = []  # out-of-order chunks: sorted, never overlapping
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._charged = 0  # part of _buffered accounted in the budget
        self.peak_buffered = 0
        self._collector: _Collector | None = None
        if sink is None:
            self._collector = sink = _Collector()
        self._on_data: Callable[[memoryview], None] = sink.data
        self._on_gap: Callable[[int], None] = sink.gap
        self._on_end: Callable[[], None] = sink.end
        self.budget = budget
        if budget is not None:
            budget._register(self)
        self._ended = False
        self.fin_offset: int | None = None
        self.reset = False
        self.truncated = False
        self.delivered = 0
        self.gaps: list[tuple[int, int]] = []
        self.gap_count = 0
        self.bytes_missing = 0
        self.segments = 0
        self.duplicate_bytes = 0
        self.overlap_conflicts = 0
        self.out_of_window = 0
        self.cap_flushes = 0
        self.budget_flushes = 0

    # -- public state -------------------------------------------------------------------------
    @property
    def offset(self) -> int:
        """Stream offset of the next byte to deliver (delivered + missing + dropped by the cap)."""
        return self._next

    @property
    def buffered(self) -> int:
        """Out-of-order bytes currently held."""
        return self._buffered

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def complete(self) -> bool:
        """True when the stream ended at its FIN with every byte delivered."""
        return (
            self._ended
            and not self.reset
            and self.fin_offset is not None
            and self._next == self.fin_offset
            and self.gap_count == 0
            and not self.truncated
        )

    def read(self) -> bytes:
        """Bytes delivered since the last read (only when no sink was given)."""
        if self._collector is None:
            raise RuntimeError("read() is only available without a sink")
        out = bytes(self._collector.buf)
        self._collector.buf.clear()
        return out

    # -- input --------------------------------------------------------------------------------
    def add(
        self,
        seq: int,
        data: bytes | bytearray | memoryview = b"",
        syn: bool = False,
        fin: bool = False,
        rst: bool = False,
    ) -> None:
        """Add one segment. `data` may be a view into a capture buffer: what is kept is copied."""
        if self._ended:
            return
        seq &= SEQ_MASK
        if syn:
            # The SYN occupies one sequence number; data on a SYN (TCP Fast Open) follows it.
            seq = (seq + 1) & SEQ_MASK
            if self._base is None:
                self._base = seq
                self.syn_seen = True
        if rst:
            # Payload on a RST is not delivered by end hosts; the stream simply stops here.
            self.reset = True
            self.finish()
            return
        n = len(data)
        if self._base is None:
            if not n and not fin:
                return
            self._base = seq  # joined mid-stream: the first byte seen is offset 0
        nxt = self._next
        d = (seq - self._base - nxt) & SEQ_MASK
        if d >= SEQ_HALF:
            d -= SEQ_MOD
        if d > MAX_WINDOW:
            self.out_of_window += 1
            return
        off = nxt + d
        end = off + n
        if fin and self.fin_offset is None and end >= nxt:
            self.fin_offset = end
            if self._starts:
                self._drop_after(end)  # data buffered before the FIN arrived may lie beyond it
        if n:
            self.segments += 1
            fo = self.fin_offset
            if fo is not None and end > fo:
                # Bytes after the FIN do not exist for the receiver.
                if off >= fo:
                    n = 0
                else:
                    data = memoryview(data)[: fo - off]
                    end = fo
                    n = end - off
        if n and not self.truncated:
            if end <= nxt:
                self.duplicate_bytes += n
            elif off <= nxt and (not self._starts or end <= self._starts[0]):
                # Fast path: in order and nothing buffered in the way.
                if off < nxt:
                    self.duplicate_bytes += nxt - off
                    data = memoryview(data)[nxt - off :]
                self._deliver(data if type(data) is memoryview else memoryview(data), end)
                if self._starts and self._starts[0] <= self._next:
                    self._drain()
            else:
                self._add_general(off, data)
        if self.fin_offset is not None and self._next >= self.fin_offset and not self._starts:
            self.finish()
            return
        if self.budget is not None:
            self.budget._sync(self)

    def finish(self) -> None:
        """End of input: holes before buffered data become gaps, buffered data is delivered, and
        a hole up to a seen FIN is reported as a trailing gap. Idempotent."""
        if self._ended:
            return
        self._flush_pending()
        fo = self.fin_offset
        if fo is not None and self._next < fo and not self.truncated:
            self._skip_to(fo)
        self._ended = True
        if self.budget is not None:
            self.budget._forget(self)
        self._on_end()

    close = finish

    # -- internals ----------------------------------------------------------------------------
    def _deliver(self, view: memoryview, end: int) -> None:
        """Hand `view` (the bytes [self._next, end)) to the sink, honouring max_total."""
        room = self.max_total - self.delivered
        n = end - self._next
        if n > room:
            view = view[:room]
            n = room
            self.truncated = True
            self._drop_pending()
        self._next = end
        if n > 0:
            self.delivered += n
            self._on_data(view)

    def _skip_to(self, offset: int) -> None:
        length = offset - self._next
        if length <= 0:
            return
        if len(self.gaps) < MAX_GAP_RECORDS:
            self.gaps.append((self._next, length))
        self.gap_count += 1
        self.bytes_missing += length
        self._next = offset
        self._on_gap(length)

    def _add_general(self, off: int, data: bytes | bytearray | memoryview) -> None:
        """Out of order, or in order but overlapping buffered data."""
        nxt = self._next
        view = memoryview(data)
        if off < nxt:
            self.duplicate_bytes += nxt - off
            view = view[nxt - off :]
            off = nxt
        starts = self._starts
        if off == nxt and starts and starts[0] > off:
            # Deliver the part in front of the first buffered chunk without copying it.
            cut = starts[0] - off
            self._deliver(view[:cut], starts[0])
            if self.truncated:
                return
            view = view[cut:]
            off += cut
        self._insert(off, view)
        if starts and starts[0] <= self._next:
            self._drain()
        # Per-stream cap: give up on the oldest hole until the buffer fits again.
        while self._buffered > self.max_buffered and self._starts:
            self.cap_flushes += 1
            self._skip_to(self._starts[0])
            self._drain()
        if self._buffered > self.peak_buffered:
            self.peak_buffered = self._buffered

    def _insert(self, off: int, view: memoryview) -> None:
        """Buffer the parts of [off, off+len) not already buffered (first arrival wins)."""
        end = off + len(view)
        starts, chunks = self._starts, self._chunks
        i = bisect_right(starts, off)
        lo = i
        if i > 0:
            pstart = starts[i - 1]
            pend = pstart + len(chunks[i - 1])
            if pend > off:
                lo = i - 1
        # Walk the buffered chunks overlapping [off, end), collecting the holes between them.
        pos = off
        j = lo
        new_starts: list[int] = []
        new_chunks: list[bytes] = []
        added = 0
        while j < len(starts) and starts[j] < end:
            s = starts[j]
            c = chunks[j]
            e = s + len(c)
            if s > pos:
                piece = bytes(view[pos - off : s - off])
                new_starts.append(pos)
                new_chunks.append(piece)
                added += len(piece)
            # Overlap with an earlier arrival: keep the old bytes, count disagreements.
            a, b = max(s, pos, off), min(e, end)
            if a < b and memoryview(c)[a - s : b - s] != view[a - off : b - off]:
                self.overlap_conflicts += 1
            new_starts.append(s)
            new_chunks.append(c)
            if e > pos:
                pos = e
            j += 1
        if pos < end:
            piece = bytes(view[pos - off :])
            new_starts.append(pos)
            new_chunks.append(piece)
            added += len(piece)
        if added:
            self.duplicate_bytes += len(view) - added
            starts[lo:j] = new_starts
            chunks[lo:j] = new_chunks
            self._buffered += added
        else:
            self.duplicate_bytes += len(view)

    def _drain(self) -> None:
        """Deliver buffered chunks that became contiguous with the delivered stream."""
        starts, chunks = self._starts, self._chunks
        k = 0
        count = len(starts)
        released = 0
        while k < count and starts[k] <= self._next:
            s = starts[k]
            c = chunks[k]
            e = s + len(c)
            released += len(c)
            k += 1
            if e > self._next and not self.truncated:
                self._deliver(memoryview(c)[self._next - s :], e)
                if self.truncated:
                    return
        if k:
            del starts[:k]
            del chunks[:k]
            self._buffered -= released

    def _flush_pending(self) -> None:
        """Declare every hole in front of buffered data a gap and deliver all that is buffered."""
        while self._starts:
            self._skip_to(self._starts[0])
            self._drain()

    def _drop_after(self, limit: int) -> None:
        """Forget buffered bytes at or after stream offset `limit` (they follow the FIN)."""
        starts, chunks = self._starts, self._chunks
        while starts and starts[-1] >= limit:
            starts.pop()
            self._buffered -= len(chunks.pop())
        if starts and starts[-1] + len(chunks[-1]) > limit:
            keep = limit - starts[-1]
            self._buffered -= len(chunks[-1]) - keep
            chunks[-1] = chunks[-1][:keep]

    def _drop_pending(self) -> None:
        self._starts.clear()
        self._chunks.clear()
        self._buffered = 0


# -- segments out of captured packets ---------------------------------------------------------
def tcp_segment(pkt: Packet) -> tuple[int, int, memoryview]:
    """(seq, flags, payload) of a TCP packet. The payload length comes from the IP length field,
    so Ethernet padding after a short segment is not taken for data."""
    f = pkt.frame
    l3 = pkt.l3_offset
    pay = pkt.payload_offset
    flen = len(f)
    t = -1
    ip_end = flen
    if pkt.ip_version == 4:
        t = l3 + ((f[l3] & 0x0F) << 2)
        tot = (f[l3 + 2] << 8) | f[l3 + 3]
        if tot:  # 0 with TCP segmentation offload captures: trust the frame
            ip_end = min(flen, l3 + tot)
    elif pkt.ip_version == 6:
        plen = (f[l3 + 4] << 8) | f[l3 + 5]
        if plen:
            ip_end = min(flen, l3 + 40 + plen)
        # Extension headers may sit in between: find the TCP header by its data-offset field and
        # ports, walking back from the payload (at most 60 bytes of header).
        for h in range(20, 64, 4):
            c = pay - h
            if c < l3 + 40:
                break
            if (f[c + 12] >> 4) << 2 == h and _PORTS.unpack_from(f, c) == (pkt.src_port, pkt.dest_port):
                t = c
                break
    if t < 0 or t + 20 > flen or t + ((f[t + 12] >> 4) << 2) != pay:
        tcp = pkt.l3().data
        if not isinstance(tcp, dpkt.tcp.TCP):
            # dpkt could not make a TCP header of it either (cut short, or a bogus IP header
            # length): no sequence number to place it by, so no data and no flags
            return 0, 0, memoryview(b"")
        return tcp.seq, tcp.flags, memoryview(bytes(tcp.data))
    seq = _U32.unpack_from(f, t + 4)[0]
    return seq, f[t + 13], f[pay : max(pay, ip_end)]


class TcpConversation:
    """Both directions of one TCP connection. `toserver` carries the originator's bytes."""

    __slots__ = ("__weakref__", "flow", "toclient", "toserver")

    def __init__(
        self,
        to_server: StreamSink | None = None,
        to_client: StreamSink | None = None,
        *,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        max_total: int = DEFAULT_MAX_TOTAL,
        budget: ReassemblyBudget | None = None,
        flow: Flow | None = None,
    ) -> None:
        self.flow = flow
        self.toserver = StreamReassembler(None, max_buffered, max_total, sink=to_server, budget=budget)
        self.toclient = StreamReassembler(None, max_buffered, max_total, sink=to_client, budget=budget)

    def add_packet(self, pkt: Packet) -> None:
        seq, flags, payload = tcp_segment(pkt)
        self.add(pkt.from_originator, seq, payload, flags)

    def add(self, from_originator: bool, seq: int, payload: bytes | memoryview, flags: int) -> None:
        if not payload and not flags & (TCP_SYN | TCP_FIN | TCP_RST):
            return  # bare ACK
        stream = self.toserver if from_originator else self.toclient
        if flags & TCP_RST:
            # A reset tears down both directions.
            self.toserver.add(seq, b"", rst=True)
            self.toclient.add(seq, b"", rst=True)
            return
        stream.add(seq, payload, syn=bool(flags & TCP_SYN), fin=bool(flags & TCP_FIN))

    @property
    def ended(self) -> bool:
        return self.toserver.ended and self.toclient.ended

    def close(self) -> None:
        self.toserver.finish()
        self.toclient.finish()


class ConversationTable:
    """TCP conversations keyed by flow id, for an analyzer that reassembles selected flows.

    `factory(flow)` builds the conversation (with its sinks) the first time a flow is fed. The
    table holds at most `max_conversations`; the least recently fed one is closed to make room."""

    def __init__(
        self,
        factory: Callable[[Flow | None], TcpConversation],
        max_conversations: int = 1024,
    ) -> None:
        self.factory = factory
        self.max_conversations = max_conversations
        self._convs: OrderedDict[Any, TcpConversation] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._convs)

    def get(self, flow: Flow) -> TcpConversation | None:
        return self._convs.get(flow.flow_id)

    def packet(self, pkt: Packet) -> TcpConversation:
        key = pkt.flow.flow_id if pkt.flow is not None else None
        conv = self._convs.get(key)
        if conv is not None and conv.ended and pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
            # The 5-tuple was reused for a new connection before the flow timed out.
            del self._convs[key]
            conv = None
        if conv is None:
            while len(self._convs) >= self.max_conversations:
                _, old = self._convs.popitem(last=False)
                old.close()
                self.evicted += 1
            conv = self._convs[key] = self.factory(pkt.flow)
        else:
            self._convs.move_to_end(key)
        # An ended conversation stays in the table (its buffers are already freed) so that late
        # ACKs and retransmitted FINs do not start a phantom one; flow_end() removes it.
        conv.add_packet(pkt)
        return conv

    def end(self, flow: Flow) -> None:
        conv = self._convs.pop(flow.flow_id, None)
        if conv is not None:
            conv.close()

    def close(self) -> None:
        while self._convs:
            _, conv = self._convs.popitem(last=False)
            conv.close()
