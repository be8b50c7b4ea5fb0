"""Fuzz target: UBIFS (ubi-reader index walk, bounded data-node decoding)."""

from __future__ import annotations

from analyzers.firmware.handlers.ubifs import UbifsHandler
from tests.fuzz.firmware.harness import handler_target

MAX_LEN = 256 * 1024  # the smallest UBI/UBIFS images are ~200 KiB

fuzz_one = handler_target(UbifsHandler)


def seeds() -> list[bytes]:
    import subprocess
    import tempfile
    from pathlib import Path

    from tests.firmware import builders as B
    from tests.fuzz.firmware.harness import seed_tree

    seeds = []
    for comp in ("lzo", "zlib", "zstd", "none"):
        with tempfile.TemporaryDirectory(prefix="cw-seed-") as tmp:
            root = B.write_tree(seed_tree(), Path(tmp) / "root")
            out = Path(tmp) / "f.ubifs"
            # the smallest geometry mkfs.ubifs accepts (512-byte pages, 15.5 KiB LEBs) keeps seeds ~200 KiB
            subprocess.run(
                [
                    "mkfs.ubifs",
                    "-r",
                    str(root),
                    "-m",
                    "512",
                    "-e",
                    "15872",
                    "-c",
                    "32",
                    "-x",
                    comp,
                    "-o",
                    str(out),
                ],
                check=True,
                capture_output=True,
            )
            seeds.append(out.read_bytes())
    return seeds
