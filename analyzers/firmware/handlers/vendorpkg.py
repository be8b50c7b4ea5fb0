"""What the Dahua and Xiongmai package handlers share: tolerant JSON manifests and the per-member
payload classification behind the "encrypted — not analysable" heuristic."""

from __future__ import annotations

import json
import re
import zipfile
from typing import Any

from analyzers.firmware.handlers.base import UnpackContext
from analyzers.firmware.handlers.magic import UIMAGE_HEADER, classify_member, entropy
from analyzers.firmware.handlers.ziputil import sniff
from analyzers.firmware.model import Finding, Severity

_COMMENT_LINE = re.compile(r"^\s*//.*$", re.MULTILINE)
ENCRYPTED_ENTROPY = 7.0


def loads_manifest(raw: bytes, encoding: str = "utf-8") -> Any:
    """JSON followed (or interleaved) by `//` comment lines, possibly NUL-padded; None if unparsable."""
    text = raw.decode(encoding, errors="replace").replace("\x00", "")
    text = _COMMENT_LINE.sub("", text).strip()
    start = text.find("{")
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError:
        return None
    return value


def classify_members(
    archive: zipfile.ZipFile, metadata_names: set[str], ctx: UnpackContext
) -> tuple[list[dict[str, Any]], bool]:
    """Kind (by magic, never by name), size and entropy of each payload member, and whether the
    package looks encrypted: no payload has a known magic and their entropy is above 7.0."""
    described: list[dict[str, Any]] = []
    payload_kinds: list[str | None] = []
    entropies: list[float] = []
    for info in archive.infolist():
        if info.filename.endswith("/"):  # not is_dir(): it raises IndexError on an empty name
            continue
        base = info.filename.rsplit("/", 1)[-1]
        head = sniff(archive, info)
        kind = classify_member(head)
        item: dict[str, Any] = {"name": info.filename, "size": info.file_size, "kind": kind}
        if base.lower() not in metadata_names:
            body = head[UIMAGE_HEADER:] if kind and kind.startswith("uimage") else head
            ent = round(entropy(body), 3)
            item["entropy"] = ent
            payload_kinds.append(kind if kind != "uimage" else None)
            entropies.append(ent)
        described.append(item)
    encrypted = (
        bool(payload_kinds)
        and all(k is None for k in payload_kinds)
        and (sum(entropies) / len(entropies) > ENCRYPTED_ENTROPY)
    )
    return described, encrypted


def encrypted_finding(ctx: UnpackContext, vendor: str, members: list[dict[str, Any]]) -> Finding:
    names = ", ".join(m["name"] for m in members[:10])
    return ctx.finding(
        "CW-FW-ENCRYPTED",
        Severity.LOW,
        f"{vendor} package payloads have no known magic and high entropy: encrypted — not analysable "
        f"(members: {names})",
        category="encrypted",
        vendor=vendor.lower(),
    )
