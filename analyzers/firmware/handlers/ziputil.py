"""ZIP walking shared by the zip, Dahua DH-zip and Xiongmai handlers.

It finds where a ZIP that starts at offset 0 ends (so embedded ZIPs can be carved), opens it without
copying (an optional in-memory patch fixes Dahua's 'DH' magic), reads members with bounded output,
refuses overlapping entries (the overlapped-entry zip-bomb technique), and recovers members from
the local headers when the central directory is missing (truncated downloads).
"""

from __future__ import annotations

import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from analyzers.firmware.handlers.base import Blob, Child, EncryptedMember, NotMyFormat, UnpackContext
from analyzers.firmware.memio import SliceReader
from analyzers.firmware.model import Finding, Severity
from analyzers.firmware.safety import LIMIT_FILE_SIZE, DecompressError, LimitExceeded

LOCAL_MAGIC = b"PK\x03\x04"
_EOCD = re.compile(re.escape(b"PK\x05\x06"))
_EOCD_SIZE = 22
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_READ_STEP = 64 << 10  # small steps keep the ratio check close to the compressed bytes consumed


def find_zip_end(view: memoryview) -> int | None:
    """End offset of the ZIP starting at offset 0: the first end-of-central-directory record whose
    central directory lies right before it (relative to offset 0). None when there is none."""
    for match in _EOCD.finditer(view):
        pos = match.start()
        if pos + _EOCD_SIZE > len(view):
            break
        (_, disk, _cd_disk, _n_disk, _n_total, cd_size, cd_offset, comment_len) = struct.unpack_from(
            "<4sHHHHIIH", view, pos
        )
        if disk != 0 and disk != 0xFFFF:
            continue
        end = pos + _EOCD_SIZE + comment_len
        if end > len(view):
            end = len(view)  # a truncated comment is harmless
        if cd_offset == 0xFFFFFFFF or cd_size == 0xFFFFFFFF:
            return end  # zip64: the locator carries the real values; trust the first record
        if cd_offset + cd_size == pos:
            return end
    return None


@dataclass
class ZipListing:
    """An opened archive plus what was noticed while opening it."""

    archive: zipfile.ZipFile | None
    size: int
    findings: list[Finding] = field(default_factory=list)
    recovered: list[tuple[str, int, int, int, int, int]] = field(default_factory=list)  # local-header walk


def open_zip(view: memoryview, ctx: UnpackContext, *, patch: bytes = b"") -> ZipListing:
    """Open the ZIP at offset 0 of `view`. Without a central directory, fall back to the local
    headers (partial extraction, reported). Raises NotMyFormat when neither works."""
    end = find_zip_end(view)
    if end is not None:
        try:
            archive = zipfile.ZipFile(SliceReader(view[:end], patch=patch))
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, struct.error):
            archive = None
        if archive is not None:
            return ZipListing(archive, end)
    entries, walked = walk_local_headers(view, patch, max_output=ctx.limits.max_file_bytes)
    if not entries:
        raise NotMyFormat("no central directory and no readable local header")
    listing = ZipListing(None, walked, recovered=entries)
    listing.findings.append(
        ctx.finding(
            "CW-UNPACK-TRUNCATED",
            Severity.INFO,
            f"partial extraction: ZIP central directory missing (truncated archive?); "
            f"{len(entries)} members recovered from local headers",
        )
    )
    return listing


def walk_local_headers(
    view: memoryview, patch: bytes = b"", *, max_output: int = 1 << 29
) -> tuple[list[tuple[str, int, int, int, int, int]], int]:
    """(name, flags, method, data offset, compressed size, uncompressed size) of each local header
    in sequence, and the offset where the chain stops."""
    head = bytes(view[:4])
    if patch:
        head = patch + head[len(patch) :]
    entries: list[tuple[str, int, int, int, int, int]] = []
    pos = 0
    while pos + _LOCAL.size <= len(view):
        raw = bytes(view[pos : pos + _LOCAL.size])
        if pos == 0:
            raw = head + raw[4:]
        sig, _ver, flags, method, _t, _d, _crc, csize, usize, nlen, xlen = _LOCAL.unpack(raw)
        if sig != LOCAL_MAGIC:
            break
        name_start = pos + _LOCAL.size
        data_start = name_start + nlen + xlen
        if data_start > len(view):
            break
        raw_name = bytes(view[name_start : name_start + nlen])
        # the UTF-8 flag is the archive's claim, not a fact: undecodable bytes are kept, never fatal
        name = raw_name.decode("utf-8", "surrogateescape") if flags & 0x800 else raw_name.decode("cp437")
        if flags & 0x08 and csize == 0:
            if method != 8:
                break  # size only in a trailing descriptor and not self-delimiting: stop here
            # the size is only in a trailing descriptor: inflate (discarding output) to find the end
            probe = zlib.decompressobj(wbits=-15)
            fed = view[data_start : data_start + (1 << 24)]
            produced = 0
            try:
                step: Blob = fed
                while not probe.eof and step and produced <= max_output:
                    produced += len(probe.decompress(step, 1 << 16))
                    step = probe.unconsumed_tail
            except zlib.error:
                break
            if not probe.eof:
                break
            csize = len(fed) - len(probe.unused_data)
            usize = -1
        data_end = data_start + csize
        if data_end > len(view):
            entries.append((name, flags, method, data_start, len(view) - data_start, usize))
            pos = len(view)
            break
        entries.append((name, flags, method, data_start, csize, usize))
        pos = data_end
        if flags & 0x08:  # data descriptor, with or without its optional signature
            pos += 16 if bytes(view[pos : pos + 4]) == b"PK\x07\x08" else 12
    return entries, min(pos, len(view))


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, ctx: UnpackContext) -> bytes:
    if info.flag_bits & 0x1:
        raise EncryptedMember(f"{info.filename}: encrypted ZIP member")
    cap = ctx.limits.max_file_bytes
    guard = ctx.ratio_guard(info.compress_size, f"ZIP member {info.filename}")
    out = bytearray()
    try:
        with archive.open(info) as fh:
            while True:
                ctx.check_time()
                chunk = fh.read(_READ_STEP)
                if not chunk:
                    break
                out += chunk
                guard.add(len(chunk), _consumed(fh, info))
                if len(out) > cap:
                    raise LimitExceeded(LIMIT_FILE_SIZE, f"{info.filename}: larger than {cap} bytes")
    except RuntimeError as exc:  # zipfile raises RuntimeError for encrypted members
        raise EncryptedMember(f"{info.filename}: {exc}") from None
    except NotImplementedError as exc:
        raise DecompressError(f"{info.filename}: unsupported compression ({exc})", bytes(out)) from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise DecompressError(f"{info.filename}: {exc}", bytes(out)) from None
    return bytes(out)


