"""JFFS2 in either byte order, parsed here (dissect.jffs reads only little-endian images and inflates
nodes without a bound). Nodes are scanned on 4-byte boundaries, validated by their header CRC,
replayed by version, and every data node is decompressed with a bound of its declared size."""

from __future__ import annotations

import lzma
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

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
from analyzers.firmware.model import Finding, Severity
from analyzers.firmware.safety import DecompressError, bounded_decompress

MAGICS = (0x1985, 0x1984)  # current and old bitmask
DIRENT, INODE = 0xE001, 0xE002
KNOWN_NODETYPES = {DIRENT, INODE, 0x2003, 0x2004, 0x2006, 0xE008, 0xE009}
MAX_NODE_DATA = 1 << 17  # data nodes hold one page (4 KiB, at most 64 KiB); anything bigger is hostile
COMPR_NAMES = {
    0: "none",
    1: "zero",
    2: "rtime",
    3: "rubinmips",
    4: "copy",
    5: "dynrubin",
    6: "zlib",
    7: "lzo",
    8: "lzma",
}
_DT_KINDS = {4: "dir", 8: "file", 10: "symlink", 2: "device", 6: "device", 1: "fifo", 12: "socket"}


def jffs2_crc(data: Blob) -> int:
    """JFFS2 uses crc32 seeded with 0 and without the final inversion."""
    return zlib.crc32(data, 0xFFFFFFFF) ^ 0xFFFFFFFF


@dataclass(slots=True)
class _Dirent:
    version: int
    ino: int
    dtype: int


@dataclass(slots=True)
class _DataNode:
    version: int
    offset: int
    csize: int
    dsize: int
    compr: int
    data_pos: int


@dataclass(slots=True)
class _Inode:
    version: int = -1
    mode: int = 0
    isize: int = 0
    nodes: list[_DataNode] = field(default_factory=list)


def rtime_decompress(src: Blob, dstlen: int) -> bytes:
    """The kernel's 'rtime' run-length scheme (fs/jffs2/compr_rtime.c), bounded by `dstlen`."""
    positions = [0] * 256
    out = bytearray()
    pos = 0
    while len(out) < dstlen and pos + 1 < len(src):
        value = src[pos]
        repeat = src[pos + 1]
        pos += 2
        out.append(value)
        backoffs = positions[value]
        positions[value] = len(out)
        for _ in range(min(repeat, dstlen - len(out))):
            out.append(out[backoffs])
            backoffs += 1
    return bytes(out[:dstlen])


