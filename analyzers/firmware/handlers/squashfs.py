"""SquashFS. Version 4 little-endian is read in memory with dissect.squashfs, with every block
decompressed through a bounded decoder. Versions 1-3 (either byte order) go to `unsquashfs` in the
private temp dir; when it can list but not decompress them (vendor compression), the file list is
reported as a partial extraction. Vendor-LZMA v4 images need sasquatch (used when installed);
without it they are reported as partial, never as a crash."""

from __future__ import annotations

import os
import re
import stat
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
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
from analyzers.firmware.model import Finding, Limits, Severity
from analyzers.firmware.safety import (
    RATIO_FLOOR,
    DecompressError,
    LimitExceeded,
    bounded_decompress,
    inflate_intact,
)

COMPRESSION = {1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}
_STREAM_KIND = {1: "zlib", 2: "lzma", 4: "xz", 6: "zstd"}
_MAGICS = {b"hsqs": "<", b"sqsh": ">"}
_VENDOR_MAGICS = (b"shsq", b"qshs", b"tqsh", b"hsqt")  # byte-swapped/vendor LZMA variants
_LLS = re.compile(
    r"^(?P<perm>[-dlcbps][-rwxsStT]{9})\s+\S+\s+(?P<size>\d+|\d+,\s*\d+)\s+\S+\s+\S+\s+squashfs-root(?P<path>/.*?)"
    r"(?: -> (?P<target>.*))?$"
)


class SuperBlock:
    """The fields camwatch needs, for v4 and for the older layouts (major at offset 28 in all)."""

    def __init__(self, data: Blob) -> None:
        if len(data) < 96:
            raise NotMyFormat("too short for a squashfs superblock")
        order = _MAGICS.get(bytes(data[:4]))
        if order is None:
            raise NotMyFormat("no squashfs magic")
        self.order = order
        self.endian = "little" if order == "<" else "big"
        self.inodes = struct.unpack_from(order + "I", data, 4)[0]
        self.major, self.minor = struct.unpack_from(order + "HH", data, 28)
        if self.major == 4:
            (self.mkfs_time, self.block_size, self.fragments, comp, self.block_log, self.flags) = (
                struct.unpack_from(order + "IIIHHH", data, 8)
            )
            self.compression = COMPRESSION.get(comp, f"unknown({comp})")
            self.compression_id = comp
            # every block is decoded with the block size as its output cap: only what the kernel
            # accepts (a power of two from 4 KiB to 1 MiB) keeps that cap small
            if not 4096 <= self.block_size <= 1 << 20 or self.block_size & (self.block_size - 1):
                raise NotMyFormat(f"implausible squashfs block size {self.block_size}")
            self.bytes_used = struct.unpack_from(order + "Q", data, 40)[0]
        elif self.major in (1, 2, 3):
            self.compression, self.compression_id = "gzip", 1  # before v4 only zlib existed (stock)
            self.bytes_used = struct.unpack_from(order + "I", data, 8)[0]
            self.block_size = struct.unpack_from(order + "I", data, 51)[0] if self.major == 3 else 0
            self.mkfs_time = struct.unpack_from(order + "I", data, 39)[0]
        else:
            raise NotMyFormat(f"implausible squashfs major version {self.major}")
        if self.bytes_used < 96:
            raise NotMyFormat("implausible squashfs size")

    def metadata(self) -> dict[str, Any]:
        return {
            "version": f"{self.major}.{self.minor}",
            "endianness": self.endian,
            "compression": self.compression,
            "inodes": self.inodes,
            "bytes_used": self.bytes_used,
            "block_size": self.block_size,
        }


