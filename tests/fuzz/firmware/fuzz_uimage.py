"""Fuzz target: U-Boot legacy uImage (single and multi-file, compressed payloads)."""

from __future__ import annotations

from analyzers.firmware.handlers.uimage import UImageHandler
from tests.fuzz.firmware.harness import handler_target

fuzz_one = handler_target(UImageHandler)


def seeds() -> list[bytes]:
    import struct

    from tests.firmware import builders as B

    cpio = B.build_cpio({"etc/passwd": b"root::0:0::/:/bin/sh\n"})
    parts = [b"kernel" * 10, cpio]
    multi = b"".join(struct.pack(">I", len(p)) for p in parts) + b"\x00" * 4
    multi += b"".join(p + b"\x00" * (-len(p) % 4) for p in parts)
    seeds = [B.raw_uimage(cpio), B.raw_uimage(multi, image_type=4)]
    for comp in ("gzip", "bzip2", "lzma"):
        seeds.append(B.raw_uimage(B.compress(cpio, comp), comp=comp))
    return seeds
