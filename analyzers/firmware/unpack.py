"""The recursive walker: identifies containers, carves embedded ones, enforces the limits, names,
hashes, inspects and (optionally) extracts every member.

For each blob (the image, then every regular file inside it, depth first):
  1. the first handler whose magic matches at offset 0 and whose `unpack` accepts the bytes wins;
  2. otherwise, for blobs of at least `carve_min_size`, the blob is searched for the magics of all
     handlers and each hit a handler accepts is unpacked as a carved region ("@0x<offset>/...");
     near the top (depth <= `binwalk_max_depth`) binwalk additionally lists signatures of the regions
     nothing claimed, and those a handler recognises are carved too;
  3. children are sanitised (safety.safe_relpath), counted, size-checked, read (bounded), hashed
     (SHA-256, TLSH for executables and large files), inspected and recursed into.
Hitting a limit ends the branch (or the whole image for total bytes, member count and wall time)
with a `limit` finding; nothing is ever read unbounded.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import tlsh

from analyzers.firmware import binwalk
from analyzers.firmware.handlers.base import (
    Blob,
    Child,
    ContainerHandler,
    EncryptedMember,
    HandlerResult,
    NotMyFormat,
    UnpackContext,
)
from analyzers.firmware.model import ContainerInfo, Finding, ImageReport, Limits, Member, Severity
from analyzers.firmware.offload import Offload, RemoteError, Result, Ticket
from analyzers.firmware.safety import (
    LIMIT_DEPTH,
    LIMIT_FILE_SIZE,
    LINK_ESCAPE,
    TRAVERSAL,
    Budget,
    DecompressError,
    ExtractRefused,
    LimitExceeded,
    SafeWriter,
    link_escapes,
    safe_relpath,
)

KiB = 1024
MiB = 1024 * KiB
NEST = "!/"  # separates nesting levels in member paths
TLSH_MIN_BYTES = 50  # TLSH needs at least 50 bytes (with some variance)
MIN_SCAN_BYTES = 4  # as inspect.MIN_SCAN_BYTES: smaller members are not YARA-scanned
_PADDING = re.compile(rb"[\x00\xff]*")


class Inspector(Protocol):
    """The part of analyzers.firmware.inspect.InspectionSession the walker calls."""

    def inspect_member(self, member: Member, data: bytes) -> list[Finding]: ...

    def inspect_container(self, info: ContainerInfo) -> list[Finding]: ...


@dataclass(slots=True)
class WalkOptions:
    limits: Limits = field(default_factory=Limits)
    use_binwalk: bool = True
    binwalk_min_size: int = 64 * KiB  # smaller unknown blobs are not worth a binwalk process
    binwalk_full_scan_max: int = 8 * MiB  # larger blobs: binwalk only the regions nothing claimed
    binwalk_max_depth: int = 1  # the image and its direct members
    carve_min_size: int = 64 * KiB  # internal magic search in unknown blobs from this size
    carve_min_elf: int = 1 * MiB  # ELF programs only from this size (kernels, big apps with resources)
    max_carve_candidates: int = 4096  # per blob: bounds work on adversarial magic soup
    max_carve_failures: int = 8  # per handler and blob: bounds re-parsing a damaged image block by block
    # TLSH for ELF executables and for blobs at least this large (kernels, whole partitions); other
    # files are identified by SHA-256. TLSH runs at ~60 MB/s, so it is kept to what similarity needs.
    tlsh_large_file: int = 8 * MiB


def join_path(parent: str, rel: str) -> str:
    return rel if not parent else f"{parent}{NEST}{rel}"


def disk_path(member_path: str, image_dir: str) -> str:
    """Where `--extract` writes a member: each nesting level becomes '<name>_extracted/'."""
    levels = member_path.split(NEST)
    return "/".join([image_dir, *(f"{lvl}_extracted" for lvl in levels[:-1]), levels[-1]])


def tlsh_digest(data: Blob) -> str | None:
    """TLSH of `data`, fed in 1 MiB pieces (no copy of big slices); None when TLSH cannot tell
    ("TNULL": too short or too little variance)."""
    if len(data) < TLSH_MIN_BYTES:
        return None
    hasher = tlsh.Tlsh()
    view = memoryview(data)
    try:
        for start in range(0, len(view), MiB):
            hasher.update(bytes(view[start : start + MiB]))
        hasher.final()
        digest = str(hasher.hexdigest())
    except ValueError:  # "not enough variation in input"
        return None
    return None if not digest or digest.upper().startswith("TNULL") else digest


_BLOCK = 64 * KiB
_FF_BLOCK = b"\xff" * _BLOCK
_ZERO_BLOCK = bytes(_BLOCK)


def is_padding(view: Blob) -> bool:
    """Only 0x00/0xFF bytes (erased flash, zero fill)? Compared block-wise with memcmp speed."""
    view = memoryview(view)
    for start in range(0, len(view), _BLOCK):
        block = view[start : start + _BLOCK]
        n = len(block)
        if block != _FF_BLOCK[:n] and block != _ZERO_BLOCK[:n] and _PADDING.fullmatch(block) is None:
            return False
    return True


def content_runs(data: memoryview, lo: int, hi: int) -> list[tuple[int, int]]:
    """Sub-ranges of [lo, hi) that are not 64 KiB blocks of only 0x00/0xFF bytes."""
    runs: list[tuple[int, int]] = []
    run_start: int | None = None
    for start in range(lo, hi, _BLOCK):
        block = data[start : min(start + _BLOCK, hi)]
        pad = is_padding(block)
        if pad and run_start is not None:
            runs.append((run_start, start))
            run_start = None
        elif not pad and run_start is None:
            run_start = start
    if run_start is not None:
        runs.append((run_start, hi))
    return runs


@functools.lru_cache(maxsize=8)
def _magic_scanner(magics: tuple[bytes, ...]) -> Any:
    """A YARA-X scanner matching every container magic; pattern $mN is magics[N]."""
    import yara_x

    strings = "\n".join(f"    $m{i} = {{ {m.hex(' ')} }}" for i, m in enumerate(magics))
    source = f"rule container_magics {{\n  strings:\n{strings}\n  condition:\n    any of them\n}}\n"
    scanner = yara_x.Scanner(yara_x.compile(source))
    scanner.set_timeout(60)
    return scanner


class Walker:
    """Walks one image. Findings, members, containers and binwalk rows go into `report`."""

    def __init__(
        self,
        report: ImageReport,
        handlers: Sequence[ContainerHandler],
        options: WalkOptions,
        *,
        budget: Budget,
        inspector: Inspector | None = None,
        writer: SafeWriter | None = None,
        extract_dir: str = "image",
        tmpdir: Path | None = None,
        image_file: Path | None = None,
        offload: Offload | None = None,
    ) -> None:
        self.report = report
        self.handlers = list(handlers)
        self.options = options
        self.limits = options.limits
        self.budget = budget
        self.inspector = inspector
        self.writer = writer
        self.extract_dir = extract_dir
        self.tmpdir = tmpdir
        self.image_file = image_file
        # TLSH and YARA-X run in helper processes when `offload` is set; their results are applied
        # in submission order, and the findings spliced in where an in-process scan put them
        self.offload = offload
        self._pending: collections.deque[tuple[Ticket, Member, memoryview, int]] = collections.deque()
        self._slots: list[tuple[int, list[Finding]]] = []  # (position in report.findings, findings)
        self._binwalk_failed = False
        self._magic_index: dict[bytes, list[tuple[ContainerHandler, int]]] = {}
        for handler in self.handlers:
            if handler.CARVABLE:
                for magic in handler.PATTERNS:
                    self._magic_index.setdefault(magic.value, []).append((handler, magic.offset))
        # Handlers whose matches() needs one of their PATTERNS are only asked when a magic is there:
        # most members (programs, scripts) hold no container magic at all
        self._gated: dict[tuple[int, int], dict[bytes, set[int]]] = {}  # (offset, length) -> magic -> idx
        self._always: list[int] = []  # handler indexes whose matches() must always be called
        for idx, handler in enumerate(self.handlers):
            if handler.PATTERNS and (
                handler.PATTERN_GATED or type(handler).matches is ContainerHandler.matches
            ):
                for magic in handler.PATTERNS:
                    key = (magic.offset, len(magic.value))
                    self._gated.setdefault(key, {}).setdefault(magic.value, set()).add(idx)
            else:
                self._always.append(idx)
        # All magics are found in one multi-pattern pass (YARA-X); an alternation regex, or one
        # bytes.find per magic, made this the largest single cost of a scan.
        self._magics = tuple(sorted(self._magic_index))
        self._magic_scanner = _magic_scanner(self._magics)

    # ------------------------------------------------------------------------------------ entry point
    def walk_image(self, image: memoryview) -> None:
        try:
            try:
                self._unpack_blob(image, "", 0, ())
            except LimitExceeded as exc:
                self._limit(exc, "")
            self._apply_offloaded(wait=True)
        finally:
            self._splice_slots()

    # ------------------------------------------------------------------------------------ one blob
    def _unpack_blob(self, data: memoryview, path: str, depth: int, ancestry: tuple[str, ...]) -> str | None:
        """Unpack `data` if a handler (or carving) recognises it; returns the handler NAME or None."""
        self.budget.check_time()
        if depth >= self.limits.max_depth:
            if self._matching(data):
                self._limit(
                    LimitExceeded(
                        LIMIT_DEPTH, f"nesting deeper than {self.limits.max_depth} levels; not unpacked"
                    ),
                    path,
                )
            return None
        for handler in self._matching(data):
            ctx = self._context(path, depth, ancestry, 0, carving=False)
            result = self._run_handler(handler, data, ctx)
            if result is None:
                continue
            self._consume(handler, result, data, path, depth, (*ancestry, handler.NAME), prefix="")
            size = result.size if result.size is not None else len(data)
            if 0 < size < len(data) and len(data) - size >= 64:
                self._trailing(data, size, path, depth, ancestry)
            return handler.NAME
        if self._carving_wanted(data):
            claimed = self._carve(data, path, depth, ancestry, start=1)
            if claimed:
                return claimed[0][2]
        return None

    def _matching(self, data: memoryview) -> list[ContainerHandler]:
        """The handlers whose matches() accepts `data`, in registry order."""
        candidates = set(self._always)
        size = len(data)
        for (offset, length), by_magic in self._gated.items():
            if size >= offset + length:
                found = by_magic.get(bytes(data[offset : offset + length]))
                if found:
                    candidates |= found
        return [self.handlers[i] for i in sorted(candidates) if self.handlers[i].matches(data)]

    def _run_handler(
        self, handler: ContainerHandler, data: memoryview, ctx: UnpackContext
    ) -> HandlerResult | None:
        try:
            return handler.unpack(data, ctx)
        except NotMyFormat:
            return None
        except LimitExceeded:
            raise
        except Exception as exc:  # a parser bug on hostile input must not end the scan
            if ctx.carving:
                return None
            self._add(
                Finding(
                    rule_id="CW-UNPACK-ERROR",
                    severity=Severity.LOW,
                    message=f"{handler.NAME}: cannot parse container: {type(exc).__name__}: {exc}"[:300],
                    path=ctx.path,
                    category="container",
                    source="handler",
                )
            )
            return None

    def _context(
        self, path: str, depth: int, ancestry: tuple[str, ...], base: int, *, carving: bool
    ) -> UnpackContext:
        if path:
            name = path.rsplit(NEST, 1)[-1].rsplit("/", 1)[-1]
        else:
            name = self.image_file.name if self.image_file is not None else ""
        return UnpackContext(
            limits=self.limits,
            budget=self.budget,
            path=path,
            base_offset=base,
            depth=depth,
            ancestry=ancestry,
            carving=carving,
            tmpdir=self.tmpdir,
            name=name,
        )

    # ------------------------------------------------------------------------------------ children
    def _consume(
        self,
        handler: ContainerHandler,
        result: HandlerResult,
        data: memoryview,
        path: str,
        depth: int,
        ancestry: tuple[str, ...],
        *,
        prefix: str,
    ) -> None:
        for info in result.containers:
            self.report.containers.append(info)
            if self.inspector is not None:
                self._inspect(lambda info=info: self.inspector.inspect_container(info), path)
        links: set[str] = set()
        absolute_not_written: list[str] = []
        try:
            self._children(
                handler, result.children, path, depth, ancestry, prefix, links, absolute_not_written
            )
        except LimitExceeded as exc:
            if exc.image_wide:
                raise
            self._limit(exc, path)
        except (DecompressError, EncryptedMember, OSError, ValueError, EOFError, KeyError, IndexError) as exc:
            self._add(self._partial(handler, path, exc))
        except Exception as exc:  # library bugs on hostile input end only this container
            self._add(self._partial(handler, path, exc))
        finally:
            for finding in result.findings:
                self._add(finding)
            close = getattr(result.children, "close", None)
            if close is not None:
                close()
        if absolute_not_written:
            examples = ", ".join(absolute_not_written[:5])
            self._add(
                Finding(
                    rule_id="CW-UNPACK-LINK-NOT-WRITTEN",
                    severity=Severity.INFO,
                    message=f"{len(absolute_not_written)} symlinks with absolute targets were not written by "
                    f"--extract (they would point outside the extraction directory): {examples}"[:300],
                    path=path,
                    category="limit",
                    source="limits",
                )
            )

    @staticmethod
    def _partial(handler: ContainerHandler, path: str, exc: BaseException) -> Finding:
        return Finding(
            rule_id="CW-UNPACK-PARTIAL",
            severity=Severity.LOW,
            message=f"partial extraction of {handler.NAME}: {type(exc).__name__}: {exc}"[:300],
            path=path,
            category="container",
            source="handler",
        )

    def _children(
        self,
        handler: ContainerHandler,
        children: Iterable[Child],
        path: str,
        depth: int,
        ancestry: tuple[str, ...],
        prefix: str,
        links: set[str],
        absolute_not_written: list[str],
    ) -> None:
        for child in children:
            self.budget.check_time()
            safe = safe_relpath(child.name, flat=child.flat_name)
            rel = prefix + safe.path
            member_path = join_path(path, rel)
            self.budget.count_file()
            if safe.problem:
                self._add(
                    Finding(
                        rule_id=TRAVERSAL,
                        severity=Severity.MEDIUM,
                        message=f"unsafe member name {str(child.name)[:120]!r} ({safe.problem}); "
                        f"neutralised as {rel!r}",
                        path=member_path,
                        evidence=repr(child.name)[:200],
                        category="traversal",
                        source="unpack",
                    )
                )
            through = _through_link(safe.path, links)
            if through is not None:
                self._add(
                    Finding(
                        rule_id="CW-UNPACK-LINK-FOLLOW",
                        severity=Severity.MEDIUM,
                        message=f"member {safe.path!r} lies under symlink {through!r} of the same archive: "
                        "an unpacker that follows the link writes outside its directory",
                        path=member_path,
                        category="traversal",
                        source="unpack",
                    )
                )
            if child.kind == "file":
                self._file(child, member_path, depth, ancestry)
            else:
                self._special(handler, child, safe.path, member_path, depth, links, absolute_not_written)

    def _special(
        self,
        handler: ContainerHandler,
        child: Child,
        rel: str,
        member_path: str,
        depth: int,
        links: set[str],
        absolute_not_written: list[str],
    ) -> None:
        target = child.link_target
        member = Member(
            path=member_path, size=child.size or 0, sha256="", kind=child.kind, mode=child.mode,
            link_target=target, depth=depth + 1,
        )  # fmt: skip
        self.report.members.append(member)
        if child.kind in ("symlink", "hardlink") and target is not None:
            links.add(rel)
            escapes = link_escapes(rel, target) or (target.startswith("/") and not handler.FILESYSTEM)
            if child.kind == "hardlink" and not target.startswith("@"):
                escapes = escapes or link_escapes(rel, "../" * rel.count("/") + target)
            if escapes:
                self._add(
                    Finding(
                        rule_id=LINK_ESCAPE,
                        severity=Severity.MEDIUM,
                        message=f"{child.kind} {rel!r} -> {target!r} points outside its container; "
                        "not followed",
                        path=member_path,
                        evidence=f"{rel} -> {target}"[:200],
                        category="traversal",
                        source="unpack",
                    )
                )
        if self.writer is None:
            return
        where = disk_path(member_path, self.extract_dir)
        try:
            if child.kind == "dir":
                self.writer.make_dir(where)
            elif child.kind == "symlink" and target is not None:
                self.writer.write_symlink(where, target)
        except ExtractRefused as exc:
            if target is not None and target.startswith("/") and handler.FILESYSTEM:
                absolute_not_written.append(f"{rel} -> {target}")
            elif not (target is not None and (link_escapes(rel, target) or target.startswith("/"))):
                self._refused(member_path, exc)
            # escaping links were already reported above; the writer refusing them is the point
        except OSError as exc:
            self._refused(member_path, exc)

    def _unread(self, child: Child, member_path: str, depth: int) -> None:
        """List a member whose bytes could not be read (missing, over a limit, encrypted, damaged)."""
        self.report.members.append(
            Member(path=member_path, size=child.size or 0, sha256="", mode=child.mode, depth=depth + 1)
        )

    def _file(self, child: Child, member_path: str, depth: int, ancestry: tuple[str, ...]) -> None:
        if child.missing:
            self._unread(child, member_path, depth)
            return
        try:
            if child.size is not None:
                self.budget.check_file_size(child.size, member_path)
            blob = child.read()
        except LimitExceeded as exc:
            if exc.image_wide:
                raise
            self._limit(exc, member_path)
            self._unread(child, member_path, depth)
            return
        except EncryptedMember as exc:
            self._add(
                Finding(
                    rule_id="CW-FW-ENCRYPTED",
                    severity=Severity.LOW,
                    message=f"encrypted member — not analysable: {exc}"[:300],
                    path=member_path,
                    category="encrypted",
                    source="handler",
                )
            )
            self._unread(child, member_path, depth)
            return
        except DecompressError as exc:
            self._add(
                Finding(
                    rule_id="CW-UNPACK-CORRUPT",
                    severity=Severity.LOW,
                    message=f"damaged member: {exc}"[:300]
                    + (f"; {len(exc.partial)} bytes recovered" if exc.partial else ""),
                    path=member_path,
                    category="container",
                    source="handler",
                )
            )
            blob = exc.partial
            if not blob:
                self._unread(child, member_path, depth)
                return
        if len(blob) > self.limits.max_file_bytes:
            self._limit(
                LimitExceeded(
                    LIMIT_FILE_SIZE, f"{member_path}: larger than {self.limits.max_file_bytes} bytes"
                ),
                member_path,
            )
            return
        self.budget.charge(len(blob))
        self.report.bytes_unpacked += len(blob)
        view = memoryview(blob)
        member = Member(
            path=member_path,
            size=len(blob),
            sha256=hashlib.sha256(view).hexdigest(),
            mode=child.mode,
            depth=depth + 1,
        )
        self.report.members.append(member)
        if self.writer is not None:
            try:
                self.writer.write_file(disk_path(member_path, self.extract_dir), view, child.mode)
            except (ExtractRefused, OSError) as exc:
                self._refused(member_path, exc)
        member.container = self._unpack_blob(view, member_path, depth + 1, ancestry)
        # TLSH (similarity) for executables and for large leaf blobs such as kernels; a partition a
        # handler unpacked is already described by its members' hashes.
        want_tlsh = bytes(view[:4]) == b"\x7fELF" or (
            member.container is None and len(blob) >= self.options.tlsh_large_file
        )
        if self.offload is not None:
            self._offload_member(member, view, want_tlsh)
            return
        if want_tlsh:
            member.tlsh = tlsh_digest(view)
        if self.inspector is not None:
            data = blob if isinstance(blob, bytes) else bytes(view)
            self._inspect(lambda: self.inspector.inspect_member(member, data), member_path)

    # ------------------------------------------------------------------------------------ offloading
    def _offload_member(self, member: Member, view: memoryview, want_tlsh: bool) -> None:
        assert self.offload is not None
        scan = self.inspector is not None and self.offload.scan_fn is not None and len(view) >= MIN_SCAN_BYTES
        ticket = self.offload.submit(view, tlsh=want_tlsh, scan=scan)
        self._pending.append((ticket, member, view, len(self.report.findings)))
        self._apply_offloaded(wait=False)

    def _apply_offloaded(self, *, wait: bool) -> None:
        """Apply finished results in submission order (all of them when `wait`)."""
        while self._pending:
            ticket, member, view, position = self._pending[0]
            if not ticket.done:
                if not wait or self.offload is None:
                    return
                self.offload.wait(ticket)
            self._pending.popleft()
            result = ticket.result
            assert result is not None
            if ticket.want_tlsh:
                member.tlsh = result.tlsh
            if self.inspector is None:
                continue
            slot: list[Finding] = []
            self._slots.append((position, slot))
            data = view.obj if isinstance(view.obj, bytes) and len(view.obj) == len(view) else bytes(view)
            self._inspect(functools.partial(self._inspect_with, member, data, result), member.path, into=slot)

    def _inspect_with(self, member: Member, data: bytes, result: Result) -> list[Finding]:
        """inspect_member with the YARA-X matches a helper found (or found here)."""
        inspector: Any = self.inspector
        if result.error is not None:
            raise result.error
        if result.hits is None:
            return list(inspector.inspect_member(member, data))
        return list(inspector.inspect_member(member, data, inspector.rules.hits_from_raw(result.hits)))

    def _splice_slots(self) -> None:
        """Put offloaded members' findings where in-process inspection would have added them."""
        if not self._slots:
            return
        old = self.report.findings
        merged: list[Finding] = []
        prev = 0
        for pos, found in self._slots:
            merged.extend(old[prev:pos])
            merged.extend(found)
            prev = pos
        merged.extend(old[prev:])
        self.report.findings[:] = merged
        self._slots.clear()

    # ------------------------------------------------------------------------------------ carving
    def _trailing(self, data: memoryview, end: int, path: str, depth: int, ancestry: tuple[str, ...]) -> None:
        tail = data[end:]
        if is_padding(tail):
            return
        claimed = self._carve(data, path, depth, ancestry, start=end, use_binwalk=False)
        if not claimed:
            self._add(
                Finding(
                    rule_id="CW-UNPACK-TRAILING",
                    severity=Severity.INFO,
                    message=f"{len(tail)} bytes of unidentified data after the container (offset {end})",
                    path=path,
                    offset=end,
                    category="container",
                    source="handler",
                )
            )

    def _candidates(self, data: memoryview, start: int) -> list[int]:
        starts: set[int] = set()
        cap = self.options.max_carve_candidates
        raw = data.obj if isinstance(data.obj, bytes) and len(data.obj) == len(data) else bytes(data)
        results = self._magic_scanner.scan(raw)
        for rule in results.matching_rules:
            for pattern in rule.patterns:
                offsets = self._magic_index[self._magics[int(pattern.identifier[2:])]]
                for match in pattern.matches:
                    for _handler, moff in offsets:
                        if match.offset - moff >= start:
                            starts.add(match.offset - moff)
                    if len(starts) >= cap:
                        return sorted(starts)
        return sorted(starts)

    def _carve(
        self,
        data: memoryview,
        path: str,
        depth: int,
        ancestry: tuple[str, ...],
        *,
        start: int,
        use_binwalk: bool = True,
    ) -> list[tuple[int, int, str]]:
        """Unpack containers found inside `data` from `start` on; returns the claimed regions
        (start, end, handler NAME)."""
        claimed: list[tuple[int, int, str]] = []
        tried: set[int] = set()
        failures: dict[str, int] = {}
        for offset in self._candidates(data, start):
            self.budget.check_time()
            self._carve_at(data, offset, path, depth, ancestry, claimed, tried, failures)
        if use_binwalk and self._binwalk_wanted(data, depth):
            for sig in self._binwalk(data, path, depth, claimed):
                if sig.offset >= start and sig.offset < len(data):
                    self._carve_at(data, sig.offset, path, depth, ancestry, claimed, tried, failures)
        return claimed

    def _carve_at(
        self,
        data: memoryview,
        offset: int,
        path: str,
        depth: int,
        ancestry: tuple[str, ...],
        claimed: list[tuple[int, int, str]],
        tried: set[int],
        failures: dict[str, int],
    ) -> None:
        if offset in tried or any(lo <= offset < hi for lo, hi, _name in claimed):
            return
        tried.add(offset)
        region = data[offset:]
        for handler in self._matching(region):
            if not handler.CARVABLE or failures.get(handler.NAME, 0) >= self.options.max_carve_failures:
                continue
            ctx = self._context(path, depth, ancestry, offset, carving=True)
            result = self._run_handler(handler, region, ctx)
            if result is None:
                # a damaged filesystem repeats its magic in every block: parsing from each one
                # again would be quadratic, so a handler gets a few chances per blob
                failures[handler.NAME] = failures.get(handler.NAME, 0) + 1
                continue
            size = result.size if result.size else len(region)
            claimed.append((offset, offset + size, handler.NAME))
            self._consume(
                handler, result, region, path, depth, (*ancestry, handler.NAME), prefix=f"@{offset:#x}/"
            )
            return

    def _carving_wanted(self, data: memoryview) -> bool:
        # searching every program of a root filesystem costs seconds and rarely finds anything; a
        # vmlinux with an embedded initramfs is large enough to pass the ELF threshold
        if len(data) < self.options.carve_min_size:
            return False
        return len(data) >= self.options.carve_min_elf or bytes(data[:4]) != b"\x7fELF"

    def _binwalk_wanted(self, data: memoryview, depth: int) -> bool:
        return (
            self.options.use_binwalk
            and not self._binwalk_failed
            and depth <= self.options.binwalk_max_depth
            and len(data) >= self.options.binwalk_min_size
        )

    def _binwalk(
        self, data: memoryview, path: str, depth: int, claimed: list[tuple[int, int, str]]
    ) -> list[binwalk.Signature]:
        """binwalk over the whole blob when small, else over the gaps nothing claimed."""
        if len(data) <= self.options.binwalk_full_scan_max:
            spans = [(0, len(data))]
        else:
            spans = _gaps(claimed, len(data))
        # erased flash (0xFF) and zero fill hold no signatures: binwalk would spend seconds on them
        trimmed = [_trim_padding(data, lo, hi) for lo, hi in spans]
        regions = [(lo, hi - lo) for lo, hi in trimmed if hi - lo >= self.options.binwalk_min_size]
        if not regions:
            return []
        source = self.image_file if depth == 0 and self.image_file is not None else None
        temp: Path | None = None
        signatures: list[binwalk.Signature] = []
        try:
            if source is None:
                if self.tmpdir is None:
                    return []
                temp = self.tmpdir / f"binwalk-{len(self.report.binwalk)}-{id(data):x}.bin"
                temp.write_bytes(data)
                source = temp
            for lo, length in regions:
                timeout = min(120.0, max(1.0, self.budget.remaining_seconds()))
                found = binwalk.scan(
                    source,
                    offset=lo,
                    length=None if lo == 0 and length == len(data) else length,
                    timeout=timeout,
                    home=self.tmpdir,
                )
                signatures.extend(s for s in found if lo <= s.offset < lo + length)
        except binwalk.BinwalkError as exc:
            self._binwalk_failed = "not installed" in str(exc)
            self._add(
                Finding(
                    rule_id="CW-UNPACK-BINWALK",
                    severity=Severity.INFO,
                    message=f"signature scan incomplete: {exc}",
                    path=path,
                    category="container",
                    source="binwalk",
                )
            )
        finally:
            if temp is not None:
                temp.unlink(missing_ok=True)
        for sig in signatures:
            self.report.binwalk.append({"path": path, "offset": sig.offset, "description": sig.description})
        return signatures

    # ------------------------------------------------------------------------------------ findings
    def _add(self, finding: Finding) -> None:
        self.report.findings.append(finding)

    def _limit(self, exc: LimitExceeded, path: str) -> None:
        self._add(
            Finding(
                rule_id=exc.rule_id,
                severity=Severity.LOW,
                message=exc.message[:300],
                path=path,
                category="limit",
                source="limits",
            )
        )

    def _refused(self, member_path: str, exc: BaseException) -> None:
        self._add(
            Finding(
                rule_id="CW-UNPACK-EXTRACT-REFUSED",
                severity=Severity.LOW,
                message=f"--extract did not write this member: {exc}"[:300],
                path=member_path,
                category="traversal",
                source="unpack",
            )
        )

    def _inspect(self, call: Any, path: str, into: list[Finding] | None = None) -> None:
        out = self.report.findings if into is None else into
        try:
            findings = call()
        except LimitExceeded:
            raise
        except Exception as exc:  # an inspector bug must not lose the unpacking results
            kind = exc.type_name if isinstance(exc, RemoteError) else type(exc).__name__
            out.append(
                Finding(
                    rule_id="CW-INSPECT-ERROR",
                    severity=Severity.LOW,
                    message=f"inspection failed: {kind}: {exc}"[:300],
                    path=path,
                    category="container",
                    source="inspect",
                )
            )
            return
        out.extend(findings)


def _through_link(rel: str, links: set[str]) -> str | None:
    """The symlink (already seen in this container) that is a proper parent directory of `rel`."""
    if not links:
        return None
    parent = posixpath.dirname(rel)
    while parent:
        if parent in links:
            return parent
        parent = posixpath.dirname(parent)
    return None


_NOT_PADDING = re.compile(rb"[^\x00\xff]")


def _trim_padding(data: memoryview, lo: int, hi: int) -> tuple[int, int]:
    """[lo, hi) without leading and trailing whole blocks of 0x00/0xFF."""
    runs = content_runs(data, lo, hi)
    if not runs:
        return lo, lo
    first = _NOT_PADDING.search(data, runs[0][0], runs[0][1])
    return (first.start() if first else runs[0][0]), runs[-1][1]


def _gaps(claimed: list[tuple[int, int, str]], total: int) -> list[tuple[int, int]]:
    gaps: list[tuple[int, int]] = []
    cursor = 0
    for lo, hi, _name in sorted(claimed):
        if lo > cursor:
            gaps.append((cursor, lo))
        cursor = max(cursor, hi)
    if cursor < total:
        gaps.append((cursor, total))
    return gaps
