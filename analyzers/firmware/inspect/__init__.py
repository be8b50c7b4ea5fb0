"""Firmware inspection: YARA-X rules, credentials, crypto material, hash lists and update integrity.

The unpacking layer drives one InspectionSession per image (or reuses one for several images, one
after the other): `inspect_member` for every regular file at any depth (and the whole image, path
""), `inspect_container` for every recognised container, then `finish` fills the report's keys,
certificates, integrity summary, hash verdict and entropy profile and adds correlated findings.
`cross_image` runs once over all reports of a scan.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from analyzers.firmware.model import ContainerInfo, Finding, ImageReport, Member, Severity

from .catalogue import BUILTIN_RULES, builtin
from .credentials import (
    accounts_at,
    accounts_in_file,
    check_accounts,
    check_sofia,
    is_passwd_file,
    load_weak_table,
)
from .engine import BUILTIN_RULE_DIR, RuleHit, RuleSet, load_rules
from .entropy import entropy_profile
from .hashlist import load_hash_lists
from .integrity import IntegrityState, judge_container

__all__ = ["BUILTIN_RULES", "InspectionSession", "cross_image", "load_rules"]

MIN_SCAN_BYTES = 4  # nothing meaningful fits in fewer bytes; skips empty/placeholder files cheaply
NETWORK_ROLES = ("network_upgrade", "cloud_upgrade")
_WEB_DIRS = frozenset({"web", "www", "htdocs", "html", "webs", "wwwroot", "web_root", "webroot"})
_SIGNATURE_MEMBERS = frozenset({"sign.img", "_cfgUpgSecPls"})


class InspectionSession:
    """Inspectors for one image at a time; thread-safe for concurrent inspect_member calls."""

    def __init__(
        self, extra_rule_dirs: list[Path] | None = None, installed_version: str | None = None
    ) -> None:
        extra = [Path(d) for d in (extra_rule_dirs or [])]
        self.rule_dirs = [BUILTIN_RULE_DIR, *extra]
        self.rules: RuleSet = load_rules(extra)
        self.weak = load_weak_table(self.rule_dirs)
        self.hashes = load_hash_lists(self.rule_dirs)
        self.installed_version = installed_version
        self._lock = threading.Lock()
        self._reset()

    def reset(self) -> None:
        """Forget the current image's state without a report (call it when an image fails before
        `finish`, so nothing leaks into the next image scanned with this session)."""
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        self._roles: dict[str, list[tuple[str, str]]] = defaultdict(list)  # role -> [(rule id, path)]
        self._keys: list[dict[str, Any]] = []
        self._certs: list[dict[str, Any]] = []
        self._integrity = IntegrityState()
        self._current_config_reported = False

    # -- per member --------------------------------------------------------------------------------

    def inspect_member(self, member: Member, data: bytes, hits: list[RuleHit] | None = None) -> list[Finding]:
        """Findings for one member; `hits` are its YARA-X matches when they were computed elsewhere
        (a helper process, see offload.py), else the rules are run here."""
        if not isinstance(data, bytes):  # YARA-X scans bytes only; accept memoryview/bytearray too
            data = bytes(data)
        path = member.path
        findings: list[Finding] = []
        if path and member.sha256 and member.sha256.lower() in self.hashes.bad:
            rule = builtin("CW-FW-HASH-002")
            findings.append(
                Finding(
                    rule_id=rule.id,
                    severity=rule.severity,
                    message=f"Member is on the known-bad list: {self.hashes.bad[member.sha256.lower()]}",
                    path=path,
                    evidence=f"sha256 {member.sha256.lower()}",
                    category="hashlist",
                    source="hashlist",
                    reference="rules/firmware/known-bad.txt",
                )
            )
        findings.extend(self._path_checks(path))
        if len(data) < MIN_SCAN_BYTES:
            return findings
        if hits is None:
            hits = self.rules.scan(data)
        passwd_offsets: list[int] = []
        sofia_offsets: list[int] = []
        crypto_hits: list[RuleHit] = []
        roles: list[tuple[str, str, str]] = []
        for hit in hits:
            for role in hit.meta.roles:
                roles.append((role, hit.meta.id, path))
            if "crypto" in hit.meta.roles:
                crypto_hits.append(hit)
                continue
            if "passwd" in hit.meta.roles:
                passwd_offsets.extend(off for _pid, off, _len in hit.matches)
            if "sofia" in hit.meta.roles:
                sofia_offsets.extend(off for _pid, off, _len in hit.matches)
            if not hit.meta.silent:
                findings.append(hit.to_finding(path, data))
        if is_passwd_file(path):
            findings.extend(check_accounts(accounts_in_file(data), path, self.weak))
        elif passwd_offsets:
            findings.extend(check_accounts(accounts_at(data, passwd_offsets), path, self.weak))
        if sofia_offsets:
            findings.extend(check_sofia(data, sofia_offsets, path, self.weak))
        keys: list[dict[str, Any]] = []
        certs: list[dict[str, Any]] = []
        if crypto_hits:
            # imported on first use: `cryptography` costs ~0.2 s of start-up, and most members hold
            # no key or certificate
            from .crypto import inspect_crypto

            result = inspect_crypto(path, data, crypto_hits)
            self._judge_known_keys(result.keys, result.findings, data)
            findings.extend(result.findings)
            keys, certs = result.keys, result.certificates
        with self._lock:
            for role, rule_id, where in roles:
                self._roles[role].append((rule_id, where))
            self._keys.extend(keys)
            self._certs.extend(certs)
        return findings

    def _judge_known_keys(self, keys: list[dict[str, Any]], findings: list[Finding], data: bytes) -> None:
        """A publicly known private key inside a program is that program's built-in test key (info);
        as a key file or config value it means the device uses a key everybody has (critical)."""
        in_program = data[:4] == b"\x7fELF" or data[:8] == b"!<arch>\n"  # executables, .so, static .a
        for key in keys:
            label = self.hashes.keys.get(str(key.get("fingerprint_sha256", "")))
            if not key.get("private") or label is None:
                continue
            key["known_as"] = label
            for f in findings:
                if f.rule_id == "CW-FW-KEY-101" and f.path == key["path"] and f.offset == key["offset"]:
                    if in_program:
                        f.severity = Severity.INFO
                        f.message += f"; publicly known built-in test key ({label}), not a device identity"
                    else:
                        f.severity = Severity.CRITICAL
                        f.message += f"; this key is PUBLIC ({label}): anyone can impersonate the device"

    def _path_checks(self, path: str) -> list[Finding]:
        if not path:
            return []
        parts = [p for p in re.split(r"[/!]+", path) if p]
        findings: list[Finding] = []
        if parts and parts[-1] in _SIGNATURE_MEMBERS:
            with self._lock:
                self._roles["signature"].append(("member:" + parts[-1], path))
        dirs = parts[:-1]
        if "current_config" in dirs:
            idx = dirs.index("current_config")
            if any(p.lower() in _WEB_DIRS for p in dirs[:idx]):
                with self._lock:
                    report = not self._current_config_reported
                    self._current_config_reported = True
                if report:
                    rule = builtin("CW-FW-BACKDOOR-101")
                    findings.append(
                        Finding(
                            rule_id=rule.id,
                            severity=rule.severity,
                            message="current_config directory inside the web root: configuration files with "
                            "credential hashes (passwd, Account1) are downloadable without logging in "
                            "(Dahua 2017 backdoor pattern)",
                            path=path,
                            evidence="/".join(dirs[: idx + 1])[-200:],
                            category="backdoor",
                            source="path",
                            cve=["CVE-2017-7925", "CVE-2017-7927"],
                            reference="indicators.md DH-03, DH-04",
                            vendor="dahua",
                        )
                    )
        return findings

    # -- per container -----------------------------------------------------------------------------

    def inspect_container(self, info: ContainerInfo) -> list[Finding]:
        with self._lock:
            return judge_container(info, self._integrity, self.installed_version)

    # -- per image ---------------------------------------------------------------------------------

    def finish(self, report: ImageReport, image: bytes) -> None:
        with self._lock:
            try:
                self._finish(report, image)
            finally:
                self._reset()

    def _finish(self, report: ImageReport, image: bytes) -> None:
        report.entropy, report.entropy_block_size = entropy_profile(image)
        sha = (report.sha256 or hashlib.sha256(image).hexdigest()).lower()
        report.hash_verdict = self.hashes.verdict(sha)
        if report.hash_verdict == "known-bad":
            rule = builtin("CW-FW-HASH-001")
            report.findings.append(
                Finding(
                    rule_id=rule.id,
                    severity=rule.severity,
                    message=f"Image is on the known-bad list: {self.hashes.bad[sha]}",
                    path="",
                    evidence=f"sha256 {sha}",
                    category="hashlist",
                    source="hashlist",
                    reference="rules/firmware/known-bad.txt",
                )
            )
        for m in report.members:  # members the walker listed but may not have handed to us
            name = re.split(r"[/!]+", m.path)[-1] if m.path else ""
            if name in _SIGNATURE_MEMBERS:
                self._roles["signature"].append(("member:" + name, m.path))
        report.integrity = self._integrity.summary(self.installed_version)
        report.findings.extend(self._correlate())
        self._merge_crypto(report)
        report.findings[:] = sort_findings(dedup_findings(report.findings))

    def _correlate(self) -> list[Finding]:
        out: list[Finding] = []
        roles = self._roles
        network = [hit for role in NETWORK_ROLES for hit in roles.get(role, [])]
        bricking = roles.get("bricking", [])
        if bricking and network:
            rule = builtin("CW-FW-BRICK-900")
            b_id, b_path = bricking[0]
            n_id, n_path = network[0]
            out.append(
                Finding(
                    rule_id=rule.id,
                    severity=rule.severity,
                    message=(
                        f"Remote-bricking capable: flash erase/write primitives ({_where(b_path)}, {b_id}) "
                        f"sit behind a network-reachable upgrade handler ({_where(n_path)}, {n_id}); a "
                        "crafted or cloud-pushed package can erase the flash"
                    ),
                    path=b_path,
                    evidence=f"{b_id} in {_where(b_path)}; {n_id} in {_where(n_path)}"[:200],
                    category="bricking",
                    source="correlation",
                    reference="indicators.md GEN-06, GEN-08",
                )
            )
        state = self._integrity
        upgrade = roles.get("upgrade_path", []) + roles.get("network_upgrade", [])
        if upgrade and not roles.get("signature") and state.signed is None:
            rule = builtin("CW-FW-UPGRADE-900")
            sev = Severity.HIGH if network else rule.severity
            u_id, u_path = upgrade[0]
            out.append(
                Finding(
                    rule_id=rule.id,
                    severity=sev,
                    message=(
                        "Update code path without any signature verification artefact (no sign.img, "
                        "public key, RSA_verify / EVP_DigestVerify / mbedtls_pk_verify)"
                        + ("; the upgrade is reachable over the network" if network else "")
                    ),
                    path=u_path,
                    evidence=f"{u_id} in {_where(u_path)}"[:200],
                    category="upgrade",
                    source="correlation",
                    reference="indicators.md GEN-09",
                )
            )
        cloud = roles.get("cloud_upgrade", [])
        if cloud and state.unsigned_handlers:
            rule = builtin("CW-FW-INTEG-010")
            xm = "xiongmai_installdesc" in state.unsigned_handlers
            c_id, c_path = cloud[0]
            out.append(
                Finding(
                    rule_id=rule.id,
                    severity=Severity.HIGH if xm else Severity.MEDIUM,
                    message=(
                        "Unsigned update package and a cloud upgrade path: the vendor cloud (or anyone "
                        "impersonating it on a cleartext channel) can push arbitrary firmware"
                    ),
                    path=c_path,
                    evidence=f"{c_id} in {_where(c_path)}; unsigned: "
                    f"{', '.join(sorted(set(state.unsigned_handlers)))}"[:200],
                    category="integrity",
                    source="correlation",
                    reference="indicators.md XM-18, XM-13, XM-14, DH-15, DH-11",
                    vendor="xiongmai" if xm else "dahua",
                )
            )
        return out

    def _merge_crypto(self, report: ImageReport) -> None:
        seen = {(k.get("path"), k.get("offset")) for k in report.keys}
        for key in self._keys:
            if (key["path"], key["offset"]) not in seen:
                seen.add((key["path"], key["offset"]))
                report.keys.append(key)
        seen = {(c.get("path"), c.get("offset")) for c in report.certificates}
        for cert in self._certs:
            if (cert["path"], cert["offset"]) not in seen:
                seen.add((cert["path"], cert["offset"]))
                report.certificates.append(cert)
        by_pub: dict[str, list[str]] = defaultdict(list)
        for cert in report.certificates:
            by_pub[cert["public_key_sha256"]].append(cert["subject"])
        for key in report.keys:
            if key.get("private") and key.get("fingerprint_sha256") in by_pub:
                key["certificates"] = by_pub[key["fingerprint_sha256"]][:5]


def _where(path: str) -> str:
    return path or "<image>"


def _is_ancestor(a: str, b: str) -> bool:
    """Is member path `a` a container enclosing member path `b`? ("" is the image itself.)"""
    if a == b:
        return False
    return a == "" or b.startswith(a + "!")


def dedup_findings(findings: list[Finding]) -> list[Finding]:
    """Drop a finding when the same rule with the same evidence was also found deeper inside it
    (e.g. the raw image and the extracted script): the deepest path is the most useful one."""
    groups: dict[tuple[str, str], list[Finding]] = defaultdict(list)
    for f in findings:
        groups[(f.rule_id, f.evidence)].append(f)
    drop: set[int] = set()
    for group in groups.values():
        if len(group) < 2:
            continue
        paths = {f.path for f in group}
        for f in group:
            if any(_is_ancestor(f.path, other) for other in paths):
                drop.add(id(f))
    return [f for f in findings if id(f) not in drop]


def sort_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (-int(f.severity), f.path, f.offset or 0, f.rule_id))


def cross_image(reports: list[ImageReport]) -> None:
    """Findings that need several images: the same private key in two or more different images
    means every device running any of them shares that key."""
    holders: dict[str, dict[str, ImageReport]] = defaultdict(dict)
    for report in reports:
        for key in report.keys:
            fp = key.get("fingerprint_sha256")
            if key.get("private") and fp:
                holders[fp].setdefault(report.sha256 or report.path, report)
    rule = builtin("CW-FW-KEY-900")
    for fp, by_image in holders.items():
        if len(by_image) < 2:
            continue
        for report in by_image.values():
            others = [r.path for r in by_image.values() if r is not report]
            if any(f.rule_id == rule.id and fp in f.evidence for f in report.findings):
                continue  # cross_image already ran over this set
            key = next(k for k in report.keys if k.get("fingerprint_sha256") == fp and k.get("private"))
            key["shared_with"] = others
            report.findings.append(
                Finding(
                    rule_id=rule.id,
                    severity=rule.severity,
                    message=(
                        f"The same {key.get('type', '')} private key is in {len(by_image)} scanned images "
                        f"(also in: {', '.join(Path(o).name for o in others[:5])}): every device running "
                        "any of them can impersonate or decrypt the others"
                    ),
                    path=key.get("path", ""),
                    offset=key.get("offset"),
                    evidence=f"sha256:{fp}",
                    category="crypto",
                    source="crypto",
                    reference="indicators.md GEN-10",
                )
            )
            report.findings[:] = sort_findings(report.findings)
