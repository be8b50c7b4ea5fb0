"""Fuzz target: UBI images (ubi-reader in memory), volumes as children."""

from __future__ import annotations

from analyzers.firmware.handlers.ubi import UbiHandler
from tests.fuzz.firmware.harness import handler_target

MAX_LEN = 256 * 1024  # the smallest UBI/UBIFS images are ~200 KiB

fuzz_one = handler_target(UbiHandler)


def seeds() -> list[bytes]:
    import subprocess
    import tempfile
    from pathlib import Path

    from tests.fuzz.firmware import fuzz_ubifs

    with tempfile.TemporaryDirectory(prefix="cw-seed-") as tmp:
        vol = Path(tmp) / "vol.ubifs"
        vol.write_bytes(fuzz_ubifs.seeds()[1])
        cfg = Path(tmp) / "ubi.cfg"
        cfg.write_text(f"[rootfs]\nmode=ubi\nimage={vol}\nvol_id=0\nvol_type=dynamic\nvol_name=rootfs\n")
        out = Path(tmp) / "u.ubi"
        subprocess.run(
            ["ubinize", "-o", str(out), "-m", "512", "-p", "16KiB", "-s", "256", str(cfg)],
            check=True,
            capture_output=True,
        )
        return [out.read_bytes()]
