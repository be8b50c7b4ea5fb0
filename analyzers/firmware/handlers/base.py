"""The container-handler contract (unblob style): one class per format, declared with class attributes.

A handler declares NAME, PATTERNS (magic bytes at an offset from the container start) and DOC, and
implements `unpack(data, ctx)`. It returns a HandlerResult: the ContainerInfo records of what it
recognised, the child members (bytes, or a lazy loader), findings (bad checksum, encrypted body,
unsupported variant...), whether the body is encrypted, and how many bytes the container spans.

Handlers never decompress unboundedly, never write files and never trust member names: they use the
context (`ctx.decompress`, `ctx.ratio_guard`, `ctx.finding`...) and the walker sanitises names,
enforces limits and extracts. Raise NotMyFormat when the bytes only looked like the format.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from analyzers.firmware.model import ContainerInfo, Finding, Limits, Severity
from analyzers.firmware.safety import Budget, Decompressed, RatioGuard, bounded_decompress

# POSIX file type bits (cpio, jffs2, ... store st_mode) -> Child.kind; anything unknown is a file.
_KIND_BY_FORMAT = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "device",
    stat.S_IFBLK: "device",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


def kind_of_mode(mode: int) -> str:
    """The `Child.kind` of a member whose st_mode is `mode`."""
    return _KIND_BY_FORMAT.get(stat.S_IFMT(mode), "file")


Blob = bytes | memoryview


class NotMyFormat(Exception):
    """The magic matched but the structure does not: let the next handler (or carving) try."""


class EncryptedMember(Exception):
    """A member's bytes are encrypted (e.g. a password-protected ZIP entry)."""


@dataclass(frozen=True, slots=True)
class Magic:
    """Magic bytes found `offset` bytes after the start of the container."""

    value: bytes
    offset: int = 0


@dataclass(frozen=True, slots=True)
class HandlerDoc:
    name: str
    vendor: str
    description: str
    references: tuple[str, ...] = ()
    limitations: tuple[str, ...] = ()


@dataclass(slots=True)
class Child:
    """A member produced by a handler. `name` is the raw name from the container (the walker
    sanitises it). Regular files carry `data` or a `loader` called only when the walker decides to
    read the member (after size checks)."""

    name: str | bytes
    data: Blob | None = None
    loader: Callable[[], Blob] | None = None
    size: int | None = None
    kind: str = "file"  # file, dir, symlink, hardlink, device, fifo, socket
    mode: int | None = None
    link_target: str | None = None
    flat_name: bool = False  # the format has no directories: '/' in the name is suspicious
    missing: bool = False  # listed by the container, but its bytes could not be recovered

    def __post_init__(self) -> None:
        # filesystem libraries hand out their own integer types; reports must stay plain and picklable
        if self.mode is not None:
            self.mode = int(self.mode)
        if self.size is not None:
            self.size = int(self.size)
        if self.link_target is not None:
            self.link_target = str(self.link_target)

    def read(self) -> Blob:
        if self.data is not None:
            return self.data
        if self.loader is not None:
            return self.loader()
        return b""


@dataclass(slots=True)
class HandlerResult:
    containers: list[ContainerInfo]
    children: Iterable[Child] = ()
    findings: list[Finding] = field(default_factory=list)
    encrypted: bool = False
    size: int | None = None  # bytes of the blob the container spans (None: unknown, assume all)


