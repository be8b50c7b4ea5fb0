"""Shared glue for filesystems parsed by the dissect.* libraries (squashfs, cramfs): turn one
directory entry into a Child whose bytes are read lazily and counted against the image budget."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from analyzers.firmware.handlers.base import Child
from analyzers.firmware.safety import DecompressError, LimitExceeded


def entry_child(entry: Any, path: str, guard: Any, read: Callable[[Any, int], bytes] | None = None) -> Child:
    """`read(entry, size)` replaces the library's file stream when given (squashfs reads blocks
    itself, several times faster)."""
    mode = entry.mode
    if entry.is_dir():
        return Child(path, kind="dir", mode=mode, size=0)
    if entry.is_symlink():
        return Child(path, kind="symlink", mode=mode, link_target=entry.link, size=0)
    if entry.is_file():
        size = entry.size

        def load(entry: Any = entry, size: int = size) -> bytes:
            # charged before reading: a sparse file (holes need no stored blocks) with a huge
            # apparent size must hit the ratio limit before its zeros are allocated
            guard.add(size)
            try:
                return bytes(entry.open().read(size) if read is None else read(entry, size))
            except (LimitExceeded, DecompressError):
                raise
            except Exception as exc:  # the library boundary
                # a damaged block table or pointer makes dissect fail in many ways (EOFError,
                # ZeroDivisionError on a zero block size...): all of them mean corrupt data here
                raise DecompressError(f"{path}: {type(exc).__name__}: {exc}") from None

        return Child(path, loader=load, size=size, mode=mode)
    kind = "device" if entry.is_device() else "fifo" if entry.is_fifo() else "socket"
    return Child(path, kind=kind, mode=mode, size=0)
