"""Fixture builders for firmware tests, written from the format descriptions (firmware-formats.md).

Trees are dicts mapping a relative path to content: bytes/str for a file, `Link("target")` for a
symlink, `DIR` for an empty directory (filesystem builders also take an existing directory).
Filesystem builders call the real tools (mksquashfs, mkfs.cramfs, mkfs.jffs2, genromfs,
mkfs.ubifs/ubinize, mkimage); the vendor containers (Hikvision digicap.dav, Dahua DH zip, Xiongmai
InstallDesc zip) are packed here byte by byte.

    from tests.firmware.builders import ROOTFS, build_squashfs, build_digicap
    sq = build_squashfs(ROOTFS, tmp_path / "rootfs.sqfs")
    dav = build_digicap({"rootfs.img": sq.read_bytes()}, tmp_path / "digicap.dav", language=2)
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import require_tool


@dataclass(frozen=True)
class Link:
    """A symlink in a tree."""

    target: str


DIR = object()  # an empty directory in a tree

Content = bytes | str | Link | object
Tree = Mapping[str, Content]

# A small camera-like root filesystem (the Hikvision default root hash decodes to 'hiklinux').
ROOTFS: Tree = {
    "etc/passwd": b"root:ToCOv8qxP13qs:0:0:root:/root/:/bin/psh\n",
    "etc/init.d/rcS": b"#!/bin/sh\nmount -a\ntelnetd &\n/app/davinci &\n",
    "etc/version": b"V5.4.0 build 160530\n",
    "bin/busybox": b"\x7fELF" + bytes(range(256)) * 64,
    "bin/sh": Link("busybox"),
    "var/": DIR,
}


def _bytes(value: Content) -> bytes:
    return value.encode() if isinstance(value, str) else value  # type: ignore[return-value]


def write_tree(tree: Tree, root: Path) -> Path:
    """Materialise `tree` under `root` (created)."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, value in tree.items():
        path = root / rel.strip("/")
        if value is DIR:
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(value, Link):
            os.symlink(value.target, path)
        else:
            path.write_bytes(_bytes(value))
            if rel.startswith("bin/") or rel.endswith(".sh") or "init.d" in rel:
                path.chmod(0o755)
    return root


def _with_tree(tree: Tree | Path, action: Callable[[Path], object]) -> object:
    """Run `action` on a directory: an existing one as given, or `tree` written to a temp dir."""
    if isinstance(tree, Path):
        return action(tree)
    with tempfile.TemporaryDirectory(prefix="cw-tree-") as tmp:
        return action(write_tree(tree, Path(tmp) / "root"))


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True)


# ---------------------------------------------------------------------------------------- filesystems


def build_squashfs(tree: Tree | Path, out: Path, *, comp: str = "gzip", block_size: int = 131072) -> Path:
    tool = require_tool("mksquashfs")
    _with_tree(
        tree,
        lambda root: _run(
            [
                tool,
                str(root),
                str(out),
                "-noappend",
                "-comp",
                comp,
                "-b",
                str(block_size),
                "-all-root",
                "-no-progress",
                "-quiet",
            ]
        ),
    )
    return out


def build_cramfs(tree: Tree | Path, out: Path) -> Path:
    tool = require_tool("mkfs.cramfs")
    _with_tree(tree, lambda root: _run([tool, str(root), str(out)]))
    return out


def build_jffs2(
    tree: Tree | Path, out: Path, *, big_endian: bool = False, compression: str | None = None
) -> Path:
    tool = require_tool("mkfs.jffs2")
    argv = [tool, "-b" if big_endian else "-l", "-e", "0x10000", "-o", str(out)]
    if compression:
        argv += ["-X", compression, "-x", "lzo" if compression != "lzo" else "zlib"]
    _with_tree(tree, lambda root: _run([*argv, "-r", str(root)]))
    return out


def build_romfs(tree: Tree | Path, out: Path, *, volume: str = "camwatch") -> Path:
    tool = require_tool("genromfs")
    _with_tree(tree, lambda root: _run([tool, "-f", str(out), "-d", str(root), "-V", volume]))
    return out


