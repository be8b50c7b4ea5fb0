"""Hostile input: names, links, the extraction writer, decompression bombs and every limit.

Bomb tests run the scan in a fresh interpreter and read its peak RSS, so the bound measured is the
scanner's own, not whatever the test process allocated before.
"""

from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from analyzers.firmware.model import ImageReport, Limits
from analyzers.firmware.safety import (
    MAX_NAME_CHARS,
    Budget,
    DecompressError,
    ExtractRefused,
    LimitExceeded,
    SafeWriter,
    bounded_decompress,
    inflate_intact,
    link_escapes,
    safe_relpath,
)
from analyzers.firmware.scanner import ScanOptions, scan_image
from tests.conftest import REPO, corpus_path
from tests.firmware import builders as B

FAST = ScanOptions(inspect=False, use_binwalk=False)
MiB = 1 << 20


def rules(report: ImageReport) -> list[str]:
    return [f.rule_id for f in report.findings]


def tree_snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("raw", "safe", "problem"),
    [
        ("etc/passwd", "etc/passwd", None),
        ("./a//b/", "a/b", None),
        ("/etc/shadow", "etc/shadow", "absolute path"),
        ("../../x", "__/__/x", "'..' component"),
        ("a/../../b", "a/__/__/b", "'..' component"),
        ("", "_unnamed", "empty name"),
        ("..", "__", "'..' component"),
        ("a\x00b", "a_b", "NUL byte in name"),
        ("dir\\..\\win.ini", "dir/__/win.ini", "'..' component"),
        (b"caf\xe9", "caf\udce9", None),
    ],
)
def test_safe_relpath(raw: str | bytes, safe: str, problem: str | None) -> None:
    result = safe_relpath(raw)
    assert result.path == safe
    if problem is None:
        assert result.problem is None
    else:
        assert result.problem is not None and problem in result.problem
    assert not result.path.startswith("/") and ".." not in result.path.split("/")


@pytest.mark.parametrize("fill", [4029, 4030, 4031])
def test_shortened_long_names_keep_only_ordinary_components(fill: int) -> None:
    # the cut at MAX_NAME_CHARS - 64 lands on '..x' so that '..' or '.' is all that is left of it
    # (found by fuzz_zip: 'bin/..busybox' cut to 'bin/..')
    raw = "b" * fill + "/..x" + "/c" * 200
    safe = safe_relpath(raw)
    parts = safe.path.split("/")
    assert not {"", ".", ".."} & set(parts), safe.path
    assert parts[0] == "b" * fill and parts[-1].startswith("__long_")
    assert len(safe.path) <= MAX_NAME_CHARS and "longer than" in (safe.problem or "")


def test_flat_names_cannot_hold_directories() -> None:
    result = safe_relpath("../../etc/shadow", flat=True)
    assert "/" not in result.path and result.problem


@pytest.mark.parametrize(
    ("link", "target", "escapes"),
    [
        ("bin/sh", "busybox", False),
        ("a/b/c", "../../x", False),
        ("a/b/c", "../../../x", True),
        ("foo", "../../", True),
        ("subdir/README_link", "../README.txt", False),
        ("etc/mtab", "/proc/mounts", False),  # absolute: relative to the image's own root
    ],
)
def test_link_escapes(link: str, target: str, escapes: bool) -> None:
    assert link_escapes(link, target) is escapes


# ---------------------------------------------------------------------------------------- the writer


def test_writer_stays_inside_and_refuses_links_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    writer = SafeWriter(tmp_path / "root")
    writer.write_file("a/b/file.txt", b"data", 0o755)
    assert (tmp_path / "root/a/b/file.txt").read_bytes() == b"data"
    assert os.access(tmp_path / "root/a/b/file.txt", os.X_OK)
    writer.write_symlink("a/link", "b/file.txt")
    assert os.readlink(tmp_path / "root/a/link") == "b/file.txt"
    for target in ("/etc/passwd", "../../outside", "../../../../"):
        with pytest.raises(ExtractRefused):
            writer.write_symlink("a/evil", target)
    assert not (tmp_path / "root/a/evil").exists()


