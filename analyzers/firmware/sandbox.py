"""Isolation of the analysis worker processes: no network, private temp dir.

Each worker drops into a fresh network namespace (only a loopback interface, which stays down), so a
hostile image that triggers a bug in a parser or an external tool cannot reach the network, not even
127.0.0.1. As root this is `unshare(CLONE_NEWNET)`; otherwise an unprivileged user namespace is
created first (`CLONE_NEWUSER | CLONE_NEWNET`) where the kernel allows it. When neither works the
worker runs without the sandbox and the report says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import tempfile
from dataclasses import dataclass

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True, slots=True)
class SandboxStatus:
    network_isolated: bool
    method: str  # "netns", "userns+netns", or "none"
    detail: str = ""

    def describe(self) -> str:
        if self.network_isolated:
            return f"network-isolated worker ({self.method})"
        return f"no network sandbox: {self.detail}"


def _unshare(flags: int) -> None:
    if hasattr(os, "unshare"):  # Python >= 3.12
        os.unshare(flags)
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if libc.unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def isolate_network() -> SandboxStatus:
    """Move the calling (single-threaded) process into a new, empty network namespace."""
    if not hasattr(os, "sched_getaffinity") or os.uname().sysname != "Linux":
        return SandboxStatus(False, "none", "network namespaces need Linux")
    try:
        _unshare(CLONE_NEWNET)
        return SandboxStatus(True, "netns")
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EINVAL, errno.ENOSYS):
            return SandboxStatus(False, "none", f"unshare(CLONE_NEWNET) failed: {exc.strerror}")
        first = exc.strerror
    try:
        _unshare(CLONE_NEWUSER | CLONE_NEWNET)
        return SandboxStatus(True, "userns+netns")
    except OSError as exc:
        return SandboxStatus(
            False,
            "none",
            f"unshare(CLONE_NEWNET) failed ({first}) and unprivileged user namespaces are unavailable "
            f"({exc.strerror}); run as root or enable kernel.unprivileged_userns_clone",
        )


def private_tmpdir(prefix: str = "camwatch-fw-") -> str:
    """A fresh 0700 directory for this process; TMPDIR and tempfile point at it from now on."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.environ["TMPDIR"] = path
    tempfile.tempdir = path
    return path


def remove_tmpdir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
