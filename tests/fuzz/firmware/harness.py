"""Shared driver of the firmware fuzz targets: feeds one input to one container handler the way the
Walker does (match, unpack, then every child named, counted, size-checked, read and written through
the safety layer) inside a private temp dir that is removed after every input.

What a handler may raise on bad input is its documented contract: NotMyFormat (the bytes only looked
like the format), LimitExceeded (a bound was hit), DecompressError (corrupt stream), EncryptedMember,
and, from the writer, ExtractRefused. Anything else escaping is a bug the fuzzer reports. After every
input the private dir is checked: nothing may exist next to the extraction root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from analyzers.firmware.handlers.base import (
    Child,
    ContainerHandler,
    EncryptedMember,
    HandlerResult,
    NotMyFormat,
    UnpackContext,
)
from analyzers.firmware.model import Limits
from analyzers.firmware.safety import (
    Budget,
    DecompressError,
    ExtractRefused,
    LimitExceeded,
    SafeWriter,
    safe_relpath,
)

MiB = 1 << 20
# Tight bounds: a fuzz input is at most 64 KiB, so anything the limits let through stays small.
FUZZ_LIMITS = Limits(
    max_depth=4,
    max_total_bytes=32 * MiB,
    max_file_bytes=8 * MiB,
    max_ratio=200.0,
    max_files=4096,
    max_seconds=5.0,
)
EXPECTED = (NotMyFormat, LimitExceeded, DecompressError, EncryptedMember)
# Writer errors the Walker reports as "extract refused" (a name the kernel rejects is not a bug).
_WRITER_ERRNOS = {errno.ENAMETOOLONG, errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.EINVAL, errno.EILSEQ}
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class EscapeFound(AssertionError):
    """Something was created outside the extraction root: a safety-layer bug (a finding)."""


@contextlib.contextmanager
def private_dir() -> Iterator[Path]:
    """A fresh directory per input (on tmpfs when available), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="cw-fuzz-", dir=_SCRATCH))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def resolved(path: str) -> str | None:
    """Where a symlink leads; None for a loop (it leads nowhere, and the non-strict realpath of
    Python 3.11 returns a bogus path for loops)."""
    try:
        return os.path.realpath(path, strict=True)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        return os.path.realpath(path)  # dangling: where it would lead once the target exists


def assert_contained(work: Path, root: Path, allowed: set[str]) -> None:
    """Only `allowed` entries may sit in `work` next to the root, every path under the root must
    resolve inside it, and every symlink under it must point inside it."""
    extra = set(os.listdir(work)) - allowed
    if extra:
        raise EscapeFound(f"created outside the extraction root: {sorted(extra)}")
    real_root = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            if not os.path.realpath(os.path.dirname(full)).startswith(real_root):
                raise EscapeFound(f"{full}: parent resolves outside the root")
            if os.path.islink(full):
                target = resolved(full)
                if target is not None and target != real_root and not target.startswith(real_root + os.sep):
                    raise EscapeFound(f"{full} -> {os.readlink(full)} resolves outside the root")


def write_child(writer: SafeWriter, rel: str, child: Child, blob: bytes | memoryview | None) -> None:
    """Write one member the way `--extract` does; refusals are the writer doing its job."""
    try:
        if child.kind == "file" and blob is not None:
            writer.write_file(rel, blob, child.mode)
        elif child.kind == "dir":
            writer.make_dir(rel)
        elif child.kind == "symlink" and child.link_target is not None:
            writer.write_symlink(rel, child.link_target)
    except ExtractRefused:
        pass
    except OSError as exc:
        if exc.errno not in _WRITER_ERRNOS:
            raise


def consume(result: HandlerResult, budget: Budget, writer: SafeWriter | None) -> int:
    """Walk the children as Walker._children does; returns how many were read."""
    limits = budget.limits
    read = 0
    try:
        for child in result.children:
            budget.check_time()
            safe = safe_relpath(child.name, flat=child.flat_name)
            assert not safe.path.startswith("/") and ".." not in safe.path.split("/"), safe
            budget.count_file()
            blob: bytes | memoryview | None = None
            if child.kind == "file" and not child.missing:
                try:
                    if child.size is not None:
                        budget.check_file_size(child.size, safe.path)
                    blob = child.read()
                except DecompressError as exc:
                    blob = exc.partial
                except LimitExceeded as exc:
                    if exc.image_wide:
                        raise
                    continue
                except EncryptedMember:
                    continue
                if len(blob) > limits.max_file_bytes:
                    continue
                budget.charge(len(blob))
                read += 1
            if writer is not None:
                write_child(writer, f"image/{safe.path}", child, blob)
    finally:
        close = getattr(result.children, "close", None)
        if close is not None:
            close()
    return read


def run_handler(
    handler: ContainerHandler,
    data: bytes,
    *,
    carving: bool | None = None,
    extract: bool = True,
    limits: Limits = FUZZ_LIMITS,
) -> HandlerResult | None:
    """Drive `handler` over `data` like the Walker. Carving mode (stricter checks) is chosen by the
    input's length parity unless given, so the fuzzer explores both."""
    view = memoryview(data)
    if not handler.matches(view):
        return None
    mode = bool(len(data) & 1) if carving is None else carving
    with private_dir() as work:
        tmp = work / "tmp"
        tmp.mkdir()
        root = work / "x"
        budget = Budget(limits)
        ctx = UnpackContext(
            limits=limits, budget=budget, path="", carving=mode, tmpdir=tmp, name="fuzz.bin", depth=0
        )
        try:
            result = handler.unpack(view, ctx)
        except EXPECTED:
            return None
        assert result.size is None or 0 <= result.size <= len(data), (handler.NAME, result.size, len(data))
        writer = SafeWriter(root) if extract else None
        with contextlib.suppress(*EXPECTED):
            consume(result, budget, writer)
        if extract:
            assert_contained(work, root, {"tmp", "x"})
        return result


def handler_target(handler_cls: type[ContainerHandler]) -> Callable[[bytes], None]:
    """A `fuzz_one` for one handler class."""
    handler = handler_cls()

    def fuzz_one(data: bytes) -> None:
        run_handler(handler, data)

    return fuzz_one


# ------------------------------------------------------------------------------------- seed helpers

SEED_TREE: dict[str, object] = {}


def seed_tree() -> dict[str, object]:
    """A tiny camera-like tree (a file, an executable, a symlink, an empty dir) for building seeds."""
    from tests.firmware import builders as B

    if not SEED_TREE:
        SEED_TREE.update(
            {
                "etc/passwd": b"root:ToCOv8qxP13qs:0:0:root:/root/:/bin/sh\n",
                "etc/init.d/rcS": b"#!/bin/sh\ntelnetd &\n",
                "bin/busybox": b"\x7fELF" + bytes(range(64)),
                "bin/sh": B.Link("busybox"),
                "www/up": B.Link("../../etc"),
                "var/": B.DIR,
            }
        )
    return SEED_TREE


def build_with_tool(build: Callable[[Path], Path]) -> bytes:
    """Run a file-producing builder in a scratch dir and return the bytes."""
    with tempfile.TemporaryDirectory(prefix="cw-seed-") as tmp:
        return build(Path(tmp)).read_bytes()
