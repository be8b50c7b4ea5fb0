"""Fuzz target: zstd stream handler (bounded decompression, concatenated streams, truncation)."""

from __future__ import annotations

from analyzers.firmware.handlers.zstd_stream import ZstdHandler
from tests.fuzz.firmware.harness import handler_target

fuzz_one = handler_target(ZstdHandler)


def seeds() -> list[bytes]:
    from tests.firmware import builders as B

    tar = B.build_tar({"etc/passwd": b"root::0:0::/:/bin/sh\n"})
    one = B.compress(tar, "zstd")
    return [one, one + one, one[: len(one) // 2], B.compress(bytes(300_000), "zstd")]
