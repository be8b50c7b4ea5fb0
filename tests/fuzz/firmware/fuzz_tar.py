"""Fuzz target: POSIX/GNU tar (read in place, sparse members through tarfile)."""

from __future__ import annotations

from analyzers.firmware.handlers.tar_archive import TarHandler
from tests.fuzz.firmware.harness import handler_target

fuzz_one = handler_target(TarHandler)


def seeds() -> list[bytes]:
    import io
    import tarfile

    from tests.firmware import builders as B
    from tests.fuzz.firmware.harness import seed_tree

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, target in (
            ("../up", tarfile.REGTYPE, ""),
            ("hl", tarfile.LNKTYPE, "../../etc/shadow"),
            ("dev", tarfile.CHRTYPE, ""),
            ("fifo", tarfile.FIFOTYPE, ""),
        ):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info, io.BytesIO(b""))
    return [B.build_tar(seed_tree()), buf.getvalue()]
