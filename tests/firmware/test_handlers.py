"""Every registered container handler has a fixture, and unpacks it (unblob's missing-handler rule).

FIXTURES maps each handler NAME to a builder producing an image in which that handler must be
recognised and through which /etc/passwd of the sample root filesystem must be reached with the
right bytes. Adding a handler without adding a fixture here fails `test_every_handler_has_a_fixture`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from analyzers.firmware.handlers import BUILTIN_HANDLERS, ENTRY_POINT_GROUP, load_handlers
from analyzers.firmware.handlers.base import ContainerHandler, HandlerDoc, Magic
from analyzers.firmware.model import ImageReport
from analyzers.firmware.scanner import ScanOptions, scan_image
from tests.firmware import builders as B

PASSWD = B.ROOTFS["etc/passwd"]
assert isinstance(PASSWD, bytes)
PASSWD_SHA = hashlib.sha256(PASSWD).hexdigest()


def _compressed_tar(kind: str, suffix: str) -> Callable[[Path], Path]:
    return _write(f"rootfs.tar.{suffix}", lambda: B.compress(B.build_tar(B.ROOTFS), kind))


def _write(name: str, make: Callable[[], bytes]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        out = tmp / name
        out.write_bytes(make())
        return out

    return build


FIXTURES: dict[str, Callable[[Path], Path]] = {
    "hikvision_digicap": lambda tmp: B.build_digicap(
        {"rootfs.img": B.build_squashfs(B.ROOTFS, tmp / "r.sqfs").read_bytes()}, tmp / "digicap.dav"
    ),
    "dahua_dh_zip": lambda tmp: B.build_dahua(
        {"romfs-x.squashfs.img": B.raw_uimage(B.build_squashfs(B.ROOTFS, tmp / "r.sqfs").read_bytes())},
        tmp / "dh.bin",
    ),
    "xiongmai_installdesc": lambda tmp: B.build_xiongmai(
        {"romfs-x.cramfs.img": B.raw_uimage(B.build_cramfs(B.ROOTFS, tmp / "r.cramfs").read_bytes())},
        tmp / "xm.bin",
    ),
    "zip": _write("rootfs.zip", lambda: B.build_zip(B.ROOTFS)),
    "uimage": lambda tmp: B.build_uimage(
        B.compress(B.build_cpio(B.ROOTFS), "gzip"), tmp / "uImage", comp="gzip"
    ),
    "squashfs": lambda tmp: B.build_squashfs(B.ROOTFS, tmp / "rootfs.sqfs", comp="xz"),
    "cramfs": lambda tmp: B.build_cramfs(B.ROOTFS, tmp / "rootfs.cramfs"),
    "jffs2": lambda tmp: B.build_jffs2(B.ROOTFS, tmp / "rootfs.jffs2", big_endian=True),
    "ubi": lambda tmp: B.build_ubi(B.ROOTFS, tmp / "rootfs.ubi"),
    "ubifs": lambda tmp: B.build_ubifs(B.ROOTFS, tmp / "rootfs.ubifs"),
    "romfs": lambda tmp: B.build_romfs(B.ROOTFS, tmp / "rootfs.romfs"),
    "cpio": _write("initramfs.cpio", lambda: B.build_cpio(B.ROOTFS)),
    "tar": _write("rootfs.tar", lambda: B.build_tar(B.ROOTFS)),
    "gzip": _compressed_tar("gzip", "gz"),
    "xz": _compressed_tar("xz", "xz"),
    "bzip2": _compressed_tar("bzip2", "bz2"),
    "zstd": _compressed_tar("zstd", "zst"),
    "lzma": _compressed_tar("lzma", "lzma"),
}

FAST = ScanOptions(inspect=False, use_binwalk=False)


def scan(path: Path) -> ImageReport:
    report = scan_image(path, FAST)
    assert report.error is None, report.error
    return report


def test_every_handler_has_a_fixture() -> None:
    names = {handler.NAME for handler in BUILTIN_HANDLERS}
    missing = names - set(FIXTURES)
    assert not missing, f"handlers without a fixture in tests/firmware/test_handlers.py: {sorted(missing)}"
    assert not set(FIXTURES) - names, "fixtures for handlers that are not registered"


def test_handler_declarations_are_complete_and_unique() -> None:
    names = [h.NAME for h in BUILTIN_HANDLERS]
    assert len(names) == len(set(names))
    doc_names = [h.DOC.name for h in BUILTIN_HANDLERS]
    assert len(doc_names) == len(set(doc_names))
    for handler in BUILTIN_HANDLERS:
        assert handler.NAME and handler.PATTERNS, handler
        assert isinstance(handler.DOC, HandlerDoc) and handler.DOC.description and handler.DOC.vendor
        assert all(isinstance(p, Magic) and p.value for p in handler.PATTERNS)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_handler_unpacks_its_fixture(name: str, tmp_path: Path) -> None:
    image = FIXTURES[name](tmp_path)
    report = scan(image)
    assert name in [c.handler for c in report.containers]
    passwd = [m for m in report.members if m.path.endswith("etc/passwd")]
    assert passwd, [m.path for m in report.members]
    assert all(m.sha256 == PASSWD_SHA and m.kind == "file" for m in passwd)
    links = [m for m in report.members if m.path.endswith("bin/sh")]
    assert links and all(m.kind == "symlink" and m.link_target == "busybox" for m in links)
    assert not [f for f in report.findings if f.rule_id.startswith(("CW-UNPACK-ERROR", "CW-UNPACK-PARTIAL"))]


def test_plugin_entry_point_handlers_are_appended(monkeypatch: pytest.MonkeyPatch) -> None:
    import analyzers.firmware.handlers as registry

    class FakeHandler(ContainerHandler):
        NAME = "fake_vendor"
        PATTERNS = (Magic(b"FAKEFW01"),)
        DOC = HandlerDoc(name="fake", vendor="test", description="test plug-in")

    class Point:
        name = "fake"

        @staticmethod
        def load() -> object:
            return [FakeHandler]

    seen: list[str] = []

    def fake_entry_points(*, group: str) -> list[Point]:
        seen.append(group)
        return [Point()]

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    handlers = load_handlers()
    assert seen == [ENTRY_POINT_GROUP]
    assert [h.NAME for h in handlers][-1] == "fake_vendor"
    assert len(handlers) == len(BUILTIN_HANDLERS) + 1
