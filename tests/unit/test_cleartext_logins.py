"""Default-credential table, Sofia hash (firmware-formats.md section 9 vectors) and Basic auth."""

from __future__ import annotations

from pathlib import Path

import pytest

from analyzers.traffic.cleartext_logins import decode_basic, load_credentials, sofia_hash

TABLE = load_credentials()


@pytest.mark.parametrize(
    ("password", "digest"),
    [
        ("", "tlJwpbo6"),
        ("admin", "6QNMIQGe"),
        ("123456", "nTBCS19C"),
        ("tluafed", "OxhlwSG8"),
        ("I0TO5Wv9", "k5c4xNGV"),
    ],
)
def test_sofia_hash_vectors(password: str, digest: str) -> None:
    assert sofia_hash(password) == digest


def test_table_has_vendor_rows_and_the_mirai_list() -> None:
    mirai = [e for e in TABLE.entries if any("Mirai" in s for s in e.sources)]
    assert len(mirai) >= 58  # 60 pairs, some merged with vendor rows (root:xc3511, admin:admin ...)
    root = TABLE.match("root", "xc3511")
    assert root is not None and "xiongmai" in root.vendors and "generic" in root.vendors
    assert root.label == "default:root/xc3511"
    assert TABLE.match("root", "zlxx.") is not None  # trailing full stop kept
    assert TABLE.match("admin", "") is not None  # "(none)" is the empty password
    assert TABLE.match("root", "Zq9!long-passphrase") is None
    assert TABLE.match("nobody", "xc3511") is None  # pairs, not passwords alone


def test_sofia_lookup_and_universal_password() -> None:
    hit = TABLE.match_sofia("admin", "tlJwpbo6")
    assert hit is not None and hit.password == ""
    hidden = TABLE.match_sofia("default", "OxhlwSG8")
    assert hidden is not None and any("CVE-2018-17919" in s for s in hidden.sources)
    universal = TABLE.match_sofia("anyone", "k5c4xNGV")
    assert universal is not None and universal.universal and universal.severity == "critical"
    assert TABLE.match_sofia("admin", sofia_hash("not-a-default")) is None
    assert TABLE.match_sofia("guest", "tlJwpbo6") is None


def test_decode_basic() -> None:
    assert decode_basic("Basic YWRtaW46MTIzNDU=") == ("admin", "12345")
    assert decode_basic("basic   YWRtaW46") == ("admin", "")
    assert decode_basic("Basic YWRtaW4=") is None  # no colon
    assert decode_basic("Digest username=admin") is None
    assert decode_basic("Basic !!!") is None


def test_table_file_errors_name_the_entry(tmp_path: Path) -> None:
    p = tmp_path / "creds.yaml"
    p.write_text("credentials:\n  - {user: a}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"credentials\[0\]"):
        load_credentials(p)
