"""Turning hostile bytes into short, printable evidence excerpts (never more than ~200 chars)."""

from __future__ import annotations

MAX_EVIDENCE = 200
_LINE_ENDS = b"\n\r\x00"


def printable(raw: bytes, limit: int = MAX_EVIDENCE) -> str:
    """ASCII rendering of `raw`: printable bytes as is, everything else as \\xNN; cut at `limit`."""
    out: list[str] = []
    size = 0
    for b in raw:
        piece = chr(b) if 0x20 <= b < 0x7F else ("\\t" if b == 9 else f"\\x{b:02x}")
        size += len(piece)
        if size > limit:
            out.append("…")
            break
        out.append(piece)
    return "".join(out)


def match_excerpt(data: bytes, offset: int, length: int) -> tuple[int, str]:
    """Evidence for a match at data[offset:offset+length].

    Leading line breaks/blanks that a pattern consumed as anchors are skipped (the returned offset
    points at the first meaningful byte), and the excerpt runs to the end of the line so that e.g.
    the options of a daemon launch are visible.
    """
    end = min(len(data), offset + max(length, 0))
    # skip delimiters a pattern consumed as an anchor (line breaks, NUL, blanks, binary bytes)
    while offset < end and not 0x21 <= data[offset] < 0x7F:
        offset += 1
    # a pattern may consume the delimiter after its token (e.g. "telnetd\n"); drop it, and only
    # extend to the end of the line when the match stopped inside one
    trimmed = end
    while trimmed > offset and data[trimmed - 1] in _LINE_ENDS:
        trimmed -= 1
    if trimmed == end:
        limit = min(len(data), offset + MAX_EVIDENCE)
        while trimmed < limit and data[trimmed] not in _LINE_ENDS:
            trimmed += 1
    return offset, printable(data[offset:trimmed])


def line_at(data: bytes, offset: int, back: int = 256, forward: int = 512) -> tuple[int, bytes]:
    """The line (delimited by newline, CR or NUL) that contains `offset`, and where it starts."""
    start = offset
    lo = max(0, offset - back)
    while start > lo and data[start - 1] not in _LINE_ENDS:
        start -= 1
    end = offset
    hi = min(len(data), offset + forward)
    while end < hi and data[end] not in _LINE_ENDS:
        end += 1
    return start, data[start:end]
