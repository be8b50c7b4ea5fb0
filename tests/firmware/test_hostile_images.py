"""Hostile firmware matrix: path traversal, link escapes, bombs, deep nesting, huge member counts and
sparse tricks, each built with the real tools and scanned with `--extract` in a fresh interpreter.

For every case: the expected finding is reported, nothing appears or changes outside the extraction
directory (the arena around it holds a victim directory and is compared before/after), every path
under the extraction directory resolves inside it, the scan ends within its wall-time limit, and the
scan's peak-RSS growth (measured in the subprocess after a warm-up scan) stays under a stated bound.
test_safety.py already covers the plain gzip/xz/zip bombs, 12-level gzip nesting, the file-count
limit on a small ZIP and tar traversal; this file adds what those leave out.

Set CW_HOSTILE_RECORD=path.json to append each case's measurements (for docs/reliability.md).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import stat
import struct
import subprocess
import sys
import tarfile
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO, require_tool
from tests.firmware import builders as B

MiB = 1 << 20
TIME_LIMIT = 120.0  # the wall-time limit every case runs under (CW-LIMIT-TIME must not be needed)

SCAN_SCRIPT = """
import gzip, json, sys, tempfile, time
from analyzers.firmware.model import Limits
from analyzers.firmware.scanner import ScanOptions, scan_image

def status_kib(field):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))

image, limits, extract = sys.argv[1], Limits(**json.loads(sys.argv[2])), sys.argv[3]
with tempfile.TemporaryDirectory() as tmp:  # warm up imports and caches on a tiny extraction
    small = tmp + "/warm.gz"
    open(small, "wb").write(gzip.compress(b"warm up" * 100))
    scan_image(small, ScanOptions(inspect=False, use_binwalk=False, limits=limits, extract_dir=tmp + "/x"))
