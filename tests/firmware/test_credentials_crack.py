"""Credential checks compute real crypt hashes: known vendor hashes crack, strong ones stay info,
empty passwords and extra uid-0 accounts are findings, and hostile cost parameters are capped."""

from __future__ import annotations

import hashlib
import secrets

import pytest
from passlib.hash import bcrypt, des_crypt, md5_crypt, sha256_crypt, sha512_crypt

from analyzers.firmware.inspect import InspectionSession
from analyzers.firmware.inspect.credentials import (
    accounts_in_file,
    crack,
    load_weak_table,
    parse_line,
    sofia_hash,
)
from analyzers.firmware.inspect.engine import BUILTIN_RULE_DIR
from analyzers.firmware.model import Member, Severity


@pytest.fixture(scope="module")
def session() -> InspectionSession:
    return InspectionSession()


def member(path: str, data: bytes) -> Member:
    return Member(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def by_rule(findings, rule_id):
    return [f for f in findings if f.rule_id == rule_id]


@pytest.mark.parametrize(
    ("hash_", "password"),
    [("absxcfbgXtb3o", "xc3511"), ("ToCOv8qxP13qs", "hiklinux"), ("LSiuY7pOmZG2s", "123456")],
)
def test_catalogue_des_hashes_crack_to_their_documented_password(hash_: str, password: str) -> None:
    table = load_weak_table([BUILTIN_RULE_DIR])
    result = crack(hash_, table.candidates("root"))
    assert (result.scheme, result.password, result.checked) == ("des-crypt", password, True)


@pytest.mark.parametrize(
    ("value", "password"),
    [
        ("tlJwpbo6", ""),
        ("6QNMIQGe", "admin"),
        ("nTBCS19C", "123456"),
        ("OxhlwSG8", "tluafed"),
        ("k5c4xNGV", "I0TO5Wv9"),
    ],
)
def test_sofia_hash_matches_the_catalogue_vectors(value: str, password: str) -> None:
    assert sofia_hash(password) == value


def test_weak_table_has_the_mirai_list_and_vendor_roots() -> None:
    table = load_weak_table([BUILTIN_RULE_DIR])
    pairs = {(e.user, e.password) for e in table.entries}
    assert len([e for e in table.entries if "mirai" in e.source]) == 60
    assert {
        ("root", "xc3511"),
        ("root", "zlxx."),
        ("root", ""),
        ("root", "hiklinux"),
        ("default", "tluafed"),
    } <= pairs


@pytest.mark.parametrize(
    ("scheme", "handler"),
    [("md5-crypt", md5_crypt), ("sha256-crypt", sha256_crypt), ("sha512-crypt", sha512_crypt)],
)
def test_modular_crypt_weak_password_in_shadow_is_high(session, scheme, handler) -> None:
    h = handler.hash("vizxv", rounds=5000) if handler is not md5_crypt else handler.hash("vizxv")
    shadow = f"root:{h}:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n".encode()
    findings = session.inspect_member(member("rootfs!/etc/shadow", shadow), shadow)
    weak = by_rule(findings, "CW-FW-CRED-101")
    assert len(weak) == 1 and weak[0].severity == Severity.HIGH
    assert "root / vizxv" in weak[0].message and scheme in weak[0].message
    assert weak[0].offset == 0 and weak[0].path == "rootfs!/etc/shadow"


def test_strong_sha512_hash_is_reported_at_info_only(session) -> None:
    strong = sha512_crypt.hash(secrets.token_urlsafe(32), rounds=5000)
    passwd = f"root:{strong}:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n".encode()
    findings = session.inspect_member(member("etc/passwd", passwd), passwd)
    assert findings, "a hard-coded hash is still inventory"
    assert all(f.severity <= Severity.INFO for f in findings)
    assert by_rule(findings, "CW-FW-CRED-104")


def test_user_name_as_password_is_cracked(session) -> None:
    line = f"operator:{des_crypt.hash('operator')}:100:100::/:/bin/sh\n".encode()
    findings = session.inspect_member(member("etc/passwd", line), line)
    assert "operator / operator" in by_rule(findings, "CW-FW-CRED-101")[0].message


def test_empty_password_and_extra_uid0(session) -> None:
    passwd = (
        b"root::0:0:root:/root:/bin/sh\n"
        b"toor:x:0:0:backdoor:/root:/bin/sh\n"
        b"guest::1000:1000::/home/guest:/bin/false\n"
        b"# comment line\nnot a passwd line\n"
    )
    findings = session.inspect_member(member("etc/passwd", passwd), passwd)
    empty = {f.message.split("'")[1]: f.severity for f in by_rule(findings, "CW-FW-CRED-102")}
    assert empty == {"root": Severity.HIGH, "guest": Severity.LOW}
    uid0 = by_rule(findings, "CW-FW-CRED-103")
    assert len(uid0) == 1 and "toor" in uid0[0].message and uid0[0].severity == Severity.MEDIUM


def test_passwd_line_embedded_in_a_binary_is_found_at_its_offset(session) -> None:
    line = b"root:absxcfbgXtb3o:0:0:root:/:/bin/sh"
    blob = b"\x7fELF" + bytes(range(256)) * 4 + b"\0" + line + b"\0" + b"\xff" * 100
    findings = session.inspect_member(member("usr/bin/Sofia", blob), blob)
    weak = by_rule(findings, "CW-FW-CRED-101")
    assert len(weak) == 1 and weak[0].offset == blob.index(line)
    assert "root / xc3511" in weak[0].message and weak[0].evidence == line.decode()
    # the same hash inside a passwd line must not also trip the "hash outside passwd" rule
    assert not by_rule(findings, "CW-FW-CRED-003")


def test_sofia_config_with_empty_admin_password(session) -> None:
    cfg = (
        b'{ "Users" : [ { "Name" : "admin", "Password" : "tlJwpbo6" }, '
        b'{ "Name" : "u", "Password" : "Zq3x9PbK" } ] }'
    )
    findings = session.inspect_member(member("mnt/mtd/Config/Account1", cfg), cfg)
    sofia = by_rule(findings, "CW-FW-CRED-106")
    assert len(sofia) == 1 and "empty password" in sofia[0].message
    assert sofia[0].offset == cfg.index(b'"Password" : "tlJwpbo6"')


def test_hostile_cost_parameters_are_capped_not_computed() -> None:
    slow = "$6$rounds=999999999$saltsalt$" + "A" * 86
    result = crack(slow, ["x"])
    assert not result.checked and "rounds" in result.note
    heavy_bcrypt = bcrypt.using(rounds=12).hash("x")
    assert not crack(heavy_bcrypt, ["x"]).checked


def test_malformed_hash_does_not_crash(session) -> None:
    data = b"root:$1$$:0:0::/:/bin/sh\nadmin:$6$salt$tooshort:0:0::/:/bin/sh\n"
    findings = session.inspect_member(member("etc/passwd", data), data)
    assert all(f.severity <= Severity.MEDIUM for f in findings)


def test_parse_line_rejects_noise() -> None:
    assert parse_line(b"root:x:0:admin", 0) is None  # /etc/group line
    assert parse_line(b"a:b:c:d:e:f:g", 0) is None
    assert parse_line(b"<b>:x:0:0::/:/bin/sh", 0) is None
    acc = parse_line(b"admin:$apr1$abcdefgh$0123456789abcdefghijkl", 0)
    assert acc is not None and acc.kind == "htpasswd"
    assert len(accounts_in_file(b"root:x:0:0:root:/root:/bin/sh\n\n\x00\xff\n")) == 1
