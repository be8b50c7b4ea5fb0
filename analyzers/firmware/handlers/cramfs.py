"""cramfs (little-endian, version 2) read in memory with dissect.cramfs; every 4 KiB page goes
through a bounded decoder. Big-endian images are reported as an unsupported variant."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Any

from analyzers.firmware.handlers.base import (
    Blob,
    Child,
    ContainerHandler,
    HandlerDoc,
    HandlerResult,
    Magic,
    NotMyFormat,
    UnpackContext,
)
from analyzers.firmware.handlers.dissectfs import entry_child
from analyzers.firmware.memio import SliceReader
from analyzers.firmware.model import Finding, Severity
from analyzers.firmware.safety import DecompressError, LimitExceeded

LE_MAGIC = b"\x45\x3d\xcd\x28"
BE_MAGIC = b"\x28\xcd\x3d\x45"
SIGNATURE = b"Compressed ROMFS"
PAGE = 4096


def _bounded_cramfs_class() -> type:
    from dissect.cramfs.c_cramfs import c_cramfs
    from dissect.cramfs.cramfs import CramFS

    class BoundedCramFS(CramFS):
        """dissect's reader with each block inflated to at most one page (plus slack)."""

        def _read_block(self, offset: int, size: int) -> bytes:
            if size == 0:
                return b"\x00" * PAGE
            flags = c_cramfs.CRAMFS_FLAG_UNCOMPRESSED_BLOCK | c_cramfs.CRAMFS_FLAG_DIRECT_POINTER
            if offset & c_cramfs.CRAMFS_FLAG_DIRECT_POINTER:
                raise NotImplementedError("cramfs direct block pointers")
            uncompressed = offset & c_cramfs.CRAMFS_FLAG_UNCOMPRESSED_BLOCK
            offset &= ~flags
            if size > 2 * PAGE + 64:
                raise DecompressError(f"cramfs block of {size} bytes is larger than a page")
            self.fh.seek(offset)
            raw = self.fh.read(size)
            if uncompressed:
                return raw
            decoder = zlib.decompressobj()
            try:
                out = decoder.decompress(raw, 2 * PAGE)
            except zlib.error as exc:
                raise DecompressError(f"corrupt cramfs block ({exc})") from None
            if decoder.unconsumed_tail:
                raise DecompressError("cramfs block inflates beyond a page")
            return out

    return BoundedCramFS


class CramfsHandler(ContainerHandler):
    NAME = "cramfs"
    FILESYSTEM = True
    PATTERNS = (Magic(LE_MAGIC), Magic(BE_MAGIC))
    PATTERN_GATED = True
    DOC = HandlerDoc(
        name="cramfs",
        vendor="Linux",
        description="cramfs v2 (zlib pages), the classic Xiongmai/Dahua/Hikvision app partition format.",
        references=("https://www.kernel.org/doc/html/latest/filesystems/cramfs.html",),
        limitations=("Big-endian cramfs and direct block pointers (XIP) are not supported.",),
    )

    def matches(self, data: Blob) -> bool:
        # the superblock fields read by unpack() end at offset 64
        return super().matches(data) and len(data) >= 64 and bytes(data[16:32]) == SIGNATURE

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        order = "<" if bytes(data[:4]) == LE_MAGIC else ">"
        size, flags = struct.unpack_from(order + "II", data, 4)
        _crc, edition, blocks, files = struct.unpack_from(order + "IIII", data, 32)
        name = bytes(data[48:64]).split(b"\x00", 1)[0].decode("latin-1")
        if size < 76 or (ctx.carving and size > len(data)):
            raise NotMyFormat("implausible cramfs size")
        meta = {
            "size": size,
            "flags": flags,
            "edition": edition,
            "blocks": blocks,
            "files": files,
            "name": name,
        }
        meta["endianness"] = "little" if order == "<" else "big"
        used = min(size, len(data))
        info = ctx.container(self.NAME, size=used, metadata=meta)
        findings: list[Finding] = []
        if size > len(data):
            findings.append(
                ctx.finding(
                    "CW-UNPACK-TRUNCATED", Severity.LOW, f"cramfs truncated: {len(data)} of {size} bytes"
                )
            )
        if order == ">":
            findings.append(
                ctx.finding(
                    "CW-UNPACK-UNSUPPORTED",
                    Severity.INFO,
                    "unsupported variant: big-endian cramfs; raw bytes scanned only",
                )
            )
            return HandlerResult([info], (), findings, size=used)
        if ctx.header_only:
            return HandlerResult([info], (), findings, size=used)
        return HandlerResult([info], self._walk(data[:used], ctx, findings), findings, size=used)

    def _walk(self, view: memoryview, ctx: UnpackContext, findings: list[Finding]) -> Iterator[Child]:
        try:
            fs = _bounded_cramfs_class()(SliceReader(view))
        except (ValueError, EOFError, OSError) as exc:
            findings.append(ctx.finding("CW-UNPACK-CORRUPT", Severity.LOW, f"cramfs unreadable: {exc}"))
            return
        guard = ctx.ratio_guard(len(view), "cramfs")
        seen: set[int] = set()
        stack: list[tuple[str, Any]] = [("", fs.root)]
        while stack:
            prefix, directory = stack.pop()
            if directory.offset in seen:
                findings.append(ctx.finding("CW-UNPACK-CORRUPT", Severity.LOW, "cramfs directory loop"))
                continue
            seen.add(directory.offset)
            try:
                entries = _list_dir(fs, view, directory)
            except Exception as exc:  # a damaged directory ends only this branch
                findings.append(
                    ctx.finding("CW-UNPACK-CORRUPT", Severity.LOW, f"cramfs directory {prefix or '/'}: {exc}")
                )
                continue
            for entry in entries:
                ctx.check_time()
                try:
                    path = prefix + entry.name
                    child = self._child(entry, path, guard)
                except (LimitExceeded, DecompressError):
                    raise
                except Exception as exc:  # one bad inode must not end the walk
                    findings.append(
                        ctx.finding(
                            "CW-UNPACK-CORRUPT", Severity.LOW, f"cramfs entry in {prefix or '/'}: {exc}"
                        )
                    )
                    continue
                yield child
                if entry.is_dir():
                    stack.append((path + "/", entry))

    _child = staticmethod(entry_child)


def _list_dir(fs: Any, view: memoryview, directory: Any) -> list[Any]:
    """Entries of a directory inode. (dissect's iterdir relies on the shared file position advancing
    as the caller reads each entry, and spins forever when the entries are collected first.)"""
    start = directory.data_offset
    end = start + directory.size
    if end > len(view):
        raise ValueError("directory extends past the end of the image")
    entries = []
    pos = start
    while pos < end:
        if pos + 12 > len(view):
            raise ValueError("truncated directory entry")
        (word,) = struct.unpack_from("<I", view, pos + 8)
        name_len = (word & 0x3F) * 4
        if name_len == 0:
            raise ValueError(f"empty name in directory entry at {pos:#x}")
        entries.append(fs.inode(pos))
        pos += 12 + name_len
    return entries