def build_ubifs(tree: Tree | Path, out: Path, *, compression: str = "lzo") -> Path:
    tool = require_tool("mkfs.ubifs")
    _with_tree(
        tree,
        lambda root: _run(
            [
                tool,
                "-r",
                str(root),
                "-m",
                "2048",
                "-e",
                "126976",
                "-c",
                "64",
                "-x",
                compression,
                "-o",
                str(out),
            ]
        ),
    )
    return out


def build_ubi(tree: Tree | Path, out: Path, *, volume: str = "rootfs") -> Path:
    tool = require_tool("ubinize")
    with tempfile.TemporaryDirectory(prefix="cw-ubi-") as tmp:
        ubifs = build_ubifs(tree, Path(tmp) / "vol.ubifs")
        cfg = Path(tmp) / "ubi.cfg"
        cfg.write_text(
            f"[{volume}]\nmode=ubi\nimage={ubifs}\nvol_id=0\nvol_type=dynamic\nvol_name={volume}\nvol_flags=autoresize\n"
        )
        _run([tool, "-o", str(out), "-m", "2048", "-p", "128KiB", "-s", "512", str(cfg)])
    return out


# ---------------------------------------------------------------------------------------- archives


def _files(tree: Tree) -> list[tuple[str, Content]]:
    return sorted(tree.items())


