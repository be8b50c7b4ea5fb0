"""Fuzz target: the safety layer. A sequence of members (files, dirs, symlinks, hard links with fuzzed
names and link targets) goes through safe_relpath and SafeWriter exactly as the Walker sends them;
afterwards nothing may exist outside the extraction root and no symlink under it may point out.
An EscapeFound assertion is a finding.

Input format: records separated by b"\\n"; each record is one kind byte then `name` or
`name\\x00target` (k: f=file, d=dir, l=symlink, h=hard link; anything else = file).
"""

from __future__ import annotations

import os

from analyzers.firmware.handlers.base import Child
from analyzers.firmware.safety import link_escapes, safe_relpath
from tests.fuzz.firmware.harness import assert_contained, extraction_area, write_child

MAX_LEN = 4096
_KINDS = {ord("f"): "file", ord("d"): "dir", ord("l"): "symlink", ord("h"): "hardlink"}


def parse(data: bytes) -> list[Child]:
    children = []
    for record in data.split(b"\n")[:64]:
        if not record:
            continue
        kind = _KINDS.get(record[0], "file")
        name, _, target = record[1:].partition(b"\x00")
        link = target.decode("utf-8", "surrogateescape") if kind in ("symlink", "hardlink") else None
        children.append(Child(name, data=b"x" if kind == "file" else None, kind=kind, link_target=link))
    return children


def fuzz_one(data: bytes) -> None:
    with extraction_area("outside") as area:
        work, root, writer = area.work, area.root, area.writer
        outside = work / "outside"
        # a planted escape hatch: a symlink to `outside` inside the root, as an earlier member could leave
        os.symlink(outside, root / "planted")
        for child in parse(data):
            safe = safe_relpath(child.name, flat=False)
            parts = safe.path.split("/")
            assert ".." not in parts and not safe.path.startswith("/"), safe
            if child.link_target is not None:
                # the Walker's escape test must agree with where the link would lexically land
                lexical = os.path.normpath(
                    os.path.join(str(root), os.path.dirname(safe.path), child.link_target)
                )
                inside = lexical == str(root) or lexical.startswith(str(root) + os.sep)
                if not child.link_target.startswith("/") and not inside:
                    assert link_escapes(safe.path, child.link_target), (safe.path, child.link_target)
            write_child(writer, safe.path, child, child.data)
        if os.listdir(outside):
            raise AssertionError(f"written through the planted link: {os.listdir(outside)}")
        os.unlink(root / "planted")
        assert_contained(work, root, {"x", "outside"})


def seeds() -> list[bytes]:
    return [
        b"fetc/passwd\nlbin/sh\x00busybox\nfbin/busybox",
        b"f../../escape\nf/abs/x\nd..\nfplanted/pwn\nfa\\..\\..\\b",
        b"lfoo\x00../../\nffoo/bar\nlsub/l2\x00../../../../etc\nhhl\x00../../etc/shadow",
        b"ld\x00.\nfd/d/d/x\nlq\x00planted\nfq/y\nl\x00/\nf\xff\xfe\x00x",
    ]
