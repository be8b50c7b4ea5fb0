"""`camwatch firmware scan|info` through analyzers.firmware.cli.main (and the agent's parser)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from analyzers.firmware.cli import main, parse_size
from tests.conftest import corpus_path
from tests.firmware import builders as B


def benign(tmp_path: Path, name: str = "benign.tar") -> Path:
    path = tmp_path / name
    path.write_bytes(B.build_tar({"readme.txt": b"hello camera\n", "docs/": B.DIR}))
    return path


def test_scan_writes_json_and_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = benign(tmp_path)
    out = tmp_path / "report.json"
    assert main(["scan", str(image), "--json", str(out), "--no-binwalk"]) == 0
    doc = json.loads(out.read_text())
    assert image.name in json.dumps(doc)
    summary = capsys.readouterr().out
    assert "benign.tar" in summary


def test_json_to_stdout_keeps_stdout_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = benign(tmp_path)
    assert main(["firmware", "scan", str(image), "--json", "-", "--no-binwalk"]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)  # only the JSON document on stdout
    assert "benign.tar" in captured.err  # the human summary moved to stderr


def test_fail_on_threshold(tmp_path: Path) -> None:
    sample = corpus_path("firmware", "binwalk_zip.bin")
    assert main(["scan", str(sample), "--fail-on", "high", "-q", "--no-binwalk"]) == 1
    assert main(["scan", str(benign(tmp_path)), "--fail-on", "critical", "-q"]) == 0


def test_damaged_input_exits_one_and_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.dav"
    assert main(["scan", str(missing), str(benign(tmp_path)), "-q"]) == 1
    err = capsys.readouterr().err
    assert "nope.dav" in err and "cannot read image" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["scan"],
        ["scan", "x", "--jobs", "0"],
        ["scan", "x", "--fail-on", "severe"],
        ["scan", "x", "--max-file-bytes", "lots"],
        ["bogus"],
        [],
    ],
)
def test_usage_errors_exit_two(argv: list[str]) -> None:
    assert main(argv) == 2


def test_bad_rules_directory_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", str(benign(tmp_path)), "--rules", str(tmp_path / "no-rules")]) == 2
    assert "no-rules" in capsys.readouterr().err


def test_extract_directory_and_writers(tmp_path: Path) -> None:
    image = tmp_path / "rootfs.tar.gz"
    image.write_bytes(B.compress(B.build_tar(B.ROOTFS), "gzip"))
    out = tmp_path / "x"
    html, prom = tmp_path / "r.html", tmp_path / "fw.prom"
    argv = [
        "scan",
        str(image),
        "--extract",
        str(out),
        "--html",
        str(html),
        "--metrics-textfile",
        str(prom),
        "-q",
    ]
    assert main(argv) == 0
    image_dir = out / "rootfs.tar.gz"  # one directory per image; each nesting level is <member>_extracted
    assert (image_dir / "rootfs.tar").is_file()
    assert (image_dir / "rootfs.tar_extracted" / "etc" / "passwd").read_bytes() == B.ROOTFS["etc/passwd"]
    assert os.readlink(image_dir / "rootfs.tar_extracted" / "bin" / "sh") == "busybox"
    assert html.read_text().lstrip().lower().startswith("<!doctype html")
    assert "camwatch" in prom.read_text()


def test_limits_from_the_command_line(tmp_path: Path) -> None:
    image = tmp_path / "deep.gz"
    image.write_bytes(B.nested_gzip(b"x" * 100, 5))
    out = tmp_path / "r.json"
    assert main(["scan", str(image), "--max-depth", "2", "--json", str(out), "-q"]) == 0
    assert "CW-LIMIT-DEPTH" in out.read_text()


def test_directory_argument_scans_every_file(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    benign(folder, "a.tar")
    benign(folder, "b.tar")
    out = tmp_path / "r.json"
    assert main(["scan", str(folder), "--jobs", "2", "--json", str(out), "-q"]) == 0
    text = out.read_text()
    assert "a.tar" in text and "b.tar" in text


def test_info_prints_the_container_header(capsys: pytest.CaptureFixture[str]) -> None:
    sample = corpus_path("firmware", "fact_extractor_uboot.image_with_header")
    assert main(["info", str(sample)]) == 0
    text = capsys.readouterr().out
    assert "uimage at offset 0" in text and "u-boot image" in text and "header_crc_ok: True" in text
    assert main(["info", "--json", str(corpus_path("firmware", "fact_extractor_dahua_dh.bin"))]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["containers"][0]["handler"] == "dahua_dh_zip"


def test_info_on_unknown_and_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blob = tmp_path / "random.bin"
    blob.write_bytes(os.urandom(4096))
    assert main(["info", str(blob)]) == 0
    assert "no known container" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "missing")]) == 1


def test_agent_parser_dispatches_to_firmware(tmp_path: Path) -> None:
    from agent.cli import main as agent_main

    assert agent_main(["firmware", "scan", str(benign(tmp_path)), "-q", "--no-binwalk"]) == 0


@pytest.mark.parametrize(
    ("text", "value"), [("512M", 512 << 20), ("2GiB", 2 << 30), ("1000", 1000), ("1.5k", 1536)]
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value
