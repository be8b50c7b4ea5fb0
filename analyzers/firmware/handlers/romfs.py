"""Linux romfs ("-rom1fs-"): a tiny big-endian read-only filesystem, parsed directly."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from analyzers.firmware.handlers.base import (
    Child,
    ContainerHandler,
    HandlerDoc,
    HandlerResult,
    Magic,
    NotMyFormat,
    UnpackContext,
)
from analyzers.firmware.model import Finding, Severity
from analyzers.firmware.safety import MAX_NAME_CHARS

_KINDS = {0: "hardlink", 1: "dir", 2: "file", 3: "symlink", 4: "device", 5: "device", 6: "socket", 7: "fifo"}
_FILE_HEADER = struct.Struct(">IIII")


def _name_at(data: memoryview, pos: int) -> tuple[str, int]:
    """NUL-terminated name padded to 16 bytes; returns the name and the offset after the padding."""
    raw = bytes(data[pos : pos + 1024])
    end = raw.find(b"\x00")
    if end < 0:
        raise NotMyFormat("unterminated romfs name")
    return raw[:end].decode("utf-8", "surrogateescape"), pos + ((end + 16) & ~15)


def _checksum_ok(block: bytes) -> bool:
    words = struct.unpack(f">{len(block) // 4}I", block[: len(block) // 4 * 4])
    return sum(words) & 0xFFFFFFFF == 0


class RomfsHandler(ContainerHandler):
    NAME = "romfs"
    FILESYSTEM = True
    PATTERNS = (Magic(b"-rom1fs-"),)
    DOC = HandlerDoc(
        name="romfs",
        vendor="Linux",
        description="romfs read-only filesystem (big-endian headers, 16-byte aligned).",
        references=("https://www.kernel.org/doc/html/latest/filesystems/romfs.html",),
        limitations=("Hard links are recorded as links, their data is not duplicated.",),
    )

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        if len(data) < 32:
            raise NotMyFormat("too short for romfs")
        (full_size,) = struct.unpack_from(">I", data, 8)
        volume, first = _name_at(data, 16)
        findings: list[Finding] = []
        if not _checksum_ok(bytes(data[: min(512, full_size, len(data))])):
            if ctx.carving:
                raise NotMyFormat("romfs superblock checksum mismatch")
            findings.append(
                ctx.finding(
                    "CW-UNPACK-CHECKSUM", Severity.INFO, "romfs superblock checksum mismatch", offset=12
                )
            )
        size = min(full_size, len(data))
        if full_size > len(data):
            findings.append(
                ctx.finding(
                    "CW-UNPACK-TRUNCATED", Severity.INFO, f"romfs truncated: {len(data)} of {full_size} bytes"
                )
            )
        info = ctx.container(self.NAME, size=size, metadata={"volume": volume, "size": full_size})
        if ctx.header_only:
            return HandlerResult([info], (), findings, size=size)
        view = data[:size]
        return HandlerResult([info], self._walk(view, first, "", set(), ctx, findings), findings, size=size)

    def _walk(
        self,
        data: memoryview,
        pos: int,
        prefix: str,
        seen: set[int],
        ctx: UnpackContext,
        findings: list[Finding],
    ) -> Iterator[Child]:
        # an explicit stack, not recursion: a hostile image can nest directories thousands deep
        stack: list[tuple[int, str]] = [(pos, prefix)]
        while stack:
            pos, prefix = stack.pop()
            while pos and pos + 16 <= len(data):
                if pos in seen:
                    findings.append(
                        ctx.finding("CW-UNPACK-CORRUPT", Severity.LOW, f"romfs header loop at {pos:#x}")
                    )
                    return
                seen.add(pos)
                ctx.check_time()
                next_field, spec, size, _checksum = _FILE_HEADER.unpack_from(data, pos)
                name, body_start = _name_at(data, pos + 16)
                kind = _KINDS[next_field & 7]
                mode = 0o755 if next_field & 8 else 0o644
                path = f"{prefix}{name}"
                pos = next_field & ~15
                if name in (".", ".."):
                    continue
                if kind == "dir":
                    yield Child(path, kind="dir", size=0, mode=mode)
                    if len(path) > MAX_NAME_CHARS:  # deeper than PATH_MAX: not a real filesystem
                        findings.append(
                            ctx.finding(
                                "CW-UNPACK-CORRUPT",
                                Severity.LOW,
                                f"romfs directories nested beyond {MAX_NAME_CHARS} characters; not entered",
                            )
                        )
                        continue
                    stack.append((pos, prefix))  # the siblings, after this directory's contents
                    pos, prefix = spec & ~15, path + "/"
                elif kind == "file":
                    yield Child(path, data=data[body_start : body_start + size], size=size, mode=mode)
                elif kind == "symlink":
                    target = bytes(data[body_start : body_start + min(size, 4096)]).decode(
                        "utf-8", "surrogateescape"
                    )
                    yield Child(path, kind="symlink", link_target=target, size=len(target))
                elif kind == "hardlink":
                    yield Child(path, kind="hardlink", link_target=f"@{spec:#x}", size=0)
                else:
                    yield Child(path, kind=kind, size=0, mode=mode)
