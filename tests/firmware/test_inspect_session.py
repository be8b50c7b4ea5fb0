"""InspectionSession end to end: the real HiSilicon update yields its telnet, flash-erase, hard-coded
root and remote-bricking findings; a clean image yields nothing above info; integrity verdicts,
hash lists, de-duplication, session reuse and thread safety behave."""

from __future__ import annotations

import hashlib
import io
import re
import secrets
import struct
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from passlib.hash import sha512_crypt

from agent.errors import UsageError
from analyzers.firmware.inspect import InspectionSession, dedup_findings
from analyzers.firmware.model import ContainerInfo, Finding, ImageReport, Member, Severity
from tests.conftest import corpus_path

HISI_INNER = "CH-sys-48.53.64.67.bin"


def member(path: str, data: bytes) -> Member:
    return Member(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def hisilicon_members() -> tuple[bytes, dict[str, bytes]]:
    """The corpus zip, its inner update, and the update's 13 embedded zip entries (local headers
    only: the update has no central directory, so the entries are walked by hand)."""
    outer = corpus_path("firmware", "binwalk_zip.bin").read_bytes()
    inner = zipfile.ZipFile(io.BytesIO(outer)).read(HISI_INNER)
    members = {HISI_INNER: inner}
    for m in re.finditer(rb"PK\x03\x04", inner):
        o = m.start()
        method, csize = struct.unpack_from("<H", inner, o + 8)[0], struct.unpack_from("<I", inner, o + 18)[0]
        nlen, elen = struct.unpack_from("<HH", inner, o + 26)
        name = inner[o + 30 : o + 30 + nlen].decode()
        body = inner[o + 30 + nlen + elen : o + 30 + nlen + elen + csize]
        members[f"{HISI_INNER}!/{name}"] = zlib.decompress(body, -15) if method == 8 else body
    return outer, members


def inspect_image(
    session: InspectionSession,
    image: bytes,
    members: dict[str, bytes],
    containers: tuple[ContainerInfo, ...] | list[ContainerInfo] = (),
    path: str = "fw.bin",
) -> ImageReport:
    report = ImageReport(path=path, size=len(image), sha256=hashlib.sha256(image).hexdigest())
    for name, data in members.items():
        report.members.append(member(name, data))
        report.findings.extend(session.inspect_member(report.members[-1], data))
    for info in containers:
        report.containers.append(info)
        report.findings.extend(session.inspect_container(info))
    report.findings.extend(session.inspect_member(member("", image), image))
    session.finish(report, image)
    return report


def ids(report: ImageReport, minimum: Severity = Severity.INFO) -> set[str]:
    return {f.rule_id for f in report.findings if f.severity >= minimum}


def one(report: ImageReport, rule_id: str) -> Finding:
    found = [f for f in report.findings if f.rule_id == rule_id]
    assert len(found) == 1, f"{rule_id}: {found}"
    return found[0]


@pytest.fixture(scope="module")
def session() -> InspectionSession:
    return InspectionSession()


# ----------------------------------------------------------------------------- the real sample


def test_hisilicon_update_yields_its_documented_findings(session) -> None:
    outer, members = hisilicon_members()
    assert len(members) == 14
    report = inspect_image(session, outer, members, path="binwalk_zip.bin")

    telnet = one(report, "CW-FW-TELNET-001")
    assert telnet.path.endswith("system/init/ipcam.sh") and telnet.severity == Severity.HIGH
    script = members[telnet.path]
    assert telnet.offset is not None and script[telnet.offset : telnet.offset + 7] == b"telnetd"

    erase = one(report, "CW-FW-BRICK-001")
    assert erase.path.endswith("system/system/bin/grade.sh") and "flash_eraseall" in erase.evidence
    assert "nandwrite" in erase.evidence
    assert "of=/dev/$" in one(report, "CW-FW-BRICK-003").evidence

    creds = [f for f in report.findings if f.rule_id == "CW-FW-CRED-101"]
    assert {f.path.rsplit("/", 1)[-1] for f in creds} == {"encoder", "wifidaemon"}
    for f in creds:
        assert f.severity == Severity.HIGH and "root / 123456" in f.message
        assert members[f.path][f.offset :].startswith(b"root:LSiuY7pOmZG2s:0:0:")

    # primitive (info) + network upgrade handler => remote-bricking capable (high)
    assert erase.severity == Severity.INFO
    assert one(report, "CW-FW-BRICK-900").severity == Severity.HIGH
    assert {"CW-FW-UPGRADE-001", "CW-FW-CRED-006", "CW-FW-UPGRADE-900"} <= ids(report)
    assert report.hash_verdict == "known-bad" and one(report, "CW-FW-HASH-001").severity == Severity.HIGH
    assert 0 < len(report.entropy) <= 1024 and report.entropy_block_size > 0
    assert all(0.0 <= v <= 8.0 for v in report.entropy)
    assert max(report.entropy) > 7.5  # the deflate streams


def test_hisilicon_update_through_the_scanner() -> None:
    from analyzers.firmware.scanner import ScanOptions, scan_image

    report = scan_image(corpus_path("firmware", "binwalk_zip.bin"), ScanOptions(use_binwalk=False))
    assert report.error is None
    high = {f.rule_id for f in report.findings if f.severity >= Severity.HIGH}
    assert {"CW-FW-TELNET-001", "CW-FW-CRED-101", "CW-FW-BRICK-900", "CW-FW-HASH-001"} <= high
    assert any(f.rule_id == "CW-FW-BRICK-001" and "flash_eraseall" in f.evidence for f in report.findings)
    assert report.entropy and report.hash_verdict == "known-bad" and "signed" in report.integrity


# ----------------------------------------------------------------------------- false positives


def clean_members() -> dict[str, bytes]:
    strong = sha512_crypt.hash(secrets.token_urlsafe(32), rounds=5000)
    elf = b"\x7fELF\x01\x01\x01" + b"\x00" * 9 + b"\x02\x00\x28\x00" + b"\x00" * 28
    applets = b"\0".join(
        b"ash cat cp dd dropbear flash_eraseall flashcp httpd ifconfig mount nandwrite ntpd "
        b"reboot route syslogd telnet telnetd tftp udhcpc umount".split()
    )
    busybox = (
        elf
        + secrets.token_bytes(4096)
        + b"\0"
        + applets
        + b"\0"
        + (
            b"telnetd [OPTIONS]\n\n\t-p PORT\tPort to listen on\n\t-l LOGIN\tExec LOGIN on connect\0"
            b"dd [if=FILE] [of=FILE] [bs=N]\0Usage: flash_eraseall [-jNq] MTD_DEVICE\0"
            b"root:x:0:\0/etc/passwd\0/etc/shadow\0%s:%s:%u:%u:%s:%s:%s\n\0"
        )
        + secrets.token_bytes(4096)
    )
    app = (
        elf
        + secrets.token_bytes(8192)
        + (
            b"\0GET /status HTTP/1.1\r\nHost: %s\r\n\0/var/run/app.pid\0upgrade available\0"
            b"https://updates.example.com/v1/check\0Content-Type: application/json\0"
        )
        + secrets.token_bytes(8192)
    )
    return {
        "rootfs!/etc/inittab": b"::sysinit:/etc/init.d/rcS\n::respawn:/sbin/syslogd -n\n"
        b"::askfirst:-/bin/login\n::ctrlaltdel:/sbin/reboot\n::shutdown:/bin/umount -a -r\n",
        "rootfs!/etc/init.d/rcS": b"#!/bin/sh\n# start-up: mounts, network, services\n"
        b"mount -t proc proc /proc\n"
        b"mount -t sysfs sysfs /sys\nhostname -F /etc/hostname\nifconfig lo 127.0.0.1 up\n"
        b"udhcpc -i eth0 -b -p /var/run/udhcpc.pid\nsyslogd\nntpd -p pool.ntp.org\n"
        b"httpd -h /www -p 80\n/usr/bin/app &\n# telnetd is not started on production units\n",
        "rootfs!/etc/passwd": b"root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
        b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        "rootfs!/etc/shadow": f"root:{strong}:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
        "nobody:!:19000:0:99999:7:::\n".encode(),
        "rootfs!/etc/group": b"root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n",
        "rootfs!/etc/hosts": b"127.0.0.1 localhost\n",
        "rootfs!/etc/profile": b'export PATH=/bin:/sbin:/usr/bin:/usr/sbin\nPS1="# "\n',
        "rootfs!/bin/busybox": busybox,
        "rootfs!/usr/bin/app": app,
        "rootfs!/www/index.html": b"<!DOCTYPE html><html><body><h1>Camera</h1><form method=post "
        b"action=/login.cgi><input name=user><input type=password name=pass></form></body></html>\n",
    }


def test_clean_image_has_no_findings_above_info(session) -> None:
    members = clean_members()
    image = b"".join(members.values())
    report = inspect_image(session, image, members)
    above = [(f.rule_id, f.path, f.evidence) for f in report.findings if f.severity > Severity.INFO]
    assert above == []
    # the strong root hash is still listed as inventory
    assert "CW-FW-CRED-104" in ids(report) and report.hash_verdict == "unknown"


@pytest.mark.parametrize("binary", ["/bin/sh", "/bin/ls", "/bin/mount", "/usr/bin/env", "/usr/bin/python3"])
def test_real_system_binaries_are_clean(session, binary: str) -> None:
    path = Path(binary).resolve()
    if not path.is_file():
        pytest.skip(f"{binary} not present on this host")
    data = path.read_bytes()
    findings = session.inspect_member(member(f"rootfs!{binary}", data), data)
    assert [f.rule_id for f in findings if f.severity > Severity.INFO] == []


# ----------------------------------------------------------------------------- integrity


def hik(
    language: int = 1, version: int = 0x05040000, files=("_cfgUpgClass", "uImage"), **extra
) -> ContainerInfo:
    meta = {
        "magic": "SWKH",
        "language": language,
        "version": version,
        "version_text": f"V{version >> 24}.{(version >> 16) & 0xFF}.{version & 0xFFFF}",
        "files": [{"name": n} for n in files],
        **extra,
    }
    return ContainerInfo(
        "hikvision_digicap", "", 0, 4096, metadata=meta, signature="hikvision-byte-checksum (forgeable)"
    )


def test_hikvision_cn_image_forgeable_signature_and_cve_range() -> None:
    s = InspectionSession(installed_version="V5.5.0 build 170101")
    report = inspect_image(s, b"\xe9\x9a\xf7\xb6" + b"\0" * 60, {}, [hik(language=2, version=0x05030000)])
    assert one(report, "CW-FW-INTEG-001").severity == Severity.MEDIUM
    region = one(report, "CW-FW-INTEG-004")
    assert (
        region.severity == Severity.LOW and "CN" in region.message and "language mismatch" in region.message
    )
    assert one(report, "CW-FW-INTEG-006").severity == Severity.MEDIUM  # 5.3.0 < 5.5.0: downgrade
    assert one(report, "CW-FW-INTEG-009").cve == ["CVE-2017-7921"]
    integ = report.integrity
    assert integ["forgeable"] and integ["signed"] is False and integ["language"] == "CN"
    assert integ["region_lock_risk"] and integ["downgrade"] is True and integ["version"] == "V5.3.0"


def test_hikvision_secpls_en_image_newer_than_installed() -> None:
    s = InspectionSession(installed_version="V5.4.0")
    info = hik(language=1, version=0x05050003, files=("_cfgUpgSecPls", "uImage"))
    report = inspect_image(s, b"x" * 64, {}, [info])
    assert "_cfgUpgSecPls" in one(report, "CW-FW-INTEG-001").message
    assert not ids(report) & {"CW-FW-INTEG-004", "CW-FW-INTEG-006", "CW-FW-INTEG-009"}
    assert report.integrity["signed"] is True and report.integrity["downgrade"] is False


def test_dahua_signed_and_unsigned_with_cloud_upgrade() -> None:
    s = InspectionSession()
    signed = ContainerInfo(
        "dahua_dh_zip",
        "",
        0,
        100,
        metadata={"signed": True, "software_version": "V2.800.0.R"},
        signature="dahua-sign.img (not verified)",
    )
    report = inspect_image(s, b"DH\x03\x04" + b"\0" * 60, {}, [signed])
    assert report.integrity["signed"] is True and not ids(report) & {"CW-FW-INTEG-002", "CW-FW-INTEG-010"}

    unsigned = ContainerInfo("dahua_dh_zip", "", 0, 100, metadata={"signed": False}, signature="none")
    cloud = {"fw.bin!/romfs!/usr/bin/sonia": b"\0https://%s/api/CloudUpgrader/check\0"}
    report = inspect_image(s, b"DH\x03\x04" + b"\0" * 60, cloud, [unsigned])
    assert one(report, "CW-FW-INTEG-002").severity == Severity.LOW
    assert one(report, "CW-FW-INTEG-010").severity == Severity.MEDIUM
    assert report.integrity["unsigned"] == ["dahua_dh_zip"]


def test_xiongmai_unsigned_by_design_is_high_with_cloud_push() -> None:
    s = InspectionSession()
    xm = ContainerInfo(
        "xiongmai_installdesc", "", 0, 100, metadata={"install_desc": {"skip_check": True}}, signature="none"
    )
    quiet = inspect_image(s, b"PK\x03\x04" + b"\0" * 60, {}, [xm])
    assert one(quiet, "CW-FW-INTEG-003").severity == Severity.INFO and "CW-FW-INTEG-010" not in ids(quiet)
    assert quiet.integrity["notes"] and quiet.integrity["signed"] is False
    sofia = {"fw.bin!/user!/usr/bin/Sofia": b"\0upgrade.secu100.net\0NetWork.OnlineUpgrade\0"}
    loud = inspect_image(s, b"PK\x03\x04" + b"\0" * 60, sofia, [xm])
    assert one(loud, "CW-FW-INTEG-010").severity == Severity.HIGH


def test_odd_or_missing_metadata_is_tolerated(session) -> None:
    odd = [
        ContainerInfo("uimage", "a", 0, None, metadata={"header_crc_ok": False}),
        ContainerInfo(
            "hikvision_digicap", "", 0, None, metadata={"language": "CN", "version": None, "files": "x"}
        ),
        ContainerInfo("dahua_dh_zip", "", 0, None, metadata={}),
        ContainerInfo(
            "xiongmai_installdesc", "", 0, None, metadata={"install_desc": "broken"}, encrypted=True
        ),
        ContainerInfo("mystery", "", 0, None, metadata={"firmware_version": object()}),
    ]
    report = inspect_image(session, b"\0" * 64, {}, odd)
    assert report.integrity["checksums_ok"] is False and report.integrity["encrypted"] is True


# ----------------------------------------------------------------------------- hash lists, paths


def test_user_hash_lists(tmp_path: Path) -> None:
    image = b"vendor image bytes " * 10
    payload = b"#!/bin/sh\necho implant\n"
    (tmp_path / "known-good.txt").write_text(f"# vetted\n{hashlib.sha256(image).hexdigest()} vendor 1.2.3\n")
    (tmp_path / "known-bad.txt").write_text(
        f"{hashlib.sha256(payload).hexdigest().upper()} implant dropper\n"
    )
    s = InspectionSession(extra_rule_dirs=[tmp_path])
    report = inspect_image(s, image, {"rootfs!/usr/bin/helper": payload})
    assert report.hash_verdict == "known-good"
    bad = one(report, "CW-FW-HASH-002")
    assert bad.path == "rootfs!/usr/bin/helper" and "implant dropper" in bad.message
    (tmp_path / "known-bad.txt").write_text("not-a-hash label\n")
    with pytest.raises(UsageError, match=r"known-bad\.txt:1"):
        InspectionSession(extra_rule_dirs=[tmp_path])


def test_dahua_current_config_in_web_root(session) -> None:
    members = {
        "web.img!/www/current_config/passwd": b"1:admin:6QNMIQGe:1:\n",
        "web.img!/www/index.html": b"<html>",
    }
    report = inspect_image(session, b"x" * 64, members)
    finding = one(report, "CW-FW-BACKDOOR-101")
    assert finding.severity == Severity.HIGH and "current_config" in finding.evidence


# ----------------------------------------------------------------------------- mechanics


def test_image_level_duplicate_is_dropped_in_favour_of_the_member(session) -> None:
    script = b"#!/bin/sh\ntelnetd -l /bin/sh\n"
    image = b"\0" * 100 + script + b"\0" * 100  # e.g. an uncompressed romfs: the script is visible raw
    report = inspect_image(session, image, {"romfs!/etc/init.d/rcS": script})
    telnet = [f for f in report.findings if f.rule_id == "CW-FW-TELNET-001"]
    assert [f.path for f in telnet] == ["romfs!/etc/init.d/rcS"]
    # siblings with the same evidence are both kept (two files, two problems)
    kept = dedup_findings(
        [
            Finding("R", Severity.LOW, "m", path="a!/x", evidence="e"),
            Finding("R", Severity.LOW, "m", path="a!/y", evidence="e"),
            Finding("R", Severity.LOW, "m", path="a", evidence="e"),
        ]
    )
    assert sorted(f.path for f in kept) == ["a!/x", "a!/y"]


def test_session_state_does_not_leak_between_images() -> None:
    s = InspectionSession()
    _, members = hisilicon_members()
    first = inspect_image(s, b"first", members)
    assert "CW-FW-BRICK-900" in ids(first)
    second = inspect_image(s, b"second", {"etc/init.d/rcS": b"#!/bin/sh\nmount -a\n"})
    assert ids(second) == set() and second.keys == [] and second.integrity["signed"] is None


def test_concurrent_inspect_member_matches_sequential() -> None:
    _, members = hisilicon_members()
    seq = InspectionSession()
    expected = sorted(
        (f.rule_id, f.path, f.offset)
        for name, data in members.items()
        for f in seq.inspect_member(member(name, data), data)
    )
    par = InspectionSession()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(lambda item: par.inspect_member(member(*item), item[1]), members.items())
        got = sorted((f.rule_id, f.path, f.offset) for fs in results for f in fs)
    assert got == expected and len(got) > 5


def test_tiny_members_are_skipped_cheaply(session) -> None:
    assert session.inspect_member(member("a", b"ab"), b"ab") == []


def test_entropy_profile_separates_random_from_padding() -> None:
    import os

    from analyzers.firmware.inspect.entropy import entropy_profile

    image = os.urandom(3 * 1024 * 1024) + b"\xff" * (1024 * 1024)
    points, block = entropy_profile(image)
    assert len(points) == 1024 and block * 1024 >= len(image)
    assert min(points[:760]) > 7.9 and points[-200:] == [0.0] * 200
    assert entropy_profile(b"") == ([], 0) and entropy_profile(b"ab")[0] == [1.0]


def test_reset_discards_a_failed_image() -> None:
    s = InspectionSession()
    _, members = hisilicon_members()
    for name, data in members.items():
        s.inspect_member(member(name, data), data)
    s.reset()  # the image failed before finish()
    report = inspect_image(s, b"next", {"etc/hosts": b"127.0.0.1 localhost\n"})
    assert ids(report) == set()
