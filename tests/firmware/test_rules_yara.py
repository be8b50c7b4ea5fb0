"""The shipped YARA rule set: every file compiles with YARA-X, every rule carries the full meta
contract, and every rule has a positive and a near-miss negative sample (the table below must cover
each shipped rule, so a new rule cannot land without samples)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yara_x
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.errors import UsageError
from analyzers.firmware.inspect.engine import BUILTIN_RULE_DIR, REQUIRED_META, compile_rules, load_rules
from analyzers.firmware.model import Severity

ID_RE = re.compile(r"CW-FW-[A-Z]+-\d{3}\Z")
ELF = b"\x7fELF\x01\x01\x01" + b"\x00" * 9


def elf(body: bytes) -> bytes:
    return ELF + b"\x02\x00\x28\x00" + b"\x00" * 28 + body


def _ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    import datetime as dt

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "camera.local")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1234)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )


def _dropbear_ed25519() -> bytes:
    def s(b: bytes) -> bytes:
        return len(b).to_bytes(4, "big") + b

    return s(b"ssh-ed25519") + s(bytes(range(64)))


def crypto_samples() -> dict[str, tuple[bytes, bytes]]:
    key = _ec_key()
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der_key = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    cert = _cert(key)
    pub_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ssh_pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return {
        "CW-FW-KEY-001": (
            b"junk\n" + pem_key,
            b"SSL_CTX_use_PrivateKey_file\0-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n",
        ),
        "CW-FW-KEY-002": (
            cert.public_bytes(serialization.Encoding.PEM),
            b"-----BEGIN CERTIFICATE-----\nshort\n-----END CERTIFICATE-----\n",
        ),
        "CW-FW-KEY-003": (pub_pem, b"-----BEGIN PUBLIC KEY-----\n\n-----END PUBLIC KEY-----\n"),
        "CW-FW-KEY-004": (ssh_pub + b" admin@vendor\n", b"ssh-rsa \n"),
        "CW-FW-KEY-005": (b"\0\0" + der_key + b"\0", b"\x30\x82\x01\x00\x02\x01\x05\x02\x82\x01\x01\x00"),
        "CW-FW-KEY-006": (
            b"\0" + cert.public_bytes(serialization.Encoding.DER),
            b"\x30\x82\x01\x00\x30\x82\x00\xf0\xa0\x03\x02\x01\x01",
        ),
        "CW-FW-KEY-007": (_dropbear_ed25519(), b"\0" + _dropbear_ed25519()),
    }


# rule id -> (positive sample, near-miss negative sample)
SAMPLES: dict[str, tuple[bytes, bytes]] = {
    # telnet.yar
    "CW-FW-TELNET-001": (b"#!/bin/sh\nmount -a\ntelnetd &\n", b"#!/bin/sh\n# telnetd &\necho telnetd\n"),
    "CW-FW-TELNET-002": (
        b"::sysinit:/etc/init.d/rcS\n::respawn:/usr/sbin/telnetd -F\n",
        b"::sysinit:/etc/init.d/rcS\n#::respawn:/usr/sbin/telnetd -F\n",
    ),
    "CW-FW-TELNET-003": (
        b"telnet  stream  tcp  nowait  root  /usr/sbin/telnetd  telnetd\n",
        b"# telnet stream tcp nowait root /usr/sbin/telnetd telnetd\n",
    ),
    "CW-FW-TELNET-004": (b"telnetd -p 60023 -l /bin/login &\n", b"telnetd -p 23 &\n"),
    "CW-FW-TELNET-005": (
        b'if [ "$DEBUG" = 1 ]; then telnetd; fi\n',
        b'if [ -x /usr/sbin/telnetd ]; then echo "telnetd available"; fi\n',
    ),
    "CW-FW-TELNET-006": (b"/usr/sbin/telnetd -l /bin/sh &\n", b"/usr/sbin/telnetd -l /bin/login &\n"),
    "CW-FW-TELNET-007": (elf(b"\0telnetd -p 2323 &\0"), elf(b"\0sh\0telnetd\0tftp\0")),
    "CW-FW-TELNET-008": (b"/usr/sbin/dropbear -R -B\n", b"/usr/sbin/dropbear -R -p 22\n"),
    "CW-FW-TELNET-009": (b"/sbin/dropbear -R -I 1800\n", b"# /sbin/dropbear -R -I 1800\n"),
    "CW-FW-TELNET-010": (
        b"ttyS000::respawn:/sbin/getty -L ttyS000 115200 vt100 -n root\n",
        b"ttyS000::respawn:/sbin/getty -L ttyS000 115200 vt100\n",
    ),
    "CW-FW-TELNET-011": (
        b"<url>/ISAPI/System/Network/telnetd</url>",
        b"<url>/ISAPI/System/Network/interfaces</url>",
    ),
    # maintenance.yar
    "CW-FW-MAINT-001": (b"\0OpenTelnet:OpenOnce\0", b"\0OpenTelnet\0randNum:\0verify:OK\0"),
    "CW-FW-MAINT-002": (b"login(%s, ******, Console, address:%s)", b"login(%s, ******, Web, address:%s)"),
    "CW-FW-MAINT-003": (b"\0TelnetDebugOpen\0TelnetDebugClose\0", b"\0TelnetDebugOpen\0"),
    "CW-FW-MAINT-004": (b"killall -USR1 interDebug\n", b"killall -HUP interDebug\n"),
    "CW-FW-MAINT-005": (
        b"[ -f /mnt/custom/extapp.sh ] && sh /mnt/custom/extapp.sh &\n",
        b"/mnt/custom/data/x.json",
    ),
    "CW-FW-MAINT-006": (b"\0macGuarder\0", b"\0dvrboxes\0"),
    # backdoors.yar
    "CW-FW-BACKDOOR-001": (b"GET /System/configurationFile?auth=YWRtaW46MTEK", b"auth=YWRtaW46MTIK"),
    "CW-FW-BACKDOOR-002": (b"echo -n P::0:0:W>N", b"echo -n P:x:1000:1000:W>N"),
    "CW-FW-BACKDOOR-003": (b"\0b4ckd00r_enable\0", b"\0background\0back door\0"),
    "CW-FW-BACKDOOR-004": (b"xmlset_roodkcableoj28840ybtide", b"xmlset_roodkcable"),
    "CW-FW-BACKDOOR-005": (b"\0I0TO5Wv9\0", b"\0I0TO5Wv8\0"),
    "CW-FW-BACKDOOR-006": (b'"Name" : "default", "Password" : "OxhlwSG8"', b'"Name" : "default"'),
    "CW-FW-BACKDOOR-007": (
        b'alias.url += ( "/current_config" => "/mnt/mtd/Config" )',
        b"/mnt/mtd/Config/current_configuration.bak",
    ),
    "CW-FW-BACKDOOR-008": (b"\0version 2.608.0000.0\0", b"\0version 2.609.0000.0\0"),
    "CW-FW-BACKDOOR-009": (b"\0execSystemCmd\0", b"\0execSystem\0"),
    # credentials.yar
    "CW-FW-CRED-001": (b"root:LSiuY7pOmZG2s:0:0:x:/:/bin/sh", b"root:x:0:admin\n"),
    "CW-FW-CRED-002": (b'"Password" : "tlJwpbo6"', b'"Password" : ""'),
    "CW-FW-CRED-003": (b"\0absxcfbgXtb3o\0", b"root:absxcfbgXtb3o:0:0:root:/:/bin/sh\n"),
    "CW-FW-CRED-004": (b'{ "Name" : "888888", "Password" : "x" }', b'{ "Name" : "8888888" }'),
    "CW-FW-CRED-005": (b"ssid=cam\nwpa_passphrase=SuperSecret123\n", b"ssid=cam\nwpa_passphrase=$PSK\n"),
    "CW-FW-CRED-006": (
        b"GET http://ddns.example.com/upd.asp?username=%s&userpwd=%s",
        b"GET https://ddns.example.com/upd?username=%s&token=%s",
    ),
    # bricking.yar
    "CW-FW-BRICK-001": (b"#!/bin/sh\nflash_eraseall /dev/mtd3\n", elf(b"\0flash_eraseall\0nandwrite\0")),
    "CW-FW-BRICK-002": (b"mtd -r write /tmp/fw.bin firmware\n", b"echo mtd partitions\n"),
    "CW-FW-BRICK-003": (
        b"dd if=/tmp/rootfs.img of=/dev/mtdblock2 bs=64k\n",
        b"dd if=/dev/mtdblock2 of=/tmp/b.img\n",
    ),
    "CW-FW-BRICK-004": (b"cat /dev/urandom > /dev/mtdblock0\n", b"cat /dev/urandom > /tmp/noise\n"),
    "CW-FW-BRICK-005": (
        b"sysctl -w net.ipv4.tcp_timestamps=0\nsysctl -w kernel.threads-max=1\n",
        b"sysctl -w net.ipv4.tcp_timestamps=0\n",
    ),
    "CW-FW-BRICK-006": (b"bootcmd=sf probe 0; sf erase 0x50000 0x300000\n", b"bootcmd=sf probe 0\n"),
    # upgrade.yar
    "CW-FW-UPGRADE-001": (b"POST /upgrade_firmware.cgi", b"GET /get_status.cgi"),
    "CW-FW-UPGRADE-002": (b"https://%s/api/CloudUpgrader/check", b'"CloudUpgradeInfo"'),
    "CW-FW-UPGRADE-003": (b"/ISAPI/System/onlineUpgrade/downloadPackage", b"/ISAPI/System/upgradeStatus"),
    "CW-FW-UPGRADE-004": (b'"NetWork.OnlineUpgrade" : { "AutoCheck" : 1 }', b'"NetWork.Nat"'),
    "CW-FW-UPGRADE-005": (b"upgrade_info_7db780a713a4.txt", b"upgrade_info.txt"),
    "CW-FW-UPGRADE-006": (b"HKVS # ", b"U-Boot # "),
    "CW-FW-UPGRADE-007": (b"h@k8807H$Z5998", b"HangZhou"),
    "CW-FW-UPGRADE-008": (b"\0UpgradeFirmWare\0", b"\0Upgrade\0"),
    "CW-FW-UPGRADE-009": (b"\0RSA_verify\0", b"\0RSA_sign\0"),
    # endpoints.yar
    "CW-FW-ENDPOINT-001": (b"litedev.hik-connect.com", b"www.hikvision.com"),
    "CW-FW-ENDPOINT-002": (b"<provider>HiDDNS</provider>", b"<provider>DynDNS</provider>"),
    "CW-FW-ENDPOINT-003": (b"www.easy4ipcloud.com", b"www.easy4ip.org"),
    "CW-FW-ENDPOINT-004": (b"T2UServer.Enable=true", b"T2Userver"),
    "CW-FW-ENDPOINT-005": (b"pub-cfg.secu100.net", b"upgrade.secu100.net"),
    "CW-FW-ENDPOINT-006": (
        b"nameserver 114.114.114.114\n",
        b"nameserver 114.114.114.1145\nnameserver 8.8.8.8\n",
    ),
    "CW-FW-ENDPOINT-007": (b"www.9299.org", b"www.9299.com"),
    # keys.yar (the generated ones are added in crypto_samples())
    "CW-FW-KEY-008": (
        b"-----BEGIN PGP PRIVATE KEY BLOCK-----\nxyz\n-----END PGP PRIVATE KEY BLOCK-----\n",
        b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n",
    ),
    "CW-FW-KEY-009": (b"-----BEGIN AES KEY-----", b"-----BEGIN AES-----"),
    "CW-FW-KEY-010": (
        bytes.fromhex("279977f62f6cfd2d91cd75b889ce0c9a"),
        bytes.fromhex("279977f62f6cfd2d91cd75b889ce0c9b"),
    ),
}


@pytest.fixture(scope="module")
def samples() -> dict[str, tuple[bytes, bytes]]:
    return {**SAMPLES, **crypto_samples()}


@pytest.fixture(scope="module")
def ruleset():
    return load_rules()


def test_every_rule_file_compiles_on_its_own() -> None:
    files = sorted(BUILTIN_RULE_DIR.glob("*.yar"))
    assert len(files) >= 7
    for path in files:
        compiler = yara_x.Compiler(error_on_slow_pattern=True)
        compiler.add_source(path.read_text(encoding="utf-8"), origin=str(path))
        assert list(compiler.build()), f"{path.name} has no rules"


def test_every_rule_has_full_meta_and_a_unique_stable_id() -> None:
    ids: dict[str, str] = {}
    for path in sorted(BUILTIN_RULE_DIR.glob("*.yar")):
        compiler = yara_x.Compiler()
        compiler.add_source(path.read_text(encoding="utf-8"))
        for rule in compiler.build():
            meta = dict(rule.metadata)
            missing = [k for k in REQUIRED_META if k not in meta]
            assert not missing, f"{path.name}:{rule.identifier} lacks {missing}"
            assert ID_RE.match(str(meta["id"])), f"{rule.identifier}: bad id {meta['id']!r}"
            Severity.parse(str(meta["severity"]))
            assert str(meta["description"]).strip() and str(meta["reference"]).strip()
            assert str(meta["vendor"]).strip()
            for cve in filter(None, (c.strip() for c in str(meta["cve"]).split(","))):
                assert re.fullmatch(r"CVE-\d{4}-\d{4,}", cve), cve
            if "silent" in rule.tags:
                assert str(meta.get("role", "")).strip(), f"silent rule {meta['id']} must feed a role"
            assert meta["id"] not in ids, f"{meta['id']} in {ids.get(str(meta['id']))} and {path.name}"
            ids[str(meta["id"])] = path.name
    assert len(ids) >= 60


def test_sample_table_covers_every_shipped_rule(ruleset, samples) -> None:
    shipped = set(ruleset.by_id())
    assert shipped == set(samples), (
        f"rules without samples: {sorted(shipped - set(samples))}; "
        f"samples without rules: {sorted(set(samples) - shipped)}"
    )


def test_each_rule_hits_its_positive_and_misses_its_negative(ruleset, samples) -> None:
    failures = []
    for rule_id, (positive, negative) in sorted(samples.items()):
        pos_ids = {h.meta.id for h in ruleset.scan(positive)}
        neg_ids = {h.meta.id for h in ruleset.scan(negative)}
        if rule_id not in pos_ids:
            failures.append(f"{rule_id}: positive sample not matched")
        if rule_id in neg_ids:
            failures.append(f"{rule_id}: negative sample matched")
    assert not failures, "\n".join(failures)


def test_busybox_applet_table_is_not_a_telnet_or_bricking_finding(ruleset) -> None:
    # a busybox binary names telnetd, flash_eraseall, nandwrite and dropbear as applets
    applets = b"\0".join(
        [
            b"ash",
            b"dropbear",
            b"flash_eraseall",
            b"flashcp",
            b"httpd",
            b"nandwrite",
            b"telnetd",
            b"tftp",
            b"udhcpc",
        ]
    )
    usage = b"telnetd [OPTIONS]\n\n\t-p PORT\tPort to listen on\n\t-l LOGIN\tExec LOGIN on connect\0"
    blob = elf(b"\0" + applets + b"\0" + usage + b"\0")
    assert {h.meta.id for h in ruleset.scan(blob) if not h.meta.silent} == set()


def test_match_offsets_and_evidence_point_at_the_line(ruleset) -> None:
    data = b"#!/bin/sh\nexport PATH=/bin\ntelnetd -p 9999 &\nsleep 1\n"
    hit = next(h for h in ruleset.scan(data) if h.meta.id == "CW-FW-TELNET-001")
    finding = hit.to_finding("etc/init.d/rcS", data)
    assert finding.offset == data.index(b"telnetd")
    assert finding.evidence == "telnetd -p 9999 &"
    assert finding.severity == Severity.HIGH and finding.source == "yara"
    assert finding.reference and finding.category == "telnet"


def test_user_rule_directory_adds_rules(tmp_path: Path) -> None:
    (tmp_path / "site.yar").write_text(
        'rule site_001 { meta: id = "SITE-001" severity = "critical" vendor = "acme" cve = "" '
        'reference = "internal" description = "ACME debug backdoor" '
        'strings: $a = "ACME_DEBUG_SHELL" condition: $a }\n'
    )
    (tmp_path / "lazy.yar").write_text('rule lazy_one { strings: $a = "LAZYMARK" condition: $a }\n')
    rs = load_rules([tmp_path])
    by_id = rs.by_id()
    assert by_id["SITE-001"].severity == Severity.CRITICAL
    # user rules without meta still get a stable id and a default severity
    assert by_id["USER-lazy_one"].severity == Severity.MEDIUM
    assert {h.meta.id for h in rs.scan(b"xx ACME_DEBUG_SHELL LAZYMARK")} >= {"SITE-001", "USER-lazy_one"}
    assert len(by_id) == len(load_rules().by_id()) + 2


def test_broken_user_rule_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yar"
    bad.write_text("rule broken { condition: $nope }\n")
    with pytest.raises(UsageError, match=r"broken\.yar"):
        compile_rules([BUILTIN_RULE_DIR, tmp_path])


def test_duplicate_rule_id_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "dup.yar").write_text(
        'rule dup { meta: id = "CW-FW-TELNET-001" severity = "low" strings: $a = "zz" condition: $a }\n'
    )
    with pytest.raises(UsageError, match="CW-FW-TELNET-001"):
        compile_rules([BUILTIN_RULE_DIR, tmp_path])


def test_compiled_rules_are_cached_per_process() -> None:
    assert load_rules() is load_rules()


def test_report_doc_lists_every_rule_id(ruleset) -> None:
    from analyzers.firmware.inspect.catalogue import BUILTIN_RULES

    doc = (BUILTIN_RULE_DIR.parents[1] / "docs" / "firmware-report.md").read_text(encoding="utf-8")
    missing = sorted(i for i in {*ruleset.by_id(), *BUILTIN_RULES} if f"`{i}`" not in doc)
    assert not missing, f"docs/firmware-report.md lacks {missing}"
