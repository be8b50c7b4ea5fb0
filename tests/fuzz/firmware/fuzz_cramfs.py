"""Fuzz target: cramfs v2 LE (dissect.cramfs with bounded pages)."""

from __future__ import annotations

from analyzers.firmware.handlers.cramfs import CramfsHandler
from tests.fuzz.firmware.harness import handler_target

fuzz_one = handler_target(CramfsHandler)


def seeds() -> list[bytes]:
    from tests.firmware import builders as B
    from tests.fuzz.firmware.harness import build_with_tool, seed_tree

    return [build_with_tool(lambda d: B.build_cramfs(seed_tree(), d / "c.cramfs"))]