class _BoundedCompression:
    """Stand-in for dissect.squashfs' decompressor: every block is capped at the block size."""

    def __init__(self, comp_id: int, block_size: int, limits: Limits) -> None:
        self.comp_id = comp_id
        self.cap = max(block_size, 8192)
        self.limits = limits

    def decompress(self, data: bytes, expected: int) -> bytes:
        if self.comp_id == 1 and self.cap <= RATIO_FLOOR:
            # one bounded zlib call (max_length one past the cap) settles an intact block; anything
            # else (overflow, truncated, corrupt) goes through bounded_decompress for its exact report
            out = inflate_intact(data, self.cap)
            if out is not None:
                return out
        kind = _STREAM_KIND.get(self.comp_id)
        if kind is not None:
            return bounded_decompress(kind, data, self.limits, max_output=self.cap, multi_stream=False).data
        if self.comp_id == 3:
            from lzallright import LZOCompressor, LZOError

            if len(data) > 2 * self.cap:
                raise DecompressError("LZO block larger than twice the block size")
            try:
                out = LZOCompressor.decompress(bytes(data), output_size_hint=min(expected, self.cap))
            except LZOError as exc:
                raise DecompressError(f"corrupt LZO block ({exc})") from None
        elif self.comp_id == 5:
            from dissect.util.compression import lz4

            try:
                out = lz4.decompress(bytes(data), uncompressed_size=min(expected, self.cap))
            except ValueError as exc:
                raise DecompressError(f"corrupt LZ4 block ({exc})") from None
        else:
            raise DecompressError(f"unsupported squashfs compression id {self.comp_id}")
        if len(out) > self.cap:
            raise DecompressError("block decompresses beyond the block size")
        return bytes(out)


class _DeferredCompression:
    """Replaces dissect.squashfs' compression factory: the decoder is attached after construction
    (bounded, and independent of optional modules such as backports.zstd that dissect wants)."""

    @staticmethod
    def initialize(_comp_id: int, _options: bytes | None) -> None:
        return None


def _open_squashfs(view: memoryview, sb: SuperBlock, limits: Limits) -> Any:
    from dissect.squashfs import squashfs as dissect_squashfs

    from analyzers.firmware.memio import SliceReader

    dissect_squashfs.compression = _DeferredCompression
    fs = dissect_squashfs.SquashFS(SliceReader(view))
    fs._compression = _BoundedCompression(sb.compression_id, sb.block_size, limits)
    read_block = fs._read_block

    def nonempty_metadata(block: int, length: int | None = None) -> tuple[int, bytes]:
        # dissect's metadata reader loops forever (and its result list grows without bound) on a
        # metadata block that yields no bytes, e.g. one past the end of a truncated image
        next_block, data = read_block(block, length)
        if length is None and not data:
            raise DecompressError(f"empty squashfs metadata block at {block}")
        return next_block, data

    fs._read_block = nonempty_metadata
    return fs


