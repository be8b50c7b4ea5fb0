"""Fuzz target: generic ZIP (central directory and local-header recovery)."""

from __future__ import annotations

from analyzers.firmware.handlers.zip_archive import ZipHandler
from tests.fuzz.firmware.harness import handler_target

fuzz_one = handler_target(ZipHandler)


def seeds() -> list[bytes]:
    import zipfile

    from tests.firmware import builders as B
    from tests.fuzz.firmware.harness import seed_tree

    whole = B.build_zip(seed_tree())
    stored = B.build_zip({"a/b": b"stored", "../x": b"up"}, compression=zipfile.ZIP_STORED)
    other = B.build_zip({"bz": b"b" * 300}, compression=zipfile.ZIP_BZIP2)
    truncated = whole[: whole.rfind(b"PK\x01\x02")]  # no central directory: local-header walk
    return [whole, stored, other, truncated]
