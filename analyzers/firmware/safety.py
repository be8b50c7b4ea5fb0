"""Safety for hostile firmware, in one place: limits, bounded decompression, member-name sanitising,
symlink checks and the single writer used by `--extract`.

Handlers never decompress, name or write anything themselves; they call into this module so that
every bound (depth, bytes, ratio, file count, wall time) is enforced the same way everywhere.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import hashlib
import importlib
import lzma
import os
import posixpath
import re
import stat
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from analyzers.firmware.model import Limits

_fast_zlib: Any
try:  # ISA-L inflates the same deflate streams about 2.5x faster than zlib
    _fast_zlib = importlib.import_module("isal.isal_zlib")
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    _fast_zlib = zlib
_FAST_ZLIB_ERRORS: tuple[type[Exception], ...] = (_fast_zlib.error, zlib.error)

MiB = 1024 * 1024
MAX_NAME_CHARS = 4096  # PATH_MAX: no real device holds a longer path; longer names are shortened
RATIO_FLOOR = 1 * MiB  # the ratio limit applies only past this much output (small files compress well)
_IN_CHUNK = 16 * 1024  # compressed input fed per step (bounds how far the ratio check can lag)
_OUT_STEP = 1 * MiB  # decompressed output produced per step

# Rule ids of the `limit` findings (one per bound).
LIMIT_DEPTH = "CW-LIMIT-DEPTH"
LIMIT_TOTAL = "CW-LIMIT-TOTAL"
LIMIT_FILE_SIZE = "CW-LIMIT-FILE-SIZE"
LIMIT_RATIO = "CW-LIMIT-RATIO"
LIMIT_FILES = "CW-LIMIT-FILES"
LIMIT_TIME = "CW-LIMIT-TIME"
TRAVERSAL = "CW-UNPACK-TRAVERSAL"
LINK_ESCAPE = "CW-UNPACK-LINK-ESCAPE"


class LimitExceeded(Exception):
    """A bound was hit. `image_wide` limits (total bytes, files, time) stop the whole image; the others
    end only the branch being unpacked."""

    def __init__(self, rule_id: str, message: str, *, image_wide: bool = False) -> None:
        super().__init__(message)
        self.rule_id = rule_id
        self.message = message
        self.image_wide = image_wide


class DecompressError(Exception):
    """The stream is corrupt or truncated; `partial` holds what was decoded before the error."""

    def __init__(self, message: str, partial: bytes = b"") -> None:
        super().__init__(message)
        self.partial = partial


@dataclass(slots=True)
class Budget:
    """Image-wide accounting of the limits: bytes produced, members, wall time."""

    limits: Limits
    started: float = field(default_factory=time.monotonic)
    total_bytes: int = 0
    files: int = 0

    @property
    def deadline(self) -> float:
        return self.started + self.limits.max_seconds

    def remaining_seconds(self) -> float:
        return self.deadline - time.monotonic()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise LimitExceeded(
                LIMIT_TIME,
                f"wall-time limit of {self.limits.max_seconds:g} s per image reached",
                image_wide=True,
            )

    def charge(self, nbytes: int) -> None:
        """Account bytes produced by unpacking (decompressed or carved)."""
        self.total_bytes += nbytes
        if self.total_bytes > self.limits.max_total_bytes:
            raise LimitExceeded(
                LIMIT_TOTAL,
                f"total unpacked bytes exceed the limit of {self.limits.max_total_bytes} bytes",
                image_wide=True,
            )

    def count_file(self) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise LimitExceeded(
                LIMIT_FILES, f"more than {self.limits.max_files} members in one image", image_wide=True
            )

    def check_file_size(self, size: int, name: str) -> None:
        if size > self.limits.max_file_bytes:
            raise LimitExceeded(
                LIMIT_FILE_SIZE,
                f"{name or 'member'}: {size} bytes exceed the per-file limit ({self.limits.max_file_bytes})",
            )


class RatioGuard:
    """Decompressed/compressed ratio check for one stream or one filesystem (only past RATIO_FLOOR).

    Streams pass the compressed bytes consumed so far, so a bomb is stopped right after the first
    MiB of output instead of after `max_ratio` times its whole compressed size."""

    def __init__(self, compressed_size: int, limits: Limits, what: str) -> None:
        self.compressed = max(compressed_size, 1)
        self.limits = limits
        self.what = what
        self.produced = 0

    def add(self, nbytes: int, consumed: int | None = None) -> None:
        self.produced += nbytes
        if self.produced <= RATIO_FLOOR:
            return
        source = self.compressed if consumed is None else max(1, min(consumed, self.compressed))
        if self.produced / source > self.limits.max_ratio:
            raise LimitExceeded(
                LIMIT_RATIO,
                f"{self.what}: decompression ratio above {self.limits.max_ratio:g} "
                f"({self.produced} bytes out of {source}); looks like a decompression bomb",
            )


# --------------------------------------------------------------------------- bounded decompression


@dataclass(slots=True)
class Decompressed:
    data: bytes
    consumed: int  # compressed bytes used (end of the last complete stream)
    complete: bool  # the stream ended properly (not truncated)


def _new_decoder(kind: str) -> Any:
    if kind == "gzip":
        return zlib.decompressobj(wbits=31)
    if kind == "zlib":
        return zlib.decompressobj()
    if kind == "deflate":
        return zlib.decompressobj(wbits=-15)
    if kind == "xz":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    if kind == "lzma":
        return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE)
    if kind == "bzip2":
        return bz2.BZ2Decompressor()
    raise ValueError(f"unknown stream kind {kind}")


_MAGIC_OF_NEXT_MEMBER = {"gzip": b"\x1f\x8b", "xz": b"\xfd7zXZ\x00", "bzip2": b"BZh"}


def inflate_intact(data: bytes | memoryview, cap: int) -> bytes | None:
    """One zlib stream in a single call bounded to `cap` + 1 bytes of output: the output when the
    stream is intact and ends within `cap`, else None (overflow, truncation or corruption), so that
    the caller can take `bounded_decompress` for the exact report."""
    decoder = _fast_zlib.decompressobj()
    try:
        out = decoder.decompress(data, cap + 1)
    except _FAST_ZLIB_ERRORS:
        return None
    return out if decoder.eof and len(out) <= cap else None


def bounded_decompress(
    kind: str,
    data: bytes | memoryview,
    limits: Limits,
    *,
    max_output: int | None = None,
    what: str = "stream",
    multi_stream: bool = True,
    budget: Budget | None = None,
) -> Decompressed:
    """Decompress `data` (gzip, zlib, deflate, xz, lzma, bzip2, zstd) in bounded steps.

    Raises LimitExceeded past `max_output` (default: the per-file limit) or past the ratio limit, and
    DecompressError (with the partial output) on corrupt input. Concatenated gzip/xz/bzip2 members are
    followed when `multi_stream` is true. Never holds more than the bound in memory.
    """
    cap = limits.max_file_bytes if max_output is None else max_output
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    if kind == "zstd":
        return _bounded_zstd(view, limits, cap, what, budget)
    guard = RatioGuard(len(view), limits, what)
    out = bytearray()
    pos = 0  # input bytes handed to the current decoder so far (absolute offset in `view`)
    zlib_family = kind in ("zlib", "gzip", "deflate")
    decoder = _new_decoder(kind)
    last_good: tuple[int, int] | None = None  # (output length, consumed) once a first stream ended
    drained = False  # zlib may hold output back after its input is used up; one empty feed drains it
    while True:
        if budget is not None:
            budget.check_time()
        if zlib_family and decoder.unconsumed_tail:
            feed: bytes | memoryview = decoder.unconsumed_tail
        elif not zlib_family and not decoder.needs_input:
            feed = b""  # the decoder still holds input; ask for more output
        elif pos < len(view):
            feed = view[pos : pos + _IN_CHUNK]
            pos += len(feed)
        elif zlib_family and not drained:
            feed, drained = b"", True
        else:
            if last_good is not None:
                return Decompressed(bytes(out[: last_good[0]]), last_good[1], True)
            raise DecompressError(f"{what}: truncated {kind} stream", bytes(out))
        room = cap - len(out) + 1  # one byte more than allowed reveals an overflow
        try:
            chunk = decoder.decompress(feed, min(_OUT_STEP, room))
        except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError) as exc:
            if last_good is not None:  # junk after a complete stream that merely looked like another one
                return Decompressed(bytes(out[: last_good[0]]), last_good[1], True)
            raise DecompressError(f"{what}: corrupt {kind} data ({exc})", bytes(out)) from None
        if chunk:
            drained = False
        out += chunk
        guard.add(len(chunk), pos - len(decoder.unconsumed_tail) if zlib_family else pos)
        if len(out) > cap:
            raise LimitExceeded(LIMIT_FILE_SIZE, f"{what}: decompressed size exceeds {cap} bytes")
        if decoder.eof:
            # at the end of a stream the leftover input is in unused_data (zlib may also leave a stale
            # copy in unconsumed_tail, which must not be subtracted twice)
            consumed = pos - len(decoder.unused_data)
            magic = _MAGIC_OF_NEXT_MEMBER.get(kind)
            if multi_stream and magic and bytes(view[consumed : consumed + len(magic)]) == magic:
                last_good = (len(out), consumed)
                decoder = _new_decoder(kind)
                pos = consumed
                continue
            return Decompressed(bytes(out), consumed, True)


def _bounded_zstd(
    view: memoryview, limits: Limits, cap: int, what: str, budget: Budget | None
) -> Decompressed:
    """One zstd frame. The zstd decoder object has no output bound per call, so input is fed in small
    pieces: 256 bytes hold at most ~64 RLE blocks (8 MiB), checked after each call."""
    guard = RatioGuard(len(view), limits, what)
    out = bytearray()
    decoder = zstandard.ZstdDecompressor(max_window_size=1 << 27).decompressobj()
    pos = 0
    step = 256
    try:
        while pos < len(view):
            if budget is not None and pos % (1 << 20) < step:
                budget.check_time()
            feed = view[pos : pos + step]
            pos += len(feed)
            chunk = decoder.decompress(feed)
            out += chunk
            guard.add(len(chunk), pos)
            if len(out) > cap:
                raise LimitExceeded(LIMIT_FILE_SIZE, f"{what}: decompressed size exceeds {cap} bytes")
            if decoder.eof:
                return Decompressed(bytes(out), pos - len(decoder.unused_data), True)
    except zstandard.ZstdError as exc:
        raise DecompressError(f"{what}: corrupt zstd data ({exc})", bytes(out)) from None
    raise DecompressError(f"{what}: truncated zstd stream", bytes(out))


# --------------------------------------------------------------------------- member names and links


@dataclass(frozen=True, slots=True)
class SafeName:
    path: str  # relative, normalised, only ordinary components; safe to join under a root
    problem: str | None  # why the raw name was rewritten (traversal, absolute, NUL...), None if clean


_CONTROL_CHARS = re.compile("[\x00-\x1f]")


def safe_relpath(raw: str | bytes, *, flat: bool = False) -> SafeName:
    """Turn an untrusted member name into a relative path that cannot leave its root.

    Absolute names lose their leading '/', '..' components become '__', NUL and control characters
    become '_'. `flat` (for formats whose names have no directories, e.g. digicap) also turns '/' and
    '\\' into '_'. The caller reports `problem` as a traversal finding.
    """
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="surrogateescape")
    problems: list[str] = []
    text = raw
    if "\x00" in text:
        problems.append("NUL byte in name")
        text = text.split("\x00", 1)[0] if flat else text.replace("\x00", "_")
    if _CONTROL_CHARS.search(text):
        text = _CONTROL_CHARS.sub("_", text)
    if flat and ("/" in text or "\\" in text):
        problems.append("path separator in a flat name")
        text = text.replace("/", "_").replace("\\", "_")
    text = text.replace("\\", "/")
    if text.startswith("/"):
        problems.append("absolute path")
    parts: list[str] = []
    for part in text.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if "'..' component" not in problems:
                problems.append("'..' component")
            parts.append("__")
            continue
        parts.append(part)
    if not parts:
        problems.append("empty name")
        parts = ["_unnamed"]
    path = "/".join(parts)
    if len(path) > MAX_NAME_CHARS:
        # deep directory nesting would otherwise make the report quadratic in the depth; the digest
        # keeps shortened names distinct
        problems.append(f"name longer than {MAX_NAME_CHARS} characters")
        digest = hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]  # noqa: S324
        # the cut may end inside a component: one left as '.' or '..' (from '..x') must not survive
        head = [part for part in path[: MAX_NAME_CHARS - 64].split("/") if part not in ("", ".", "..")]
        path = "/".join([*head, f"__long_{digest}"])
    return SafeName(path, "; ".join(problems) or None)


def link_escapes(link_path: str, target: str) -> bool:
    """True when symlink `link_path` (relative to its container root) pointing at `target` resolves
    lexically outside that root. Absolute targets are relative to the image root (a firmware's own
    '/'), so they do not escape by this test; the extraction writer treats them separately."""
    if target.startswith("/"):
        return False
    base = posixpath.dirname(link_path)
    depth = 0 if not base else len([p for p in base.split("/") if p])
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        else:
            depth += 1
    return False


# --------------------------------------------------------------------------- the one safe writer


_PATH_MAX = 4096


class ExtractRefused(Exception):
    """The writer refused to create something (it would leave the root, or follow a link)."""


class SafeWriter:
    """Writes members under one root directory for `--extract`, and nowhere else.

    Every path is walked component by component from a directory fd opened on the resolved root,
    with O_NOFOLLOW and O_DIRECTORY, so a symlink planted by an earlier member can never redirect a
    later write. Files are opened with O_NOFOLLOW and checked with their /proc/self/fd realpath.
    Symlinks are created only when their target resolves inside the root.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        path = Path(root)
        path.mkdir(parents=True, exist_ok=True)
        self.root = os.path.realpath(path)
        self.files_written = 0
        self.bytes_written = 0

    def _open_dir(self, parts: list[str]) -> int:
        # the walk below works at any depth, but a tree deeper than PATH_MAX could not be opened,
        # listed or removed by path afterwards (by the analyst's tools, or shutil.rmtree)
        if len(os.fsencode(os.path.join(self.root, *parts))) + 256 >= _PATH_MAX:
            raise ExtractRefused(f"{'/'.join(parts)[:100]}...: path would exceed PATH_MAX ({_PATH_MAX})")
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in parts:
                if part in ("", ".", "..") or "/" in part:
                    raise ExtractRefused(f"bad path component {part!r}")
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                try:
                    nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise ExtractRefused(f"{part!r} is a symlink or not a directory") from None
                    raise
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _inside(self, real: str) -> bool:
        return real == self.root or real.startswith(self.root + os.sep)

    def write_file(self, relpath: str, data: bytes | memoryview, mode: int | None = None) -> str:
        parts = [p for p in relpath.split("/") if p]
        if not parts:
            raise ExtractRefused("empty path")
        dfd = self._open_dir(parts[:-1])
        try:
            perm = 0o755 if mode is not None and mode & 0o111 else 0o644
            try:
                fd = os.open(
                    parts[-1],
                    os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                    perm,
                    dir_fd=dfd,
                )
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EISDIR):
                    raise ExtractRefused(f"{relpath}: existing symlink or directory in the way") from None
                raise
            try:
                # where the kernel says the open file is (realpath would lstat every component again)
                real = os.readlink(f"/proc/self/fd/{fd}")
                if not self._inside(real):
                    raise ExtractRefused(f"{relpath}: resolves outside the extraction directory")
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise ExtractRefused(f"{relpath}: not a regular file")
                with os.fdopen(fd, "wb", closefd=False) as fh:
                    fh.write(data)
            finally:
                os.close(fd)
        finally:
            os.close(dfd)
        self.files_written += 1
        self.bytes_written += len(data)
        return os.path.join(self.root, *parts)

    def make_dir(self, relpath: str) -> None:
        parts = [p for p in relpath.split("/") if p]
        os.close(self._open_dir(parts))

    def write_symlink(self, relpath: str, target: str) -> None:
        """Create a symlink only when `target` resolves inside the root; raise ExtractRefused otherwise."""
        parts = [p for p in relpath.split("/") if p]
        if not parts:
            raise ExtractRefused("empty path")
        if not target:
            raise ExtractRefused(f"{relpath}: empty symlink target")
        if target.startswith("/") or "\x00" in target:
            raise ExtractRefused(f"{relpath} -> {target}: absolute target would point outside the root")
        names = [p for p in target.split("/") if p not in ("", ".")]
        climbs = 0
        while climbs < len(names) and names[climbs] == "..":
            climbs += 1
        if ".." in names[climbs:]:
            # 'x/..' is judged lexically here but resolved through x by the kernel: when x is (or later
            # becomes) a symlink, the target climbs from wherever x points. Only leading '..' are safe.
            raise ExtractRefused(f"{relpath} -> {target}: '..' after a name can climb out through a link")
        here = posixpath.join(self.root, *parts[:-1])
        resolved = posixpath.normpath(posixpath.join(here, target))
        if not self._inside(resolved):
            raise ExtractRefused(f"{relpath} -> {target}: target resolves outside the extraction directory")
        dfd = self._open_dir(parts[:-1])
        try:
            try:
                os.symlink(target, parts[-1], dir_fd=dfd)
            except FileExistsError:
                raise ExtractRefused(f"{relpath}: already exists") from None
        finally:
            os.close(dfd)