class SquashfsHandler(ContainerHandler):
    NAME = "squashfs"
    FILESYSTEM = True
    PATTERNS = (Magic(b"hsqs"), Magic(b"sqsh"), *(Magic(m) for m in _VENDOR_MAGICS))
    PATTERN_GATED = True
    DOC = HandlerDoc(
        name="SquashFS",
        vendor="generic",
        description="SquashFS 4.x (gzip, lzma, lzo, xz, lz4, zstd) in memory; 1.x-3.x via unsquashfs.",
        references=("https://dr-emann.github.io/squashfs/", "firmware-formats.md 6.4"),
        limitations=(
            "Vendor-LZMA variants need sasquatch (not packaged in Debian); without it: partial extraction.",
            "Big-endian 4.x and byte-swapped vendor magics are reported as unsupported variants.",
            "Pre-4.0 images whose data uses vendor compression yield the file list only.",
        ),
    )

    def matches(self, data: Blob) -> bool:
        return super().matches(data) and len(data) >= 96

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        magic = bytes(data[:4])
        if magic in _VENDOR_MAGICS:
            if ctx.carving:
                raise NotMyFormat("vendor squashfs magic inside another blob")
            info = ctx.container(self.NAME, size=None, metadata={"magic": magic.decode("latin-1")})
            return HandlerResult(
                [info], (), [self._unsupported(ctx, f"squashfs with vendor magic {magic!r}")]
            )
        sb = SuperBlock(data)
        if ctx.carving and (sb.bytes_used > len(data) or sb.inodes == 0):
            raise NotMyFormat("squashfs superblock does not fit its blob")
        size = min(sb.bytes_used, len(data))
        info = ctx.container(self.NAME, size=size, metadata=sb.metadata())
        findings: list[Finding] = []
        if sb.bytes_used > len(data):
            findings.append(
                ctx.finding(
                    "CW-UNPACK-TRUNCATED",
                    Severity.LOW,
                    f"squashfs truncated: {len(data)} of {sb.bytes_used} bytes",
                )
            )
        if ctx.header_only:
            return HandlerResult([info], (), findings, size=size)
        view = data[:size]
        if sb.major == 4 and sb.order == "<":
            children = self._dissect(view, sb, ctx, findings)
        elif sb.major < 4:
            children = self._external(view, sb, ctx, findings, "unsquashfs")
        else:
            findings.append(self._unsupported(ctx, "big-endian squashfs 4.x (needs sasquatch-v4be)"))
            children = iter(())
        return HandlerResult([info], children, findings, size=size)

    @staticmethod
    def _unsupported(ctx: UnpackContext, what: str) -> Finding:
        return ctx.finding(
            "CW-UNPACK-UNSUPPORTED", Severity.INFO, f"unsupported variant: {what}; raw bytes scanned only"
        )

    # -- squashfs 4 LE, in memory ------------------------------------------------------------------
    def _dissect(
        self, view: memoryview, sb: SuperBlock, ctx: UnpackContext, findings: list[Finding]
    ) -> Iterator[Child]:
        try:
            fs = _open_squashfs(view, sb, ctx.limits)
            root = fs.root
            list(root.iterdir())  # decode the root directory now: vendor compression fails here
        except (
            DecompressError,
            ValueError,
            NotImplementedError,
            EOFError,
            OSError,
            IndexError,
            KeyError,
            TypeError,  # dissect indexes a missing metadata block (None) on a damaged table
            AttributeError,
            struct.error,
        ) as exc:
            yield from self._fallback(view, sb, ctx, findings, exc)
            return
        guard = ctx.ratio_guard(sb.bytes_used, "squashfs")

        def read(entry: Any, size: int) -> bytes:
            return _read_file(fs, view, entry, size, ctx.check_time)

        seen: set[tuple[int, int]] = set()
        stack: list[tuple[str, Any]] = [("", root)]
        while stack:
            prefix, directory = stack.pop()
            key = (directory.block, directory.offset)
            if key in seen:
                findings.append(ctx.finding("CW-UNPACK-CORRUPT", Severity.LOW, "squashfs directory loop"))
                continue
            seen.add(key)
            try:
                entries = list(directory.iterdir())
            except Exception as exc:  # a damaged directory ends only this branch
                findings.append(
                    ctx.finding(
                        "CW-UNPACK-CORRUPT", Severity.LOW, f"squashfs directory {prefix or '/'}: {exc}"
                    )
                )
                continue
            for entry in entries:
                ctx.check_time()
                path = f"{prefix}{entry.name}"
                try:
                    child = entry_child(entry, path, guard, read)
                except (LimitExceeded, DecompressError):
                    raise
                except Exception as exc:  # one bad inode must not end the walk
                    findings.append(ctx.finding("CW-UNPACK-CORRUPT", Severity.LOW, f"squashfs {path}: {exc}"))
                    continue
                yield child
                if entry.is_dir():
                    stack.append((path + "/", entry))

    def _fallback(
        self, view: memoryview, sb: SuperBlock, ctx: UnpackContext, findings: list[Finding], exc: Exception
    ) -> Iterator[Child]:
        if sb.compression == "lzma":
            if ctx.which("sasquatch"):
                yield from self._external(view, sb, ctx, findings, "sasquatch")
                return
            findings.append(
                ctx.finding(
                    "CW-UNPACK-PARTIAL",
                    Severity.LOW,
                    f"partial extraction: vendor-LZMA squashfs, sasquatch not installed "
                    f"(filesystem at offset {ctx.base_offset}, {sb.bytes_used} bytes, not extracted; "
                    "raw bytes scanned)",
                )
            )
            return
        findings.append(ctx.finding("CW-UNPACK-CORRUPT", Severity.LOW, f"squashfs unreadable: {exc}"))

    # -- external tools (squashfs 1-3, vendor variants) ---------------------------------------------
    def _external(
        self, view: memoryview, sb: SuperBlock, ctx: UnpackContext, findings: list[Finding], tool_name: str
    ) -> Iterator[Child]:
        tool = ctx.which(tool_name)
        if tool is None or ctx.tmpdir is None:
            findings.append(
                self._unsupported(
                    ctx, f"squashfs {sb.major}.{sb.minor} {sb.endian}-endian ({tool_name} not installed)"
                )
            )
            return
        work = Path(ctx.tmpdir) / f"squashfs-{os.getpid()}-{id(view):x}"
        work.mkdir(parents=True)
        image = work / "image.sqfs"
        image.write_bytes(view)
        try:
            listing = ctx.run_tool([tool, "-lls", "-no-xattrs", str(image)], timeout=120)
            entries = [
                m for m in map(_LLS.match, listing.stdout.decode("utf-8", "replace").splitlines()) if m
            ]
            if not entries:
                findings.append(
                    self._unsupported(
                        ctx, f"squashfs {sb.major}.{sb.minor} {sb.endian}-endian ({tool_name} cannot read it)"
                    )
                )
                return
            total = sum(int(m["size"]) for m in entries if m["perm"][0] == "-")
            if (
                total > ctx.limits.max_total_bytes - ctx.budget.total_bytes
                or len(entries) > ctx.limits.max_files
            ):
                raise LimitExceeded(
                    "CW-LIMIT-TOTAL",
                    f"squashfs lists {len(entries)} entries / {total} bytes: over the limits",
                )
            out = work / "root"
            result = ctx.run_tool([tool, "-d", str(out), "-no-xattrs", "-n", str(image)], timeout=300)
            if result.returncode == 0 and out.is_dir():
                yield from _walk_tree(out, ctx)
                return
            findings.append(
                ctx.finding(
                    "CW-UNPACK-PARTIAL",
                    Severity.LOW,
                    f"partial extraction: squashfs {sb.major}.{sb.minor} {sb.endian}-endian lists "
                    f"{len(entries)} entries but its data cannot be decompressed by {tool_name} "
                    "(vendor compression?); file list only",
                )
            )
            for match in entries:
                path = match["path"].lstrip("/")
                kind = {
                    "d": "dir",
                    "l": "symlink",
                    "-": "file",
                    "c": "device",
                    "b": "device",
                    "p": "fifo",
                    "s": "socket",
                }
                entry_kind = kind.get(match["perm"][0], "file")
                size = int(match["size"]) if entry_kind == "file" else 0
                yield Child(
                    path,
                    kind=entry_kind,
                    size=size,
                    link_target=match["target"],
                    missing=entry_kind == "file",
                )
        finally:
            _remove_tree(work)


