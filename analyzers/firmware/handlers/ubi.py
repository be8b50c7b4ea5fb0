"""UBI images, read in memory with ubi-reader's Python API. Each volume becomes a child blob (the
concatenated LEBs), which the UBIFS handler (or any other) then recognises."""

from __future__ import annotations

import contextlib
import io
import itertools
from collections import Counter
from collections.abc import Iterator
from typing import Any

from analyzers.firmware.handlers.base import (
    Child,
    ContainerHandler,
    HandlerDoc,
    HandlerResult,
    Magic,
    NotMyFormat,
    UnpackContext,
)
from analyzers.firmware.memio import SliceReader
from analyzers.firmware.model import Finding, Severity
from analyzers.firmware.safety import LIMIT_FILE_SIZE, LimitExceeded

UBI_MAGIC = b"UBI#"


def mem_ubi_file(view: memoryview, block_size: int) -> Any:
    """A ubi-reader `ubi_file` reading from memory instead of opening a path."""
    from ubireader.ubi_io import ubi_file

    class MemUbiFile(ubi_file):
        def __init__(self) -> None:  # deliberately does not call the path-opening constructor
            self.__name__ = "UBI_File"
            self._fhandle = SliceReader(view)  # type: ignore[assignment]
            self._start_offset = 0
            self._end_offset = len(view)
            self._block_size = block_size
            self._last_read_addr = 0
            self.is_valid = True

    return MemUbiFile()


@contextlib.contextmanager
def quiet_ubireader() -> Iterator[None]:
    """ubi-reader prints to stdout and calls sys.exit() on fatal errors: silence it, and turn the
    exit into an exception the walker reports."""
    from ubireader import settings

    settings.logging_on = settings.logging_on_verbose = False
    settings.warn_only_block_read_errors = True
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            yield
    except SystemExit:
        lines = [line for line in sink.getvalue().splitlines() if line.strip()]
        raise ValueError(lines[-1] if lines else "ubi-reader gave up") from None


def guess_peb_size(view: memoryview) -> int | None:
    """Most common distance between erase-counter headers (in the first 16 MiB)."""
    head = bytes(view[: 16 << 20])
    positions: list[int] = []
    pos = head.find(UBI_MAGIC)
    while pos >= 0 and len(positions) < 512:
        positions.append(pos)
        pos = head.find(UBI_MAGIC, pos + 1)
    diffs = Counter(b - a for a, b in itertools.pairwise(positions) if b - a >= 512)
    if not diffs:
        return len(view) if len(positions) == 1 else None
    return diffs.most_common(1)[0][0]


class UbiHandler(ContainerHandler):
    NAME = "ubi"
    PATTERNS = (Magic(UBI_MAGIC),)
    PATTERN_GATED = True
    DOC = HandlerDoc(
        name="UBI",
        vendor="Linux MTD",
        description="UBI image: volumes are extracted (in memory) as child blobs, e.g. UBIFS.",
        references=("http://www.linux-mtd.infradead.org/doc/ubi.html", "ubi-reader (jrspruitt/ubi_reader)"),
        limitations=("The erase block size is guessed from the spacing of the erase-counter headers.",),
    )

    def matches(self, data: Any) -> bool:
        # erase-counter header: magic, version 1
        return super().matches(data) and len(data) >= 64 and data[4] == 1

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        peb = guess_peb_size(data)
        if not peb:
            raise NotMyFormat("cannot determine the UBI erase block size")
        blocks = 0
        while (blocks + 1) * peb <= len(data) and bytes(data[blocks * peb : blocks * peb + 4]) == UBI_MAGIC:
            blocks += 1
        size = max(blocks, 1) * peb
        view = data[: min(size, len(data))]
        findings: list[Finding] = []
        try:
            with quiet_ubireader():
                from ubireader.ubi import ubi

                image = ubi(mem_ubi_file(view, peb))
                volumes = [
                    (seq, name, vol)
                    for seq, img in enumerate(image.images)
                    for name, vol in sorted(img.volumes.items())
                ]
        except Exception as exc:  # ubi-reader fails in many ways on damaged images (None attributes...)
            if ctx.carving:
                raise NotMyFormat(f"UBI: {exc}") from None
            info = ctx.container(self.NAME, size=size, metadata={"peb_size": peb, "blocks": blocks})
            findings.append(ctx.finding("CW-UNPACK-CORRUPT", Severity.LOW, f"UBI image unreadable: {exc}"))
            return HandlerResult([info], (), findings, size=size)
        meta = {
            "peb_size": peb,
            "leb_size": image.leb_size,
            "blocks": blocks,
            "images": len(image.images),
            "volumes": [{"image": seq, "name": name, "lebs": vol.block_count} for seq, name, vol in volumes],
        }
        info = ctx.container(self.NAME, size=size, metadata=meta)
        if ctx.header_only:
            return HandlerResult([info], (), findings, size=size)
        many = len(image.images) > 1

        def children() -> Iterator[Child]:
            for seq, name, vol in volumes:
                # ubi-reader fills every LEB number below the highest one it saw with 0xFF: the span
                # comes from the (untrusted) LEB numbers, not the block count; the walker checks it
                lebs = [block.leb_num for block in vol.get_blocks(image.blocks).values()]
                span = (max(lebs) + 1 if lebs else 0) * image.leb_size

                def load(vol: Any = vol, span: int = span, what: str = name) -> bytes:
                    if span > ctx.limits.max_file_bytes:  # never reached through the walker
                        raise LimitExceeded(LIMIT_FILE_SIZE, f"UBI volume {what}: {span} bytes")
                    guard = ctx.ratio_guard(len(view), f"UBI volume {what}")
                    out = bytearray()
                    with quiet_ubireader():
                        for leb in vol.reader(image):
                            ctx.check_time()
                            out += leb
                            guard.add(len(leb))
                    return bytes(out)

                yield Child(f"image{seq}/{name}" if many else name, loader=load, size=span)

        return HandlerResult([info], children(), findings, size=size)
