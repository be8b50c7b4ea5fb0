"""xz stream (.xz container of LZMA2), including concatenated streams."""

from __future__ import annotations

from analyzers.firmware.handlers.base import ContainerHandler, HandlerDoc, HandlerResult, Magic, UnpackContext
from analyzers.firmware.handlers.compression import decompress_stream


class XzHandler(ContainerHandler):
    NAME = "xz"
    PATTERNS = (Magic(b"\xfd7zXZ\x00"),)
    DOC = HandlerDoc(
        name="xz",
        vendor="generic",
        description="xz stream (LZMA2 in the .xz container).",
        references=("https://tukaani.org/xz/xz-file-format.txt",),
    )

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        return decompress_stream(self.NAME, "xz", data, ctx)
