"""Fuzz target: Xiongmai InstallDesc zip packages."""

from __future__ import annotations

from analyzers.firmware.handlers.xiongmai import XiongmaiInstallDescHandler
from tests.fuzz.firmware.harness import handler_target

fuzz_one = handler_target(XiongmaiInstallDescHandler)


def seeds() -> list[bytes]:
    from tests.firmware import builders as B

    cpio = B.build_cpio({"etc/passwd": b"root::0:0::/:/bin/sh\n"})
    return [
        B.pack_xiongmai({"romfs-x.cramfs.img": B.raw_uimage(cpio), "u-boot.bin.img": bytes(64)}),
        B.pack_xiongmai(
            {"user-x.cramfs.img": b"\x00" * 32}, install_desc={"UpgradeCommand": "x", "SkipCheck": 1}
        ),
    ]