class Jffs2Image:
    """Scan result: dirents by (parent, name) and inodes, in one byte order."""

    def __init__(self, data: memoryview, order: str, ctx: UnpackContext) -> None:
        self.data = data
        self.order = order
        self.dirents: dict[tuple[int, bytes], _Dirent] = {}
        self.inodes: dict[int, _Inode] = {}
        self.bad_crc = 0
        self.end = 0
        self._scan(ctx)

    def _scan(self, ctx: UnpackContext) -> None:
        data, order = self.data, self.order
        magic_bytes = struct.pack(order + "H", 0x1985)
        header = struct.Struct(order + "HHII")
        dirent = struct.Struct(order + "IIIIBB2xII")
        inode = struct.Struct(order + "IIIHHIIIIIIIBBHII")
        pos = 0
        limit = len(data) - header.size
        nodes = 0
        while pos <= limit:
            magic, nodetype, totlen, hdr_crc = header.unpack_from(data, pos)
            if magic not in MAGICS or nodetype not in KNOWN_NODETYPES or totlen < header.size:
                # jump to the next candidate magic instead of stepping through erased flash
                nxt = _find(data, magic_bytes, pos + 4)
                if nxt < 0:
                    break
                pos = nxt
                continue
            if jffs2_crc(data[pos : pos + 8]) != hdr_crc:
                self.bad_crc += 1
                pos += 4
                continue
            nodes += 1
            if nodes % 4096 == 0:
                ctx.check_time()
            end = pos + totlen
            if end > len(data):
                break
            if nodetype == DIRENT and totlen >= 12 + dirent.size:
                pino, version, ino, _mctime, nsize, dtype, _ncrc, _namecrc = dirent.unpack_from(
                    data, pos + 12
                )
                name_at = pos + 12 + dirent.size
                raw = bytes(data[name_at : min(name_at + nsize, end)])
                key = (pino, raw)
                old = self.dirents.get(key)
                if old is None or version >= old.version:
                    self.dirents[key] = _Dirent(version, ino, dtype)
            elif nodetype == INODE and totlen >= 12 + inode.size:
                fields = inode.unpack_from(data, pos + 12)
                ino, version, mode, _uid, _gid, isize = fields[:6]
                offset, csize, dsize, compr = fields[9], fields[10], fields[11], fields[12]
                entry = self.inodes.setdefault(ino, _Inode())
                if version >= entry.version:
                    entry.version, entry.mode, entry.isize = version, mode, isize
                data_pos = pos + 12 + inode.size
                entry.nodes.append(
                    _DataNode(version, offset, min(csize, end - data_pos), dsize, compr, data_pos)
                )
            self.end = end
            pos = (end + 3) & ~3

    def node_bytes(self, node: _DataNode, ctx: UnpackContext) -> bytes:
        raw = self.data[node.data_pos : node.data_pos + node.csize]
        if node.dsize > MAX_NODE_DATA:
            raise DecompressError(f"JFFS2 data node claims {node.dsize} bytes")
        if node.compr == 0:
            return bytes(raw[: node.dsize])
        if node.compr == 1:
            return bytes(node.dsize)
        if node.compr == 2:
            return rtime_decompress(raw, node.dsize)
        if node.compr == 6:
            return bounded_decompress("zlib", raw, ctx.limits, max_output=node.dsize, multi_stream=False).data
        if node.compr == 7:
            from lzallright import LZOCompressor, LZOError

            if len(raw) > 2 * node.dsize + 64:
                raise DecompressError("JFFS2 LZO node larger than its data")
            try:
                return bytes(LZOCompressor.decompress(bytes(raw), output_size_hint=node.dsize))[: node.dsize]
            except LZOError as exc:
                raise DecompressError(f"JFFS2 LZO node: {exc}") from None
        if node.compr == 8:
            # the kernel's JFFS2 LZMA: raw LZMA1, lc=0 lp=0 pb=0, 8 KiB dictionary
            filters = [{"id": lzma.FILTER_LZMA1, "dict_size": 0x2000, "lc": 0, "lp": 0, "pb": 0}]
            try:
                return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters).decompress(
                    bytes(raw), node.dsize
                )
            except lzma.LZMAError as exc:
                raise DecompressError(f"JFFS2 LZMA node: {exc}") from None
        raise DecompressError(f"JFFS2 compression {COMPR_NAMES.get(node.compr, node.compr)} not supported")

    def file_bytes(self, ino: int, ctx: UnpackContext, problems: list[str], cap: int | None = None) -> bytes:
        """The inode's contents, at most `cap` bytes (the declared size is untrusted)."""
        entry = self.inodes[ino]
        length = entry.isize if cap is None else min(entry.isize, cap)
        buf = bytearray(length)
        for node in sorted(entry.nodes, key=lambda n: n.version):
            if node.dsize == 0 or node.offset >= length:
                continue
            try:
                chunk = self.node_bytes(node, ctx)
            except DecompressError as exc:
                problems.append(str(exc))
                continue
            end = min(node.offset + len(chunk), length)
            buf[node.offset : end] = chunk[: end - node.offset]
        return bytes(buf)


def _find(data: memoryview, needle: bytes, start: int) -> int:
    """Next 4-byte-aligned occurrence of `needle` at or after `start` (-1 if none)."""
    start = (start + 3) & ~3
    while True:
        hit = _search(data, needle, start)
        if hit < 0 or hit % 4 == 0:
            return hit
        start = (hit + 3) & ~3


def _search(data: memoryview, needle: bytes, start: int) -> int:
    # memoryview has no find(); search in bounded windows to avoid copying the whole blob
    window = 1 << 20
    while start < len(data):
        chunk = bytes(data[start : start + window + len(needle) - 1])
        hit = chunk.find(needle)
        if hit >= 0:
            return start + hit
        start += window
    return -1


