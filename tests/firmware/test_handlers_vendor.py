"""Vendor containers: Hikvision digicap.dav, Dahua DH zip, Xiongmai InstallDesc zip, U-Boot uImage.

Builder fixtures follow firmware-formats.md; the real samples come from the shared corpus.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from analyzers.firmware.handlers.hikvision_digicap import RAW_MAGICS, hik_xor, parse_header
from analyzers.firmware.model import ContainerInfo, ImageReport
from analyzers.firmware.scanner import ScanOptions, scan_image
from tests.conftest import corpus_path, require_tool
from tests.firmware import builders as B

FAST = ScanOptions(inspect=False, use_binwalk=False)
NVR_HEADER = bytes.fromhex(  # firmware-formats.md 2.5: a real DS-76xxN header, 108 bytes
    "E99AF7B654AEDDD342B8A3ABB5CBB5BE CFBCFED6E6DDD3BA465C5440344A4145"
    "43012935222C4546 5C544034B5BEBACD FED6CADDC6B9AC83AABFCBB5BEBACDBC"
    "BEA3BEBCC8DC8DDFDEB99BD2C0A0DDFE CADDD3BAB9A3ABBFCBB5BEBACDBCFED6"
    "25D2BAB9D3EE91CB15DAB0DA"
)


def scan(path: Path, options: ScanOptions = FAST) -> ImageReport:
    report = scan_image(path, options)
    assert report.error is None, report.error
    return report


def container(report: ImageReport, handler: str) -> ContainerInfo:
    found = [c for c in report.containers if c.handler == handler]
    assert found, [c.handler for c in report.containers]
    return found[0]


def rules(report: ImageReport) -> set[str]:
    return {f.rule_id for f in report.findings}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------- Hikvision


def test_hikvision_xor_magics_match_the_reference_vectors() -> None:
    assert hik_xor(b"SWKH") == bytes.fromhex("E99AF7B6")
    assert hik_xor(b"02KH") == bytes.fromhex("8AFFF7B6")
    assert hik_xor(b"03KH") == bytes.fromhex("8AFEF7B6")
    assert hik_xor(b"53KH") == bytes.fromhex("8FFEF7B6")
    assert set(RAW_MAGICS.values()) == {"SWKH", "02KH", "03KH"}
    # the key index uses the absolute offset: decoding a slice needs its start
    blob = os.urandom(600)
    assert hik_xor(hik_xor(blob)) == blob
    assert hik_xor(blob[300:], 300) == hik_xor(blob)[300:]
    assert hik_xor(blob[300:]) != hik_xor(blob)[300:]


def test_hikvision_nvr_header_test_vector() -> None:
    assert len(NVR_HEADER) == 108
    header = parse_header(NVR_HEADER)
    assert header.magic == "SWKH"
    assert header.checksum == 0x6482
    assert header.header_length == 504 == 0x40 + 44 * header.file_count
    assert header.file_count == 10
    assert header.language == 2
    assert header.device_class == 0x2C
    entry = header.entries[0]
    assert (entry.name, entry.offset, entry.size, entry.checksum) == (
        "hicore.tar.lzma",
        504,
        3_032_432,
        0x170A64A0,
    )
    assert any("truncated" in p for p in header.problems)


def test_hikvision_nvr_header_alone_is_reported_not_crashed(tmp_path: Path) -> None:
    image = tmp_path / "nvr-head.dav"
    image.write_bytes(NVR_HEADER)
    report = scan(image)
    info = container(report, "hikvision_digicap")
    assert info.metadata["language"] == 2 and info.metadata["file_count"] == 10
    assert "CW-FW-HIK-MALFORMED" in rules(report)


def test_hikvision_digicap_fields_checksums_and_members(tmp_path: Path) -> None:
    rootfs = B.build_squashfs(B.ROOTFS, tmp_path / "r.sqfs").read_bytes()
    files = {
        "_cfgUpgClass": b"class table\n" * 20,
        "rootfs.img": rootfs,
        "initrun.sh": b"#!/bin/sh\ntelnetd\n",
    }
    image = B.build_digicap(
        files, tmp_path / "digicap.dav", language=2, device_class=0x31, oem=7, version=0x05040000
    )
    report = scan(image)
    info = container(report, "hikvision_digicap")
    meta = info.metadata
    assert meta["magic"] == "SWKH"
    assert (meta["language"], meta["device_class"], meta["oem_code"]) == (2, 0x31, 7)
    assert meta["language_name"] == "CN" and meta["version_text"] == "V5.4.0"
    assert meta["header_checksum_ok"] is True and meta["file_checksums_ok"] is True
    assert [f["name"] for f in meta["files"]] == list(files)
    assert "forgeable" in info.signature and not info.encrypted
    by_path = {m.path: m for m in report.members}
    for name, data in files.items():
        assert by_path[name].sha256 == sha(data)
    assert by_path["rootfs.img"].container == "squashfs"
    assert "rootfs.img!/etc/passwd" in by_path
    assert not {r for r in rules(report) if r.startswith("CW-FW-HIK")}


def test_hikvision_bad_checksums_are_findings(tmp_path: Path) -> None:
    files = {"a.bin": b"A" * 100, "b.bin": b"B" * 100}
    image = B.build_digicap(files, tmp_path / "bad.dav", corrupt_checksum=True, corrupt_file="b.bin")
    report = scan(image)
    meta = container(report, "hikvision_digicap").metadata
    assert meta["header_checksum_ok"] is False and meta["file_checksums_ok"] is False
    bad = [f for f in report.findings if f.rule_id == "CW-FW-HIK-FILE-CHECKSUM"]
    assert len(bad) == 1 and "b.bin" in bad[0].message
    assert "CW-FW-HIK-HEADER-CHECKSUM" in rules(report)
    assert {m.path for m in report.members} == {"a.bin", "b.bin"}  # still carved


def test_hikvision_hostile_names_and_offsets(tmp_path: Path) -> None:
    files = {"evil": b"x" * 64, "ok": b"y" * 64}
    data = bytearray(B.pack_digicap(files, raw_names={"evil": b"../../etc/shadow"}))
    image = tmp_path / "evil.dav"
    image.write_bytes(bytes(data[:-32]))  # the last member now ends past EOF
    report = scan(image)
    traversal = [f for f in report.findings if f.rule_id == "CW-UNPACK-TRAVERSAL"]
    assert traversal and ".." not in traversal[0].path.split("/")
    assert any("outside the file" in f.message for f in report.findings if f.rule_id == "CW-FW-HIK-MALFORMED")
    assert all(".." not in m.path.split("/") for m in report.members)


def test_hikvision_03kh_is_reported_encrypted(tmp_path: Path) -> None:
    files = {"LiteOS.bin": os.urandom(4096), "ipc_db.jffs2": os.urandom(2048)}
    image = B.build_digicap(files, tmp_path / "e3s.dav", magic=b"03KH")
    report = scan(image)
    info = container(report, "hikvision_digicap")
    assert info.encrypted and info.metadata["magic"] == "03KH"
    assert [f["name"] for f in info.metadata["files"]] == ["LiteOS.bin", "ipc_db.jffs2"]
    encrypted = [f for f in report.findings if f.rule_id == "CW-FW-ENCRYPTED"]
    assert encrypted and "not analysable" in encrypted[0].message
    assert not report.members  # AES bodies are not handed out as content


def test_hikvision_02kh_with_opaque_payload_is_encrypted(tmp_path: Path) -> None:
    image = B.build_digicap({"hImage": os.urandom(8192)}, tmp_path / "g0.dav", magic=b"02KH")
    report = scan(image)
    assert container(report, "hikvision_digicap").encrypted
    assert "CW-FW-ENCRYPTED" in rules(report)


# ---------------------------------------------------------------------------------------- Dahua


def test_dahua_corpus_dh_zip_has_three_files_including_the_first() -> None:
    path = corpus_path("firmware", "fact_extractor_dahua_dh.bin")
    before = sha(path.read_bytes())
    report = scan(path)
    info = container(report, "dahua_dh_zip")
    assert info.offset == 0 and info.metadata["first_magic"] == "DH"
    files = {m.path: m for m in report.members if m.kind == "file"}
    assert sorted(files) == [
        "get_files_test/generic folder/test file 3_.txt",
        "get_files_test/testfile1",
        "get_files_test/testfile2",
    ]
    assert all(m.sha256 and m.size > 0 for m in files.values())
    assert sha(path.read_bytes()) == before  # patched in memory only


def test_dahua_metadata_install_lua_check_and_partitions(tmp_path: Path) -> None:
    rootfs = B.build_squashfs(B.ROOTFS, tmp_path / "r.sqfs").read_bytes()
    members = {
        "romfs-x.squashfs.img": B.raw_uimage(rootfs, name="NVR4XXX-4KS2/L", load=0x400000, entry=0x1400000)
    }
    image = B.build_dahua(members, tmp_path / "dh.bin", install_lua=B.DAHUA_INSTALL_LUA, sign=True)
    report = scan(image)
    info = container(report, "dahua_dh_zip")
    meta = info.metadata
    assert meta["install"]["burn"][0] == {"image": "romfs-x.squashfs.img", "partition": "rootfs"}
    assert meta["install"]["vendor"] == "General" and meta["install"]["market_area"] == ["Oversea"]
    assert meta["software_version"] == "V2.800.0.R"
    lua = meta["install_lua"]
    assert lua["upgrade_security_version"] == "V2.0" and lua["security_baseline_version"] == "V1.4"
    assert lua["boards"] == ["NVR4X-4KS2"] and lua["vendors"] == ["DAHUA"]
    assert lua["flash_partitions"]["rootfs"] == {"base": 0x400000, "end": 0x1400000}
    assert lua["burn"] == [{"image": "romfs-x.squashfs.img", "partition": "rootfs"}]
    assert meta["check"]["hwid"] == ["IPC-HFW2541SP-S:01:02:04:C8"]
    assert meta["check"]["SupportLanguages"] == "English,French"
    assert meta["signed"] is True and info.signature.startswith("dahua-sign.img")
    kinds = {m["name"]: m["kind"] for m in meta["members"]}
    assert kinds["romfs-x.squashfs.img"] == "uimage/squashfs"
    uimage = next(c for c in report.containers if c.handler == "uimage" and c.path == "romfs-x.squashfs.img")
    assert uimage.metadata["partition"] == {"start": 0x400000, "end": 0x1400000}
    assert "romfs-x.squashfs.img!/payload!/etc/passwd" in {m.path for m in report.members}


def test_dahua_unsigned_and_encrypted_package(tmp_path: Path) -> None:
    members = {
        "romfs-x.squashfs.img": B.raw_uimage(os.urandom(64 * 1024)),
        "web-x.squashfs.img": os.urandom(32768),
    }
    report = scan(B.build_dahua(members, tmp_path / "enc.bin", check=None))
    info = container(report, "dahua_dh_zip")
    assert info.metadata["signed"] is False and info.signature == "none"
    assert info.encrypted
    assert "CW-FW-ENCRYPTED" in rules(report)


# ---------------------------------------------------------------------------------------- Xiongmai


def test_xiongmai_install_desc_and_magic_classification(tmp_path: Path) -> None:
    cramfs = B.build_cramfs(B.ROOTFS, tmp_path / "r.cramfs").read_bytes()
    squash = B.build_squashfs({"lib/libdvr.so": b"\x7fELF" + b"x" * 4000}, tmp_path / "u.sqfs").read_bytes()
    members = {"romfs-x.cramfs.img": B.raw_uimage(cramfs), "user-x.cramfs.img": B.raw_uimage(squash)}
    desc = dict(B.XM_INSTALL_DESC, Vendor="SkipCheck")
    report = scan(B.build_xiongmai(members, tmp_path / "General_IPC.bin", install_desc=desc))
    info = container(report, "xiongmai_installdesc")
    parsed = info.metadata["install_desc"]
    assert parsed["hardware"] == "HI3516EV200_85H30AI_S38" and parsed["compatible_version"] == 2
    assert parsed["upgrade_commands"][1] == {"command": "Burn", "file": "romfs-x.cramfs.img"}
    assert parsed["skip_check"] is True
    kinds = {m["name"]: m["kind"] for m in info.metadata["members"]}
    assert kinds == {
        "InstallDesc": None,
        "romfs-x.cramfs.img": "uimage/cramfs",
        "user-x.cramfs.img": "uimage/squashfs",
    }
    assert info.signature == "none" and not info.encrypted
    paths = {m.path for m in report.members}
    assert "romfs-x.cramfs.img!/payload!/etc/passwd" in paths
    assert "user-x.cramfs.img!/payload!/lib/libdvr.so" in paths


def test_plain_zip_is_not_xiongmai(tmp_path: Path) -> None:
    image = tmp_path / "plain.zip"
    image.write_bytes(B.build_zip({"readme.txt": b"hello"}))
    report = scan(image)
    assert [c.handler for c in report.containers] == ["zip"]


# ---------------------------------------------------------------------------------------- uImage


def test_uimage_corpus_crc_and_lzma_payload() -> None:
    report = scan(corpus_path("firmware", "fact_extractor_uboot.image_with_header"))
    info = next(c for c in report.containers if c.handler == "uimage" and c.offset == 0)
    meta = info.metadata
    assert meta["header_crc_ok"] is True and meta["data_crc_ok"] is True
    assert (meta["name"], meta["arch"], meta["os"], meta["compression"], meta["type"]) == (
        "u-boot image", "mips", "linux", "lzma", "firmware",
    )  # fmt: skip
    assert meta["data_size"] == 32_753 and info.size == 64 + 32_753
    payload = next(m for m in report.members if m.path == "payload")
    assert payload.size == 93_576  # the LZMA header's uncompressed size: decoded completely
    assert not {"CW-FW-UIMAGE-HCRC", "CW-FW-UIMAGE-DCRC"} & rules(report)


def test_uimage_from_mkimage_gzip_payload_is_decompressed(tmp_path: Path) -> None:
    kernel = b"\x00" * 36 + (0x016F2818).to_bytes(4, "little") + os.urandom(3000)
    image = B.build_uimage(B.compress(kernel, "gzip"), tmp_path / "uImage", comp="gzip", name="Linux-3.4.35")
    report = scan(image)
    meta = container(report, "uimage").metadata
    assert meta["name"] == "Linux-3.4.35" and meta["compression"] == "gzip" and meta["arch"] == "arm"
    assert meta["load_address"] == 0x80008000 and meta["type"] == "kernel"
    payload = next(m for m in report.members if m.path == "payload")
    assert payload.sha256 == sha(kernel)


def test_uimage_bad_data_crc_is_a_finding_not_a_stop(tmp_path: Path) -> None:
    image = tmp_path / "bad.img"
    image.write_bytes(B.raw_uimage(B.build_tar(B.ROOTFS), corrupt_data_crc=True))
    report = scan(image)
    assert container(report, "uimage").metadata["data_crc_ok"] is False
    assert "CW-FW-UIMAGE-DCRC" in rules(report)
    assert "payload!/etc/passwd" in {m.path for m in report.members}


def test_uimage_multi_file_image(tmp_path: Path) -> None:
    tool = require_tool("mkimage")
    first, second = tmp_path / "kernel", tmp_path / "initrd.cpio"
    first.write_bytes(os.urandom(1001))
    second.write_bytes(B.build_cpio(B.ROOTFS))
    out = tmp_path / "multi.img"
    subprocess.run(
        [tool, "-A", "arm", "-O", "linux", "-T", "multi", "-C", "none", "-a", "0", "-e", "0", "-n", "multi",
         "-d", f"{first}:{second}", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    report = scan(out)
    by_path = {m.path: m for m in report.members}
    assert by_path["part0"].sha256 == sha(first.read_bytes())
    assert by_path["part1"].container == "cpio" and "part1!/etc/passwd" in by_path


@pytest.mark.parametrize("magic", [b"SWKH", b"02KH"])
def test_digicap_info_header_only(magic: bytes, tmp_path: Path) -> None:
    from analyzers.firmware.cli import identify

    data = B.pack_digicap({"a": b"1" * 10}, magic=magic, corrupt_file="a")
    containers, findings = identify(memoryview(data))
    assert containers[0].handler == "hikvision_digicap"
    assert containers[0].metadata["file_checksums_ok"] is None  # not computed in header-only mode
    assert not [f for f in findings if f.rule_id == "CW-FW-HIK-FILE-CHECKSUM"]
