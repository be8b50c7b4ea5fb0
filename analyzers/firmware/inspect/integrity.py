"""Update integrity verdicts from the containers the unpacking layer recognised: how (and whether) the
image is signed, the Hikvision CN/EN region lock, version downgrades and known-vulnerable version
ranges.

Handlers report what the header says (ContainerInfo.handler/metadata/signature/encrypted); this
module judges it. Metadata keys are read defensively: a missing key means "unknown", never a crash.
Checksum mismatches and encrypted bodies are reported by the handlers themselves, so they only feed
the summary here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from analyzers.firmware.model import ContainerInfo, Finding, Severity

from .catalogue import builtin

HIKVISION = "hikvision_digicap"
DAHUA = "dahua_dh_zip"
XIONGMAI = "xiongmai_installdesc"
HIK_LANGUAGES = {1: "EN/multi-language", 2: "CN"}
# CVE-2017-7921: DS-2CD2xx2F-I series V5.2.0 build 140721 .. V5.4.0 build 160530 (indicators.md HK-02)
HK02_LOW, HK02_HIGH = (5, 2, 0, 140721), (5, 4, 0, 160530)


def parse_version(value: Any) -> tuple[int, ...] | None:
    """A comparable tuple from a version as handlers report it: int (Hikvision 0xMMmmBBBB), or text
    such as 'V5.4.0 build 160530', 'V2.800.0000000.5.R', '4.02.R11'. None when nothing numeric."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        if value in (0, 0xFFFFFFFF) or value < 0:
            return None
        return (value >> 24, (value >> 16) & 0xFF, value & 0xFFFF)
    text = str(value)
    m = re.search(r"(\d+(?:\.\d+)+)", text)
    if m is None:
        m = re.search(r"(\d+)", text)
        if m is None:
            return None
    parts = [int(p) for p in m.group(1).split(".")]
    build = re.search(r"build\s*(\d+)", text, re.IGNORECASE)
    if build:
        parts.append(int(build.group(1)))
    return tuple(parts)


def compare_versions(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = max(len(a), len(b))
    pa, pb = a + (0,) * (n - len(a)), b + (0,) * (n - len(b))
    return (pa > pb) - (pa < pb)


def _finding(
    rule_id: str,
    message: str,
    info: ContainerInfo,
    severity: Severity | None = None,
    vendor: str = "",
    evidence: str = "",
    cve: list[str] | None = None,
) -> Finding:
    rule = builtin(rule_id)
    return Finding(
        rule_id=rule_id,
        severity=rule.severity if severity is None else severity,
        message=message,
        path=info.path,
        offset=info.offset,
        evidence=evidence[:200],
        category="integrity",
        source="integrity",
        cve=cve or [],
        reference=f"indicators.md {rule.indicator}; firmware-formats.md",
        vendor=vendor,
    )


@dataclass(slots=True)
class IntegrityState:
    """Per-image accumulation of container verdicts, summarised by `summary()`."""

    containers: list[ContainerInfo] = field(default_factory=list)
    signed: bool | None = None
    signature: str = ""
    forgeable: bool = False
    unsigned_handlers: list[str] = field(default_factory=list)
    language: str | None = None
    region_lock_risk: bool = False
    version: str | None = None
    downgrade: bool | None = None
    encrypted: bool = False
    checksum_ok: bool | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self, installed_version: str | None) -> dict[str, Any]:
        return {
            "containers": list(dict.fromkeys(c.handler for c in self.containers)),  # distinct, in order
            "signed": self.signed,
            "signature": self.signature or ("none" if self.signed is False else "unknown"),
            "forgeable": self.forgeable,
            "unsigned": sorted(set(self.unsigned_handlers)),
            "language": self.language,
            "region_lock_risk": self.region_lock_risk,
            "version": self.version,
            "installed_version": installed_version,
            "downgrade": self.downgrade,
            "encrypted": self.encrypted,
            "checksums_ok": self.checksum_ok,
            "notes": list(self.notes),
        }


def judge_container(
    info: ContainerInfo, state: IntegrityState, installed_version: str | None
) -> list[Finding]:
    state.containers.append(info)
    meta = info.metadata if isinstance(info.metadata, dict) else {}
    findings: list[Finding] = []
    if info.encrypted:
        state.encrypted = True
    for key, value in meta.items():
        if "crc" in key.lower() or "checksum_ok" in key.lower():
            if value is False:
                state.checksum_ok = False
            elif value is True and state.checksum_ok is None:
                state.checksum_ok = True
    handler = info.handler
    if handler == HIKVISION:
        findings.extend(_hikvision(info, meta, state))
    elif handler == DAHUA:
        findings.extend(_dahua(info, meta, state))
    elif handler == XIONGMAI:
        state.unsigned_handlers.append(handler)
        if state.signed is None:
            state.signed, state.signature = False, "none (Xiongmai packages are unsigned by design)"
        desc = meta.get("install_desc")
        if isinstance(desc, dict) and desc.get("skip_check"):
            # the OpenIPC/coupler generator writes SkipCheck: probably a community-built or modified package
            state.notes.append("InstallDesc SkipCheck: device checks disabled, likely a modified package")
        findings.append(
            _finding(
                "CW-FW-INTEG-003",
                "Xiongmai update package carries no signature (by design): the device installs any "
                "package with a matching InstallDesc",
                info,
                vendor="xiongmai",
            )
        )
    version = meta.get("version_text") or meta.get("version") or meta.get("software_version")
    if handler not in (HIKVISION, DAHUA, XIONGMAI):
        version = meta.get("firmware_version")  # generic containers: only an explicit firmware version
    if version is not None:
        findings.extend(_version_checks(info, version, state, installed_version))
    return findings


