"""Per-member work offloaded to helper processes: TLSH digests and YARA-X scans.

Both hold the GIL, and together they were most of a scan's time, so threads cannot share them out.
The helpers are forked from the scan worker as soon as the image is read: they inherit its sandbox
(network namespace, private temp dir) and the image bytes, and start on the image's TLSH while the
worker imports the inspectors and compiles the rules; the compiled rules then reach them serialized
through shared memory. They only compute (no files, no network, no decompression); every limit
stays with the walker.

Bytes of a member that is a slice of the image are addressed by offset (nothing is copied); other
members are copied once into a shared ring buffer. Only small control messages and results cross
the pipes, and each helper has a bounded number of messages in flight, so neither side can block
the other on a full pipe. Callers apply results in their own order (the walker: submission order),
so a report is the same as with everything computed in-process. A helper that dies has its jobs
recomputed in the calling process (where a crash is handled like any worker crash).
"""

from __future__ import annotations

import collections
import io
import mmap
import multiprocessing
import multiprocessing.connection
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Blob = bytes | memoryview
RawHits = list[tuple[str, str, list[tuple[str, int, int]]]]  # (namespace, rule, [(pattern, off, len)])
ScanRaw = Callable[[bytes], RawHits]
TlshFn = Callable[[bytes], "str | None"]

RING_BYTES = 32 * 1024 * 1024  # members larger than a quarter of it are computed in-process
RULES_BYTES = 16 * 1024 * 1024  # serialized YARA-X rules (the built-in set is ~120 KiB)
BATCH_BYTES = 512 * 1024  # a batch is sent once it holds this much member data...
BATCH_JOBS = 32  # ...or this many members (a few KiB of control data: far below any pipe buffer)
MAX_BATCHES = 2  # in flight per helper


class RemoteError(Exception):
    """An exception raised in a helper, re-raised in the caller with the same type name and text."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(type_name, message)  # both in args, so it survives pickling
        self.type_name = type_name
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(slots=True)
class Result:
    tlsh: str | None = None
    hits: RawHits | None = None
    error: RemoteError | None = None


@dataclass(slots=True)
class Ticket:
    """One submitted job; `result` is set once a helper (or the caller) computed it."""

    ident: int
    want_tlsh: bool
    want_scan: bool
    data: Blob  # the caller's reference, for recomputation if a helper dies
    result: Result | None = None
    helper: int = -1
    ring_span: tuple[int, int] | None = None

    @property
    def done(self) -> bool:
        return self.result is not None


def compute(data: Blob, want_tlsh: bool, want_scan: bool, tlsh_fn: TlshFn, scan_fn: ScanRaw | None) -> Result:
    """The job itself (run by a helper, or in-process): TLSH and/or the raw YARA-X hits."""
    raw = data if isinstance(data, bytes) else bytes(data)
    result = Result()
    if want_tlsh:
        try:
            result.tlsh = tlsh_fn(raw)
        except Exception:  # tlsh_digest already maps "cannot tell" to None; anything else too
            result.tlsh = None
    if want_scan and scan_fn is not None:
        try:
            result.hits = scan_fn(raw)
        except Exception as exc:  # reported by the caller exactly like an in-process failure
            result.error = RemoteError(type(exc).__name__, str(exc))
    return result


def default_workers() -> int:
    """Helpers for one scan: one per usable CPU besides the walker's own (which takes jobs itself
    whenever the helpers are behind), none on a single CPU."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return min(cpus - 1, 4)


def can_fork() -> bool:
    """Forking is safe only while this process has a single thread (locks held by other threads
    would stay locked in the child)."""
    return hasattr(os, "fork") and threading.active_count() == 1


