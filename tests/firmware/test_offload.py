"""Helper processes for TLSH and YARA-X (analyzers/firmware/offload.py): a scan that offloads gives
exactly the report of a scan that does everything in-process, also when a helper dies, when the
shared ring wraps around, and for members too big for it; plus the fast paths that replaced slower
code (NumPy entropy, the squashfs block reader) give the same values as the originals."""

from __future__ import annotations

import hashlib
import os
import random
import zlib
from pathlib import Path

import numpy as np
import pytest

from analyzers.firmware import offload
from analyzers.firmware.handlers.base import UnpackContext
from analyzers.firmware.handlers.squashfs import SquashfsHandler
from analyzers.firmware.inspect import entropy
from analyzers.firmware.model import ImageReport, Limits
from analyzers.firmware.safety import Budget
from analyzers.firmware.scanner import ScanOptions, scan_image
from tests.conftest import corpus_path
from tests.firmware import builders as B

pytestmark = pytest.mark.skipif(not B.tool_available("mksquashfs"), reason="mksquashfs not installed")


def private_key_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def camera_tree(seed: int = 7, files: int = 60) -> dict[str, object]:
    """A small camera rootfs with something for every inspector: a weak root hash, telnetd, ELF
    programs (TLSH), gzip web assets (nested containers), configs, a PEM key."""
    rng = random.Random(seed)
    tree: dict[str, object] = dict(B.ROOTFS)
    words = b"camera rtsp onvif admin upgrade telnetd flash_erase mtd_write /dev/mtd0 cloud".split()
    for i in range(files):
        text = b" ".join(rng.choice(words) for _ in range(rng.randint(20, 2000)))
        if i % 3 == 0:
            tree[f"usr/lib/lib{i}.so"] = (
                b"\x7fELF\x01\x01\x01" + bytes(9) + rng.randbytes(rng.randint(1, 90_000)) + text
            )
        elif i % 3 == 1:
            tree[f"web/js/p{i}.js.gz"] = zlib.compress(
                text
            )  # zlib, not gzip: a blob with a magic nobody claims
        else:
            tree[f"etc/config/c{i}.conf"] = text
    tree["web/js/app.js.gz"] = B.compress(b"var admin = 'admin';\n" * 200, "gzip")
    tree["etc/ssl/server.key"] = private_key_pem()
    tree["etc/empty"] = b""
    tree["etc/tiny"] = b"ab"
    return tree


def digicap_image(tmp_path: Path, tree: dict[str, object], name: str = "fw.dav") -> Path:
    squash = B.build_squashfs(tree, tmp_path / f"{name}.sqfs", block_size=4096)
    kernel = B.build_uimage(
        B.compress(random.Random(3).randbytes(300_000), "gzip"), tmp_path / f"{name}.uImage", comp="gzip"
    )
    return B.build_digicap(
        {"uImage": kernel.read_bytes(), "rootfs.squashfs": squash.read_bytes()}, tmp_path / name
    )


def comparable(report: ImageReport) -> dict[str, object]:
    d = report.to_dict()
    d.pop("duration_seconds")
    return d


def scan(path: Path, workers: int) -> ImageReport:
    report = scan_image(path, ScanOptions(use_binwalk=False, member_workers=workers))
    assert report.error is None, report.error
    return report


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return digicap_image(tmp_path_factory.mktemp("offload"), camera_tree())


@pytest.fixture(scope="module")
def inline_report(image: Path) -> ImageReport:
    return scan(image, 0)


def test_offloaded_scan_equals_in_process_scan(image: Path, inline_report: ImageReport) -> None:
    assert offload.can_fork()
    offloaded = scan(image, 2)
    assert comparable(offloaded) == comparable(inline_report)
    # the comparison has teeth: TLSH digests, YARA/credential/crypto findings and nesting are there
    assert offloaded.tlsh and sum(1 for m in offloaded.members if m.tlsh) >= 20
    rules = {f.rule_id for f in offloaded.findings}
    assert {"CW-FW-CRED-101", "CW-FW-KEY-101", "CW-FW-TELNET-001"} <= rules, rules
    assert offloaded.keys and offloaded.keys[0]["path"].endswith("etc/ssl/server.key")
    assert any(f.source == "yara" for f in offloaded.findings)
    assert any(m.container == "gzip" for m in offloaded.members)


def test_findings_keep_their_in_process_order(image: Path, inline_report: ImageReport) -> None:
    offloaded = scan(image, 1)
    key = [(f.rule_id, f.path, f.offset, f.evidence) for f in offloaded.findings]
    assert key == [(f.rule_id, f.path, f.offset, f.evidence) for f in inline_report.findings]


@pytest.mark.parametrize("corpus", ["binwalk_zip.bin", "binwalk_squashfs.bin", "fact_extractor_dahua_dh.bin"])
def test_corpus_images_are_identical_offloaded(corpus: str) -> None:
    path = corpus_path("firmware", corpus)
    assert comparable(scan(path, 2)) == comparable(scan(path, 0))