class Jffs2Handler(ContainerHandler):
    NAME = "jffs2"
    FILESYSTEM = True
    PATTERNS = (Magic(b"\x85\x19"), Magic(b"\x19\x85"))
    PATTERN_GATED = True
    DOC = HandlerDoc(
        name="JFFS2",
        vendor="Linux",
        description="JFFS2 in little- and big-endian byte order (zlib, lzo, rtime, lzma, zero nodes).",
        references=("https://sourceware.org/jffs2/", "linux fs/jffs2"),
        limitations=(
            "rubin/dynrubin compressed nodes are skipped (reported).",
            "Node and data CRCs are not verified (only header CRCs).",
        ),
    )

    def matches(self, data: Blob) -> bool:
        if len(data) < 12 or bytes(data[:2]) not in (b"\x85\x19", b"\x19\x85"):
            return False
        order = "<" if data[0] == 0x85 else ">"
        _magic, nodetype, totlen, hdr_crc = struct.unpack_from(order + "HHII", data, 0)
        return nodetype in KNOWN_NODETYPES and totlen >= 12 and jffs2_crc(data[:8]) == hdr_crc

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        if not self.matches(data):
            raise NotMyFormat("no valid JFFS2 node at offset 0")
        order = "<" if data[0] == 0x85 else ">"
        image = Jffs2Image(data, order, ctx)
        if not image.dirents and not image.inodes:
            raise NotMyFormat("no JFFS2 inodes or directory entries")
        meta = {
            "endianness": "little" if order == "<" else "big",
            "inodes": len(image.inodes),
            "dirents": len(image.dirents),
            "bad_header_crc": image.bad_crc,
        }
        info = ctx.container(self.NAME, size=image.end, metadata=meta)
        findings: list[Finding] = []
        if ctx.header_only:
            return HandlerResult([info], (), findings, size=image.end)
        return HandlerResult([info], self._children(image, ctx, findings), findings, size=image.end)

    @staticmethod
    def _children(image: Jffs2Image, ctx: UnpackContext, findings: list[Finding]) -> Iterator[Child]:
        by_parent: dict[int, list[tuple[bytes, _Dirent]]] = {}
        for (pino, name), dirent in image.dirents.items():
            if dirent.ino:  # ino 0 = unlinked
                by_parent.setdefault(pino, []).append((name, dirent))
        guard = ctx.ratio_guard(image.end, "jffs2")
        seen = {1}
        stack: list[tuple[int, str]] = [(1, "")]
        while stack:
            parent, prefix = stack.pop()
            for name, dirent in sorted(by_parent.get(parent, [])):
                ctx.check_time()
                path = prefix + name.decode("utf-8", "surrogateescape")
                entry = image.inodes.get(dirent.ino)
                mode = entry.mode if entry else None
                kind = _DT_KINDS.get(dirent.dtype, "file")
                if entry is not None and mode:
                    kind = kind_of_mode(mode)
                if kind == "dir":
                    yield Child(path, kind="dir", mode=mode, size=0)
                    if dirent.ino not in seen:
                        seen.add(dirent.ino)
                        stack.append((dirent.ino, path + "/"))
                    continue
                if entry is None:
                    yield Child(path, kind=kind, size=0, missing=kind == "file")
                    continue
                if kind == "symlink":
                    problems: list[str] = []
                    target = image.file_bytes(dirent.ino, ctx, problems, cap=4096).decode(
                        "utf-8", "surrogateescape"
                    )
                    yield Child(path, kind="symlink", mode=mode, link_target=target, size=0)
                elif kind == "file":

                    def load(ino: int = dirent.ino, path: str = path, size: int = entry.isize) -> bytes:
                        # charged before the buffer exists: the declared size is untrusted and
                        # holes (no data nodes) cost nothing in the image
                        guard.add(size)
                        problems: list[str] = []
                        body = image.file_bytes(ino, ctx, problems)
                        if problems:
                            findings.append(
                                ctx.finding(
                                    "CW-UNPACK-PARTIAL", Severity.INFO, f"jffs2 {path}: {problems[0]}"
                                )
                            )
                        return body

                    yield Child(path, loader=load, size=entry.isize, mode=mode)
                else:
                    yield Child(path, kind=kind, mode=mode, size=0)
