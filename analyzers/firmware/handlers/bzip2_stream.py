"""bzip2 stream, including concatenated streams."""

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


class Bzip2Handler(ContainerHandler):
    NAME = "bzip2"
    PATTERNS = (Magic(b"BZh"),)
    PATTERN_GATED = True
    DOC = HandlerDoc(
        name="bzip2",
        vendor="generic",
        description="bzip2 stream.",
        references=("https://sourceware.org/bzip2/",),
    )

    def matches(self, data: Blob) -> bool:
        # block size digit, then the block magic (pi) or the end-of-stream magic (sqrt(pi))
        return (
            super().matches(data)
            and len(data) >= 10
            and 0x31 <= data[3] <= 0x39
            and bytes(data[4:10]) in (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")
        )

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        return decompress_stream(self.NAME, "bzip2", data, ctx)