# ru_maxrss would carry the parent's high-water mark over fork+exec (pytest may hold big fixtures);
# VmHWM is this process's own peak, and writing 5 to clear_refs resets it to the current RSS
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
base = status_kib("VmRSS")
started = time.monotonic()
report = scan_image(image, ScanOptions(inspect=False, use_binwalk=False, limits=limits, extract_dir=extract))
seconds = time.monotonic() - started
peak = status_kib("VmHWM")
print(json.dumps({
    "findings": [[f.rule_id, f.path, f.message] for f in report.findings],
    "members": len(report.members), "max_depth": max((m.depth for m in report.members), default=0),
    "unpacked": report.bytes_unpacked, "error": report.error, "seconds": seconds,
    "grew_kib": peak - base, "peak_kib": peak,
}))
"""


def walk(root: Path, skip: Path | None = None) -> list[Path]:
    """Every path under `root` but `skip` (links not followed), without recursion: extraction trees
    can be thousands of levels deep."""
    found: list[Path] = []
    pending = [root] if root.is_dir() else []
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if skip is not None and entry.path == str(skip):
                    continue
                found.append(Path(entry.path))
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
    return found


@dataclass
class Scan:
    findings: list[list[str]]
    members: int
    max_depth: int
    unpacked: int
    error: str | None
    seconds: float
    grew_kib: int
    peak_kib: int
    rules: list[str] = field(default_factory=list)


@dataclass
class Arena:
    """A directory holding the image, a victim directory, a sentinel file and the extraction dir."""

    root: Path
    victim: Path
    out: Path
    token: str  # unique name for absolute-path members (checked for at '/')

    def snapshot(self) -> dict[str, tuple[int, int, str]]:
        """Everything in the arena outside `out`: type, size, content digest (and link targets)."""
        state: dict[str, tuple[int, int, str]] = {}
        for full in walk(self.root, skip=self.out):
            st = full.lstat()
            digest = ""
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(full.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(full)
            state[str(full.relative_to(self.root))] = (stat.S_IFMT(st.st_mode), st.st_nlink, digest)
        return state


@pytest.fixture
def arena(tmp_path: Path) -> Arena:
    root = tmp_path / "arena"
    victim = root / "victim"
    victim.mkdir(parents=True)
    (victim / "passwd").write_bytes(b"root:x:0:0:root:/root:/bin/sh\n")
    return Arena(root, victim, root / "out", f"cw-hostile-{uuid.uuid4().hex[:12]}")


def scan(arena: Arena, image: Path, **limits: float) -> Scan:
    """Scan `image` with --extract into arena.out in a fresh interpreter and check containment."""
    limits.setdefault("max_seconds", TIME_LIMIT)
    before = arena.snapshot()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", SCAN_SCRIPT, str(image), json.dumps(limits), str(arena.out)],
        capture_output=True, text=True, env=env, timeout=TIME_LIMIT + 60, check=True,
    )  # fmt: skip
    result = Scan(**json.loads(done.stdout.strip().splitlines()[-1]))
    result.rules = [f[0] for f in result.findings]
    assert result.error is None, result.error
    assert result.seconds < TIME_LIMIT and "CW-LIMIT-TIME" not in result.rules
    # nothing appeared, vanished or changed next to the extraction directory, nor at '/'
    assert arena.snapshot() == before
    assert not os.path.lexists(f"/{arena.token}")
    # the walk does not follow links, so only the symlinks written under the extraction dir can lead
    # out of it: each must resolve inside (a loop leads nowhere)
    out_real = os.path.realpath(arena.out)
    for path in walk(arena.out):
        if path.is_symlink():
            try:
                real = os.path.realpath(path, strict=True)
            except OSError as exc:
                assert exc.errno == errno.ELOOP, (path, exc)
                continue
            assert real == out_real or real.startswith(out_real + os.sep), (path, os.readlink(path))
    record = os.environ.get("CW_HOSTILE_RECORD")
    if record:
        case = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0].split("::")[-1]
        with open(record, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"case": case, "grew_mib": round(result.grew_kib / 1024, 1),
                                 "peak_mib": round(result.peak_kib / 1024, 1),
                                 "seconds": round(result.seconds, 2), "members": result.members,
                                 "rules": sorted(set(result.rules))}) + "\n")  # fmt: skip
    return result


def rss_below(result: Scan, mib: int) -> None:
    assert result.grew_kib < mib * 1024, f"peak RSS grew by {result.grew_kib // 1024} MiB (bound {mib} MiB)"


def write(arena: Arena, name: str, data: bytes) -> Path:
    path = arena.root / name
    path.write_bytes(data)
    return path


def tar_of(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for entry in entries:
            info, data = entry if isinstance(entry, tuple) else (entry, b"")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


# ---------------------------------------------------------------------------------------- traversal


def test_cpio_traversal_absolute_names_and_write_through_an_absolute_link(arena: Arena) -> None:
    tree = {
        "../../cw-escape": b"1",
        f"/{arena.token}/evil": b"2",
        "lnk": B.Link(str(arena.victim)),  # absolute link to the victim, then a write "through" it
        "lnk/passwd": b"pwned\n",
    }
    result = scan(arena, write(arena, "initramfs.cpio", B.build_cpio(tree)))
    assert result.rules.count("CW-UNPACK-TRAVERSAL") == 2
    assert "CW-UNPACK-LINK-ESCAPE" in result.rules and "CW-UNPACK-LINK-FOLLOW" in result.rules
    image_dir = arena.out / "initramfs.cpio"
    assert (image_dir / "__/__/cw-escape").read_bytes() == b"1"
    assert (image_dir / arena.token / "evil").read_bytes() == b"2"
    assert not (image_dir / "lnk").is_symlink() and (image_dir / "lnk/passwd").read_bytes() == b"pwned\n"
    rss_below(result, 48)


def test_zip_traversal_and_relative_link_escape(arena: Arena) -> None:
    tree = {
        "../../cw-escape": b"1",
        f"/{arena.token}/evil": b"2",
        "up": B.Link("../../../victim"),
        "up/passwd": b"pwned\n",
    }
    result = scan(arena, write(arena, "update.zip", B.build_zip(tree)))
    assert result.rules.count("CW-UNPACK-TRAVERSAL") == 2
    escapes = [f[1] for f in result.findings if f[0] == "CW-UNPACK-LINK-ESCAPE"]
    assert escapes == ["up"] and "CW-UNPACK-LINK-FOLLOW" in result.rules
    assert not os.path.lexists(arena.out / "update.zip/up") or not (arena.out / "update.zip/up").is_symlink()
    rss_below(result, 48)


def test_tar_symlink_chain_that_only_escapes_when_resolved(arena: Arena) -> None:
    # each target looks harmless on its own ('d/up/../..' normalises to '.'), but through the link
    # d/up -> .. it climbs two levels above the image directory: it must not be created on disk
    entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]] = [
        regular("d/file", b"x"),
        link("d/up", ".."),
        link("e", "d/up/../.."),
        regular("e/victim/passwd", b"pwned\n"),
        link("a", "."),
        link("b", "a/a/a/../../../../victim"),
        regular("b/passwd", b"pwned\n"),
    ]
    result = scan(arena, write(arena, "chain.tar", tar_of(entries)))
    image_dir = arena.out / "chain.tar"
    assert os.readlink(image_dir / "d/up") == ".."  # harmless on its own: written
    assert not (image_dir / "e").is_symlink()
    assert not (image_dir / "b").is_symlink()
    refused = {f[1] for f in result.findings if f[0] == "CW-UNPACK-EXTRACT-REFUSED"}
    assert "e" in refused  # lexically inside, refused by the writer: still reported
    assert [f[1] for f in result.findings if f[0] == "CW-UNPACK-LINK-ESCAPE"] == ["b"]
    assert {"e/victim/passwd", "b/passwd"} <= {
        f[1] for f in result.findings if f[0] == "CW-UNPACK-LINK-FOLLOW"
    }
    rss_below(result, 48)


def test_tar_hard_link_escapes_are_reported_and_never_linked(arena: Arena) -> None:
    entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]] = [
        link("hl", "../../victim/passwd", tarfile.LNKTYPE),
        link("abs", str(arena.victim / "passwd"), tarfile.LNKTYPE),
        link("deep/hl2", "../etc/shadow", tarfile.LNKTYPE),  # relative to the archive root: escapes
        regular("hl", b"pwned\n"),  # written "through" the hard link by a naive extractor
    ]
    result = scan(arena, write(arena, "hard.tar", tar_of(entries)))
    escapes = sorted(f[1] for f in result.findings if f[0] == "CW-UNPACK-LINK-ESCAPE")
    assert escapes == ["abs", "deep/hl2", "hl"]
    written = arena.out / "hard.tar/hl"
    assert written.read_bytes() == b"pwned\n" and written.stat().st_nlink == 1
    assert (arena.victim / "passwd").stat().st_nlink == 1
    rss_below(result, 48)


def test_squashfs_escaping_and_absolute_directory_links(arena: Arena, tmp_path: Path) -> None:
    tree = dict(B.ROOTFS)
    tree["www"] = B.Link("../../../../victim")
    tree["etc/shadow"] = B.Link(str(arena.victim / "passwd"))
    image = B.build_squashfs(tree, arena.root / "rootfs.sqfs")
    result = scan(arena, image)
    assert [f[1] for f in result.findings if f[0] == "CW-UNPACK-LINK-ESCAPE"] == ["www"]
    assert "CW-UNPACK-LINK-NOT-WRITTEN" in result.rules
    assert not os.path.lexists(arena.out / "rootfs.sqfs/www")
    assert not os.path.lexists(arena.out / "rootfs.sqfs/etc/shadow")
    rss_below(result, 48)


def test_digicap_flat_names_cannot_climb(arena: Arena) -> None:
    data = B.pack_digicap({"a": b"x" * 64}, raw_names={"a": b"../../victim/passwd"})
    result = scan(arena, write(arena, "digicap.dav", data))
    assert "CW-UNPACK-TRAVERSAL" in result.rules
    assert [p.name for p in (arena.out / "digicap.dav").iterdir()] == [".._.._victim_passwd"]
    rss_below(result, 48)


# ---------------------------------------------------------------------------------------- bombs


@pytest.mark.parametrize("stored", [False, True], ids=["squashfs-compressed", "squashfs-stored"])
def test_bomb_inside_a_squashfs_inside_a_tar(stored: bool, arena: Arena, tmp_path: Path) -> None:
    # compressed, the repetitive bomb makes the squashfs itself a bomb (its own ratio check stops it
    # before data.gz is read); stored (-noD...), the gzip stream inside is reached and stopped
    src = B.write_tree(
        {"etc/passwd": b"root::0:0::/:/bin/sh\n", "data.gz": B.gzip_bomb(1 << 30)}, tmp_path / "src"
    )
    sq = tmp_path / "inner.sqfs"
    flags = ["-noI", "-noD", "-noF", "-noX"] if stored else []
    argv = [require_tool("mksquashfs"), str(src), str(sq), "-noappend", "-quiet", "-no-progress", *flags]
    subprocess.run(argv, check=True, capture_output=True)
    image = write(arena, "nested-bomb.tar", B.build_tar({"rootfs.sqfs": sq.read_bytes()}))
    result = scan(arena, image)
    ratio = [f for f in result.findings if f[0] == "CW-LIMIT-RATIO"]
    assert ratio and all(f[1].startswith("rootfs.sqfs!/") for f in ratio)
    if stored:
        assert [f[1] for f in ratio] == ["rootfs.sqfs!/data.gz"] and "gzip stream" in ratio[0][2]
    else:
        assert "squashfs:" in ratio[0][2]
    assert result.unpacked < 64 * MiB
    rss_below(result, 64)


def test_zip_of_zip_bombs(arena: Arena) -> None:
    inner = B.zip_bomb(128 * MiB)
    outer = B.build_zip({f"part{i}.zip": inner for i in range(8)}, compression=zipfile.ZIP_STORED)
    result = scan(arena, write(arena, "42.zip", outer), max_file_bytes=1 << 31)
    ratio = sorted(f[1] for f in result.findings if f[0] == "CW-LIMIT-RATIO")
    assert ratio == [f"part{i}.zip!/zeros.bin" for i in range(8)]
    assert result.unpacked < 64 * MiB
    rss_below(result, 64)


def test_zstd_bomb(arena: Arena) -> None:
    import zstandard

    buf = io.BytesIO()
    with zstandard.ZstdCompressor(level=19).stream_writer(buf, closefd=False) as writer:
        chunk = bytes(MiB)
        for _ in range(1024):
            writer.write(chunk)
    result = scan(arena, write(arena, "bomb.zst", buf.getvalue()))
    assert "CW-LIMIT-RATIO" in result.rules
    assert result.unpacked < 64 * MiB
    rss_below(result, 64)


# ---------------------------------------------------------------------------------------- sparse tricks


def test_sparse_tar_member_with_a_huge_apparent_size(arena: Arena, tmp_path: Path) -> None:
    tool = require_tool("tar")
    (tmp_path / "src").mkdir()
    hole = tmp_path / "src/hole.bin"
    with open(hole, "wb") as fh:
        fh.truncate(400 * MiB)
    image = arena.root / "sparse.tar"
    subprocess.run([tool, "-S", "-cf", str(image), "-C", str(tmp_path / "src"), "hole.bin"], check=True)
    assert image.stat().st_size < 64 * 1024
    result = scan(arena, image)
    assert "CW-LIMIT-RATIO" in result.rules
    assert not (arena.out / "sparse.tar/hole.bin").exists()
    rss_below(result, 48)


def test_squashfs_sparse_file_with_a_huge_apparent_size(arena: Arena, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    with open(tmp_path / "src/hole.bin", "wb") as fh:
        fh.truncate(400 * MiB)
    (tmp_path / "src/small").write_bytes(b"ok\n")
    image = B.build_squashfs(tmp_path / "src", arena.root / "sparse.sqfs")
    assert image.stat().st_size < 64 * 1024
    result = scan(arena, image)
    assert "CW-LIMIT-RATIO" in result.rules
    rss_below(result, 48)


def _jffs2_with_inflated_inode(tmp_path: Path, isize: int) -> bytes:
    """A real JFFS2 image whose file inode declares `isize` bytes (no data nodes cover them)."""
    data = bytearray(B.build_jffs2({"big": b"tiny"}, tmp_path / "j.jffs2").read_bytes())
    pos = 0
    while True:
        pos = data.find(b"\x85\x19\x02\xe0", pos)  # LE magic + INODE node type
        assert pos >= 0, "no inode node"
        (mode,) = struct.unpack_from("<I", data, pos + 20)
        if stat.S_ISREG(mode):
            struct.pack_into("<I", data, pos + 28, isize)  # isize (header CRC does not cover it)
            return bytes(data)
        pos += 4


def test_jffs2_inode_declaring_a_huge_size(arena: Arena, tmp_path: Path) -> None:
    image = write(arena, "holes.jffs2", _jffs2_with_inflated_inode(tmp_path, 400 * MiB))
    result = scan(arena, image)
    assert "CW-LIMIT-RATIO" in result.rules
    rss_below(result, 48)


def _patch_tar_size(data: bytes, size: int) -> bytes:
    head = bytearray(data[:512])
    head[124:136] = b"%011o\x00" % size
    head[148:156] = b" " * 8
    head[148:156] = b"%06o\x00 " % sum(head)
    return bytes(head) + data[512:]


@pytest.mark.parametrize("fmt", ["tar", "cpio", "zip"])
def test_huge_declared_sizes_with_tiny_bodies(fmt: str, arena: Arena) -> None:
    if fmt == "tar":
        data = _patch_tar_size(B.build_tar({"f": b"0123456789"}), 0o77777777777)
        rule = "CW-UNPACK-TRUNCATED"
    elif fmt == "cpio":
        raw = bytearray(B.build_cpio({"f": b"0123456789"}))
        raw[54:62] = b"FFFFFFFF"  # c_filesize of the first entry
        data, rule = bytes(raw), "CW-UNPACK-TRUNCATED"
    else:
        raw = bytearray(B.build_zip({"f": b"0123456789" * 100}))
        cd = raw.rfind(b"PK\x01\x02")
        raw[cd + 24 : cd + 28] = struct.pack("<I", 0xFFFF_FFF0)  # central-directory uncompressed size
        data, rule = bytes(raw), "CW-LIMIT-FILE-SIZE"
    result = scan(arena, write(arena, f"declared.{fmt}", data))
    assert rule in result.rules
    assert result.unpacked < MiB
    rss_below(result, 32)


# ---------------------------------------------------------------------------------------- nesting and counts


def test_fifty_levels_of_gzip_in_tar(arena: Arena) -> None:
    blob = B.build_tar({"etc/passwd": b"root::0:0::/:/bin/sh\n"})
    for level in range(50):
        blob = B.build_tar({f"level{level}.tar.gz": B.compress(blob, "gzip")})
    result = scan(arena, write(arena, "deep.tar", blob))
    assert result.rules.count("CW-LIMIT-DEPTH") == 1
    assert result.max_depth <= 8
    rss_below(result, 48)


def _deep_romfs(levels: int) -> bytes:
    """romfs with `levels` directories (15-character names) nested in one chain, far deeper than
    PATH_MAX allows to build on disk, so packed here: 32 bytes per level."""
    entries = bytearray()
    first = 32
    for level in range(levels):
        here = first + 32 * level
        entries += struct.pack(">IIII", 1, here + 32, 0, 0) + b"d" * 15 + b"\x00"  # dir -> child
    entries += struct.pack(">IIII", 2, 0, 3, 0) + b"f".ljust(16, b"\x00") + b"end".ljust(16, b"\x00")
    size = first + len(entries)
    head = bytearray(b"-rom1fs-" + struct.pack(">II", size, 0) + b"deep".ljust(16, b"\x00"))
    image = head + entries
    words = struct.unpack_from(f">{min(512, size) // 4}I", image)
    struct.pack_into(">I", image, 12, (-sum(words)) & 0xFFFFFFFF)
    return bytes(image)


def remove_deep_tree(root: Path) -> None:
    """rm -r without recursion (shutil.rmtree and pytest's cleanup recurse once per level)."""
    for path in sorted(walk(root), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()


def test_twenty_thousand_nested_directories(arena: Arena) -> None:
    try:
        result = scan(arena, write(arena, "deep.romfs", _deep_romfs(20_000)))
    finally:
        remove_deep_tree(arena.out)
    corrupt = [f for f in result.findings if f[0] == "CW-UNPACK-CORRUPT"]
    assert corrupt and "nested beyond" in corrupt[0][2]
    assert result.members < 300  # stopped near PATH_MAX (16 characters per level), not 20,000
    rss_below(result, 48)


def _many_member_cpio(count: int) -> bytes:
    parts = []
    for index in range(count):
        name = f"f/{index}".encode() + b"\x00"
        fields = [index + 1, 0o100644, 0, 0, 1, 0, 1, 0, 0, 0, 0, len(name), 0]
        header = b"070701" + b"".join(b"%08X" % f for f in fields) + name
        parts.append(header + b"\x00" * (-len(header) % 4) + b"x\x00\x00\x00")
    trailer = b"070701" + b"%08X" % 0 * 11 + b"%08X" % 11 + b"%08X" % 0 + b"TRAILER!!!\x00"
    return b"".join(parts) + trailer


@pytest.mark.slow
def test_two_hundred_thousand_cpio_members(arena: Arena) -> None:
    result = scan(arena, write(arena, "many.cpio", _many_member_cpio(200_000)))
    assert result.rules.count("CW-LIMIT-FILES") == 1
    assert result.members == 100_000
    rss_below(result, 256)


@pytest.mark.slow
def test_squashfs_with_more_files_than_the_limit(arena: Arena, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for group in range(20):
        folder = src / f"d{group}"
        folder.mkdir(parents=True)
        for index in range(1000):
            (folder / str(index)).touch()
    image = B.build_squashfs(src, arena.root / "many.sqfs")
    result = scan(arena, image, max_files=10_000)
    assert result.rules.count("CW-LIMIT-FILES") == 1
    assert result.members == 10_000
    rss_below(result, 96)