def _hikvision(info: ContainerInfo, meta: dict[str, Any], state: IntegrityState) -> list[Finding]:
    findings: list[Finding] = []
    names = [f.get("name") for f in meta.get("files", []) if isinstance(f, dict)]
    has_secpls = "_cfgUpgSecPls" in names or "_cfgUpgSecPls" in info.signature
    magic = str(meta.get("magic", ""))
    if info.encrypted and magic == "02KH":
        # IPC G0: U-Boot RSA-verifies key-ladder-encrypted components; nothing forgeable to report
        state.signed = True if state.signed is None else state.signed
        state.signature = state.signature or "hikvision-02KH (encrypted; verified by U-Boot, not checkable)"
    else:
        state.signed = has_secpls
        state.forgeable = True
        state.signature = info.signature or (
            "hikvision-_cfgUpgSecPls (forgeable)" if has_secpls else "hikvision-byte-checksum (forgeable)"
        )
        how = (
            "signed with _cfgUpgSecPls, whose AES passphrase is public and whose RSA check is a stub"
            if has_secpls
            else "protected only by byte-sum checksums (no signature file)"
        )
        findings.append(
            _finding(
                "CW-FW-INTEG-001",
                f"Hikvision update is {how}: anyone can modify and re-sign it, so a device cannot tell a "
                "tampered image from a genuine one",
                info,
                vendor="hikvision",
                evidence=info.signature,
            )
        )
    language = meta.get("language")
    if isinstance(language, int):
        name = HIK_LANGUAGES.get(language)
        state.language = name or f"unknown({language})"
        if language == 2:
            state.region_lock_risk = True
            findings.append(
                _finding(
                    "CW-FW-INTEG-004",
                    "CN-region image (header language byte 2). An EN/multi-language device rejects it "
                    "('language mismatch'); forcing it on, or cross-flashing a grey-market CN device, can "
                    "leave the camera unbootable. Only install it on a CN-region device.",
                    info,
                    vendor="hikvision",
                    evidence="language=2 (CN)",
                )
            )
        elif name is None:
            findings.append(
                _finding(
                    "CW-FW-INTEG-005",
                    f"Unknown language/region value {language} in the Hikvision header (expected 1 = EN or "
                    "2 = CN): the image may not be meant for this device",
                    info,
                    vendor="hikvision",
                    evidence=f"language={language}",
                )
            )
    return findings


def _dahua(info: ContainerInfo, meta: dict[str, Any], state: IntegrityState) -> list[Finding]:
    sign = meta.get("sign_img")
    if sign is None:
        sign = meta.get("signed")
    if sign is True:
        state.signed = True
        state.signature = info.signature or "dahua-sign.img (present; verification not checked)"
        return []
    if sign is False or info.signature == "none":
        state.unsigned_handlers.append(info.handler)
        if state.signed is None:
            state.signed, state.signature = False, "none (no sign.img)"
        return [
            _finding(
                "CW-FW-INTEG-002",
                "Dahua update package without sign.img: nothing ties the image to the vendor",
                info,
                vendor="dahua",
                evidence="sign.img absent",
            )
        ]
    return []


def _version_checks(
    info: ContainerInfo, version: Any, state: IntegrityState, installed_version: str | None
) -> list[Finding]:
    findings: list[Finding] = []
    parsed = parse_version(version)
    if parsed is None:
        return findings
    text = str(version) if not isinstance(version, int) else ".".join(map(str, parsed))
    state.version = state.version or text
    if installed_version:
        current = parse_version(installed_version)
        if current is not None:
            cmp = compare_versions(parsed, current)
            state.downgrade = cmp < 0 if state.downgrade is None else (state.downgrade or cmp < 0)
            if cmp < 0:
                findings.append(
                    _finding(
                        "CW-FW-INTEG-006",
                        f"Version downgrade: image {text} is older than the installed {installed_version}; "
                        "installing it can re-open vulnerabilities fixed since (rollback)",
                        info,
                        evidence=f"image {text} < installed {installed_version}",
                    )
                )
    if info.handler == HIKVISION and len(parsed) >= 3:
        low = HK02_LOW if len(parsed) >= 4 else HK02_LOW[:3]
        high = HK02_HIGH if len(parsed) >= 4 else HK02_HIGH[:3]
        if (
            compare_versions(parsed[: len(low)], low) >= 0
            and compare_versions(parsed[: len(high)], high) <= 0
        ):
            findings.append(
                _finding(
                    "CW-FW-INTEG-009",
                    f"Hikvision firmware {text} is inside the CVE-2017-7921 range (V5.2.0 build 140721 to "
                    "V5.4.0 build 160530) for DS-2CD2xx2F-I series cameras (KEV-listed authentication "
                    "bypass); confirm the model",
                    info,
                    vendor="hikvision",
                    cve=["CVE-2017-7921"],
                    evidence=f"version {text}",
                )
            )
    return findings
