"""Damaged variants of every handler fixture (truncations, bit flips, wiped headers) and of the
corpus samples never crash the walker: the report has no `error`, only findings."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import pytest

from analyzers.firmware.model import Limits
from analyzers.firmware.scanner import ScanOptions, scan_image
from tests.conftest import corpus_path
from tests.firmware.test_handlers import FIXTURES

OPTIONS = ScanOptions(inspect=False, use_binwalk=False, limits=Limits(max_seconds=60))


@functools.cache
def fixture_bytes(name: str, root: str) -> bytes:
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    return FIXTURES[name](folder).read_bytes()


def mutations(data: bytes, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    out = [(f"cut{pct}", data[: len(data) * pct // 100]) for pct in (3, 30, 70, 97)]
    for round_ in range(3):
        flipped = bytearray(data)
        for _ in range(24):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        out.append((f"flip{round_}", bytes(flipped)))
    header = bytearray(data)
    header[4:64] = bytes(rng.randrange(256) for _ in range(60))
    out.append(("header", bytes(header)))
    return out


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_damaged_fixtures_never_crash(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    data = fixture_bytes(name, str(tmp_path_factory.getbasetemp() / "fuzz-fixtures"))
    work = tmp_path_factory.mktemp(f"fuzz-{name}")
    for label, blob in mutations(data, seed=len(name)):
        path = work / f"{name}-{label}.bin"
        path.write_bytes(blob or b"\x00")
        report = scan_image(path, OPTIONS)
        assert report.error is None, f"{label}: {report.error}"
        assert not [f for f in report.findings if f.rule_id == "CW-LIMIT-TIME"], label


@pytest.mark.parametrize(
    "sample",
    ["fact_extractor_ubi.img", "fact_extractor_jffs2_be.img", "binwalk_squashfs.bin", "binwalk_cramfs.bin"],
)
def test_damaged_corpus_samples_never_crash(sample: str, tmp_path: Path) -> None:
    data = corpus_path("firmware", sample).read_bytes()
    for label, blob in mutations(data, seed=7):
        path = tmp_path / f"{label}.bin"
        path.write_bytes(blob or b"\x00")
        report = scan_image(path, OPTIONS)
        assert report.error is None, f"{sample} {label}: {report.error}"
