"""Generic ZIP archive (also found embedded in vendor update files, e.g. HiSilicon camera updates)."""

from __future__ import annotations

from analyzers.firmware.handlers.base import ContainerHandler, HandlerDoc, HandlerResult, Magic, UnpackContext
from analyzers.firmware.handlers.ziputil import LOCAL_MAGIC, iter_members, open_zip


class ZipHandler(ContainerHandler):
    NAME = "zip"
    PATTERNS = (Magic(LOCAL_MAGIC),)
    DOC = HandlerDoc(
        name="ZIP",
        vendor="generic",
        description="ZIP archive (stored, deflate, bzip2, LZMA members).",
        references=("https://pkware.cachefly.net/webdocs/casestudies/APPNOTE.TXT",),
        limitations=(
            "Encrypted members are reported, not decrypted.",
            "Without a central directory, members are recovered from local headers only.",
            "Entries whose data overlaps another entry are skipped (zip-bomb technique).",
        ),
    )

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        listing = open_zip(data, ctx)
        meta: dict[str, object] = {}
        if listing.archive is not None:
            meta["entries"] = len(listing.archive.infolist())
            if listing.archive.comment:
                meta["comment"] = listing.archive.comment[:200].decode("latin-1")
        info = ctx.container(self.NAME, size=listing.size, metadata=meta)
        findings = list(listing.findings)
        if ctx.header_only:
            return HandlerResult([info], (), findings, size=listing.size)
        return HandlerResult([info], iter_members(listing, data, ctx, findings), findings, size=listing.size)
