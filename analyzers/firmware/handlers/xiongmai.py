"""Xiongmai / XMeye (and OEM) update package: an ordinary ZIP holding an `InstallDesc` JSON manifest
and uImage-wrapped partition images (firmware-formats.md section 4). Members are classified by
magic, never by name (`user-x.cramfs.img` is usually squashfs). XM packages are never signed."""

from __future__ import annotations

from typing import Any

from analyzers.firmware.handlers.base import (
    ContainerHandler,
    HandlerDoc,
    HandlerResult,
    Magic,
    NotMyFormat,
    UnpackContext,
)
from analyzers.firmware.handlers.vendorpkg import classify_members, encrypted_finding, loads_manifest
from analyzers.firmware.handlers.ziputil import LOCAL_MAGIC, find_member, iter_members, open_zip, read_small

METADATA_NAMES = {"installdesc"}


def parse_install_desc(raw: bytes) -> dict[str, Any]:
    doc = loads_manifest(raw)
    if not isinstance(doc, dict):
        return {"parse_error": "InstallDesc is not JSON"}
    out: dict[str, Any] = {}
    commands = doc.get("UpgradeCommand", [])
    if isinstance(commands, list):
        out["upgrade_commands"] = [
            {"command": c.get("Command"), "file": c.get("FileName")}
            for c in commands[:256]
            if isinstance(c, dict)
        ]
    for key, name in (
        ("Hardware", "hardware"),
        ("HardWareVersion", "hardware_version"),
        ("DevID", "dev_id"),
        ("CompatibleVersion", "compatible_version"),
        ("Vendor", "vendor"),
        ("SupportFlashType", "support_flash_type"),
    ):
        if key in doc:
            out[name] = doc[key]
    # community generators write SkipCheck to disable the device's checks (firmware-formats.md 4)
    out["skip_check"] = "SkipCheck" in repr(doc)
    return out


class XiongmaiInstallDescHandler(ContainerHandler):
    NAME = "xiongmai_installdesc"
    PATTERNS = (Magic(LOCAL_MAGIC),)
    DOC = HandlerDoc(
        name="Xiongmai InstallDesc zip",
        vendor="Xiongmai / XMeye and OEMs",
        description="ZIP with an InstallDesc JSON manifest and uImage-wrapped cramfs/squashfs/jffs2 images.",
        references=("firmware-formats.md section 4",),
        limitations=("A ZIP without InstallDesc is left to the generic zip handler.",),
    )

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        listing = open_zip(data, ctx)
        archive = listing.archive
        desc = find_member(archive, "InstallDesc") if archive is not None else None
        if archive is None or desc is None:
            raise NotMyFormat("ZIP without an InstallDesc manifest")
        raw = read_small(archive, desc, ctx)
        meta: dict[str, Any] = {
            "install_desc": parse_install_desc(raw) if raw is not None else {"parse_error": "unreadable"}
        }
        members, encrypted = classify_members(archive, METADATA_NAMES, ctx)
        meta["members"] = members
        findings = list(listing.findings)
        if encrypted:
            findings.append(encrypted_finding(ctx, "Xiongmai", members))
        info = ctx.container(
            self.NAME, size=listing.size, metadata=meta, encrypted=encrypted, signature="none"
        )
        if ctx.header_only:
            return HandlerResult([info], (), findings, encrypted=encrypted, size=listing.size)
        return HandlerResult(
            [info],
            iter_members(listing, data, ctx, findings),
            findings,
            encrypted=encrypted,
            size=listing.size,
        )
