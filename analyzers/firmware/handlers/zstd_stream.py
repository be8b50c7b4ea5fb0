"""Zstandard frames (concatenated frames are joined)."""

from __future__ import annotations

from analyzers.firmware.handlers.base import ContainerHandler, HandlerDoc, HandlerResult, Magic, UnpackContext
from analyzers.firmware.handlers.compression import decompress_stream


class ZstdHandler(ContainerHandler):
    NAME = "zstd"
    PATTERNS = (Magic(b"\x28\xb5\x2f\xfd"),)
    DOC = HandlerDoc(
        name="Zstandard",
        vendor="generic",
        description="Zstandard frame(s).",
        references=("https://www.rfc-editor.org/rfc/rfc8878",),
        limitations=("When carving, the end of the frame is known only to within 16 KiB.",),
    )

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        return decompress_stream(self.NAME, "zstd", data, ctx)
