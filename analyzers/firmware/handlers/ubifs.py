"""UBIFS, read in memory: ubi-reader walks the index; file contents are reassembled here from the
data nodes with a bounded decoder per 4 KiB block (ubi-reader's own reader inflates unboundedly)."""

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
from analyzers.firmware.handlers.ubi import mem_ubi_file, quiet_ubireader
from analyzers.firmware.model import Finding, Severity
from analyzers.firmware.safety import DecompressError, bounded_decompress

UBIFS_MAGIC = b"\x31\x18\x10\x06"
SB_NODE = 6
BLOCK = 4096
_DATA_KEY_BASE = 1 << 29  # UBIFS_DATA_KEY << UBIFS_S_KEY_BLOCK_BITS
_KINDS = {0: "file", 1: "dir", 2: "symlink", 3: "device", 4: "device", 5: "fifo", 6: "socket"}
COMPRESSION = {0: "none", 1: "lzo", 2: "zlib", 3: "zstd"}
_COMMON_HDR = struct.Struct("<IIQIBB2x")  # magic, crc, sqnum, len, node type, group type
_PAD_NODE = 5


def _block(ctype: int, raw: bytes, size: int, ctx: UnpackContext) -> bytes:
    if size > BLOCK:
        raise DecompressError(f"UBIFS data node claims {size} bytes")
    if ctype == 0:
        return raw[:size]
    if ctype == 1:
        from lzallright import LZOCompressor, LZOError

        if len(raw) > 2 * BLOCK:
            raise DecompressError("UBIFS LZO node larger than a block")
        try:
            return bytes(LZOCompressor.decompress(raw, output_size_hint=size))[:size]
        except LZOError as exc:
            raise DecompressError(f"UBIFS LZO node: {exc}") from None
    if ctype == 2:
        return bounded_decompress("deflate", raw, ctx.limits, max_output=BLOCK, multi_stream=False).data
    if ctype == 3:
        return bounded_decompress("zstd", raw, ctx.limits, max_output=BLOCK).data
    raise DecompressError(f"UBIFS compression {ctype} not supported")


def master_area_terminates(view: Blob, leb_size: int) -> bool:
    """ubi-reader steps through the two master LEBs by each node's length field (plus the pad length
    of a valid padding node) and never ends on a length of 0; a length below 8 makes it checksum the
    rest of the image at every step. Replay that walk here first."""
    for lnum in (1, 2):
        start = pos = lnum * leb_size
        while pos < start + leb_size and pos + _COMMON_HDR.size <= len(view):
            _magic, crc, _sqnum, length, node_type, _group = _COMMON_HDR.unpack_from(view, pos)
            if length < 8:
                return False
            if node_type == _PAD_NODE and pos + 28 <= len(view):
                valid = ~zlib.crc32(view[pos + 8 : pos + length]) & 0xFFFFFFFF == crc
                if valid:
                    pos += struct.unpack_from("<I", view, pos + 24)[0]
            pos += length
    return True


