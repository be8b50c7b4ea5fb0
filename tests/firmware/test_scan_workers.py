"""scan_paths: sandboxed worker processes, ordering, damaged inputs, worker crashes, inspector hooks."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from analyzers.firmware import scanner
from analyzers.firmware.model import Member
from analyzers.firmware.scanner import ScanOptions, make_pool, scan_paths, worker_probe
from tests.conftest import corpus_path
from tests.firmware import builders as B

FAST = ScanOptions(inspect=False, use_binwalk=False)


def test_worker_has_no_network_and_a_private_tmpdir() -> None:
    with make_pool(1) as pool:
        probe = pool.submit(worker_probe).result(timeout=60)
    if "no network sandbox" in probe["sandbox"]:
        pytest.skip(f"network namespaces unavailable here: {probe['sandbox']}")
    assert "network-isolated" in probe["sandbox"]
    assert probe["connect_errno"] == errno.ENETUNREACH, probe
    tmp = Path(probe["tmpdir"])
    assert tmp.name.startswith("camwatch-fw-")
    assert not tmp.exists()  # removed when the worker exited


def test_unsandboxed_workers_say_so(tmp_path: Path) -> None:
    image = tmp_path / "r.tar"
    image.write_bytes(B.build_tar(B.ROOTFS))
    options = ScanOptions(inspect=False, use_binwalk=False, sandbox=False)
    [report] = scan_paths([image], options)
    assert "no network sandbox" in report.integrity["analysis_sandbox"]
    assert any(f.rule_id == "CW-SANDBOX-UNAVAILABLE" for f in report.findings)


def test_directories_are_scanned_recursively_in_order_with_jobs(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "1.tar").write_bytes(B.build_tar(B.ROOTFS))
    (tmp_path / "a" / "b" / "2.cpio").write_bytes(B.build_cpio(B.ROOTFS))
    (tmp_path / "a" / "b" / "3.zip").write_bytes(B.build_zip(B.ROOTFS))
    os.symlink(tmp_path / "a" / "1.tar", tmp_path / "a" / "b" / "link.tar")  # links are not followed
    seen: list[tuple[int, int]] = []
    reports = scan_paths([tmp_path / "a"], ScanOptions(inspect=False, use_binwalk=False, jobs=2),
                         progress=lambda done, total, _path: seen.append((done, total)))  # fmt: skip
    assert [Path(r.path).name for r in reports] == ["1.tar", "2.cpio", "3.zip"]
    assert [r.containers[0].handler for r in reports] == ["tar", "cpio", "zip"]
    assert seen[-1] == (3, 3) and len(seen) == 3
    for report in reports:
        assert report.error is None and report.duration_seconds > 0
        assert report.integrity["analysis_sandbox"]


def test_damaged_inputs_give_one_line_errors_and_the_rest_is_scanned(tmp_path: Path) -> None:
    good = tmp_path / "good.tar"
    good.write_bytes(B.build_tar(B.ROOTFS))
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.bin"
    locked = tmp_path / "fifo"
    os.mkfifo(locked)
    reports = scan_paths([missing, empty, good, locked], FAST)
    errors = [r.error for r in reports]
    assert errors[2] is None and reports[2].members
    for report, error in zip(reports, errors, strict=True):
        if report is reports[2]:
            continue
        assert error is not None and str(report.path) in error and "\n" not in error


@pytest.mark.skipif(threading.active_count() > 1, reason="the crash is injected through a forked worker")
def test_a_crashing_worker_only_loses_its_own_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = []
    for name in ("ok1.tar", "boom.tar", "ok2.tar"):
        path = tmp_path / name
        path.write_bytes(B.build_tar(B.ROOTFS))
        images.append(path)
    real = scanner.scan_image

    def crashing(path: str, options: ScanOptions, **kwargs: object) -> object:
        if str(path).endswith("boom.tar"):
            os._exit(9)  # simulates a segfault in a native parser
        return real(path, options, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(scanner, "scan_image", crashing)
    reports = scan_paths(images, ScanOptions(inspect=False, use_binwalk=False, jobs=2))
    assert [r.error is None for r in reports] == [True, False, True]
    assert "boom.tar" in (reports[1].error or "") and "crashed" in (reports[1].error or "")


def test_inspector_hooks_run_for_members_containers_and_finish() -> None:
    sample = corpus_path("firmware", "binwalk_zip.bin")
    [report] = scan_paths([sample], ScanOptions(use_binwalk=False))
    assert report.error is None
    assert report.entropy and report.entropy_block_size  # finish() ran
    assert report.integrity.get("containers")  # inspect_container() ran
    by_source = {f.source for f in report.findings}
    assert by_source - {"handler", "limits", "unpack", "scanner"}, by_source  # inspect_member() findings
    assert any("ipcam.sh" in f.path for f in report.findings)


def test_scan_image_calls_inspect_member_for_every_file_and_the_image(tmp_path: Path) -> None:
    calls: list[str] = []

    class Recorder:
        def reset(self) -> None:
            calls.append("reset")

        def inspect_member(self, member: Member, data: bytes) -> list[object]:
            assert isinstance(data, bytes) and len(data) == member.size
            calls.append(member.path)
            return []

        def inspect_container(self, info: object) -> list[object]:
            calls.append("container:" + getattr(info, "handler", "?"))
            return []

        def finish(self, report: object, image: bytes) -> None:
            calls.append("finish")

    image = tmp_path / "r.tar.gz"
    image.write_bytes(B.compress(B.build_tar(B.ROOTFS), "gzip"))
    scanner._SESSIONS[((), None)] = Recorder()
    try:
        report = scanner.scan_image(image, ScanOptions(use_binwalk=False))
    finally:
        scanner._SESSIONS.pop(((), None))
    files = {m.path for m in report.members if m.kind == "file"}
    assert calls[0] == "reset"  # a reused session starts every image clean
    assert {c for c in calls if not c.startswith(("container:", "finish", "reset"))} == files | {""}
    assert "container:gzip" in calls and "container:tar" in calls
    assert calls[-1] == "finish" and calls[-2] == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to an unprivileged user needs root")
def test_unprivileged_worker_falls_back_to_a_user_namespace() -> None:
    from analyzers.firmware.sandbox import isolate_network

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become 'nobody', then isolate as an unprivileged worker would
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            status = isolate_network()
            import socket

            probe = socket.socket()
            try:
                probe.connect(("127.0.0.1", 9))
                errno_seen = 0
            except OSError as exc:
                errno_seen = exc.errno or 0
            line = f"{status.method}|{status.network_isolated}|{errno_seen}|{status.detail}"
            os.write(write_end, line.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    method, isolated, code, detail = os.read(read_end, 4096).decode().split("|", 3)
    os.close(read_end)
    if isolated != "True":
        assert "user namespaces" in detail  # the report explains why there is no sandbox
        pytest.skip(f"unprivileged user namespaces disabled here: {detail}")
    assert method == "userns+netns" and int(code) == errno.ENETUNREACH