class UnpackContext:
    """What a handler may use: limits, image-wide budget, where the blob sits, helpers."""

    def __init__(
        self,
        *,
        limits: Limits,
        budget: Budget,
        path: str = "",
        base_offset: int = 0,
        depth: int = 0,
        ancestry: tuple[str, ...] = (),
        header_only: bool = False,
        carving: bool = False,
        tmpdir: Path | None = None,
        name: str = "",
    ) -> None:
        self.limits = limits
        self.budget = budget
        self.path = path  # member path of the blob holding the container ("" = the image)
        self.base_offset = base_offset  # where the container starts inside that blob
        self.depth = depth
        self.ancestry = ancestry  # NAMEs of the enclosing containers, outermost first
        self.header_only = header_only  # `firmware info`: parse headers, skip expensive checks
        self.carving = carving  # found by searching inside an unknown blob: be strict
        self.tmpdir = tmpdir
        self.name = name  # file name of the blob (the image's own name at the top), for naming children

    # -- records -----------------------------------------------------------------------------------
    def container(
        self,
        handler: str,
        *,
        size: int | None,
        offset: int = 0,
        metadata: dict[str, Any] | None = None,
        encrypted: bool = False,
        signature: str = "",
    ) -> ContainerInfo:
        return ContainerInfo(
            handler=handler,
            path=self.path,
            offset=self.base_offset + offset,
            size=size,
            metadata=metadata or {},
            encrypted=encrypted,
            signature=signature,
        )

    def finding(
        self,
        rule_id: str,
        severity: Severity,
        message: str,
        *,
        offset: int | None = None,
        evidence: str = "",
        category: str = "container",
        vendor: str = "",
        reference: str = "",
    ) -> Finding:
        return Finding(
            rule_id=rule_id,
            severity=severity,
            message=message,
            path=self.path,
            offset=None if offset is None else self.base_offset + offset,
            evidence=evidence[:200],
            category=category,
            source="handler",
            vendor=vendor,
            reference=reference,
        )

    # -- bounded work ------------------------------------------------------------------------------
    def decompress(
        self,
        kind: str,
        data: Blob,
        *,
        what: str = "stream",
        max_output: int | None = None,
        multi_stream: bool = True,
    ) -> Decompressed:
        return bounded_decompress(
            kind,
            data,
            self.limits,
            max_output=max_output,
            what=what,
            multi_stream=multi_stream,
            budget=self.budget,
        )

    def ratio_guard(self, compressed_size: int, what: str) -> RatioGuard:
        return RatioGuard(compressed_size, self.limits, what)

    def check_time(self) -> None:
        self.budget.check_time()

    @staticmethod
    def which(tool: str) -> str | None:
        return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")

    def run_tool(
        self, argv: list[str], *, timeout: float = 120.0, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run an external tool with a timeout bounded by the image's remaining wall time, a minimal
        environment, and HOME/TMPDIR pointing into the private temp dir."""
        remaining = max(1.0, min(timeout, self.budget.remaining_seconds()))
        private = str(self.tmpdir) if self.tmpdir else "/tmp"  # noqa: S108 - only a fallback
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": private,
            "TMPDIR": private,
            "LC_ALL": "C",
        }
        return subprocess.run(
            argv,
            capture_output=True,
            timeout=remaining,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )


class ContainerHandler:
    """Base class of all container handlers. Subclasses set the class attributes and `unpack`."""

    NAME: ClassVar[str] = ""
    PATTERNS: ClassVar[tuple[Magic, ...]] = ()
    DOC: ClassVar[HandlerDoc]
    CARVABLE: ClassVar[bool] = True  # may be searched for inside blobs nobody recognised
    # a filesystem image: absolute symlink targets refer to the image's own root and are normal;
    # in an archive (tar, zip, cpio) they point at the unpacking host and are reported
    FILESYSTEM: ClassVar[bool] = False
    # set when an overriding matches() is only ever true with one of PATTERNS at its offset (as when
    # it calls super().matches() first): the walker then skips the call for blobs without that magic
    PATTERN_GATED: ClassVar[bool] = False

    def matches(self, data: Blob) -> bool:
        """Cheap test at offset 0 of `data`: one of PATTERNS is there. Override to add field checks."""
        for magic in self.PATTERNS:
            end = magic.offset + len(magic.value)
            if len(data) >= end and data[magic.offset : end] == magic.value:
                return True
        return False

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        """Parse the container at offset 0 of `data` (which may extend past its end when carving)."""
        raise NotImplementedError