def _consumed(fh: object, info: zipfile.ZipInfo) -> int | None:
    """Compressed bytes of the member decoded so far. zipfile keeps them in private fields (bytes not
    yet read from the archive, and input its decoder holds back); without them the ratio is taken
    against the whole member."""
    left = getattr(fh, "_compress_left", None)
    if not isinstance(left, int):
        return None
    held = getattr(getattr(fh, "_decompressor", None), "unconsumed_tail", b"")
    return info.compress_size - left - (len(held) if isinstance(held, bytes) else 0)


def _unix_mode(info: zipfile.ZipInfo) -> int | None:
    mode = info.external_attr >> 16
    return mode if info.create_system == 3 and mode else None


def iter_members(
    listing: ZipListing, view: memoryview, ctx: UnpackContext, findings: list[Finding]
) -> Iterator[Child]:
    """Children of an opened (or recovered) archive; problems go to `findings`."""
    if listing.archive is None:
        yield from _iter_recovered(listing, view, ctx)
        return
    archive = listing.archive
    infos = archive.infolist()
    spans = sorted((i.header_offset, i.header_offset + 30 + i.compress_size, n) for n, i in enumerate(infos))
    overlapping: set[int] = set()
    reach = -1
    for start, end, index in spans:
        if start < reach:
            overlapping.add(index)
        reach = max(reach, end)
    if overlapping:
        findings.append(
            ctx.finding(
                "CW-LIMIT-ZIP-OVERLAP",
                Severity.MEDIUM,
                f"{len(overlapping)} ZIP entries overlap other entries' data (zip-bomb technique); skipped",
                category="limit",
            )
        )
    for index, info in enumerate(infos):
        if index in overlapping:
            continue
        mode = _unix_mode(info)
        if info.filename.endswith("/"):  # not is_dir(): it raises IndexError on an empty name
            yield Child(info.filename, kind="dir", mode=mode, size=0)
            continue
        if mode is not None and stat.S_ISLNK(mode) and info.file_size < 4096:
            try:
                target = _read_member(archive, info, ctx).decode("utf-8", errors="replace")
            except (DecompressError, EncryptedMember):
                target = ""
            yield Child(info.filename, kind="symlink", mode=mode, link_target=target, size=len(target))
            continue

        def load(info: zipfile.ZipInfo = info) -> bytes:
            return _read_member(archive, info, ctx)

        yield Child(info.filename, loader=load, size=info.file_size, mode=mode)


def _iter_recovered(listing: ZipListing, view: memoryview, ctx: UnpackContext) -> Iterator[Child]:
    for name, flags, method, start, csize, usize in listing.recovered:
        if name.endswith("/"):
            yield Child(name, kind="dir", size=0)
            continue
        raw = view[start : start + csize]

        def load(raw: Blob = raw, flags: int = flags, method: int = method, name: str = name) -> Blob:
            if flags & 0x1:
                raise EncryptedMember(f"{name}: encrypted ZIP member")
            if method == 0:
                return raw
            if method == 8:
                return ctx.decompress("deflate", raw, what=f"ZIP member {name}", multi_stream=False).data
            raise DecompressError(f"{name}: unsupported ZIP compression method {method}")

        yield Child(name, loader=load, size=usize if usize >= 0 else None)


def read_small(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, ctx: UnpackContext, cap: int = 4 << 20
) -> bytes | None:
    """Whole content of a metadata member up to `cap` bytes (None when unreadable or larger)."""
    if info.file_size > cap or info.flag_bits & 0x1:
        return None
    try:
        with archive.open(info) as fh:
            data = fh.read(cap + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError, NotImplementedError):
        return None
    return data if len(data) <= cap else None


def sniff(archive: zipfile.ZipFile, info: zipfile.ZipInfo, size: int = 64 + 4096) -> bytes:
    """First bytes of a member (enough to classify it), or b'' when unreadable."""
    if info.flag_bits & 0x1:
        return b""
    try:
        with archive.open(info) as fh:
            return fh.read(size)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError, NotImplementedError):
        return b""


def find_member(archive: zipfile.ZipFile, basename: str) -> zipfile.ZipInfo | None:
    """The member whose last path component is `basename` (case-insensitive), shallowest first."""
    wanted = basename.lower()
    hits = [i for i in archive.infolist() if i.filename.rstrip("/").rsplit("/", 1)[-1].lower() == wanted]
    return min(hits, key=lambda i: i.filename.count("/")) if hits else None
