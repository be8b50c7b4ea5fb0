"""HTTP/1.x (and RTSP, which shares the syntax) message heads: start line, headers, auth realm.

Only the head is parsed (up to the blank line, or what the first packet holds); bodies are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from analyzers.protocols._text import clean

MAX_HEAD = 8192
METHODS = frozenset({b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE"})
_REALM_RE = re.compile(r'realm\s*=\s*"([^"]*)"|realm\s*=\s*([^\s,]+)', re.IGNORECASE)


@dataclass(slots=True)
class Head:
    protocol: str  # "HTTP" | "RTSP"
    is_request: bool
    method: str | None = None
    target: str | None = None
    status: int | None = None
    reason: str | None = None
    version: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names, first value wins

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def server(self) -> str | None:
        return clean(self.headers.get("server"))

    @property
    def user_agent(self) -> str | None:
        return clean(self.headers.get("user-agent"))

    @property
    def realm(self) -> str | None:
        return auth_realm(self.headers.get("www-authenticate"))

    @property
    def path(self) -> str | None:
        return None if self.target is None else self.target.split("?", 1)[0]


def auth_realm(value: str | None) -> str | None:
    if not value:
        return None
    m = _REALM_RE.search(value)
    return None if m is None else clean(m.group(1) if m.group(1) is not None else m.group(2))


def parse(data: bytes | bytearray | memoryview, protocols: tuple[str, ...] = ("HTTP",)) -> Head | None:
    """The head of an HTTP (or RTSP, with protocols=("RTSP",)) request or response, or None."""
    raw = bytes(data[:MAX_HEAD])
    end = raw.find(b"\r\n")
    if end <= 0:
        return None
    first = raw[:end]
    parts = first.split(b" ", 2)
    if len(parts) < 2:
        return None
    head: Head | None = None
    if parts[0][:5] in (b"HTTP/", b"RTSP/"):
        proto = parts[0][:4].decode()
        if proto not in protocols or not parts[1].isdigit() or len(parts[1]) != 3:
            return None
        reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
        # the version is only checked to start with "HTTP/": the rest may be any byte
        version = parts[0].decode("latin-1")
        head = Head(proto, False, status=int(parts[1]), reason=clean(reason), version=version)
    elif len(parts) == 3 and (parts[2][:5] in (b"HTTP/", b"RTSP/")):
        proto = parts[2][:4].decode()
        method = parts[0]
        if proto not in protocols or not method.isalpha() or not method.isupper() or len(method) > 16:
            return None
        if proto == "HTTP" and method not in METHODS:
            return None
        head = Head(proto, True, method=method.decode(), target=parts[1].decode("latin-1")[:2048],
                    version=parts[2].decode("latin-1"))  # fmt: skip
    if head is None:
        return None
    block_end = raw.find(b"\r\n\r\n")
    block = raw[end + 2 : block_end if block_end >= 0 else len(raw)]
    for line in block.split(b"\r\n")[:100]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            continue
        key = name.decode("latin-1").lower()
        if key not in head.headers:
            head.headers[key] = value.strip().decode("latin-1")[:1024]
    return head
