"""Fuzz target: Dahua DH-zip packages (Install, Install.lua, check.img, members)."""

from __future__ import annotations

from analyzers.firmware.handlers.dahua_dh import DahuaDhZipHandler
from tests.fuzz.firmware.harness import handler_target

fuzz_one = handler_target(DahuaDhZipHandler)


def seeds() -> list[bytes]:
    from tests.firmware import builders as B

    tar = B.build_tar({"etc/passwd": b"root::0:0::/:/bin/sh\n"})
    return [
        B.pack_dahua({"romfs-x.squashfs.img": B.raw_uimage(tar)}, install_lua=B.DAHUA_INSTALL_LUA, sign=True),
        B.pack_dahua({"kernel.img": B.raw_uimage(bytes(100), comp="none")}, install=None, check=None),
    ]