def test_writer_never_writes_through_a_planted_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "planted")  # e.g. left by an earlier, hostile member
    os.symlink(outside / "target.txt", root / "file-link")
    writer = SafeWriter(root)
    with pytest.raises(ExtractRefused):
        writer.write_file("planted/pwned.txt", b"x")
    with pytest.raises(ExtractRefused):
        writer.write_file("file-link", b"x")  # O_NOFOLLOW on the last component
    with pytest.raises(ExtractRefused):
        writer.make_dir("planted/sub")
    assert list(outside.iterdir()) == []


def test_dirtraversal_tar_extract_writes_nothing_outside(tmp_path: Path) -> None:
    sample = corpus_path("firmware", "binwalk-v2.3.4_dirtraversal.tar")
    out = tmp_path / "out"
    before = tree_snapshot(tmp_path)
    report = scan_image(sample, ScanOptions(inspect=False, use_binwalk=False, extract_dir=out))
    assert report.error is None
    assert tree_snapshot(tmp_path) - before == {p for p in tree_snapshot(tmp_path) if p.startswith("out")}
    escaping = {f.path for f in report.findings if f.rule_id == "CW-UNPACK-LINK-ESCAPE"}
    assert escaping == {"bar", "foo", "subdir/foo2", "subdir/bar2"}
    links = {m.path: m.link_target for m in report.members if m.kind == "symlink"}
    assert links["bar"] == "/etc/passwd" and links["subdir/foo2"] == "../../../../"
    root = out / "binwalk-v2.3.4_dirtraversal.tar"
    for name in ("bar", "foo", "subdir/foo2", "subdir/bar2"):
        assert not os.path.lexists(root / name)
    assert os.readlink(root / "README2_link") == "subdir/README2.txt"
    assert os.readlink(root / "subdir/README_link") == "../README.txt"
    assert (root / "README2_link").resolve().is_relative_to(out.resolve())
    assert (root / "ls").stat().st_size == 133_792
    for path in root.rglob("*"):
        assert os.path.realpath(path).startswith(str(out.resolve()))


def test_traversal_names_and_writes_through_links_in_a_tar(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("../../escape.txt", b"1"), ("/abs/evil.txt", b"2")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("etcdir")
        link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path / "victim")
        tar.addfile(link)
        payload = tarfile.TarInfo("etcdir/passwd")
        payload.size = 4
        tar.addfile(payload, io.BytesIO(b"pwn\n"))
    image = tmp_path / "evil.tar"
    image.write_bytes(buf.getvalue())
    (tmp_path / "victim").mkdir()
    out = tmp_path / "out"
    report = scan_image(image, ScanOptions(inspect=False, use_binwalk=False, extract_dir=out))
    found = rules(report)
    assert found.count("CW-UNPACK-TRAVERSAL") == 2
    assert "CW-UNPACK-LINK-ESCAPE" in found and "CW-UNPACK-LINK-FOLLOW" in found
    assert list((tmp_path / "victim").iterdir()) == []
    assert not (tmp_path / "escape.txt").exists() and not Path("/abs/evil.txt").exists()
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["evil.tar/__/__/escape.txt", "evil.tar/abs/evil.txt",
                       "evil.tar/etcdir/passwd"]  # fmt: skip
    assert not (out / "evil.tar/etcdir").is_symlink()


def test_symlinks_in_a_filesystem_are_members_never_followed(tmp_path: Path) -> None:
    tree = dict(B.ROOTFS)
    tree["etc/shadow"] = B.Link("/etc/passwd")  # absolute: normal inside a rootfs
    tree["www/up"] = B.Link("../../../../etc")  # relative escape
    image = B.build_squashfs(tree, tmp_path / "r.sqfs")
    out = tmp_path / "out"
    report = scan_image(image, ScanOptions(inspect=False, use_binwalk=False, extract_dir=out))
    members = {m.path: m for m in report.members}
    assert members["etc/shadow"].kind == "symlink" and members["etc/shadow"].sha256 == ""
    escape = [f for f in report.findings if f.rule_id == "CW-UNPACK-LINK-ESCAPE"]
    assert [f.path for f in escape] == ["www/up"]
    not_written = [f for f in report.findings if f.rule_id == "CW-UNPACK-LINK-NOT-WRITTEN"]
    assert not_written and "etc/shadow -> /etc/passwd" in not_written[0].message
    root = out / "r.sqfs"
    assert os.readlink(root / "bin/sh") == "busybox"
    assert not os.path.lexists(root / "etc/shadow") and not os.path.lexists(root / "www/up")


