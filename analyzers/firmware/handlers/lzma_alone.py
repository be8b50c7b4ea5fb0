"""Legacy LZMA-alone stream (13-byte header: properties, dictionary size, uncompressed size)."""

from __future__ import annotations

from analyzers.firmware.handlers.base import (
    Blob,
    ContainerHandler,
    HandlerDoc,
    HandlerResult,
    Magic,
    UnpackContext,
)
from analyzers.firmware.handlers.compression import decompress_stream

_UNKNOWN_SIZE = 0xFFFF_FFFF_FFFF_FFFF


def plausible_header(data: Blob) -> bool:
    """The 13-byte header is weak as a magic; insist on sane properties, dictionary and size."""
    if len(data) < 14:
        return False
    props = data[0]
    if props >= 9 * 5 * 5:
        return False
    dict_size = int.from_bytes(data[1:5], "little")
    if dict_size < 4096 or dict_size > 1 << 30:
        return False
    # dictionary sizes written by real encoders are 2^n or 2^n + 2^(n-1)
    top = dict_size.bit_length() - 1
    if dict_size not in (1 << top, (1 << top) | (1 << (top - 1))):
        return False
    size = int.from_bytes(data[5:13], "little")
    return size == _UNKNOWN_SIZE or 0 < size < 1 << 34


class LzmaHandler(ContainerHandler):
    NAME = "lzma"
    PATTERNS = (Magic(b"\x5d\x00\x00"),)
    PATTERN_GATED = True
    DOC = HandlerDoc(
        name="LZMA (alone)",
        vendor="generic",
        description="Legacy .lzma stream as written by lzma/xz --format=lzma and U-Boot tooling.",
        references=("https://github.com/jljusten/LZMA-SDK/blob/master/DOC/lzma-specification.txt",),
        limitations=("Only the common property byte 0x5D is searched for when carving.",),
    )

    def matches(self, data: Blob) -> bool:
        return super().matches(data) and plausible_header(data)

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        declared = int.from_bytes(data[5:13], "little")
        meta: dict[str, object] = {"dictionary_size": int.from_bytes(data[1:5], "little")}
        if declared != _UNKNOWN_SIZE:
            meta["declared_size"] = declared
        return decompress_stream(self.NAME, "lzma", data, ctx, metadata=meta)
