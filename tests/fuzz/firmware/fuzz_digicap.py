"""Fuzz target: Hikvision digicap.dav header, file table and members."""

from __future__ import annotations

from analyzers.firmware.handlers.hikvision_digicap import HikvisionDigicapHandler
from tests.fuzz.firmware.harness import handler_target

fuzz_one = handler_target(HikvisionDigicapHandler)


def seeds() -> list[bytes]:
    from tests.firmware import builders as B
    from tests.firmware.builders import compress

    tar = B.build_tar({"etc/passwd": b"root::0:0::/:/bin/sh\n"})
    return [
        B.pack_digicap({"rootfs.tar.gz": compress(tar, "gzip"), "app.bin": b"\x7fELF" + bytes(40)}),
        B.pack_digicap({"a": b"x" * 64}, magic=b"03KH", corrupt_checksum=True),
        B.pack_digicap({"../../evil": b"pwn"}, raw_names={"../../evil": b"../../etc/passwd"}),
    ]