def test_a_helper_that_dies_has_its_work_redone_here(
    image: Path, inline_report: ImageReport, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = os.getpid()
    real_compute = offload.compute

    def crashing(data: offload.Blob, *args: object) -> offload.Result:
        if os.getpid() != parent and bytes(data[:4]) == b"\x7fELF":
            os._exit(3)  # a parser crash inside a helper
        return real_compute(data, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(offload, "compute", crashing)
    assert comparable(scan(image, 2)) == comparable(inline_report)


def test_ring_wrap_around_and_oversized_members(
    image: Path, inline_report: ImageReport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a ring smaller than many members: copies wrap, wait for space, and big members stay in-process
    monkeypatch.setattr(offload, "RING_BYTES", 192 * 1024)
    monkeypatch.setattr(offload, "BATCH_BYTES", 32 * 1024)
    assert comparable(scan(image, 2)) == comparable(inline_report)


def test_helpers_are_gone_after_the_scan(image: Path) -> None:
    import multiprocessing

    scan(image, 2)
    assert not multiprocessing.active_children()


def test_a_remote_scan_error_reads_like_a_local_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = digicap_image(tmp_path, {"etc/passwd": B.ROOTFS["etc/passwd"], "bin/x": b"\x7fELF" + bytes(300)})

    def broken_rules(_serialized: bytes) -> offload.ScanRaw:
        def scan_raw(data: bytes) -> offload.RawHits:
            raise TimeoutError("scan timed out")

        return scan_raw

    monkeypatch.setattr(offload, "_load_rules", broken_rules)
    report = scan_image(path, ScanOptions(use_binwalk=False, member_workers=1))
    # the image's own scan failing is an analysis failure, named with the original exception type
    assert report.error is not None and "TimeoutError: scan timed out" in report.error
    errors = [f for f in report.findings if f.rule_id == "CW-INSPECT-ERROR"]
    assert errors and all("inspection failed: TimeoutError: scan timed out" in f.message for f in errors)


# ------------------------------------------------------------------------------ fast paths


def test_numpy_entropy_profile_is_bit_identical_to_the_python_reference() -> None:
    rng = random.Random(11)

    def reference(image: bytes) -> tuple[list[float], int]:
        size = entropy.block_size_for(len(image))
        points = []
        for start in range(0, len(image), size):
            block = image[start : start + size]
            step = max(1, len(block) // entropy.SAMPLE_BYTES)
            points.append(round(entropy.shannon(block[::step] if step > 1 else block), 3))
        return points, size

    samples = [
        b"a",
        b"ab" * 3,
        rng.randbytes(5000),
        bytes(300_000),
        b"\xff" * 70_000 + rng.randbytes(70_001),
        bytes(rng.choice(b"abcdef") for _ in range(200_000)),
        rng.randbytes(3 * 1024 * 1024 + 17),
    ]
    for image in samples:
        assert entropy.entropy_profile(image) == reference(image)
    for _ in range(300):  # unrounded: same float operations in the same order
        buf = (
            rng.randbytes(rng.randint(1, 4000))
            if rng.random() < 0.5
            else bytes(rng.choice(b"xyz\x00") for _ in range(999))
        )
        assert entropy._shannon_array(np.frombuffer(buf, dtype=np.uint8)) == entropy.shannon(buf)


@pytest.mark.parametrize("options", [[], ["-noD"], ["-no-fragments"], ["-always-use-fragments"]])
def test_squashfs_block_reader_returns_every_file_exactly(tmp_path: Path, options: list[str]) -> None:
    rng = random.Random(5)
    block = 4096
    sizes = [0, 1, 100, block - 1, block, block + 1, 3 * block, 5 * block + 77, 40_000]
    tree: dict[str, object] = {f"d/f{n}": rng.randbytes(n // 2) + bytes(n - n // 2) for n in sizes}
    tree["d/sparse"] = bytes(9 * block)  # whole-zero blocks are stored as sparse
    tree["d/text"] = b"hello world " * 3000
    src = B.write_tree(tree, tmp_path / "src")
    out = tmp_path / "fs.sqfs"
    B._run(
        [
            B.require_tool("mksquashfs"),
            str(src),
            str(out),
            "-noappend",
            "-b",
            str(block),
            "-quiet",
            "-no-progress",
            *options,
        ]
    )
    data = memoryview(out.read_bytes())
    limits = Limits()
    ctx = UnpackContext(limits=limits, budget=Budget(limits), tmpdir=tmp_path)
    result = SquashfsHandler().unpack(data, ctx)
    got = {str(c.name): bytes(c.read()) for c in result.children if c.kind == "file"}
    assert {k: hashlib.sha256(v).hexdigest() for k, v in got.items()} == {
        k: hashlib.sha256(v).hexdigest() for k, v in tree.items() if isinstance(v, bytes)
    }
