"""Payload sniffing by magic (firmware-formats.md 3.6) and Shannon entropy, for the vendor handlers'
metadata and their "encrypted — not analysable" heuristic (no known magic and entropy > 7.0)."""

from __future__ import annotations

import math
from collections import Counter

from analyzers.firmware.handlers.base import Blob

UIMAGE_HEADER = 64

_AT_ZERO: tuple[tuple[bytes, str], ...] = (
    (b"hsqs", "squashfs"),
    (b"sqsh", "squashfs-be"),
    (b"\x45\x3d\xcd\x28", "cramfs"),
    (b"\x28\xcd\x3d\x45", "cramfs-be"),
    (b"UBI#", "ubi"),
    (b"\x31\x18\x10\x06", "ubifs"),
    (b"\x85\x19", "jffs2"),
    (b"\x19\x85", "jffs2-be"),
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x5d\x00\x00", "lzma"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x89LZO", "lzo"),
    (b"\xd0\x0d\xfe\xed", "fdt"),
    (b"\x7fELF", "elf"),
    (b"\x27\x05\x19\x56", "uimage"),
    (b"PK\x03\x04", "zip"),
    (b"-rom1fs-", "romfs"),
    (b"070701", "cpio"),
    (b"070702", "cpio"),
    (b"070707", "cpio"),
    (b"BZh", "bzip2"),
)


def classify_payload(head: Blob) -> str | None:
    """Kind of a payload from its first bytes (after any uImage header), or None if unknown."""
    raw = bytes(head[:0x440])
    for magic, kind in _AT_ZERO:
        if raw.startswith(magic):
            return kind
    if len(raw) >= 0x28 and int.from_bytes(raw[0x24:0x28], "little") == 0x016F2818:
        return "arm-zimage"
    if raw[0x38:0x3C] == b"ARM\x64":
        return "arm64-image"
    if raw[0x438:0x43A] == b"\x53\xef":
        return "ext2"
    if raw[257:262] == b"ustar":
        return "tar"
    return None


def classify_member(head: Blob) -> str | None:
    """Like classify_payload, looking through a uImage header when there is one."""
    if bytes(head[:4]) == b"\x27\x05\x19\x56":
        inner = classify_payload(head[UIMAGE_HEADER:])
        return f"uimage/{inner}" if inner else "uimage"
    return classify_payload(head)


def entropy(data: Blob) -> float:
    """Shannon entropy in bits per byte (0.0 for empty input)."""
    n = len(data)
    if n == 0:
        return 0.0
    counts = Counter(bytes(data))
    return -sum(c / n * math.log2(c / n) for c in counts.values())
