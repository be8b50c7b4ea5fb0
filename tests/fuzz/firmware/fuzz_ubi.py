"""Fuzz target: UBI images (ubi-reader in memory), volumes as children."""

from __future__ import annotations

from analyzers.firmware.handlers.ubi import UbiHandler
from tests.fuzz.firmware.harness import handler_target

MAX_LEN = 256 * 1024  # room for a real UBIFS volume (the smallest are ~200 KiB)

fuzz_one = handler_target(UbiHandler)


def seeds() -> list[bytes]:
    """Small images (4 KiB erase blocks, a dynamic and a static volume), NOR and NAND geometry.

    The cost of an input is mostly ubi-reader parsing the volume table, whose record count grows
    with the LEB size, and every erase block: small geometry keeps the fuzzer fast. The volume
    contents are only blobs to this handler (UBIFS has its own target)."""
    import subprocess
    import tempfile
    from pathlib import Path

    from tests.firmware import builders as B

    out = []
    with tempfile.TemporaryDirectory(prefix="cw-seed-") as tmp:
        rootfs = Path(tmp) / "rootfs.bin"
        rootfs.write_bytes(B.build_cpio({"etc/passwd": b"root::0:0::/:/bin/sh\n"}))
        config = Path(tmp) / "config.bin"
        config.write_bytes(b"telnet=1\n")
        cfg = Path(tmp) / "ubi.cfg"
        cfg.write_text(
            f"[rootfs]\nmode=ubi\nimage={rootfs}\nvol_id=0\nvol_type=dynamic\nvol_name=rootfs\n"
            f"[config]\nmode=ubi\nimage={config}\nvol_id=1\nvol_type=static\nvol_name=config\n"
        )
        for min_io in ("1", "512"):
            image = Path(tmp) / f"u{min_io}.ubi"
            subprocess.run(
                ["ubinize", "-o", str(image), "-m", min_io, "-p", "4KiB", str(cfg)],
                check=True,
                capture_output=True,
            )
            out.append(image.read_bytes())
    return out
