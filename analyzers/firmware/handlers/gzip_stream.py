"""gzip (RFC 1952), including concatenated members; the stored file name names the child."""

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

_FEXTRA, _FNAME = 0x04, 0x08


def stored_name(data: Blob) -> str | None:
    """The FNAME field of the gzip header, if any (Latin-1, NUL-terminated, capped)."""
    if len(data) < 10 or not data[3] & _FNAME:
        return None
    pos = 10
    if data[3] & _FEXTRA:
        if len(data) < 12:
            return None
        pos += 2 + int.from_bytes(data[10:12], "little")
    end = bytes(data[pos : pos + 256]).find(b"\x00")
    if end <= 0:
        return None
    return bytes(data[pos : pos + end]).decode("latin-1")


class GzipHandler(ContainerHandler):
    NAME = "gzip"
    PATTERNS = (Magic(b"\x1f\x8b\x08"),)
    PATTERN_GATED = True
    DOC = HandlerDoc(
        name="gzip",
        vendor="generic",
        description="gzip stream (RFC 1952); concatenated members are joined.",
        references=("https://www.rfc-editor.org/rfc/rfc1952",),
        limitations=("Trailing data after the last member is ignored (reported by the walker).",),
    )

    def matches(self, data: Blob) -> bool:
        # reserved flag bits must be clear: this rejects most accidental 1f 8b 08 sequences
        return super().matches(data) and len(data) >= 18 and data[3] & 0xE0 == 0

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        return decompress_stream(
            self.NAME, "gzip", data, ctx, stored_name=stored_name(data), metadata={"os": data[9]}
        )