def build_tar(tree: Tree, out: Path | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for rel, value in _files(tree):
            info = tarfile.TarInfo(rel)
            info.mtime = 1_700_000_000
            if value is DIR:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(value, Link):
                info.type, info.linkname = tarfile.SYMTYPE, value.target
                tar.addfile(info)
            else:
                data = _bytes(value)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    if out is not None:
        out.write_bytes(data)
    return data


def build_cpio(tree: Tree, out: Path | None = None) -> bytes:
    """newc ('070701') archive, as the kernel reads initramfs."""
    parts: list[bytes] = []

    def entry(name: str, mode: int, body: bytes, ino: int) -> None:
        encoded = name.encode() + b"\x00"
        fields = [ino, mode, 0, 0, 1, 1_700_000_000, len(body), 0, 0, 0, 0, len(encoded), 0]
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        blob = header + encoded
        blob += b"\x00" * (-len(blob) % 4)
        blob += body + b"\x00" * (-len(body) % 4)
        parts.append(blob)

    for ino, (rel, value) in enumerate(_files(tree), start=1):
        if value is DIR:
            entry(rel.rstrip("/"), 0o040755, b"", ino)
        elif isinstance(value, Link):
            entry(rel, 0o120777, value.target.encode(), ino)
        else:
            entry(rel, 0o100755 if rel.startswith("bin/") else 0o100644, _bytes(value), ino)
    entry("TRAILER!!!", 0, b"", 0)
    data = b"".join(parts)
    data += b"\x00" * (-len(data) % 512)
    if out is not None:
        out.write_bytes(data)
    return data


def build_zip(tree: Tree, out: Path | None = None, *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as archive:
        for rel, value in _files(tree):
            if value is DIR:
                archive.writestr(rel.rstrip("/") + "/", b"")
            elif isinstance(value, Link):
                info = zipfile.ZipInfo(rel)
                info.create_system = 3
                info.external_attr = 0o120777 << 16
                archive.writestr(info, value.target)
            else:
                archive.writestr(rel, _bytes(value))
    data = buf.getvalue()
    if out is not None:
        out.write_bytes(data)
    return data


def compress(data: bytes, kind: str) -> bytes:
    """gzip, xz, lzma (alone), bzip2 or zstd."""
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    if kind == "xz":
        return lzma.compress(data)
    if kind == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_ALONE)
    if kind == "bzip2":
        return bz2.compress(data)
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    raise ValueError(kind)


# ---------------------------------------------------------------------------------------- U-Boot


UIMAGE_COMP = {"none": 0, "gzip": 1, "bzip2": 2, "lzma": 3}


def build_uimage(
    payload: bytes,
    out: Path,
    *,
    name: str = "camwatch test",
    arch: str = "arm",
    image_type: str = "kernel",
    comp: str = "none",
    load: int = 0x80008000,
    entry: int = 0x80008000,
) -> Path:
    """A legacy uImage made by the real `mkimage`. `payload` is stored as given (compress it first
    and pass `comp` to describe it)."""
    tool = require_tool("mkimage")
    with tempfile.TemporaryDirectory(prefix="cw-uimage-") as tmp:
        src = Path(tmp) / "payload"
        src.write_bytes(payload)
        _run(
            [
                tool,
                "-A",
                arch,
                "-O",
                "linux",
                "-T",
                image_type,
                "-C",
                comp,
                "-a",
                f"{load:#x}",
                "-e",
                f"{entry:#x}",
                "-n",
                name,
                "-d",
                str(src),
                str(out),
            ]
        )
    return out


def raw_uimage(
    payload: bytes,
    *,
    name: str = "camwatch",
    comp: str = "none",
    load: int = 0,
    entry: int = 0,
    image_type: int = 7,
    corrupt_data_crc: bool = False,
) -> bytes:
    """The same header packed in Python (fast; used inside vendor packages)."""
    dcrc = zlib.crc32(payload) ^ (1 if corrupt_data_crc else 0)
    fields = [
        0x27051956,
        0,
        int(time.time()),
        len(payload),
        load,
        entry,
        dcrc,
        5,
        2,
        image_type,
        UIMAGE_COMP[comp],
        name.encode()[:32],
    ]
    header = struct.pack(">IIIIIIIBBBB32s", *fields)
    hcrc = zlib.crc32(header)
    return header[:4] + struct.pack(">I", hcrc) + header[8:] + payload


# ---------------------------------------------------------------------------------------- Hikvision

HIK_XOR_KEY = bytes.fromhex("BACDBCFED6CADDD3BAB9A3ABBFCBB5BE")
HIK_MAGICS = {"SWKH": b"SWKH", "02KH": b"02KH", "03KH": b"03KH"}


def hik_xor(buf: bytes, start: int = 0) -> bytes:
    return bytes(b ^ HIK_XOR_KEY[((start + n) + ((start + n) >> 4)) & 0x0F] for n, b in enumerate(buf))


def pack_digicap(
    files: dict[str, bytes],
    *,
    magic: bytes = b"SWKH",
    language: int = 1,
    device_class: int = 0x2C,
    oem: int = 0xFFFFFFFF,
    version: int = 0x05040000,
    corrupt_checksum: bool = False,
    corrupt_file: str | None = None,
    raw_names: dict[str, bytes] | None = None,
) -> bytes:
    """digicap.dav bytes: XOR-encoded header (0x40 + 44 x n), file table (name, offset, size,
    byte-sum checksum), then the members back to back. `raw_names` overrides stored names."""
    count = len(files)
    header_length = 0x40 + 44 * count
    table = b""
    body = b""
    offset = header_length
    for name, data in files.items():
        checksum = sum(data) & 0xFFFFFFFF
        if name == corrupt_file:
            checksum = (checksum + 1) & 0xFFFFFFFF
        stored = (raw_names or {}).get(name, name.encode())
        table += stored[:32].ljust(32, b"\x00") + struct.pack("<III", offset, len(data), checksum)
        body += data
        offset += len(data)
    fixed = struct.pack("<IIIIII", header_length, count, language, device_class, oem, version)
    extra = struct.pack("<II", len(body) + header_length, 20240101) + b"V5.4.0".ljust(24, b"\x00")
    decoded_tail = fixed + extra + table  # bytes 0x08 .. header_length
    checksum = sum(decoded_tail[4:]) & 0xFFFFFFFF  # covers 0x0C .. header_length
    if corrupt_checksum:
        checksum ^= 0x5A5A
    header = magic + struct.pack("<I", checksum) + decoded_tail
    assert len(header) == header_length
    return hik_xor(header) + body


def build_digicap(files: dict[str, bytes], out: Path, **options: object) -> Path:
    out.write_bytes(pack_digicap(files, **options))  # type: ignore[arg-type]
    return out


# ---------------------------------------------------------------------------------------- Dahua

DAHUA_INSTALL = {
    "Commands": ["burn romfs-x.squashfs.img rootfs", "burn kernel.img kernel"],
    "Devices": [["IPC-HFW2XXX", "1.00"]],
    "Vendor": "General",
    "Version": {"SoftwareVersion": "V2.800.0.R"},
    "MarketArea": ["Oversea"],
}
DAHUA_INSTALL_LUA = """-- Dahua installer (test fixture)
Installer.UpgradeSecurityVersion = "V2.0"
local function checkSecurityBaselineVersion()
    local newVersion = "V1.4"
end
local function checkHardware()
    if board.name ~= "NVR4X-4KS2" then return false end
    if vendor.Name ~= 'DAHUA' then return false end
end
local flashPartions = {
    boot = { baseAddr=0x0, endAddr=0x100000 },
    rootfs = { baseAddr=0x400000, endAddr=0x1400000 },
}
self:updatePart(flashPartions["rootfs"], "romfs-x.squashfs.img")
"""
DAHUA_CHECK = {
    "DefaultLanguage": "English",
    "SupportLanguages": "English,French",
    "hwid": ["IPC-HFW2541SP-S:01:02:04:C8"],
    "SecurityBaselineVersion": "V1.4",
    "FlashSize": "16M",
}


def pack_dahua(
    members: dict[str, bytes],
    *,
    install: dict[str, object] | None = DAHUA_INSTALL,
    install_lua: str | None = None,
    check: dict[str, Any] | None = DAHUA_CHECK,
    sign: bool = False,
) -> bytes:
    """A Dahua update: ZIP with Install (JSON + // comments), optional Install.lua, check.img
    (uImage + JSON), optional sign.img, the members; then the first magic PK -> DH."""
    tree: dict[str, bytes] = {}
    if install is not None:
        tree["Install"] = (json.dumps(install, indent=1) + "\n//IPC_RestoreDefault\n").encode()
    if install_lua is not None:
        tree["Install.lua"] = install_lua.encode("gb2312")
    if check is not None:
        tree["check.img"] = raw_uimage(json.dumps(check).encode() + b"\x00" * 16, name="check")
    if sign:
        tree["sign.img"] = os.urandom(256)
    tree.update(members)
    data = bytearray(build_zip(tree))
    assert data[:4] == b"PK\x03\x04"
    data[:2] = b"DH"
    return bytes(data)


def build_dahua(members: dict[str, bytes], out: Path, **options: object) -> Path:
    out.write_bytes(pack_dahua(members, **options))  # type: ignore[arg-type]
    return out


# ---------------------------------------------------------------------------------------- Xiongmai

XM_INSTALL_DESC = {
    "UpgradeCommand": [
        {"Command": "Burn", "FileName": "u-boot.bin.img"},
        {"Command": "Burn", "FileName": "romfs-x.cramfs.img"},
        {"Command": "Burn", "FileName": "user-x.cramfs.img"},
    ],
    "Hardware": "HI3516EV200_85H30AI_S38",
    "HardWareVersion": 1,
    "DevID": "000559B0XXXXX000000000000",
    "CompatibleVersion": 2,
    "Vendor": "General",
}


def pack_xiongmai(
    members: dict[str, bytes], *, install_desc: dict[str, object] | None = XM_INSTALL_DESC
) -> bytes:
    tree: dict[str, bytes] = {}
    if install_desc is not None:
        tree["InstallDesc"] = json.dumps(install_desc, indent=1).encode()
    tree.update(members)
    return build_zip(tree)


def build_xiongmai(members: dict[str, bytes], out: Path, **options: object) -> Path:
    out.write_bytes(pack_xiongmai(members, **options))  # type: ignore[arg-type]
    return out


# ---------------------------------------------------------------------------------------- hostile inputs


def gzip_bomb(expanded: int, member: int = 1 << 20) -> bytes:
    """Concatenated gzip members of zeros (valid gzip), ~1000:1; built without compressing GBs."""
    one = gzip.compress(bytes(member), compresslevel=9, mtime=0)
    return one * max(1, expanded // member)


def xz_bomb(expanded: int, member: int = 16 << 20) -> bytes:
    one = lzma.compress(bytes(member), preset=9)
    return one * max(1, expanded // member)


def zip_bomb(expanded: int) -> bytes:
    """One deflated member of `expanded` zero bytes (deflate of zeros is ~1000:1)."""
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open("zeros.bin", "w", force_zip64=True) as fh,
    ):
        chunk = bytes(1 << 20)
        for _ in range(max(1, expanded >> 20)):
            fh.write(chunk)
    return buf.getvalue()


def nested_gzip(payload: bytes, levels: int) -> bytes:
    for _ in range(levels):
        payload = gzip.compress(payload, mtime=0)
    return payload


def tool_available(name: str) -> bool:
    return bool(shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin"))