# ---------------------------------------------------------------------------------------- bounded decoding


def test_inflate_intact_returns_only_whole_streams_within_the_cap() -> None:
    import zlib

    raw = bytes(range(256)) * 64  # 16 KiB
    packed = zlib.compress(raw)
    assert inflate_intact(packed, len(raw)) == raw
    assert inflate_intact(packed, len(raw) - 1) is None  # one byte over the cap
    assert inflate_intact(packed[:-8], len(raw)) is None  # cut short
    damaged = bytearray(packed)
    damaged[-1] ^= 1  # Adler-32 no longer matches
    assert inflate_intact(bytes(damaged), len(raw)) is None


def test_bounded_decompress_caps_output_and_reports_truncation() -> None:
    limits = Limits(max_ratio=10_000)
    with pytest.raises(LimitExceeded) as over:
        bounded_decompress("gzip", B.gzip_bomb(64 * MiB), limits, max_output=8 * MiB)
    assert over.value.rule_id == "CW-LIMIT-FILE-SIZE"
    with pytest.raises(LimitExceeded) as ratio:
        bounded_decompress("xz", B.xz_bomb(64 * MiB), Limits())
    assert ratio.value.rule_id == "CW-LIMIT-RATIO"
    data = os.urandom(200_000)
    with pytest.raises(DecompressError) as cut:
        bounded_decompress("bzip2", B.compress(data, "bzip2")[:-500], Limits())
    assert data.startswith(cut.value.partial)


BOMB_SCRIPT = """
import gzip, json, resource, sys, tempfile
from analyzers.firmware.model import Limits
from analyzers.firmware.scanner import ScanOptions, scan_image
limits = Limits(**json.loads(sys.argv[2]))
with tempfile.NamedTemporaryFile(suffix=".gz") as small:  # warm up imports and caches on a tiny stream
    small.write(gzip.compress(b"warm up" * 100))
    small.flush()
    scan_image(small.name, ScanOptions(inspect=False, use_binwalk=False, limits=limits))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
report = scan_image(sys.argv[1], ScanOptions(inspect=False, use_binwalk=False, limits=limits))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rules": [f.rule_id for f in report.findings], "grew_kib": peak - base,
                  "unpacked": report.bytes_unpacked, "error": report.error}))
"""


@functools.cache
def _zip_bomb() -> bytes:
    return B.zip_bomb(256 * MiB)


def run_bomb(path: Path, **limits: object) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", BOMB_SCRIPT, str(path), json.dumps(limits)],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    ("name", "make", "limits", "rule"),
    [
        ("bomb.gz", lambda: B.gzip_bomb(1 << 30), {}, "CW-LIMIT-RATIO"),
        ("bomb.xz", lambda: B.xz_bomb(1 << 30), {}, "CW-LIMIT-RATIO"),
        ("bomb.zip", lambda: _zip_bomb(), {"max_file_bytes": 1 << 31}, "CW-LIMIT-RATIO"),
        ("declared.zip", lambda: _zip_bomb(), {"max_file_bytes": 64 * MiB}, "CW-LIMIT-FILE-SIZE"),
        (
            "bomb-in-tar.gz",
            lambda: B.nested_gzip(B.build_tar({"z": bytes(128 * MiB)}), 1),
            {},
            "CW-LIMIT-RATIO",
        ),
    ],
)
def test_bombs_end_with_a_limit_and_bounded_memory(
    name: str, make: Callable[[], bytes], limits: dict[str, int], rule: str, tmp_path: Path
) -> None:
    bomb = tmp_path / name
    bomb.write_bytes(make())
    result = run_bomb(bomb, **limits)
    assert result["error"] is None
    assert rule in result["rules"]  # type: ignore[operator]
    assert int(result["grew_kib"]) < 48 * 1024, result  # type: ignore[call-overload]
    assert int(result["unpacked"]) < 64 * MiB  # type: ignore[call-overload]


