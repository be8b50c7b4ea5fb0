"""Fuzz target: the extraction layer. The Walker with every built-in handler (and carving) over
arbitrary bytes, with tight limits and `--extract` into a private dir.

The Walker turns a handler's unexpected exception into a CW-UNPACK-ERROR finding so one parser bug
cannot end a scan; here that finding is itself a bug (the handler contract allows only NotMyFormat),
so it is raised. Nothing may be written outside the extraction root.
"""

from __future__ import annotations

from analyzers.firmware.handlers import load_handlers
from analyzers.firmware.model import ImageReport, Limits
from analyzers.firmware.safety import Budget, SafeWriter
from analyzers.firmware.unpack import Walker, WalkOptions
from tests.fuzz.firmware.harness import FUZZ_LIMITS, assert_contained, private_dir

HANDLERS = load_handlers(plugins=False)
# carving from 4 KiB on (instead of 64 KiB) so that fuzz-sized inputs exercise it
OPTIONS = WalkOptions(limits=FUZZ_LIMITS, use_binwalk=False, carve_min_size=4096, carve_min_elf=4096)


class HandlerBug(AssertionError):
    """A handler raised something other than its documented exceptions."""


def walk(data: bytes, limits: Limits = FUZZ_LIMITS) -> ImageReport:
    with private_dir() as work:
        (work / "tmp").mkdir()
        report = ImageReport(path="fuzz.bin", size=len(data), sha256="")
        walker = Walker(
            report,
            HANDLERS,
            OPTIONS,
            budget=Budget(limits),
            writer=SafeWriter(work / "x"),
            extract_dir="fuzz.bin",
            tmpdir=work / "tmp",
        )
        walker.walk_image(memoryview(data))
        assert_contained(work, work / "x", {"tmp", "x"})
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