class UbifsHandler(ContainerHandler):
    NAME = "ubifs"
    FILESYSTEM = True
    PATTERNS = (Magic(UBIFS_MAGIC),)
    PATTERN_GATED = True
    DOC = HandlerDoc(
        name="UBIFS",
        vendor="Linux MTD",
        description="UBIFS filesystem image (lzo, zlib, zstd), as found in UBI volumes or on its own.",
        references=("http://www.linux-mtd.infradead.org/doc/ubifs.html", "ubi-reader (jrspruitt/ubi_reader)"),
        limitations=("Encrypted (fscrypt) UBIFS is listed but contents are not decrypted.",),
    )

    def matches(self, data: Blob) -> bool:
        return super().matches(data) and len(data) >= 4096 and data[20] == SB_NODE

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        if not self.matches(data):
            raise NotMyFormat("no UBIFS superblock node at offset 0")
        min_io, leb_size, leb_cnt = struct.unpack_from("<III", data, 32)
        if not 4096 <= leb_size <= 16 << 20 or leb_cnt == 0:
            raise NotMyFormat(f"implausible UBIFS LEB size {leb_size}")
        size = min(len(data), leb_size * leb_cnt)
        meta: dict[str, Any] = {"leb_size": leb_size, "leb_count": leb_cnt, "min_io_size": min_io}
        meta["default_compression"] = COMPRESSION.get(data[84], "unknown")
        findings: list[Finding] = []
        inodes: dict[int, Any] = {}
        try:
            if not master_area_terminates(data[:size], leb_size):
                raise ValueError("master area node with a length below its header size")
            with quiet_ubireader():
                from ubireader.ubifs import ubifs, walk

                fs = ubifs(mem_ubi_file(data[:size], leb_size))
                bad: list[int] = []
                walk.index(fs, fs.master_node.root_lnum, fs.master_node.root_offs, inodes, bad)
        except Exception as exc:  # ubi-reader fails in many ways on damaged images
            if ctx.carving:
                raise NotMyFormat(f"UBIFS: {exc}") from None
            findings.append(ctx.finding("CW-UNPACK-CORRUPT", Severity.LOW, f"UBIFS unreadable: {exc}"))
            return HandlerResult(
                [ctx.container(self.NAME, size=size, metadata=meta)], (), findings, size=size
            )
        meta["inodes"] = len(inodes)
        info = ctx.container(self.NAME, size=size, metadata=meta)
        if ctx.header_only:
            return HandlerResult([info], (), findings, size=size)
        return HandlerResult([info], self._children(fs, inodes, ctx, findings, size), findings, size=size)

    @staticmethod
    def _children(
        fs: Any, inodes: dict[int, Any], ctx: UnpackContext, findings: list[Finding], size: int
    ) -> Iterator[Child]:
        guard = ctx.ratio_guard(size, "ubifs")
        seen = {1}
        stack: list[tuple[int, str]] = [(1, "")]
        while stack:
            inum, prefix = stack.pop()
            for dent in sorted(inodes.get(inum, {}).get("dent", []), key=lambda d: d.name):
                ctx.check_time()
                path = prefix + (dent.name or dent.raw_name.decode("utf-8", "surrogateescape"))
                node = inodes.get(dent.inum, {})
                ino = node.get("ino")
                kind = _KINDS.get(dent.type, "file")
                mode = ino.mode if ino is not None else None
                if kind == "dir":
                    yield Child(path, kind="dir", mode=mode, size=0)
                    if dent.inum not in seen:
                        seen.add(dent.inum)
                        stack.append((dent.inum, path + "/"))
                elif kind == "symlink":
                    target = bytes(ino.data[: ino.data_len]).decode("utf-8", "surrogateescape") if ino else ""
                    yield Child(path, kind="symlink", mode=mode, link_target=target, size=0)
                elif kind == "file":
                    if ino is None:
                        yield Child(path, size=0, missing=True)
                        continue

                    def load(node: dict[str, Any] = node, length: int = ino.size, path: str = path) -> bytes:
                        return _file_bytes(fs, node, length, ctx, guard, findings, path)

                    yield Child(path, loader=load, size=ino.size, mode=mode)
                else:
                    yield Child(path, kind=kind, mode=mode, size=0)


def _file_bytes(
    fs: Any,
    node: dict[str, Any],
    length: int,
    ctx: UnpackContext,
    guard: Any,
    findings: list[Finding],
    path: str,
) -> bytes:
    guard.add(length)  # before allocating: the inode size is untrusted and holes are free
    buf = bytearray(length)
    problems = 0
    for data in node.get("data", []):
        index = data.key["khash"] - _DATA_KEY_BASE
        start = index * BLOCK
        if index < 0 or start >= length:
            continue
        if data.compr_len > 2 * BLOCK + 64:
            problems += 1
            continue
        with quiet_ubireader():
            fs.file.seek(data.offset)
            raw = fs.file.read(data.compr_len)
        try:
            block = _block(data.compr_type, bytes(raw), data.size, ctx)
        except DecompressError:
            problems += 1
            continue
        end = min(start + len(block), length)
        buf[start:end] = block[: end - start]
    if problems:
        findings.append(
            ctx.finding("CW-UNPACK-PARTIAL", Severity.INFO, f"ubifs {path}: {problems} damaged data blocks")
        )
    return bytes(buf)
