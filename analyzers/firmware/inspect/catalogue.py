"""Finding IDs produced by Python inspectors (not by a YARA rule), with their default severity.

YARA rules carry their own meta (rules/firmware/*.yar); the checks below need parsing or computing
(cracking a hash, reading a key, comparing versions, correlating several hits), so they live in
code. Together with the YARA rule IDs they form the bounded set of `rule` label values exported to
Prometheus and documented in docs/firmware-report.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from analyzers.firmware.model import Severity


@dataclass(frozen=True, slots=True)
class BuiltinRule:
    id: str
    severity: Severity  # default; some checks pick a lower/higher one with the reason in the message
    category: str
    indicator: str
    description: str


_RULES = (
    # credentials.py
    BuiltinRule(
        "CW-FW-CRED-101",
        Severity.HIGH,
        "credentials",
        "GEN-01/GEN-02",
        "Password hash reproduces a known default/weak password",
    ),
    BuiltinRule("CW-FW-CRED-102", Severity.HIGH, "credentials", "GEN-01", "Account with an empty password"),
    BuiltinRule(
        "CW-FW-CRED-103",
        Severity.MEDIUM,
        "credentials",
        "GEN-02",
        "Account other than root with uid 0 (root-equivalent)",
    ),
    BuiltinRule(
        "CW-FW-CRED-104",
        Severity.INFO,
        "credentials",
        "GEN-03",
        "Hard-coded password hash that is not in the weak-password table",
    ),
    BuiltinRule(
        "CW-FW-CRED-105",
        Severity.INFO,
        "credentials",
        "GEN-03",
        "Password hash not checked (unknown scheme or cost above the cap)",
    ),
    BuiltinRule(
        "CW-FW-CRED-106",
        Severity.HIGH,
        "credentials",
        "XM-04",
        "Xiongmai Sofia password field holds the hash of a weak/empty password",
    ),
    # crypto.py
    BuiltinRule(
        "CW-FW-KEY-101",
        Severity.HIGH,
        "crypto",
        "GEN-10",
        "Private key in the image (shared by every device running it)",
    ),
    BuiltinRule(
        "CW-FW-KEY-102",
        Severity.LOW,
        "crypto",
        "GEN-10",
        "Leaf certificate with a weak key or signature algorithm",
    ),
    BuiltinRule(
        "CW-FW-KEY-106", Severity.MEDIUM, "crypto", "GEN-10", "Pre-installed SSH authorized_keys entry"
    ),
    BuiltinRule(
        "CW-FW-KEY-900", Severity.HIGH, "crypto", "GEN-10", "Same private key found in several scanned images"
    ),
    # hashlist.py
    BuiltinRule("CW-FW-HASH-001", Severity.HIGH, "hashlist", "-", "Image SHA-256 is on the known-bad list"),
    BuiltinRule("CW-FW-HASH-002", Severity.HIGH, "hashlist", "-", "Member SHA-256 is on the known-bad list"),
    # integrity.py
    BuiltinRule(
        "CW-FW-INTEG-001",
        Severity.MEDIUM,
        "integrity",
        "HK-09",
        "Hikvision update signature is forgeable (or absent)",
    ),
    BuiltinRule(
        "CW-FW-INTEG-002", Severity.LOW, "integrity", "DH-15", "Dahua package without sign.img (unsigned)"
    ),
    BuiltinRule(
        "CW-FW-INTEG-003", Severity.INFO, "integrity", "XM-18", "Xiongmai package: unsigned by design"
    ),
    BuiltinRule(
        "CW-FW-INTEG-004",
        Severity.LOW,
        "integrity",
        "HK-15",
        "CN-region image (language byte 2): region-lock brick risk",
    ),
    BuiltinRule(
        "CW-FW-INTEG-005",
        Severity.LOW,
        "integrity",
        "HK-15",
        "Unknown language/region value in the image header",
    ),
    BuiltinRule(
        "CW-FW-INTEG-006",
        Severity.MEDIUM,
        "integrity",
        "-",
        "Version downgrade relative to the installed version",
    ),
    BuiltinRule(
        "CW-FW-INTEG-007", Severity.INFO, "integrity", "DH-16", "Encrypted container: contents not analysable"
    ),
    BuiltinRule("CW-FW-INTEG-008", Severity.LOW, "integrity", "-", "Container checksum (CRC) mismatch"),
    BuiltinRule(
        "CW-FW-INTEG-009",
        Severity.HIGH,
        "integrity",
        "HK-02",
        "Hikvision version inside the CVE-2017-7921 affected range",
    ),
    BuiltinRule(
        "CW-FW-INTEG-010",
        Severity.HIGH,
        "integrity",
        "XM-18/DH-15",
        "Unsigned package that the vendor cloud can push",
    ),
    # correlations in __init__.py
    BuiltinRule(
        "CW-FW-BRICK-900",
        Severity.HIGH,
        "bricking",
        "GEN-06/GEN-08",
        "Remote-bricking capable: flash-erase primitive plus a network-reachable upgrade handler",
    ),
    BuiltinRule(
        "CW-FW-UPGRADE-900",
        Severity.MEDIUM,
        "upgrade",
        "GEN-09",
        "Update code path without any signature verification artefact",
    ),
    BuiltinRule(
        "CW-FW-BACKDOOR-101",
        Severity.HIGH,
        "backdoor",
        "DH-04",
        "current_config directory inside the web root",
    ),
)

BUILTIN_RULES: dict[str, BuiltinRule] = {r.id: r for r in _RULES}


def builtin(rule_id: str) -> BuiltinRule:
    return BUILTIN_RULES[rule_id]
