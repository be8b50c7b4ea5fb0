"""The fuzz harness itself: its containment oracle still catches escapes, the reused private area
starts every input empty, and the shared Walker tables give the same walk as a freshly built Walker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from analyzers.firmware.handlers.base import (
    Child,
    ContainerHandler,
    HandlerResult,
    Magic,
    UnpackContext,
)
from analyzers.firmware.model import ImageReport
from analyzers.firmware.safety import Budget, SafeWriter
from analyzers.firmware.unpack import Walker
from tests.fuzz.firmware import fuzz_walker
from tests.fuzz.firmware.harness import (
    FUZZ_LIMITS,
    EscapeFound,
    assert_contained,
    extraction_area,
    run_handler,
)


def _listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_oracle_flags_an_entry_next_to_the_root(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "stray").write_bytes(b"1")
    with pytest.raises(EscapeFound, match="stray"):
        assert_contained(tmp_path, tmp_path / "x", {"x"})


@pytest.mark.parametrize("target", ["../../../outside", "/etc", "missing/../../../.."])
def test_oracle_flags_a_symlink_leading_out(tmp_path: Path, target: str) -> None:
    root = tmp_path / "x"
    (root / "a" / "b").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    os.symlink(target, root / "a" / "b" / "link")
    with pytest.raises(EscapeFound, match="link"):
        assert_contained(tmp_path, root, {"x", "outside"})


def test_oracle_flags_a_dangling_link_that_would_lead_out(tmp_path: Path) -> None:
    root = tmp_path / "x"
    root.mkdir()
    os.symlink("../not-yet", root / "later")
    with pytest.raises(EscapeFound, match="later"):
        assert_contained(tmp_path, root, {"x"})


def test_oracle_accepts_links_inside_and_loops(tmp_path: Path) -> None:
    root = tmp_path / "x"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_bytes(b"root::0:0\n")
    os.symlink("../etc/passwd", root / "etc" / "up")
    os.symlink("missing", root / "dangling")
    os.symlink("loop", root / "loop")
    os.symlink(".", root / "self")
    assert_contained(tmp_path, root, {"x"})


def test_oracle_flags_a_root_replaced_by_a_link(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "x")
    with pytest.raises(EscapeFound, match="replaced"):
        assert_contained(tmp_path, tmp_path / "x", {"x", "elsewhere"})


def _fill(area_work: Path, writer: SafeWriter) -> None:
    writer.write_file("image/etc/passwd", b"root::0:0\n")
    writer.make_dir("image/var/empty/deep")
    writer.write_symlink("image/bin/sh", "busybox")
    (area_work / "tmp" / "scratch").mkdir()
    (area_work / "tmp" / "scratch" / "f").write_bytes(b"x")


def test_area_is_empty_again_after_every_input() -> None:
    with extraction_area("tmp") as area:
        work = area.work
        _fill(work, area.writer)
        assert_contained(work, area.root, {"tmp", "x"})
    assert _listing(work) == ["tmp", "x"]
    # written after the check, and an escape that raised: both cleaned up
    with pytest.raises(EscapeFound), extraction_area("tmp") as area:
        assert area.work == work, "the area is reused"
        _fill(work, area.writer)
        assert_contained(work, area.root, {"tmp", "x"})
        area.writer.write_file("image/late/file", b"1")
        (work / "escaped").write_bytes(b"1")
        assert_contained(work, area.root, {"tmp", "x"})
    with extraction_area("tmp") as area:
        assert _listing(area.work) == ["tmp", "x"]
        assert area.writer.files_written == 0


def test_nested_areas_are_separate() -> None:
    with extraction_area("tmp") as outer, extraction_area("tmp") as inner:
        assert outer.work != inner.work
        nested = inner.work
    assert not nested.exists()


class _Leaky(ContainerHandler):
    """A broken handler that writes next to the extraction root through its temp dir."""

    NAME = "leaky"
    PATTERNS = (Magic(b"LEAK"),)

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        assert ctx.tmpdir is not None
        (ctx.tmpdir / ".." / "leaked").write_bytes(bytes(data))
        return HandlerResult([], [Child("ok", data=b"1")], [])


def test_run_handler_catches_a_handler_writing_outside() -> None:
    with pytest.raises(EscapeFound, match="leaked"):
        run_handler(_Leaky(), b"LEAK and more")
    with extraction_area("tmp") as area:
        assert _listing(area.work) == ["tmp", "x"]


def _summary(report: ImageReport) -> tuple[object, ...]:
    return (
        [(m.path, m.size, m.sha256, m.container) for m in report.members],
        [(f.rule_id, f.path, f.message) for f in report.findings],
        [(c.handler, c.path, c.offset, c.size) for c in report.containers],
    )


def test_shared_walker_tables_walk_like_a_fresh_walker() -> None:
    assert fuzz_walker._TABLES is not None, "Walker.__init__ changed: update fuzz_walker._per_image"
    for seed in fuzz_walker.seeds():
        with extraction_area("tmp") as area:
            fresh_report = ImageReport(path="fuzz.bin", size=len(seed), sha256="")
            Walker(
                fresh_report,
                fuzz_walker.HANDLERS,
                fuzz_walker.OPTIONS,
                budget=Budget(FUZZ_LIMITS),
                writer=area.writer,
                extract_dir=fuzz_walker.EXTRACT_DIR,
                tmpdir=area.work / "tmp",
            ).walk_image(memoryview(seed))
        shared_report = fuzz_walker.walk(seed)
        assert _summary(shared_report) == _summary(fresh_report)
        assert fresh_report.members, "the seeds unpack to something"