class Offload:
    """A few forked helpers plus the shared ring; `submit` returns a Ticket, `wait` completes it.

    Jobs are sent in batches (fewer wake-ups and system calls than one message per member); a batch
    goes out when it is full, or when the caller waits for one of its jobs. A full batch that no
    helper has room for is computed by the caller, so the work balances itself across processes."""

    def __init__(self, workers: int, image: bytes, tlsh_fn: TlshFn) -> None:
        self.image = image
        self.tlsh_fn = tlsh_fn
        self.scan_fn: ScanRaw | None = None  # set by set_rules; scan jobs need it
        self._image_base = _address(image)
        self._ring = mmap.mmap(-1, RING_BYTES)
        self._rules_area = mmap.mmap(-1, RULES_BYTES)
        self._ring_live: collections.deque[Ticket] = collections.deque()  # tickets holding ring space, FIFO
        self._next_id = 0
        self._tickets: dict[int, Ticket] = {}  # sent to a helper, result not back yet
        self._batch: list[tuple[Ticket, tuple[int, bool, int, int, bool, bool]]] = []
        self._batch_bytes = 0
        self._conns: list[multiprocessing.connection.Connection | None] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._in_flight: list[int] = []  # batches per helper
        self._load: list[int] = []  # bytes in flight per helper
        ctx = multiprocessing.get_context("fork")
        try:
            for _ in range(workers):
                parent, child = ctx.Pipe(duplex=True)
                proc = ctx.Process(target=_helper_main, args=(child, parent, self), daemon=True)
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
                self._in_flight.append(0)
                self._load.append(0)
        except OSError:
            self.close()
            raise

    def set_rules(self, rules: Any, scan_fn: ScanRaw) -> bool:
        """Hand compiled YARA-X rules to the helpers (they were forked before the rules existed);
        `scan_fn` does the same scan in this process. False (scans stay here) when they are too big
        for the shared area."""
        blob = io.BytesIO()
        rules.serialize_into(blob)
        size = blob.tell()
        if size > RULES_BYTES:
            return False
        self._rules_area[:size] = blob.getbuffer()
        for helper, conn in enumerate(self._conns):
            if conn is None:
                continue
            try:
                conn.send(("rules", size))
            except OSError:
                self._helper_died(helper)
        self.scan_fn = scan_fn
        return True

    # -- submitting ---------------------------------------------------------------------------------
    def submit(self, data: Blob, *, tlsh: bool, scan: bool) -> Ticket:
        ticket = Ticket(self._next_id, tlsh, scan, data)
        self._next_id += 1
        if not (tlsh or scan):
            ticket.result = Result()
            return ticket
        where = self._image_span(data)
        if where is None and len(data) <= RING_BYTES // 4:
            where = self._ring_put(ticket, data)
        if where is None:
            self._compute_here(ticket)
            return ticket
        in_image, offset = where
        self._batch.append((ticket, (ticket.ident, in_image, offset, len(data), tlsh, scan)))
        self._batch_bytes += len(data)
        if self._batch_bytes >= BATCH_BYTES or len(self._batch) >= BATCH_JOBS:
            self._flush(block=True)
        return ticket

    def _flush(self, *, block: bool) -> None:
        """Send the pending batch to an idle helper, else to the least loaded one with room; when
        every helper is full (more work than CPUs, or a machine busy with other jobs) the batch is
        computed here instead of waiting: this process never idles while there is work. Without
        `block`, only an idle helper takes it."""
        if not self._batch:
            return
        self._receive(block=False)
        live = [i for i, c in enumerate(self._conns) if c is not None]
        idle = [i for i in live if not self._in_flight[i]]
        free = [i for i in live if self._in_flight[i] < MAX_BATCHES]
        if idle:
            helper = idle[0]
        elif not block:
            return
        elif free:
            helper = min(free, key=lambda i: self._load[i])
        else:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            for ticket, _job in batch:
                self._compute_here(ticket)
            return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        for ticket, _job in batch:
            ticket.helper = helper
            self._tickets[ticket.ident] = ticket
            self._load[helper] += len(ticket.data)
        self._in_flight[helper] += 1
        conn = self._conns[helper]
        assert conn is not None
        try:
            conn.send([job for _ticket, job in batch])
        except OSError:
            self._helper_died(helper)

    def _image_span(self, data: Blob) -> tuple[bool, int] | None:
        if isinstance(data, memoryview) and data.obj is self.image and data.contiguous:
            return True, _address(data) - self._image_base
        return None

    def _ring_put(self, ticket: Ticket, data: Blob) -> tuple[bool, int] | None:
        """Copy `data` into the ring (waiting for helpers to free space); None if none is left."""
        size = len(data)
        while True:
            self._ring_release()
            start = self._ring_fit(size)
            if start is not None:
                break
            self._flush(block=True)  # the space may be held by jobs not sent yet
            if not self._receive(block=True):
                return None
        self._ring[start : start + size] = data
        ticket.ring_span = (start, start + size)
        self._ring_live.append(ticket)
        return False, start

    def _ring_fit(self, size: int) -> int | None:
        """Where `size` bytes fit after the newest live span (FIFO ring), or None."""
        if not self._ring_live:
            return 0
        tail = self._ring_live[0].ring_span[0]  # type: ignore[index]
        newest_start, head = self._ring_live[-1].ring_span  # type: ignore[misc]
        if newest_start >= tail:  # live data is one contiguous run [tail, head)
            # wrap as early as possible: reusing the low addresses keeps the pages this process has
            # touched (its resident memory) near the amount of data actually in flight
            if size <= tail:
                return 0
            return head if head + size <= RING_BYTES else None
        return head if head + size <= tail else None  # wrapped: free space is [head, tail)

    def _ring_release(self) -> None:
        while self._ring_live and self._ring_live[0].done:
            self._ring_live.popleft()

    # -- completing ---------------------------------------------------------------------------------

    def wait(self, ticket: Ticket) -> Result:
        while ticket.result is None:
            self._flush(block=True)
            if not self._receive(block=True) and ticket.result is None:
                # no helper left: whatever is still pending is computed here
                for pending in list(self._tickets.values()):
                    self._compute_here(pending)
                self._tickets.clear()
        return ticket.result

    def _receive(self, *, block: bool) -> bool:
        """Read the results that are ready (waits for at least one batch when `block`); False when
        no helper has work to wait for."""
        live = [c for i, c in enumerate(self._conns) if c is not None and self._in_flight[i]]
        if not live:
            return False
        ready = multiprocessing.connection.wait(live, timeout=None if block else 0)
        for conn in live:
            if conn not in ready:
                continue
            helper = self._conns.index(conn)
            try:
                while self._in_flight[helper]:
                    results = conn.recv()
                    self._in_flight[helper] -= 1
                    for ident, result in results:
                        self._finish(helper, ident, result)
                    if not conn.poll():
                        break
            except (EOFError, OSError):
                self._helper_died(helper)
        return True

    def _finish(self, helper: int, ident: int, result: Result) -> None:
        ticket = self._tickets.pop(ident, None)
        if ticket is not None:
            self._load[helper] -= len(ticket.data)
            ticket.result = result

    def _helper_died(self, helper: int) -> None:
        conn = self._conns[helper]
        self._conns[helper] = None
        if conn is not None:
            conn.close()
        for ticket in [t for t in self._tickets.values() if t.helper == helper]:
            del self._tickets[ticket.ident]
            self._compute_here(ticket)
        self._in_flight[helper] = 0
        self._load[helper] = 0

    def _compute_here(self, ticket: Ticket) -> None:
        ticket.result = compute(ticket.data, ticket.want_tlsh, ticket.want_scan, self.tlsh_fn, self.scan_fn)

    def close(self) -> None:
        for conn in self._conns:
            if conn is not None:
                conn.close()  # the helper sees EOF and exits
        for proc in self._procs:
            proc.join(timeout=2.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._conns = []
        self._procs = []
        self._tickets.clear()
        self._batch.clear()
        self._ring_live.clear()
        self._ring.close()
        self._rules_area.close()


def _address(buf: Blob) -> int:
    import numpy as np

    return int(np.frombuffer(buf, dtype=np.uint8).__array_interface__["data"][0])


def _helper_main(conn: multiprocessing.connection.Connection, parent_end: Any, pool: Offload) -> None:
    """Helper loop until EOF: ("rules", size) loads the rules from the shared area; a batch of
    (id, in_image, offset, length, tlsh?, scan?) is answered with a batch of (id, Result)."""
    parent_end.close()
    for other in pool._conns:
        if other is not None:
            other.close()  # the other helpers' pipes belong to the caller only
    image, ring = pool.image, pool._ring
    scan_fn: ScanRaw | None = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if isinstance(message, tuple) and message[0] == "rules":
            scan_fn = _load_rules(bytes(pool._rules_area[: message[1]]))
            continue
        results = []
        for ident, in_image, offset, length, want_tlsh, want_scan in message:
            source = image if in_image else ring
            data = source[offset : offset + length]
            results.append((ident, compute(data, want_tlsh, want_scan, pool.tlsh_fn, scan_fn)))
        try:
            conn.send(results)
        except (OSError, ValueError):
            return


def _load_rules(serialized: bytes) -> ScanRaw:
    import yara_x

    from analyzers.firmware.inspect.engine import new_scanner, raw_matches

    scanner = new_scanner(yara_x.Rules.deserialize_from(io.BytesIO(serialized)))
    return lambda data: raw_matches(scanner, data)
