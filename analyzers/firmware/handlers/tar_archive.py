"""POSIX/GNU tar archive (uncompressed; compressed tars arrive through the compression handlers)."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator

from analyzers.firmware.handlers.base import (
    Blob,
    Child,
    ContainerHandler,
    HandlerDoc,
    HandlerResult,
    Magic,
    NotMyFormat,
    UnpackContext,
)
from analyzers.firmware.memio import SliceReader
from analyzers.firmware.model import Finding, Severity

BLOCK = 512


def _header_checksum_ok(head: Blob) -> bool:
    if len(head) < BLOCK:
        return False
    try:
        stored = int(bytes(head[148:156]).split(b"\x00", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return False
    computed = sum(head[:148]) + 8 * 0x20 + sum(head[156:BLOCK])
    return stored == computed


class TarHandler(ContainerHandler):
    NAME = "tar"
    PATTERNS = (Magic(b"ustar", offset=257),)
    PATTERN_GATED = True
    DOC = HandlerDoc(
        name="tar",
        vendor="generic",
        description="POSIX ustar / GNU tar archive, read in place without copying member data.",
        references=("https://www.gnu.org/software/tar/manual/html_node/Standard.html",),
        limitations=("Pre-POSIX (v7) tar without the ustar magic is not recognised.",),
    )

    def matches(self, data: Blob) -> bool:
        return super().matches(data) and _header_checksum_ok(data[:BLOCK])

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        findings: list[Finding] = []
        members: list[tarfile.TarInfo] = []
        try:
            archive = tarfile.open(fileobj=SliceReader(data), mode="r:")  # noqa: SIM115 - lives with the result
        except tarfile.TarError as exc:
            raise NotMyFormat(f"not a tar archive: {exc}") from None
        try:
            while len(members) <= ctx.limits.max_files:
                ctx.check_time()
                member = archive.next()
                if member is None:
                    break
                members.append(member)
        except tarfile.TarError as exc:
            if not members:
                raise NotMyFormat(f"unreadable tar: {exc}") from None
            findings.append(
                ctx.finding(
                    "CW-UNPACK-TRUNCATED",
                    Severity.INFO,
                    f"partial extraction: tar archive damaged after {len(members)} members ({exc})",
                )
            )
        end = min(len(data), archive.offset + 2 * BLOCK)
        info = ctx.container(self.NAME, size=end, metadata={"members": len(members)})
        if ctx.header_only:
            return HandlerResult([info], (), findings, size=end)
        return HandlerResult(
            [info], self._children(archive, members, data, findings, ctx), findings, size=end
        )

    @staticmethod
    def _children(
        archive: tarfile.TarFile,
        members: list[tarfile.TarInfo],
        data: memoryview,
        findings: list[Finding],
        ctx: UnpackContext,
    ) -> Iterator[Child]:
        # sparse members expand holes into zeros: a few KiB of tar can declare gigabytes
        sparse_guard = ctx.ratio_guard(len(data), "tar sparse members")
        for member in members:
            mode = member.mode
            if member.isdir():
                yield Child(member.name, kind="dir", mode=mode, size=0)
            elif member.issym():
                yield Child(member.name, kind="symlink", mode=mode, link_target=member.linkname, size=0)
            elif member.islnk():
                yield Child(member.name, kind="hardlink", mode=mode, link_target=member.linkname, size=0)
            elif member.ischr() or member.isblk():
                yield Child(member.name, kind="device", mode=mode, size=0)
            elif member.isfifo():
                yield Child(member.name, kind="fifo", mode=mode, size=0)
            elif member.isreg():
                start = member.offset_data
                if member.issparse():

                    def load(member: tarfile.TarInfo = member) -> bytes:
                        sparse_guard.add(member.size)  # before the zeros are allocated
                        handle = archive.extractfile(member)
                        return handle.read(ctx.limits.max_file_bytes + 1) if handle else b""

                    yield Child(member.name, loader=load, size=member.size, mode=mode)
                else:
                    body = data[start : min(start + member.size, len(data))]
                    if len(body) < member.size:
                        findings.append(
                            ctx.finding(
                                "CW-UNPACK-TRUNCATED",
                                Severity.INFO,
                                f"tar member {member.name!r} truncated: {len(body)} of {member.size} bytes",
                            )
                        )
                    yield Child(member.name, data=body, size=len(body), mode=mode)
