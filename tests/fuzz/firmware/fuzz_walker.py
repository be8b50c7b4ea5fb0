"""Fuzz target: the extraction layer. The Walker with every built-in handler (and carving) over
arbitrary bytes, with tight limits and `--extract` into a private dir.

The Walker turns a handler's unexpected exception into a CW-UNPACK-ERROR finding so one parser bug
cannot end a scan; here that finding is itself a bug (the handler contract allows only NotMyFormat),
so it is raised. Nothing may be written outside the extraction root.

Speed: the Walker's handler tables (magic index, gating, the compiled YARA-X magic scanner) depend
only on the handlers and options, so they are built once and shared by the Walker of every input;
everything per image starts fresh (checked against a normally built Walker at import).
"""

from __future__ import annotations

import collections
from pathlib import Path

from analyzers.firmware.handlers import load_handlers
from analyzers.firmware.model import ImageReport, Limits
from analyzers.firmware.safety import Budget, SafeWriter
from analyzers.firmware.unpack import Walker, WalkOptions
from tests.fuzz.firmware.harness import FUZZ_LIMITS, assert_contained, extraction_area

HANDLERS = load_handlers(plugins=False)
# carving from 4 KiB on (instead of 64 KiB) so that fuzz-sized inputs exercise it
OPTIONS = WalkOptions(limits=FUZZ_LIMITS, use_binwalk=False, carve_min_size=4096, carve_min_elf=4096)
EXTRACT_DIR = "fuzz.bin"
# Walker attributes derived from the handlers and options alone
_SHARED = ("handlers", "options", "limits", "_magic_index", "_gated", "_always", "_magics", "_magic_scanner")


class HandlerBug(AssertionError):
    """A handler raised something other than its documented exceptions."""


def _per_image(
    report: ImageReport, budget: Budget, writer: SafeWriter | None, tmpdir: Path | None
) -> dict[str, object]:
    """Every Walker attribute that belongs to one image, as Walker.__init__ sets it."""
    return {
        "report": report,
        "budget": budget,
        "inspector": None,
        "writer": writer,
        "extract_dir": EXTRACT_DIR,
        "tmpdir": tmpdir,
        "image_file": None,
        "offload": None,
        "_pending": collections.deque(),
        "_slots": [],
        "_binwalk_failed": False,
    }


def _build(report: ImageReport, budget: Budget, writer: SafeWriter | None, tmpdir: Path | None) -> Walker:
    return Walker(
        report, HANDLERS, OPTIONS, budget=budget, writer=writer, extract_dir=EXTRACT_DIR, tmpdir=tmpdir
    )


def _shared_tables() -> dict[str, object] | None:
    """The shared part of a Walker, or None when Walker.__init__ no longer matches what this module
    knows of it (then every input builds its Walker in full: slower, never wrong)."""
    report = ImageReport(path="", size=0, sha256="")
    budget = Budget(FUZZ_LIMITS)
    reference = _build(report, budget, None, None)
    fresh = _per_image(report, budget, None, None)
    attrs = vars(reference)
    if set(attrs) != set(_SHARED) | set(fresh):
        return None
    for name, value in fresh.items():
        if type(attrs[name]) is not type(value) or attrs[name] != value:
            return None
    return {name: attrs[name] for name in _SHARED}


_TABLES = _shared_tables()


def new_walker(report: ImageReport, budget: Budget, writer: SafeWriter | None, tmpdir: Path | None) -> Walker:
    """A Walker for one image, equivalent to `Walker(report, HANDLERS, OPTIONS, ...)`."""
    if _TABLES is None:
        return _build(report, budget, writer, tmpdir)
    walker = Walker.__new__(Walker)
    walker.__dict__.update(_TABLES)
    walker.__dict__.update(_per_image(report, budget, writer, tmpdir))
    return walker


def walk(data: bytes, limits: Limits = FUZZ_LIMITS) -> ImageReport:
    with extraction_area("tmp") as area:
        report = ImageReport(path="fuzz.bin", size=len(data), sha256="")
        walker = new_walker(report, Budget(limits), area.writer, area.work / "tmp")
        walker.walk_image(memoryview(data))
        assert_contained(area.work, area.root, {"tmp", "x"})
    for finding in report.findings:
        if finding.rule_id == "CW-UNPACK-ERROR":
            raise HandlerBug(finding.message)
    return report


def fuzz_one(data: bytes) -> None:
    walk(data)


def seeds() -> list[bytes]:
    import importlib

    out: list[bytes] = []
    for name in ("fuzz_tar", "fuzz_cpio", "fuzz_gzip", "fuzz_squashfs", "fuzz_uimage", "fuzz_romfs"):
        module = importlib.import_module(f"tests.fuzz.firmware.{name}")
        out.extend(module.seeds()[:2])
    # nesting and carving: a gzip'd tar holding a cpio, and a squashfs after 4 KiB of noise
    from tests.firmware import builders as B

    inner = B.build_cpio({"etc/shadow": b"root:$1$abc$def:0:0::\n"})
    out.append(B.compress(B.build_tar({"initramfs.cpio": inner, "up/../x": b"1"}), "gzip"))
    out.append(bytes(range(256)) * 16 + out[6])
    return out
