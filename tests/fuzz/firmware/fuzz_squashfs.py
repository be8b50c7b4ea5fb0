"""Fuzz target: SquashFS 4 LE in memory (dissect.squashfs, bounded decoder); v1-3 via unsquashfs."""

from __future__ import annotations

from pathlib import Path

from analyzers.firmware.handlers.squashfs import SquashfsHandler
from tests.fuzz.firmware.harness import handler_target

fuzz_one = handler_target(SquashfsHandler)


def seeds() -> list[bytes]:
    import functools

    from tests.firmware import builders as B
    from tests.fuzz.firmware.harness import build_with_tool, seed_tree

    def build(folder: Path, comp: str) -> Path:
        return B.build_squashfs(seed_tree(), folder / "s.sqfs", comp=comp, block_size=4096)

    return [build_with_tool(functools.partial(build, comp=comp)) for comp in ("gzip", "xz", "lzo", "zstd")]
