"""Shared glue for filesystems parsed by the dissect.* libraries (squashfs, cramfs): turn one
directory entry into a Child whose bytes are read lazily and counted against the image budget."""

from __future__ import annotations

from typing import Any

from analyzers.firmware.handlers.base import Child


def entry_child(entry: Any, path: str, guard: Any) -> Child:
    mode = entry.mode
    if entry.is_dir():
        return Child(path, kind="dir", mode=mode, size=0)
    if entry.is_symlink():
        return Child(path, kind="symlink", mode=mode, link_target=entry.link, size=0)
    if entry.is_file():
        size = entry.size

        def load(entry: Any = entry, size: int = size) -> bytes:
            body = entry.open().read(size)
            guard.add(len(body))
            return bytes(body)

        return Child(path, loader=load, size=size, mode=mode)
    kind = "device" if entry.is_device() else "fifo" if entry.is_fifo() else "socket"
    return Child(path, kind=kind, mode=mode, size=0)
