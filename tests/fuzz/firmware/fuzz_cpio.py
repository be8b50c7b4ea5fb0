"""Fuzz target: cpio newc/crc/odc archives."""

from __future__ import annotations

from analyzers.firmware.handlers.cpio_archive import CpioHandler
from tests.fuzz.firmware.harness import handler_target

fuzz_one = handler_target(CpioHandler)


def seeds() -> list[bytes]:
    import subprocess

    from tests.firmware import builders as B
    from tests.fuzz.firmware.harness import seed_tree

    odc = subprocess.run(
        ["cpio", "-o", "-H", "odc"], input=b"/etc/hostname\n", capture_output=True, check=True
    ).stdout
    evil = {"../escape": b"1", "/abs": b"2", "lnk": B.Link("/etc"), "lnk/passwd": b"3"}
    return [B.build_cpio(seed_tree()), B.build_cpio(evil), odc]
