"""The real samples of the shared corpus: what each must yield, and that none crashes the walker."""

from __future__ import annotations

import hashlib

import pytest

from analyzers.firmware.model import ImageReport
from analyzers.firmware.scanner import ScanOptions, scan_image
from tests.conftest import corpus_path, require_tool

FAST = ScanOptions(inspect=False, use_binwalk=False)
TEST_TREE = {  # the small tree fact_extractor uses in its cramfs/jffs2/ubifs samples
    "testfile1": 62,
    "testfile2": 28,
    "generic folder/test file 3_.txt": 20,
}


def scan(name: str, options: ScanOptions = FAST) -> ImageReport:
    report = scan_image(corpus_path("firmware", name), options)
    assert report.error is None, report.error
    return report


def files(report: ImageReport, prefix: str = "") -> dict[str, int]:
    return {
        m.path[len(prefix) :]: m.size
        for m in report.members
        if m.kind == "file" and m.path.startswith(prefix)
    }


def handlers(report: ImageReport) -> list[str]:
    return [c.handler for c in report.containers]


@pytest.mark.parametrize(
    ("name", "handler"),
    [
        ("fact_extractor_cramfs.img", "cramfs"),
        ("fact_extractor_jffs2_be.img", "jffs2"),
        ("fact_extractor_jffs2_le.img", "jffs2"),
        ("fact_extractor_test.ubifs", "ubifs"),
    ],
)
def test_fact_extractor_filesystems_yield_the_test_tree(name: str, handler: str) -> None:
    report = scan(name)
    assert handlers(report)[0] == handler
    assert files(report) == TEST_TREE


def test_jffs2_byte_orders_give_identical_content() -> None:
    be, le = scan("fact_extractor_jffs2_be.img"), scan("fact_extractor_jffs2_le.img")
    assert be.containers[0].metadata["endianness"] == "big"
    assert le.containers[0].metadata["endianness"] == "little"
    assert {m.path: m.sha256 for m in be.members} == {m.path: m.sha256 for m in le.members}


def test_ubi_image_volume_is_ubifs_with_the_test_tree() -> None:
    report = scan("fact_extractor_ubi.img")
    assert handlers(report) == ["ubi", "ubifs"]
    meta = report.containers[0].metadata
    assert meta["volumes"][0]["name"] == "rootfs" and meta["peb_size"] == 1024
    assert files(report, "rootfs!/") == TEST_TREE


@pytest.mark.parametrize("name", ["binwalk_cramfs.bin", "binwalk_squashfs.bin", "binwalk_romfs.bin"])
def test_binwalk_small_filesystems_hold_lsb_release(name: str) -> None:
    report = scan(name)
    release = [m for m in report.members if m.path.endswith("lsb-release")]
    assert release and release[0].size > 0, [m.path for m in report.members]


def test_romfs_volume_name() -> None:
    report = scan("binwalk_romfs.bin")
    assert report.containers[0].metadata["volume"] == "rom 67269c23"


def test_squashfs_v2_big_endian_gives_a_clean_partial_result() -> None:
    require_tool("unsquashfs")
    report = scan("binwalk_squashfs_v2.bin")
    meta = report.containers[0].metadata
    assert (meta["version"], meta["endianness"]) == ("2.0", "big")
    findings = [f for f in report.findings if f.rule_id in ("CW-UNPACK-PARTIAL", "CW-UNPACK-UNSUPPORTED")]
    assert findings and "2.0" in findings[0].message
    members = {m.path: m for m in report.members}
    assert len(members) == 430  # the file list from `unsquashfs -lls`; the data is vendor-compressed
    assert members["bin/busybox"].size == 224_756 and members["bin/busybox"].sha256 == ""
    assert members["bin/cat"].kind == "symlink" and members["bin/cat"].link_target == "busybox"


def test_vendor_lzma_squashfs_is_partial_not_a_crash() -> None:
    report = scan("binwalk-v2.3.4_firmware.squashfs")
    assert handlers(report) == ["squashfs"]
    assert report.containers[0].metadata["compression"] == "lzma"
    partial = [f for f in report.findings if f.rule_id == "CW-UNPACK-PARTIAL"]
    assert partial and "vendor-LZMA" in partial[0].message and "sasquatch" in partial[0].message


def test_hisilicon_zip_update_reaches_the_scripts_and_binaries() -> None:
    report = scan("binwalk_zip.bin", ScanOptions(inspect=False, use_binwalk=True))
    names = {m.path.rsplit("!/", 1)[-1].split("/", 1)[-1]: m for m in report.members}
    for wanted in ("system/init/ipcam.sh", "system/system/bin/grade.sh", "system/system/bin/encoder"):
        assert wanted in names, sorted(names)
    assert names["system/system/bin/encoder"].size == 886_168
    assert names["system/system/bin/encoder"].tlsh  # ELF: fuzzy hash for similarity search
    assert sum(1 for c in report.containers if c.handler == "zip") == 14  # outer zip + 13 embedded
    assert any("Zip archive data" in row["description"] for row in report.binwalk)
    inner = next(m for m in report.members if m.path == "CH-sys-48.53.64.67.bin")
    assert inner.container == "zip" and inner.size == 612_699


def test_truncated_zip_recovers_members_from_local_headers() -> None:
    report = scan("binwalk_zip_truncated.bin")
    assert handlers(report)[0] == "zip"
    sizes = files(report)
    assert sizes["AfuLnx64/AfuLnx64/afulnx_64"] == 1_103_728
    assert sizes["AfuLnx64/AfuLnx64/readme.txt"] == 5_194
    assert any(f.rule_id == "CW-UNPACK-TRUNCATED" for f in report.findings)


def test_hikvision_configuration_file_is_not_a_container() -> None:
    report = scan("hikvision_configurationFile", ScanOptions(inspect=False, use_binwalk=True))
    assert not report.containers and not report.members
    assert any(f.rule_id == "CW-UNPACK-UNRECOGNISED" for f in report.findings)


def test_yaffs2_has_no_handler_but_does_not_crash() -> None:
    report = scan("binwalk_yaffs2.bin", ScanOptions(inspect=False, use_binwalk=True))
    assert report.size == 135_168 and len(report.sha256) == 64
    assert any("Copyright" in row["description"] for row in report.binwalk)


def test_every_corpus_sample_scans_without_error() -> None:
    folder = corpus_path("firmware")
    samples = sorted(p for p in folder.iterdir() if p.is_file())
    assert len(samples) >= 17
    for sample in samples:
        report = scan_image(sample, FAST)
        assert report.error is None, report.error
        assert report.sha256 == hashlib.sha256(sample.read_bytes()).hexdigest()
        assert not [f for f in report.findings if f.rule_id == "CW-UNPACK-ERROR"], sample.name