_COMPRESSED_BIT_BLOCK = 1 << 24  # set in a data block's size word: stored uncompressed


def _read_file(fs: Any, view: memoryview, inode: Any, size: int, check_time: Callable[[], None]) -> bytes:
    """A regular file's bytes, block after block straight from the image (dissect's stream reads
    the same blocks through several layers of Python per aligned chunk, and caches every block).
    Each block is decompressed by the bounded decoder and cut to what the file still needs, so the
    result never exceeds `size`; damaged blocks yield fewer bytes, as with dissect's reader."""
    header = inode.header
    block_size = fs.block_size
    pos = header.start_block
    parts: list[bytes | memoryview] = []
    remaining = size
    for count, (word, run) in enumerate(inode.block_list):
        if remaining <= 0:
            break
        if count % 64 == 63:
            check_time()
        if word is None:  # the tail, packed with other tails into a fragment block
            tail = fs._read_fragment(header.fragment, header.offset, run)[:remaining]
            parts.append(tail)
            remaining -= run
            continue
        want = min(block_size, remaining)
        remaining -= want
        if word == 0:  # sparse block
            parts.append(bytes(want))
            continue
        length = word & ~_COMPRESSED_BIT_BLOCK
        raw = view[pos : pos + length]
        pos += length
        if word & _COMPRESSED_BIT_BLOCK:
            parts.append(raw[:want])
        else:
            parts.append(fs._compression.decompress(raw, block_size)[:want])
    return b"".join(parts)


def _walk_tree(root: Path, ctx: UnpackContext) -> Iterator[Child]:
    """Children from a directory an external tool extracted into; links are read, never followed."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        prefix = "" if rel_dir == "." else rel_dir + "/"
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            path = prefix + name
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                yield Child(path, kind="dir", mode=mode, size=0)
            elif stat.S_ISLNK(mode):
                yield Child(path, kind="symlink", mode=mode, link_target=os.readlink(full), size=0)
            elif stat.S_ISREG(mode):

                def load(full: str = full) -> bytes:
                    fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)
                    with os.fdopen(fd, "rb") as fh:
                        return fh.read(ctx.limits.max_file_bytes + 1)

                yield Child(path, loader=load, size=st.st_size, mode=mode)
            else:
                kind = "fifo" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
                yield Child(path, kind=kind, mode=mode, size=0)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
