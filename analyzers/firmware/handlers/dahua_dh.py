"""Dahua (and OEM) update package: a ZIP whose first local header says 'DH' instead of 'PK'
(firmware-formats.md section 3). The magic is patched in memory only. The metadata members are
interpreted: `Install` (burn commands, vendor, market area), `Install.lua` (regexes only, never
executed), `check.img` (hwid, languages, security baseline), `hwid`, and `sign.img` presence.
Partition images are uImages; the uImage handler reports their load/entry as a partition map."""

from __future__ import annotations

import re
import zipfile
from typing import Any

from analyzers.firmware.handlers.base import ContainerHandler, HandlerDoc, HandlerResult, Magic, UnpackContext
from analyzers.firmware.handlers.magic import UIMAGE_HEADER
from analyzers.firmware.handlers.vendorpkg import classify_members, encrypted_finding, loads_manifest
from analyzers.firmware.handlers.ziputil import find_member, iter_members, open_zip, read_small

DH_MAGIC = b"DH\x03\x04"
METADATA_NAMES = {"install", "install.lua", "check.img", "hwid", "sign.img"}

_LUA_PATTERNS = {
    "upgrade_security_version": re.compile(r"UpgradeSecurityVersion\s*=\s*[\"']([^\"']{1,64})[\"']"),
    "security_baseline_version": re.compile(r"newVersion\s*=\s*[\"']([^\"']{1,64})[\"']"),
}
_LUA_BOARD = re.compile(r"board\.name\s*[~=]=\s*[\"']([^\"']{1,64})[\"']")
_LUA_VENDOR = re.compile(r"vendor\.Name\s*[~=]=\s*[\"']([^\"']{1,64})[\"']")
_LUA_PARTITION = re.compile(
    r"([A-Za-z_]\w{0,31})\s*=\s*\{\s*baseAddr\s*=\s*(0x[0-9a-fA-F]+|\d+)\s*,\s*endAddr\s*=\s*(0x[0-9a-fA-F]+|\d+)"
)
_LUA_UPDATE = re.compile(
    r"updatePart\(\s*flashPartions\[\s*[\"'](\w{1,32})[\"']\s*\]\s*,\s*[\"']([^\"']{1,128})[\"']"
)


def parse_install(raw: bytes) -> dict[str, Any]:
    """`Install`: JSON then `//` comment lines. Returns burn map, vendor, market area, devices..."""
    doc = loads_manifest(raw)
    if not isinstance(doc, dict):
        return {"parse_error": "Install is not JSON"}
    out: dict[str, Any] = {}
    commands = [c for c in doc.get("Commands", []) if isinstance(c, str)][:256]
    out["commands"] = commands
    burns = []
    for command in commands:
        parts = command.split()
        if len(parts) >= 3 and parts[0].lower() == "burn":
            burns.append({"image": parts[1], "partition": parts[2]})
    out["burn"] = burns
    for key, name in (("Vendor", "vendor"), ("MarketArea", "market_area"), ("Devices", "devices")):
        if key in doc:
            out[name] = doc[key]
    version = doc.get("Version")
    if isinstance(version, dict):
        out["software_version"] = version.get("SoftwareVersion")
    comments = re.findall(rb"^\s*//(.*)$", raw, re.MULTILINE)
    if comments:
        out["comments"] = [c.strip().decode("latin-1")[:100] for c in comments[:20]]
    return out


def parse_install_lua(raw: bytes) -> dict[str, Any]:
    """`Install.lua` (GB2312): facts pulled out with regexes. The script is never executed."""
    text = raw.decode("gb2312", errors="replace")
    out: dict[str, Any] = {}
    for key, pattern in _LUA_PATTERNS.items():
        match = pattern.search(text)
        if match:
            out[key] = match.group(1)
    out["boards"] = sorted(set(_LUA_BOARD.findall(text)))[:64]
    out["vendors"] = sorted(set(_LUA_VENDOR.findall(text)))[:16]
    out["flash_partitions"] = {
        name: {"base": int(base, 0), "end": int(end, 0)}
        for name, base, end in _LUA_PARTITION.findall(text)[:64]
    }
    out["burn"] = [{"image": image, "partition": part} for part, image in _LUA_UPDATE.findall(text)[:256]]
    return out


def parse_check_img(raw: bytes) -> dict[str, Any]:
    """`check.img`: a uImage header followed by JSON (hwid, languages, security baseline...)."""
    body = raw[UIMAGE_HEADER:] if raw[:4] == b"\x27\x05\x19\x56" else raw
    doc = loads_manifest(body)
    if not isinstance(doc, dict):
        return {"parse_error": "check.img carries no JSON"}
    keep = (
        "DefaultLanguage", "DefaultVideoStandard", "SupportLanguages", "hwid", "SecurityBaselineVersion",
        "HardwareSecurityVersionMajor", "FlashSize", "FlashType", "Vendor",
    )  # fmt: skip
    return {key: doc[key] for key in keep if key in doc}


def read_dahua_metadata(archive: zipfile.ZipFile, ctx: UnpackContext) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for name, parser, key in (
        ("Install", parse_install, "install"),
        ("Install.lua", parse_install_lua, "install_lua"),
        ("check.img", parse_check_img, "check"),
    ):
        info = find_member(archive, name)
        if info is not None:
            raw = read_small(archive, info, ctx)
            meta[key] = parser(raw) if raw is not None else {"parse_error": "unreadable or larger than 4 MiB"}
    hwid = find_member(archive, "hwid")
    if hwid is not None:
        doc = loads_manifest(read_small(archive, hwid, ctx) or b"")
        meta["hwid"] = doc.get("hwid") if isinstance(doc, dict) else None
    meta["signed"] = find_member(archive, "sign.img") is not None
    return meta


class DahuaDhZipHandler(ContainerHandler):
    NAME = "dahua_dh_zip"
    PATTERNS = (Magic(DH_MAGIC),)
    DOC = HandlerDoc(
        name="Dahua DH zip",
        vendor="Dahua / Imou / Amcrest / Lorex and OEMs",
        description="ZIP whose first local header magic is DH instead of PK; Install, Install.lua, "
        "check.img, hwid and sign.img are interpreted.",
        references=("firmware-formats.md section 3",),
        limitations=(
            "Encrypted packages are detected (no known magic, entropy > 7.0) and reported, not decrypted.",
            "sign.img is only checked for presence; its signature is not verified.",
        ),
    )

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        listing = open_zip(data, ctx, patch=b"PK")  # patched copy of two bytes; the input is untouched
        findings = list(listing.findings)
        meta: dict[str, Any] = {"first_magic": "DH"}
        encrypted = False
        if listing.archive is not None:
            meta.update(read_dahua_metadata(listing.archive, ctx))
            version = meta.get("install", {}).get("software_version")
            if version:
                meta["software_version"] = version
            members, encrypted = classify_members(listing.archive, METADATA_NAMES, ctx)
            meta["members"] = members
            if encrypted:
                findings.append(encrypted_finding(ctx, "Dahua", members))
        signature = "dahua-sign.img (not verified)" if meta.get("signed") else "none"
        info = ctx.container(
            self.NAME, size=listing.size, metadata=meta, encrypted=encrypted, signature=signature
        )
        if ctx.header_only:
            return HandlerResult([info], (), findings, encrypted=encrypted, size=listing.size)
        children = iter_members(listing, data, ctx, findings)
        return HandlerResult([info], children, findings, encrypted=encrypted, size=listing.size)
