"""Shared driver of the firmware fuzz targets: feeds one input to one container handler the way the
Walker does (match, unpack, then every child named, counted, size-checked, read and written through
the safety layer) inside a private temp dir that is emptied after every input.

What a handler may raise on bad input is its documented contract: NotMyFormat (the bytes only looked
like the format), LimitExceeded (a bound was hit), DecompressError (corrupt stream), EncryptedMember,
and, from the writer, ExtractRefused. Anything else escaping is a bug the fuzzer reports. After every
input the private dir is checked: nothing may exist next to the extraction root.

Speed (campaigns need >= 1M executions per target): the private dir is created once per process and
emptied in place after each input (creating and removing a temp dir per input cost more than most
handlers), and the containment check resolves each directory once, through the kernel, instead of
every entry with the pure-Python realpath.
"""

from __future__ import annotations

import atexit
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


class Area:
    """A private directory (short path on tmpfs) holding the extraction root `x`, a SafeWriter on it
    and the directories `beside` next to it, reused by every input of the process: after each input
    everything inside is removed again, so the next one starts from empty directories."""

    def __init__(self, beside: tuple[str, ...]) -> None:
        if not _AREAS:
            _remove_stale_areas()
        self.beside = beside
        self.work = Path(tempfile.mkdtemp(prefix=f"cwf-{os.getpid()}-", dir=_SCRATCH))
        _LIVE.add(self.work)
        for name in beside:
            (self.work / name).mkdir()
        self.root = self.work / "x"
        self.writer = SafeWriter(self.root)
        self.pid = os.getpid()
        self.busy = False

    def reset(self) -> bool:
        """Empty the area; False when that failed (the area is then discarded)."""
        keep = {"x", *self.beside}
        found = set()
        try:
            scanned = _LAST_SCAN.pop(os.fspath(self.root), None)
            if scanned is not None:  # removed here; empty_dir(x) below then only confirms it is empty
                leaves, dirs = scanned
                for leaf in leaves:
                    os.unlink(leaf)
                for directory in reversed(dirs):  # pre-order reversed: children before parents
                    os.rmdir(directory)
            with os.scandir(self.work) as entries:
                listing = list(entries)
            for entry in listing:
                if entry.is_dir(follow_symlinks=False):
                    if not empty_dir(entry.path):
                        return False
                    if entry.name in keep:
                        found.add(entry.name)
                    else:
                        os.rmdir(entry.path)
                else:
                    os.unlink(entry.path)
        except OSError:
            return False
        self.writer.files_written = self.writer.bytes_written = 0
        return found == keep

    def discard(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        _LIVE.discard(self.work)


_AREAS: dict[tuple[str, ...], Area] = {}
_LIVE: set[Path] = set()  # areas of this process, removed at exit


@atexit.register
def _remove_live_areas() -> None:
    for path in list(_LIVE):
        shutil.rmtree(path, ignore_errors=True)


# root -> (non-directories, directories in pre-order) that the last containment check found there
_LAST_SCAN: dict[str, tuple[list[str], list[str]]] = {}


def _remove_stale_areas() -> None:
    """Remove the areas of processes that are gone: libFuzzer ends a run with exit(), so the atexit
    removal never runs there, and a campaign restarts its target after every finding."""
    scratch = _SCRATCH or tempfile.gettempdir()
    with contextlib.suppress(OSError), os.scandir(scratch) as entries:
        for entry in entries:
            pid = entry.name.split("-")[1] if entry.name.startswith("cwf-") else ""
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}") and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)


def empty_dir(path: str | os.PathLike[str]) -> bool:
    """Remove everything inside `path` without following any symlink; False when something could
    not be removed."""
    dirs: list[str] = []
    pending = [os.fspath(path)]
    try:
        while pending:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                        dirs.append(entry.path)
                    else:
                        os.unlink(entry.path)
        for directory in reversed(dirs):  # pre-order reversed: children before their parents
            os.rmdir(directory)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def extraction_area(*beside: str) -> Iterator[Area]:
    """An empty extraction area for one input (see Area); emptied afterwards."""
    shared = _AREAS.get(beside)
    if shared is None or shared.pid != os.getpid():  # first use, or a forked child
        shared = _AREAS[beside] = Area(beside)
    if shared.busy:  # nested use: a separate area, removed afterwards
        temporary = Area(beside)
        try:
            yield temporary
        finally:
            temporary.discard()
        return
    shared.busy = True
    try:
        yield shared
    finally:
        shared.busy = False
        if not shared.reset():
            shared.discard()
            _AREAS.pop(beside, None)


@contextlib.contextmanager
def private_dir() -> Iterator[Path]:
    """A fresh directory (on tmpfs when available), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="cw-fuzz-", dir=_SCRATCH))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def resolved(path: str) -> str | None:
    """Where a symlink leads, as the kernel resolves it; None for a loop (it leads nowhere, and the
    non-strict realpath of Python 3.11 returns a bogus path for loops)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        return os.path.realpath(path)  # dangling: where it would lead once the target exists
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def kernel_path(path: str | os.PathLike[str]) -> str:
    """Where `path` (a directory) really is, as the kernel resolves it: one open and one readlink
    instead of an lstat per component."""
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _inside(path: str, real_root: str) -> bool:
    return path == real_root or path.startswith(real_root + os.sep)


def assert_contained(work: Path, root: Path, allowed: set[str]) -> None:
    """Only `allowed` entries may sit in `work` next to the root, every path under the root must
    resolve inside it, and every symlink under it must point inside it. What was found is kept for
    the area's reset (it removes exactly that instead of listing the tree again)."""
    _LAST_SCAN.pop(os.fspath(root), None)
    extra = set(os.listdir(work)) - allowed
    if extra:
        raise EscapeFound(f"created outside the extraction root: {sorted(extra)}")
    if os.path.islink(root):
        raise EscapeFound(f"{root}: the extraction root was replaced by a symlink")
    if not os.path.isdir(root):
        return  # nothing was extracted
    real_root = kernel_path(root)
    top = os.fspath(root)
    pending = [top]
    leaves: list[str] = []
    dirs: list[str] = []
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as scan:
            entries = list(scan)
        # every entry here has this parent: resolving it once checks them all
        if entries and directory != top and not _inside(kernel_path(directory), real_root):
            raise EscapeFound(f"{directory}: parent of {entries[0].name!r} resolves outside the root")
        for entry in entries:
            if entry.is_symlink():
                target = resolved(entry.path)
                if target is not None and not _inside(target, real_root):
                    raise EscapeFound(f"{entry.path} -> {os.readlink(entry.path)} resolves outside the root")
                leaves.append(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
                dirs.append(entry.path)
            else:
                leaves.append(entry.path)
    _LAST_SCAN[top] = (leaves, dirs)


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
    with extraction_area("tmp") as area:
        budget = Budget(limits)
        ctx = UnpackContext(
            limits=limits,
            budget=budget,
            path="",
            carving=mode,
            tmpdir=area.work / "tmp",
            name="fuzz.bin",
            depth=0,
        )
        try:
            result = handler.unpack(view, ctx)
        except EXPECTED:
            return None
        assert result.size is None or 0 <= result.size <= len(data), (handler.NAME, result.size, len(data))
        writer = area.writer if extract else None
        with contextlib.suppress(*EXPECTED):
            consume(result, budget, writer)
        if extract:
            assert_contained(area.work, area.root, {"tmp", "x"})
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
