"""Fuzz target: Linux romfs."""

from __future__ import annotations

from analyzers.firmware.handlers.romfs import RomfsHandler
from tests.fuzz.firmware.harness import handler_target

fuzz_one = handler_target(RomfsHandler)


def seeds() -> list[bytes]:
    from tests.firmware import builders as B
    from tests.fuzz.firmware.harness import build_with_tool, seed_tree

    return [build_with_tool(lambda d: B.build_romfs(seed_tree(), d / "r.romfs"))]
