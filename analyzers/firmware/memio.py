"""Zero-copy file-like access to in-memory blobs (memoryview slices of an mmap'd image).

zipfile, tarfile and the filesystem libraries want a seekable file object; wrapping the blob in
io.BytesIO would copy it. SliceReader reads straight from the memoryview, and can overlay a few
patched bytes at the start (the Dahua 'DH' -> 'PK' fix) without touching the input.
"""

from __future__ import annotations

import io


class SliceReader(io.RawIOBase):
    """Read-only, seekable view of a buffer; `patch` replaces the first len(patch) bytes."""

    def __init__(self, data: bytes | bytearray | memoryview, patch: bytes = b"") -> None:
        super().__init__()
        self._view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
        self._patch = patch
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return len(self._view)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = len(self._view) + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise OSError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        start = self._pos
        if start >= len(self._view):
            return 0
        n = min(len(buffer), len(self._view) - start)
        target = memoryview(buffer).cast("B")
        target[:n] = self._view[start : start + n]
        if start < len(self._patch):
            end = min(len(self._patch), start + n)
            target[: end - start] = self._patch[start:end]
        self._pos = start + n
        return n

    def read(self, size: int | None = -1) -> bytes:
        start = self._pos
        end = len(self._view) if size is None or size < 0 else min(len(self._view), start + size)
        if end <= start:
            return b""
        chunk = bytes(self._view[start:end])
        if start < len(self._patch):
            head = self._patch[start : min(len(self._patch), end)]
            chunk = head + chunk[len(head) :]
        self._pos = end
        return chunk

    def readall(self) -> bytes:
        return self.read(-1)
