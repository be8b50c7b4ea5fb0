"""Small helpers shared by the text-protocol parsers (XML-ish tags, header blocks)."""

from __future__ import annotations

import re

# Upper bound on what the parsers decode from one datagram / head: discovery replies are ~1-2 KB.
MAX_TEXT = 16_384
_TAG_RE = re.compile(r"<(?:[A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)(?:\s[^<>]*)?>([^<]*)</", re.DOTALL)


def as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    return bytes(data[:MAX_TEXT]) if not isinstance(data, bytes) or len(data) > MAX_TEXT else data


def decode_text(data: bytes) -> str:
    """UTF-8 with replacement: device text is often sloppy, never fatal."""
    return data.decode("utf-8", "replace")


def leaf_tags(text: str) -> dict[str, str]:
    """Leaf elements `<Tag>value</Tag>` (namespace prefixes dropped; first occurrence wins).

    Deliberately not an XML parser: some firmware sends malformed XML, and the values we want are
    plain leaves, so a tolerant scan is both safer (no entity expansion) and more robust."""
    out: dict[str, str] = {}
    for m in _TAG_RE.finditer(text):
        name, value = m.group(1), m.group(2).strip()
        if name not in out:
            out[name] = _unescape(value)
    return out


def _unescape(value: str) -> str:
    if "&" not in value:
        return value
    return (
        value.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", '"')
        .replace("&apos;", "'")
        .replace("&amp;", "&")
    )


def clean(value: object, limit: int = 128) -> str | None:
    """A printable, bounded string for inventory/event fields; None for empty values."""
    if value is None:
        return None
    text = "".join(ch for ch in str(value) if ch.isprintable()).strip()
    return text[:limit] or None
