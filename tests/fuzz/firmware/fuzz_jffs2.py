"""Fuzz target: JFFS2 in both byte orders, all node compressions."""

from __future__ import annotations

from pathlib import Path

from analyzers.firmware.handlers.jffs2 import Jffs2Handler
from tests.fuzz.firmware.harness import handler_target

fuzz_one = handler_target(Jffs2Handler)


def seeds() -> list[bytes]:
    import functools

    from tests.firmware import builders as B
    from tests.fuzz.firmware.harness import build_with_tool, seed_tree

    def build(folder: Path, big: bool, comp: str | None) -> Path:
        return B.build_jffs2(seed_tree(), folder / "j.jffs2", big_endian=big, compression=comp)

    seeds = []
    for big, comp in ((False, None), (True, None), (False, "lzo"), (True, "rtime")):
        image = build_with_tool(functools.partial(build, big=big, comp=comp))
        seeds.append(image.rstrip(b"\xff"))  # the erase-block padding only slows the fuzzer down
    return seeds
