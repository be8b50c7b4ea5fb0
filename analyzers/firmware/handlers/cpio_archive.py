"""cpio archives in the 'newc'/'crc' (070701/070702) and portable 'odc' (070707) formats, as used by
Linux initramfs images (which may be several archives back to back; each is found separately)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from analyzers.firmware.handlers.base import (
    Blob,
    Child,
    ContainerHandler,
    HandlerDoc,
    HandlerResult,
    Magic,
    NotMyFormat,
    UnpackContext,
    kind_of_mode,
)
from analyzers.firmware.model import Severity

TRAILER = "TRAILER!!!"
NEWC_HEADER = 110
ODC_HEADER = 76
# int() alone would accept signs, spaces, '_' and '0x': a field like '-7070...' gave negative sizes
_NEWC_FIELDS = re.compile(rb"[0-9A-Fa-f]{104}")
_ODC_FIELDS = re.compile(rb"[0-7]{70}")


def _align4(n: int) -> int:
    return (n + 3) & ~3


def parse_entries(
    data: memoryview, max_entries: int
) -> tuple[list[tuple[str, int, int, int]], int, str | None]:
    """(name, mode, data offset, size) per entry, the end offset, and a problem if it stopped early."""
    entries: list[tuple[str, int, int, int]] = []
    pos = 0
    while len(entries) <= max_entries:
        magic = bytes(data[pos : pos + 6])
        try:
            if magic in (b"070701", b"070702"):
                head = bytes(data[pos : pos + NEWC_HEADER])
                if len(head) < NEWC_HEADER:
                    return entries, pos, "truncated header"
                if not _NEWC_FIELDS.fullmatch(head[6:]):
                    raise ValueError("non-hex header field")
                fields = [int(head[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
                mode, size, namesize = fields[1], fields[6], fields[11]
                name_start = pos + NEWC_HEADER
                data_start = _align4(name_start + namesize)
                next_pos = _align4(data_start + size)
            elif magic == b"070707":
                head = bytes(data[pos : pos + ODC_HEADER])
                if len(head) < ODC_HEADER:
                    return entries, pos, "truncated header"
                if not _ODC_FIELDS.fullmatch(head[6:]):
                    raise ValueError("non-octal header field")
                mode = int(head[18:24], 8)
                namesize = int(head[59:65], 8)
                size = int(head[65:76], 8)
                name_start = pos + ODC_HEADER
                data_start = name_start + namesize
                next_pos = data_start + size
            else:
                return entries, pos, f"bad cpio magic at {pos}"
        except ValueError:
            return entries, pos, f"corrupt cpio header at {pos}"
        if namesize == 0 or name_start + namesize > len(data):
            return entries, pos, "truncated name"
        name = (
            bytes(data[name_start : name_start + namesize])
            .split(b"\x00", 1)[0]
            .decode("utf-8", "surrogateescape")
        )
        if name == TRAILER:
            return entries, min(next_pos, len(data)), None
        if data_start + size > len(data):
            entries.append((name, mode, data_start, max(0, len(data) - data_start)))
            return entries, len(data), f"member {name!r} truncated"
        entries.append((name, mode, data_start, size))
        pos = next_pos
    return entries, pos, "too many entries"


class CpioHandler(ContainerHandler):
    NAME = "cpio"
    PATTERNS = (Magic(b"070701"), Magic(b"070702"), Magic(b"070707"))
    DOC = HandlerDoc(
        name="cpio",
        vendor="generic",
        description="cpio newc/crc/odc archive (Linux initramfs).",
        references=("https://www.kernel.org/doc/html/latest/driver-api/early-userspace/buffer-format.html",),
        limitations=("The old binary cpio format is not supported.", "Hard-link sets are not reconstructed."),
    )

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        entries, end, problem = parse_entries(data, ctx.limits.max_files)
        end = min(end, len(data))  # the 4-byte alignment after the last member may be cut off
        if not entries and problem:
            raise NotMyFormat(problem)
        findings = []
        if problem:
            findings.append(
                ctx.finding("CW-UNPACK-TRUNCATED", Severity.INFO, f"partial extraction: cpio {problem}")
            )
        info = ctx.container(self.NAME, size=end, metadata={"entries": len(entries)})
        if ctx.header_only:
            return HandlerResult([info], (), findings, size=end)
        return HandlerResult([info], self._children(entries, data), findings, size=end)

    @staticmethod
    def _children(entries: list[tuple[str, int, int, int]], data: memoryview) -> Iterator[Child]:
        for name, mode, start, size in entries:
            body: Blob = data[start : start + size]
            kind = kind_of_mode(mode)
            if name in (".", ""):
                continue
            if kind == "symlink":
                target = bytes(body[:4096]).decode("utf-8", "surrogateescape")
                yield Child(name, kind="symlink", mode=mode, link_target=target, size=len(target))
            elif kind == "file":
                yield Child(name, data=body, size=size, mode=mode)
            else:
                yield Child(name, kind=kind, mode=mode, size=0)
