"""Crypto material: private keys (PEM, DER, OpenSSH, dropbear; encrypted or not), certificates and SSH
public keys are parsed with `cryptography`, recorded with SHA-256 public-key fingerprints, and shared
private keys across images are flagged by cross_image."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from analyzers.firmware.inspect import InspectionSession, cross_image
from analyzers.firmware.model import ImageReport, Member, Severity

ENC, FMT, PUB = serialization.Encoding, serialization.PrivateFormat, serialization.PublicFormat


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def weak_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 1024)


def spki(key) -> str:
    return hashlib.sha256(key.public_key().public_bytes(ENC.DER, PUB.SubjectPublicKeyInfo)).hexdigest()


def member(path: str, data: bytes) -> Member:
    return Member(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def run(members: dict[str, bytes], image: bytes | None = None, path: str = "fw.bin") -> ImageReport:
    session = InspectionSession()
    image = image if image is not None else b"".join(members.values())
    report = ImageReport(path=path, size=len(image), sha256=hashlib.sha256(image).hexdigest())
    for name, data in members.items():
        report.findings.extend(session.inspect_member(member(name, data), data))
    session.finish(report, image)
    return report


def cert(subject_key, issuer_key, *, cn: str, issuer_cn: str | None = None, ca: bool = False, algo=None):
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn or cn)]))
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(issuer_key, algo or hashes.SHA256())


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + body


def sha1_resign(c: x509.Certificate, issuer_key: rsa.RSAPrivateKey) -> x509.Certificate:
    """The same certificate signed with SHA-1 (cryptography no longer signs with SHA-1, but old
    camera firmware is full of such certificates): swap the algorithm OID and re-sign the TBS."""
    sha256_rsa = bytes.fromhex("06092a864886f70d01010b")
    sha1_rsa = bytes.fromhex("06092a864886f70d010105")
    tbs = c.tbs_certificate_bytes.replace(sha256_rsa, sha1_rsa)
    signature = issuer_key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    algid = _der(0x30, sha1_rsa + b"\x05\x00")
    return x509.load_der_x509_certificate(_der(0x30, tbs + algid + _der(0x03, b"\x00" + signature)))


def test_unencrypted_pem_private_key_is_high_with_fingerprint(rsa_key) -> None:
    pem = rsa_key.private_bytes(ENC.PEM, FMT.TraditionalOpenSSL, serialization.NoEncryption())
    blob = b"\x7fELF....\0" + pem + b"\0tail"
    report = run({"usr/bin/httpd": blob})
    (key,) = report.keys
    assert key["private"] and key["type"] == "RSA" and key["bits"] == 2048 and not key["encrypted"]
    assert key["format"] == "pem-pkcs1" and key["offset"] == blob.index(b"-----BEGIN")
    assert key["fingerprint_sha256"] == spki(rsa_key)
    (finding,) = [f for f in report.findings if f.rule_id == "CW-FW-KEY-101"]
    assert finding.severity == Severity.HIGH and finding.path == "usr/bin/httpd"
    assert "-----BEGIN RSA PRIVATE KEY-----" in finding.evidence
    assert "MII" not in finding.evidence  # key material never goes into the evidence


def test_encrypted_pem_keys_are_medium_and_still_fingerprinted(rsa_key) -> None:
    pkcs8 = rsa_key.private_bytes(ENC.PEM, FMT.PKCS8, serialization.BestAvailableEncryption(b"pw"))
    legacy = rsa_key.private_bytes(
        ENC.PEM, FMT.TraditionalOpenSSL, serialization.BestAvailableEncryption(b"pw")
    )
    assert b"DEK-Info" in legacy
    report = run({"etc/ssl/a.key": pkcs8, "etc/ssl/b.key": legacy})
    keys = {k["path"]: k for k in report.keys}
    assert keys["etc/ssl/a.key"]["encrypted"] and keys["etc/ssl/b.key"]["encrypted"]
    assert keys["etc/ssl/b.key"]["type"] == "RSA"
    assert keys["etc/ssl/a.key"]["fingerprint_kind"] == "blob-sha256"
    sev = {f.path: f.severity for f in report.findings if f.rule_id == "CW-FW-KEY-101"}
    assert sev == {"etc/ssl/a.key": Severity.MEDIUM, "etc/ssl/b.key": Severity.MEDIUM}


def test_openssh_private_keys_plain_and_encrypted() -> None:
    plain_key = ed25519.Ed25519PrivateKey.generate()
    plain = plain_key.private_bytes(ENC.PEM, FMT.OpenSSH, serialization.NoEncryption())

    # an encrypted OpenSSH key stores its public half in clear: build one by the format's layout
    enc_key = ed25519.Ed25519PrivateKey.generate()
    pub_blob = base64.b64decode(enc_key.public_key().public_bytes(ENC.OpenSSH, PUB.OpenSSH).split()[1])

    def s(b: bytes) -> bytes:
        return len(b).to_bytes(4, "big") + b

    raw = (
        b"openssh-key-v1\0"
        + s(b"aes256-ctr")
        + s(b"bcrypt")
        + s(s(os.urandom(16)) + (16).to_bytes(4, "big"))
        + (1).to_bytes(4, "big")
        + s(pub_blob)
        + s(os.urandom(160))
    )
    body = base64.b64encode(raw)
    encrypted = (
        b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
        + b"\n".join(body[i : i + 70] for i in range(0, len(body), 70))
        + b"\n-----END OPENSSH PRIVATE KEY-----\n"
    )

    report = run({"etc/ssh/ssh_host_ed25519_key": plain, "root/.ssh/id_ed25519": encrypted})
    keys = {k["path"]: k for k in report.keys}
    assert keys["etc/ssh/ssh_host_ed25519_key"]["type"] == "Ed25519"
    assert keys["etc/ssh/ssh_host_ed25519_key"]["fingerprint_sha256"] == spki(plain_key)
    assert keys["root/.ssh/id_ed25519"]["encrypted"]
    # the public half makes the encrypted key comparable across images
    assert keys["root/.ssh/id_ed25519"]["fingerprint_sha256"] == spki(enc_key)


def test_der_ec_key_inside_a_binary(tmp_path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    der = key.private_bytes(ENC.DER, FMT.TraditionalOpenSSL, serialization.NoEncryption())
    blob = os.urandom(3000) + der + os.urandom(3000)
    report = run({"usr/lib/libcloud.so": blob})
    matching = [k for k in report.keys if k["fingerprint_sha256"] == spki(key)]
    assert matching and matching[0]["format"] == "der" and matching[0]["curve"] == "secp384r1"
    assert matching[0]["offset"] == 3000


def test_dropbear_rsa_host_key(rsa_key) -> None:
    n = rsa_key.private_numbers()

    def s(b: bytes) -> bytes:
        return len(b).to_bytes(4, "big") + b

    def mp(i: int) -> bytes:
        return s(i.to_bytes((i.bit_length() + 8) // 8, "big"))

    blob = s(b"ssh-rsa") + mp(n.public_numbers.e) + mp(n.public_numbers.n) + mp(n.d) + mp(n.p) + mp(n.q)
    report = run({"etc/dropbear/dropbear_rsa_host_key": blob})
    (key,) = report.keys
    assert key["format"] == "dropbear" and key["fingerprint_sha256"] == spki(rsa_key)
    assert [f.severity for f in report.findings if f.rule_id == "CW-FW-KEY-101"] == [Severity.HIGH]


def test_certificates_inventory_and_weak_leaf(weak_rsa, rsa_key) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert(ca_key, ca_key, cn="Vendor Root CA", ca=True, algo=hashes.SHA256())
    leaf = cert(weak_rsa, ca_key, cn="ipcam.vendor.example", issuer_cn="Vendor Root CA", algo=hashes.SHA256())
    self_leaf = sha1_resign(cert(rsa_key, rsa_key, cn="self.example"), rsa_key)
    sha1_leaf = sha1_resign(cert(rsa_key, weak_rsa, cn="sha1.example", issuer_cn="Vendor Root CA"), weak_rsa)
    files = {
        f"etc/ssl/{c.subject.rfc4514_string()[3:]}.crt": c.public_bytes(ENC.PEM)
        for c in (ca, leaf, self_leaf, sha1_leaf)
    }
    report = run(files)
    certs = {c["subject"]: c for c in report.certificates}
    assert certs["CN=Vendor Root CA"]["is_ca"] and certs["CN=Vendor Root CA"]["self_signed"]
    assert certs["CN=ipcam.vendor.example"]["weak"] == ["RSA-1024 is below 2048 bits"]
    assert not certs["CN=ipcam.vendor.example"]["self_signed"]
    # a self-signature is never relied upon, so SHA-1 there is not a weakness; on an issued one it is
    assert certs["CN=self.example"]["self_signed"] and not certs["CN=self.example"]["weak"]
    assert certs["CN=sha1.example"]["weak"] == ["signed with SHA1"]
    weak = sorted(f.message for f in report.findings if f.rule_id == "CW-FW-KEY-102")
    assert len(weak) == 2 and "ipcam.vendor.example" in weak[0] and "sha1.example" in weak[1]
    assert {f.severity for f in report.findings if f.rule_id == "CW-FW-KEY-102"} == {Severity.LOW}
    # certificates alone are inventory, never above low
    assert max(f.severity for f in report.findings) <= Severity.LOW

    # the same certificates in one trust bundle are recorded but not reported (old roots are weak)
    bundle = run({"etc/ssl/certs/ca-bundle.crt": b"".join(files.values())})
    assert len(bundle.certificates) == 4 and sum(1 for c in bundle.certificates if c["weak"]) == 2
    assert not [f for f in bundle.findings if f.rule_id == "CW-FW-KEY-102"]


def test_private_key_is_linked_to_its_certificate(rsa_key) -> None:
    pem_key = rsa_key.private_bytes(ENC.PEM, FMT.PKCS8, serialization.NoEncryption())
    pem_cert = cert(rsa_key, rsa_key, cn="camera").public_bytes(ENC.PEM)
    report = run({"etc/ssl/server.pem": pem_cert + pem_key})
    (key,) = [k for k in report.keys if k["private"]]
    assert key["certificates"] == ["CN=camera"]


def test_ssh_public_keys_and_authorized_keys() -> None:
    k = ed25519.Ed25519PrivateKey.generate()
    line = k.public_key().public_bytes(ENC.OpenSSH, PUB.OpenSSH) + b" support@vendor\n"
    report = run({"root/.ssh/authorized_keys": b"no-pty " + line, "etc/ssh/host.pub": line})
    keys = {r["path"]: r for r in report.keys}
    assert keys["root/.ssh/authorized_keys"]["authorized_keys"]
    assert keys["etc/ssh/host.pub"]["comment"] == "support@vendor"
    assert all(not r["private"] for r in report.keys)
    auth = [f for f in report.findings if f.rule_id == "CW-FW-KEY-106"]
    assert (
        len(auth) == 1 and auth[0].path == "root/.ssh/authorized_keys" and auth[0].severity == Severity.MEDIUM
    )


def test_damaged_private_key_is_still_reported_from_its_marker(rsa_key) -> None:
    pem = rsa_key.private_bytes(ENC.PEM, FMT.PKCS8, serialization.NoEncryption())
    lines = pem.splitlines()
    damaged = b"\n".join([*lines[:5], b"!!!!garbage!!!!", *lines[-1:]]) + b"\n"
    report = run({"etc/key.pem": damaged})
    assert not report.keys
    (finding,) = [f for f in report.findings if f.rule_id == "CW-FW-KEY-001"]
    assert finding.severity == Severity.HIGH and "could not be parsed" in finding.message
    assert finding.evidence == "-----BEGIN PRIVATE KEY-----"  # no key material in the report


def test_cross_image_flags_a_shared_private_key(rsa_key) -> None:
    pem = rsa_key.private_bytes(ENC.PEM, FMT.PKCS8, serialization.NoEncryption())
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        ENC.PEM, FMT.PKCS8, serialization.NoEncryption()
    )
    a = run({"etc/ssl/key.pem": pem}, image=b"image-a" + pem, path="/fw/a.bin")
    b = run({"app/cert/key.pem": pem}, image=b"image-b" + pem, path="/fw/b.bin")
    c = run({"etc/ssl/key.pem": other}, image=b"image-c" + other, path="/fw/c.bin")
    cross_image([a, b, c])
    cross_image([a, b, c])  # idempotent
    for report, other_name in ((a, "b.bin"), (b, "a.bin")):
        shared = [f for f in report.findings if f.rule_id == "CW-FW-KEY-900"]
        assert len(shared) == 1 and other_name in shared[0].message and shared[0].severity == Severity.HIGH
        assert spki(rsa_key) in shared[0].evidence
    assert not [f for f in c.findings if f.rule_id == "CW-FW-KEY-900"]
    assert a.keys[0]["shared_with"] == ["/fw/b.bin"]


def test_same_image_scanned_twice_is_not_shared(rsa_key) -> None:
    pem = rsa_key.private_bytes(ENC.PEM, FMT.PKCS8, serialization.NoEncryption())
    a1 = run({"k.pem": pem}, image=b"same" + pem, path="/fw/a.bin")
    a2 = run({"k.pem": pem}, image=b"same" + pem, path="/copy/a.bin")
    cross_image([a1, a2])
    assert not [f for f in a1.findings + a2.findings if f.rule_id == "CW-FW-KEY-900"]


def test_publicly_known_key_is_info_inside_a_program_and_critical_as_a_key_file(tmp_path, rsa_key) -> None:
    (tmp_path / "known-keys.txt").write_text(f"{spki(rsa_key)} leaked vendor test key (example)\n")
    pem = rsa_key.private_bytes(ENC.PEM, FMT.TraditionalOpenSSL, serialization.NoEncryption())
    session = InspectionSession(extra_rule_dirs=[tmp_path])
    elf = b"\x7fELF" + b"\0" * 60 + pem
    in_program = session.inspect_member(member("usr/bin/selftest", elf), elf)
    as_file = session.inspect_member(member("etc/ssl/server.key", pem), pem)
    (p,) = [f for f in in_program if f.rule_id == "CW-FW-KEY-101"]
    (k,) = [f for f in as_file if f.rule_id == "CW-FW-KEY-101"]
    assert p.severity == Severity.INFO and "built-in test key" in p.message
    assert k.severity == Severity.CRITICAL and "leaked vendor test key" in k.message


def test_shipped_known_keys_list_parses() -> None:
    from analyzers.firmware.inspect.engine import BUILTIN_RULE_DIR
    from analyzers.firmware.inspect.hashlist import load_hash_lists

    lists = load_hash_lists([BUILTIN_RULE_DIR])
    assert len(lists.keys) >= 9 and all(len(k) == 64 for k in lists.keys)
    assert any("OpenSSL" in v for v in lists.keys.values())


def test_real_openssl_cli_speed_keys_are_known_test_keys() -> None:
    from pathlib import Path

    exe = Path("/usr/bin/openssl")
    if not exe.is_file():
        pytest.skip("no openssl CLI on this host")
    data = exe.read_bytes()
    findings = InspectionSession().inspect_member(member("usr/bin/openssl", data), data)
    keys = [f for f in findings if f.rule_id == "CW-FW-KEY-101"]
    assert keys, "the openssl CLI embeds its `speed` test keys"
    assert {f.severity for f in keys} == {Severity.INFO}