# ---------------------------------------------------------------------------------------- limits


def test_depth_limit_on_nested_archives(tmp_path: Path) -> None:
    image = tmp_path / "deep.gz"
    image.write_bytes(B.nested_gzip(B.build_tar(B.ROOTFS), 12))
    report = scan_image(image, FAST)
    assert "CW-LIMIT-DEPTH" in rules(report)
    assert max(m.depth for m in report.members) <= Limits().max_depth
    shallow = scan_image(image, ScanOptions(inspect=False, use_binwalk=False, limits=Limits(max_depth=20)))
    assert "CW-LIMIT-DEPTH" not in rules(shallow)
    assert any(m.path.endswith("etc/passwd") for m in shallow.members)


def test_file_count_limit_stops_the_image(tmp_path: Path) -> None:
    image = tmp_path / "many.zip"
    image.write_bytes(B.build_zip({f"f{i:04}": b"x" for i in range(500)}, compression=zipfile.ZIP_STORED))
    report = scan_image(image, ScanOptions(inspect=False, use_binwalk=False, limits=Limits(max_files=100)))
    assert rules(report).count("CW-LIMIT-FILES") == 1
    assert len(report.members) == 100


def test_total_and_per_file_limits(tmp_path: Path) -> None:
    hexdata = os.urandom(3 * MiB // 2).hex().encode()  # compresses about 2:1, far from a bomb
    tree = {"a": hexdata, "b": hexdata[::-1], "c": b"small"}
    image = tmp_path / "big.tar"
    image.write_bytes(B.build_tar(tree))
    per_file = scan_image(
        image, ScanOptions(inspect=False, use_binwalk=False, limits=Limits(max_file_bytes=MiB))
    )
    assert rules(per_file).count("CW-LIMIT-FILE-SIZE") == 2
    assert {m.path: m.sha256 != "" for m in per_file.members} == {"a": False, "b": False, "c": True}
    packed = tmp_path / "big.tar.gz"
    packed.write_bytes(B.compress(image.read_bytes(), "gzip"))
    limits = Limits(max_total_bytes=8 * MiB)
    total = scan_image(packed, ScanOptions(inspect=False, use_binwalk=False, limits=limits))
    assert "CW-LIMIT-TOTAL" in rules(total)
    assert total.bytes_unpacked <= 8 * MiB


def test_time_limit(tmp_path: Path) -> None:
    image = tmp_path / "t.tar"
    image.write_bytes(B.build_tar(B.ROOTFS))
    report = scan_image(image, ScanOptions(inspect=False, use_binwalk=False, limits=Limits(max_seconds=0.0)))
    assert "CW-LIMIT-TIME" in rules(report) and report.error is None


def test_overlapping_zip_entries_are_refused(tmp_path: Path) -> None:
    data = bytearray(B.build_zip({"a": b"A" * 1000, "b": b"B" * 1000}, compression=zipfile.ZIP_STORED))
    # point b's central directory entry at a's local header: two names, the same data
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 42 : cd + 46] = (0).to_bytes(4, "little")
    image = tmp_path / "overlap.zip"
    image.write_bytes(bytes(data))
    report = scan_image(image, FAST)
    assert "CW-LIMIT-ZIP-OVERLAP" in rules(report)
    assert [m.path for m in report.members] == ["a"]


def test_budget_counts() -> None:
    budget = Budget(Limits(max_files=2, max_total_bytes=10))
    budget.count_file()
    budget.count_file()
    with pytest.raises(LimitExceeded) as exc:
        budget.count_file()
    assert exc.value.image_wide
    with pytest.raises(LimitExceeded):
        budget.charge(11)
