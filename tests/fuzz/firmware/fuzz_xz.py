"""Fuzz target: xz stream handler (bounded decompression, concatenated streams, truncation)."""

from __future__ import annotations

from analyzers.firmware.handlers.xz_stream import XzHandler
from tests.fuzz.firmware.harness import handler_target

fuzz_one = handler_target(XzHandler)


def seeds() -> list[bytes]:
    from tests.firmware import builders as B

    tar = B.build_tar({"etc/passwd": b"root::0:0::/:/bin/sh\n"})
    one = B.compress(tar, "xz")
    return [one, one + one, one[: len(one) // 2], B.compress(bytes(300_000), "xz")]
