"""Transfer carving on top of reassembled streams: HTTP/1.x messages (Content-Length, chunked,
close-delimited, pipelined, multipart/form-data uploads), FTP control + data channels, TFTP (RFC
1350/2347/2348/2349/7440), and firmware recognition by content or name (rules/update-patterns.yaml).

Every parser is incremental and bounded: carved bytes stop at `max_carve`, heads and lines have
fixed limits, and holes reported by the reassembler are counted (and zero-filled in the carved
copy so offsets inside an image stay right). See docs/reassembly.md.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import struct
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from agent.catalogue import parse_yaml

MiB = 1 << 20
DEFAULT_MAX_CARVE = 256 * MiB  # bytes of one transfer kept in memory
FIRST_BYTES = 8192  # kept for every transfer, for sniffing
MAX_HEAD = 64 * 1024  # HTTP request/response head
MAX_HEADERS = 256
MAX_LINE = 8192  # chunk-size, trailer, FTP and multipart header lines
MAX_GAPS = 64  # gap records per transfer
MAX_PENDING_REQUESTS = 1024  # pipelined requests waiting for their response

RULES_FILE = Path(__file__).resolve().parent.parent / "rules" / "update-patterns.yaml"

TransferCallback = Callable[["Transfer"], None]


@dataclass(slots=True)
class Transfer:
    """One carved object: an HTTP message body, a multipart file part, an FTP or TFTP file.

    `direction` is relative to the connection originator: "toserver" (upload: request body, STOR,
    TFTP WRQ) or "toclient" (download). `size` counts body bytes on the wire including missing
    ones; `data` holds at most the carve cap (holes zero-filled), `first_bytes` the first
    FIRST_BYTES. `complete` means the framing finished and no byte is missing."""

    protocol: str
    direction: str
    method: str | None = None
    uri: str | None = None
    status: int | None = None
    reason: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    filename: str | None = None
    content_type: str | None = None
    declared_size: int | None = None
    size: int = 0
    data: bytes | bytearray = b""  # handed over without a copy: large bodies stay one buffer
    first_bytes: bytes = b""
    complete: bool = False
    bytes_missing: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (body offset, length)
    truncated: bool = False  # the carve cap was hit: `data` is only the first max_carve bytes
    kept: bool = True  # False when the owner chose not to carve this body (first_bytes only)
    sha256: str | None = None  # of the whole body; None when bytes are missing
    firmware: str | None = None  # sniff_firmware() id, by content, else by file name
    stream_offset: int = 0  # where the message started in its reassembled stream
    extra: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)


# -- small helpers -------------------------------------------------------------------------------
def header_value(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """Last value of a header (case-insensitive), or None."""
    name = name.lower()
    found = None
    for k, v in headers:
        if k.lower() == name:
            found = v
    return found


_PARAM = re.compile(r';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """Split `type; a=1; b="x y"` into ("type", {"a": "1", "b": "x y"}); names lower-cased."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for m in _PARAM.finditer(";" + rest):
        v = m.group(2).strip()
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            # Only \" and \\ are unescaped: browsers send Windows paths with bare backslashes.
            v = re.sub(r'\\(["\\])', r"\1", v[1:-1])
        params.setdefault(m.group(1).lower(), v)
    return main.strip().lower(), params


def safe_filename(name: str | None) -> str | None:
    """The last path component of a name from the wire, without control characters; None when
    nothing usable is left. Never use it as a path without the firmware side's own checks."""
    if not name:
        return None
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch >= " " and ch != "\x7f").strip()[:255]
    if name in ("", ".", ".."):
        return None
    return name


def disposition_filename(value: str | None) -> str | None:
    """File name from a Content-Disposition value (RFC 6266; filename* preferred)."""
    if not value:
        return None
    _, params = header_params(value)
    ext = params.get("filename*")
    if ext and "'" in ext:
        charset, _, rest = ext.partition("'")
        _, _, encoded = rest.partition("'")
        try:
            return safe_filename(unquote(encoded, encoding=charset or "utf-8", errors="replace"))
        except LookupError:
            return safe_filename(unquote(encoded))
    return safe_filename(params.get("filename"))


def uri_filename(uri: str | None) -> str | None:
    """Last non-empty segment of a request URI's path, percent-decoded."""
    if not uri:
        return None
    try:
        path = urlsplit(uri).path
    except ValueError:
        return None
    return safe_filename(unquote(path.rstrip("/").rsplit("/", 1)[-1])) if path else None


class _Body:
    """Accumulates one transfer's body: bounded copy, first bytes, hash, holes."""

    __slots__ = ("buf", "cap", "first", "gaps", "hasher", "keep", "missing", "size", "transfer")

    def __init__(self, transfer: Transfer, cap: int, keep: bool) -> None:
        self.transfer = transfer
        self.cap = cap
        self.keep = keep
        # bytearray += is amortised O(1): large buffers grow by mremap, without copying. (Measured
        # against a pre-sized buffer written through a memoryview: same speed, more code.)
        self.buf = bytearray()
        self.first = bytearray()
        self.hasher: Any = hashlib.sha256()
        self.size = 0
        self.missing = 0
        self.gaps: list[tuple[int, int]] = []

    def add(self, chunk: memoryview | bytes | bytearray) -> None:
        n = len(chunk)
        if not n:
            return
        if len(self.first) < FIRST_BYTES:
            self.first += chunk[: FIRST_BYTES - len(self.first)]
        if self.keep:
            room = self.cap - len(self.buf)
            if room >= n:
                self.buf += chunk
            elif room > 0:
                self.buf += chunk[:room]
        if self.hasher is not None:
            self.hasher.update(chunk)
        self.size += n

    def gap(self, n: int, fill: bool = True) -> None:
        """`n` body bytes are missing here; zero-filled (within the cap) to keep offsets."""
        if n <= 0:
            return
        if len(self.gaps) < MAX_GAPS:
            self.gaps.append((self.size, n))
        self.missing += n
        self.hasher = None
        if fill:
            if len(self.first) < FIRST_BYTES:
                self.first += bytes(min(n, FIRST_BYTES - len(self.first)))
            if self.keep:
                room = self.cap - len(self.buf)
                if room > 0:
                    self.buf += bytes(min(n, room))
        self.size += n

    def finish(self, framed: bool) -> Transfer:
        t = self.transfer
        t.size = self.size
        t.data = self.buf
        t.first_bytes = bytes(self.first)
        t.kept = self.keep
        t.truncated = self.keep and self.size > self.cap
        t.bytes_missing = self.missing
        t.gaps = self.gaps
        t.complete = framed and self.missing == 0
        if self.hasher is not None and self.missing == 0:
            t.sha256 = self.hasher.hexdigest()
        self.buf = bytearray()
        return t


class _Emitter:
    """Common output path: sniff, then hand over (callback) or queue (drain())."""

    def __init__(self, on_transfer: TransferCallback | None, max_carve: int) -> None:
        self.on_transfer = on_transfer
        self.max_carve = max_carve
        self.transfers: list[Transfer] = []

    def _emit(self, t: Transfer) -> None:
        t.firmware = sniff_firmware(t.data or t.first_bytes, t.filename)
        if self.on_transfer is not None:
            self.on_transfer(t)
        else:
            self.transfers.append(t)

    def drain(self) -> list[Transfer]:
        """Transfers finished since the last call (when no callback was given)."""
        out, self.transfers = self.transfers, []
        return out


# -- HTTP -----------------------------------------------------------------------------------------
_REQ_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) +(\S+) +HTTP/(\d)\.(\d)\s*$")
_STATUS_LINE = re.compile(r"HTTP/(\d)\.(\d) +(\d{3})(?: (.*))?$")
_REQ_START = re.compile(rb"[A-Za-z-]{1,20} ")
_RESYNC_REQ = re.compile(
    rb"(?:^|\n)((?:GET|POST|PUT|HEAD|DELETE|OPTIONS|PATCH|CONNECT|TRACE|PROPFIND) \S+ HTTP/1\.[01]\r?\n)"
)
_RESYNC_RESP = re.compile(rb"(?:^|\n)(HTTP/1\.[01] \d{3}[ \r\n])")
RESYNC_CARRY = 256
MAX_INITIAL_SCAN = 1 * MiB  # a stream with no HTTP head in its first MiB is left alone

# per-direction parser states
_HEAD, _BODY_LEN, _BODY_CLOSE, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILER = range(7)
_RESYNC, _TUNNEL, _DEAD, _DONE = range(7, 11)


class _Multipart:
    """Splits a multipart/form-data body (RFC 7578) into parts as it streams past."""

    _PREAMBLE, _AFTER_DELIM, _HEADERS, _PART, _EPILOGUE = range(5)

    def __init__(self, boundary: bytes, owner: HttpCarver, request: Transfer) -> None:
        self.delim = b"\r\n--" + boundary
        self.owner = owner
        self.request = request
        self.tail = bytearray(b"\r\n")  # the body start counts as following a line break
        self.state = self._PREAMBLE
        self.part: _Body | None = None
        self.parts: list[str] = []

    def add(self, chunk: memoryview | bytes) -> None:
        # One copy per byte: the carried tail (shorter than the delimiter) plus the new chunk.
        buf = self.tail + chunk if self.tail else bytearray(chunk)
        pos = 0
        dl = len(self.delim)
        while True:
            st = self.state
            if st == self._PREAMBLE or st == self._PART:
                i = buf.find(self.delim, pos)
                if i < 0:
                    keep = max(pos, len(buf) - (dl - 1))
                    if st == self._PART and self.part is not None:
                        self.part.add(memoryview(buf)[pos:keep])
                    self.tail = buf[keep:]
                    return
                if st == self._PART and self.part is not None:
                    self.part.add(memoryview(buf)[pos:i])
                    self._finish_part(True)
                pos = i + dl
                self.state = self._AFTER_DELIM
            elif st == self._AFTER_DELIM:
                if len(buf) - pos < 2:
                    self.tail = buf[pos:]
                    return
                if buf[pos : pos + 2] == b"--":
                    self.state = self._EPILOGUE
                    continue
                j = buf.find(b"\n", pos)
                if j < 0:
                    if len(buf) - pos > MAX_LINE:
                        self.state = self._EPILOGUE
                        continue
                    self.tail = buf[pos:]
                    return
                pos = j + 1
                self.state = self._HEADERS
            elif st == self._HEADERS:
                if buf.startswith(b"\r\n", pos) or buf.startswith(b"\n", pos):
                    end = pos + (2 if buf[pos] == 13 else 1)
                    head = b""
                else:
                    end = _head_end(buf, pos)
                    if end < 0:
                        if len(buf) - pos > MAX_LINE * 4:
                            self.state = self._PREAMBLE  # runaway headers: look for the next part
                            pos = len(buf)
                            continue
                        self.tail = buf[pos:]
                        return
                    head = bytes(buf[pos:end])
                self._start_part(_parse_fields(head.decode("latin-1").splitlines()))
                pos = end
                self.state = self._PART
            else:  # epilogue: ignored
                self.tail = bytearray()
                return

    def gap(self, n: int) -> None:
        if self.state == self._PART and self.part is not None:
            self.part.add(self.tail)
            self.part.gap(n)
        elif self.state != self._EPILOGUE:
            self.state = self._PREAMBLE  # lost the part structure: wait for the next delimiter
        self.tail = bytearray()

    def end(self) -> None:
        if self.state == self._PART and self.part is not None:
            self.part.add(self.tail)
            self._finish_part(False)
        self.tail = bytearray()
        self.state = self._EPILOGUE

    def _start_part(self, headers: list[tuple[str, str]]) -> None:
        req = self.request
        cd = header_value(headers, "content-disposition") or ""
        _, params = header_params(cd)
        t = Transfer(
            protocol="http",
            direction="toserver",
            method=req.method,
            uri=req.uri,
            headers=headers,
            filename=disposition_filename(cd),
            content_type=header_value(headers, "content-type"),
            stream_offset=req.stream_offset,
            extra={"multipart": True, "form_field": params.get("name")},
        )
        keep = self.owner._wants(t)
        self.part = _Body(t, self.owner.max_carve, keep)

    def _finish_part(self, framed: bool) -> None:
        part = self.part
        self.part = None
        if part is None:
            return
        t = part.finish(framed)
        # Plain form fields are noise; a file part, or anything big, is worth reporting.
        if t.filename or t.size >= 4096:
            self.parts.append(t.filename or t.extra.get("form_field") or "")
            self.owner._emit(t)


def _head_end(buf: bytearray | bytes, start: int) -> int:
    """Index just past the blank line ending a head (CRLFCRLF or a bare LFLF), or -1."""
    i = buf.find(b"\r\n\r\n", start)
    j = buf.find(b"\n\n", start)
    if i >= 0 and (j < 0 or i + 4 <= j + 2):
        return i + 4
    return j + 2 if j >= 0 else -1


def _parse_fields(lines: list[str]) -> list[tuple[str, str]]:
    """Header lines to (name, value) pairs; obsolete line folding is joined, junk lines skipped."""
    out: list[tuple[str, str]] = []
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":
            if out:
                name, value = out[-1]
                out[-1] = (name, (value + " " + line.strip()).strip())
            continue
        name, sep, value = line.partition(":")
        if sep and name and name == name.strip():
            out.append((name, value.strip()))
        if len(out) >= MAX_HEADERS:
            break
    return out


def _is_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts "²" (a latin-1 byte 0xb2), which int() refuses."""
    return text.isascii() and text.isdigit()


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    """Declared length, -1 when invalid (conflicting or not a number), None when absent."""
    values = [v for k, v in headers if k.lower() == "content-length"]
    if not values:
        return None
    seen = {p.strip() for v in values for p in v.split(",")}
    if len(seen) != 1:
        return -1
    text = seen.pop()
    return int(text) if _is_number(text) else -1


class _HttpStream:
    """One direction of an HTTP/1.x connection: a `StreamSink` for agent.reassembly."""

    def __init__(self, owner: HttpCarver, is_request: bool) -> None:
        self.owner = owner
        self.is_request = is_request
        self.state = _HEAD
        self.buf = bytearray()
        self.remaining = 0
        self.body: _Body | None = None
        self.multipart: _Multipart | None = None
        self.current: Transfer | None = None
        self.offset = 0  # stream bytes seen (delivered + gaps)
        self.head_offset = 0
        self.messages = 0
        self.synced = False  # a message was parsed since the start or the last resync
        self.after_head: int = _HEAD
        self.bad_heads = 0
        self.resyncs = 0
        self.partial_heads = 0
        self.scanned = 0  # bytes searched for a first message head

    # -- StreamSink -----------------------------------------------------------------------------
    def data(self, chunk: memoryview) -> None:
        n = len(chunk)
        body = self.body
        if self.state == _BODY_LEN and n < self.remaining and self.multipart is None and body is not None:
            # Fast path for the middle of a large body.
            body.add(chunk)
            self.remaining -= n
            self.offset += n
            return
        pos = 0
        while pos < n:
            st = self.state
            if st in (_BODY_LEN, _CHUNK_DATA):
                take = min(self.remaining, n - pos)
                self._body_add(chunk[pos : pos + take])
                pos += take
                self.remaining -= take
                if not self.remaining:
                    if st == _BODY_LEN:
                        self._finish(True)
                    else:
                        self.state = _CHUNK_CRLF
            elif st == _HEAD:
                pos = self._head(chunk, pos, n)
            elif st == _BODY_CLOSE:
                self._body_add(chunk[pos:])
                pos = n
            elif st in (_CHUNK_SIZE, _CHUNK_CRLF, _TRAILER):
                pos = self._line(chunk, pos, n)
            elif st == _RESYNC:
                pos = self._resync(chunk, pos, n)
            else:  # tunnel, not HTTP, done
                pos = n
        self.offset += n

    def gap(self, length: int) -> None:
        st = self.state
        if st in (_BODY_LEN, _CHUNK_DATA):
            if length <= self.remaining:
                self._body_gap(length)
                self.remaining -= length
                if not self.remaining:
                    if st == _BODY_LEN:
                        self._finish(True)
                    else:
                        self.state = _CHUNK_CRLF
            else:
                self._body_gap(self.remaining)
                self._finish(False)
                self._lose_sync()
        elif st == _BODY_CLOSE:
            self._body_gap(length)
        elif st == _HEAD:
            if self.buf:
                self.partial_heads += 1
            self._lose_sync()
        elif st in (_CHUNK_SIZE, _CHUNK_CRLF, _TRAILER):
            self._finish(False)
            self._lose_sync()
        elif st == _RESYNC:
            self.buf.clear()
        self.offset += length

    def end(self) -> None:
        st = self.state
        if st == _BODY_CLOSE:
            self._finish(True)
        elif st == _BODY_LEN:
            if self.body is not None:
                self.body.gap(self.remaining, fill=False)  # never arrived: reported, not padded
            self._finish(False)
        elif st in (_CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILER):
            self._finish(False)
        elif st == _HEAD and self.buf:
            self.partial_heads += 1
        self.buf.clear()
        self.state = _DONE

    # -- heads ----------------------------------------------------------------------------------
    def _head(self, chunk: memoryview, pos: int, n: int) -> int:
        buf = self.buf
        if not buf:
            # Blank lines between messages are tolerated (RFC 9112 §2.2).
            while pos < n and chunk[pos] in (10, 13):
                pos += 1
            if pos == n:
                return n
            self.head_offset = self.offset + pos
        old = len(buf)
        take = min(n - pos, MAX_HEAD + 4 - old)
        buf += chunk[pos : pos + take]
        if old < 24 and not self._plausible_start(buf):
            self._bad_head()
            return pos  # rescanned by _resync
        end = _head_end(buf, max(0, old - 3))
        if end < 0:
            if len(buf) > MAX_HEAD:
                self._bad_head()
            return pos + take
        head = bytes(buf[:end])
        buf.clear()
        self._parse_head(head)
        return pos + (end - old)

    def _plausible_start(self, buf: bytearray) -> bool:
        if self.is_request:
            probe = bytes(buf[:21])
            return _REQ_START.match(probe) is not None or (
                len(probe) < 21 and b" " not in probe and re.fullmatch(rb"[A-Za-z-]*", probe) is not None
            )
        probe = bytes(buf[:5])
        return b"HTTP/".startswith(probe)

    def _bad_head(self) -> None:
        # Not necessarily foreign: a capture that joined mid-message starts inside a body. Look
        # for the next message head; _resync gives up if none shows up early enough.
        self.bad_heads += 1
        self._lose_sync()

    def _lose_sync(self) -> None:
        self.state = _RESYNC
        self.synced = False
        self.buf.clear()
        self.body = None
        self.multipart = None
        self.current = None
        if not self.is_request:
            # The request/response pairing is unknown from here on.
            self.owner.pending.clear()

    def _resync(self, chunk: memoryview, pos: int, n: int) -> int:
        carry = bytes(self.buf)
        window = carry + bytes(chunk[pos:])
        m = (_RESYNC_REQ if self.is_request else _RESYNC_RESP).search(window)
        if m is None:
            self.buf[:] = window[-RESYNC_CARRY:]
            if not self.messages:
                self.scanned += n - pos
                if self.scanned > MAX_INITIAL_SCAN:
                    self.state = _DEAD  # no HTTP message anywhere near the start: not HTTP
                    self.buf.clear()
            return n
        self.resyncs += 1
        k = m.start(1)
        self.state = _HEAD
        if k < len(carry):
            self.buf[:] = carry[k:]
            self.head_offset = self.offset + pos - (len(carry) - k)
            return pos
        self.buf.clear()
        return pos + (k - len(carry))

    def _parse_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").splitlines()
        start = lines[0].strip() if lines else ""
        headers = _parse_fields(lines[1:])
        owner = self.owner
        if self.is_request:
            m = _REQ_LINE.match(start)
            if m is None:
                self._bad_head()
                return
            method, uri = m.group(1), m.group(2)
            t = Transfer(
                protocol="http",
                direction="toserver",
                method=method,
                uri=uri,
                headers=headers,
                stream_offset=self.head_offset,
                extra={"version": f"{m.group(3)}.{m.group(4)}"},
            )
            if len(owner.pending) < MAX_PENDING_REQUESTS:
                owner.pending.append((method, uri))
            body_kind = self._request_framing(t)
        else:
            m = _STATUS_LINE.match(start)
            if m is None:
                self._bad_head()
                return
            status = int(m.group(3))
            interim = 100 <= status < 200 and status != 101
            if owner.pending and not interim:
                method, uri = owner.pending.popleft()
            elif owner.pending:
                method, uri = owner.pending[0]
            else:
                method, uri = None, None
            t = Transfer(
                protocol="http",
                direction="toclient",
                method=method,
                uri=uri,
                status=status,
                reason=(m.group(4) or "").strip() or None,
                headers=headers,
                stream_offset=self.head_offset,
                extra={"version": f"{m.group(1)}.{m.group(2)}"},
            )
            body_kind = self._response_framing(t, method, status)
        self.synced = True
        self.messages += 1
        t.content_type = t.header("content-type")
        t.filename = disposition_filename(t.header("content-disposition")) or uri_filename(t.uri)
        self.current = t
        self.multipart = None
        keep = owner._wants(t)
        if self.is_request and t.content_type:
            ctype, params = header_params(t.content_type)
            boundary = params.get("boundary")
            if ctype == "multipart/form-data" and boundary and 0 < len(boundary) <= 200:
                self.multipart = _Multipart(boundary.encode("latin-1", "replace"), owner, t)
                keep = False  # the parts are carved; the whole body is only hashed
        self.body = _Body(t, owner.max_carve, keep)
        if body_kind == _BODY_LEN and self.remaining == 0:
            self._finish(True)
        elif body_kind == _HEAD:
            self._finish(True)
            self.state = self.after_head
        else:
            self.state = body_kind

    def _request_framing(self, t: Transfer) -> int:
        self.after_head = _TUNNEL if t.method == "CONNECT" else _HEAD
        te = t.header("transfer-encoding")
        if te is not None:
            if te.lower().rsplit(",", 1)[-1].strip() == "chunked":
                return _CHUNK_SIZE
            t.extra["framing_error"] = "transfer-encoding without chunked"
            return _BODY_CLOSE  # unframeable request (a server would answer 400)
        cl = _content_length(t.headers)
        if cl is None:
            self.remaining = 0
            return _HEAD
        if cl < 0:
            t.extra["framing_error"] = "bad content-length"
            return _BODY_CLOSE
        t.declared_size = cl
        self.remaining = cl
        return _BODY_LEN

    def _response_framing(self, t: Transfer, method: str | None, status: int) -> int:
        self.after_head = _HEAD
        if status == 101 or (method == "CONNECT" and 200 <= status < 300):
            self.after_head = _TUNNEL
            return _HEAD
        cl = _content_length(t.headers)
        if cl is not None and cl >= 0:
            t.declared_size = cl
        if method == "HEAD" or status < 200 or status in (204, 304):
            return _HEAD
        te = t.header("transfer-encoding")
        if te is not None:
            t.declared_size = None
            if te.lower().rsplit(",", 1)[-1].strip() == "chunked":
                return _CHUNK_SIZE
            return _BODY_CLOSE
        if cl is None or cl < 0:
            return _BODY_CLOSE
        self.remaining = cl
        return _BODY_LEN

    # -- chunked coding -------------------------------------------------------------------------
    def _line(self, chunk: memoryview, pos: int, n: int) -> int:
        # Chunk-size lines are short: look in a small window first, the full line limit after.
        j = bytes(chunk[pos : pos + 128]).find(b"\n")
        if j < 0 and n - pos > 128:
            j = bytes(chunk[pos : pos + MAX_LINE]).find(b"\n")
        if j < 0:
            self.buf += chunk[pos : pos + MAX_LINE]
            if len(self.buf) > MAX_LINE:
                self._finish(False)
                self._lose_sync()
            return min(n, pos + MAX_LINE)
        self.buf += chunk[pos : pos + j]
        line = bytes(self.buf).rstrip(b"\r")
        self.buf.clear()
        pos += j + 1
        st = self.state
        if st == _CHUNK_CRLF:
            self.state = _CHUNK_SIZE  # anything before the line break is tolerated
        elif st == _CHUNK_SIZE:
            text = line.split(b";", 1)[0].strip()
            if not text or len(text) > 16 or re.fullmatch(rb"[0-9A-Fa-f]+", text) is None:
                if self.current is not None:
                    self.current.extra["framing_error"] = "bad chunk size"
                self._finish(False)
                self._lose_sync()
                return pos
            size = int(text, 16)
            if size:
                self.remaining = size
                self.state = _CHUNK_DATA
            else:
                self.state = _TRAILER
        else:  # trailer section: fields until a blank line
            if not line:
                self._finish(True)
            elif self.current is not None and len(self.current.trailers) < MAX_HEADERS:
                self.current.trailers.extend(_parse_fields([line.decode("latin-1")]))
        return pos

    # -- bodies ---------------------------------------------------------------------------------
    def _body_add(self, chunk: memoryview) -> None:
        if self.body is not None:
            self.body.add(chunk)
        if self.multipart is not None:
            self.multipart.add(chunk)

    def _body_gap(self, n: int) -> None:
        if self.body is not None:
            self.body.gap(n)
        if self.multipart is not None:
            self.multipart.gap(n)

    def _finish(self, framed: bool) -> None:
        body, self.body = self.body, None
        if self.multipart is not None:
            self.multipart.end()
            if body is not None:
                body.transfer.extra["parts"] = self.multipart.parts
            self.multipart = None
        self.current = None
        if self.state not in (_RESYNC, _DONE):
            self.state = self.after_head
        if body is not None:
            self.owner._emit(body.finish(framed))


class HttpCarver(_Emitter):
    """HTTP/1.x carving for one TCP connection.

    Wire `requests` and `responses` as the sinks of the two directions of a
    `agent.reassembly.TcpConversation` (to_server=carver.requests, to_client=carver.responses).
    Every message becomes a `Transfer`; multipart/form-data file parts become their own.
    `want_body(transfer)` (called once the head is parsed) decides whether the body is carved
    into memory; without it every body is, up to `max_carve` bytes."""

    def __init__(
        self,
        on_transfer: TransferCallback | None = None,
        *,
        max_carve: int = DEFAULT_MAX_CARVE,
        want_body: Callable[[Transfer], bool] | None = None,
    ) -> None:
        super().__init__(on_transfer, max_carve)
        self.want_body = want_body
        self.pending: deque[tuple[str, str]] = deque()
        self.requests = _HttpStream(self, True)
        self.responses = _HttpStream(self, False)

    def _wants(self, t: Transfer) -> bool:
        return self.max_carve > 0 and (self.want_body is None or bool(self.want_body(t)))

    @property
    def is_http(self) -> bool:
        return self.requests.messages > 0 or self.responses.messages > 0


def carve_http(
    client_bytes: bytes, server_bytes: bytes, *, max_carve: int = DEFAULT_MAX_CARVE
) -> list[Transfer]:
    """Carve already reassembled client and server byte streams (requests first, for pairing)."""
    c = HttpCarver(max_carve=max_carve)
    c.requests.data(memoryview(client_bytes))
    c.requests.end()
    c.responses.data(memoryview(server_bytes))
    c.responses.end()
    return c.drain()


# -- FTP ------------------------------------------------------------------------------------------
_PORT_ARGS = re.compile(r"(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})")
_BYTES_IN_REPLY = re.compile(r"\((\d+) bytes\)")
FTP_TRANSFER_COMMANDS = {"RETR": "toclient", "STOR": "toserver", "STOU": "toserver", "APPE": "toserver"}
FTP_LISTING_COMMANDS = {"LIST", "NLST", "MLSD"}


@dataclass(slots=True)
class FtpExpectation:
    """A data connection the control channel announced.

    The data flow will be TCP towards (`ip`, `port`): in active mode (PORT/EPRT) the *server*
    connects to the client's endpoint, in passive mode (PASV/EPSV) the client connects to the
    server's. `data_from_originator` says which direction of that data flow carries the file."""

    ip: str | None  # None until the server's PASV/EPSV reply has been seen
    port: int
    mode: str  # "active" | "passive"
    command: str | None = None  # RETR, STOR, STOU, APPE, LIST, NLST, MLSD
    filename: str | None = None
    remote_name: str | None = None  # the command argument as sent
    direction: str | None = None  # of the file relative to the control connection
    declared_size: int | None = None
    opened: bool = False  # the server answered 125/150
    reply: int | None = None  # final reply code for the transfer (226 = done)
    matched: bool = False

    @property
    def data_from_originator(self) -> bool:
        # active: the server originates; it sends on RETR. passive: the client originates.
        return (self.mode == "active") == (self.direction == "toclient")


class FtpTracker(_Emitter):
    """Follows an FTP control connection and predicts its data connections.

    Feed the client's and the server's control bytes through the `client` / `server` sinks (or
    `feed()`); look up new TCP flows with `match(dest_ip, dest_port)`; hand the data flow's bytes
    to `data_sink(expectation)` (a StreamSink) to get the file as a `Transfer`."""

    def __init__(
        self,
        client_ip: str,
        server_ip: str,
        on_transfer: TransferCallback | None = None,
        *,
        max_carve: int = DEFAULT_MAX_CARVE,
        max_expectations: int = 64,
    ) -> None:
        super().__init__(on_transfer, max_carve)
        self.client_ip = client_ip
        self.server_ip = server_ip
        self.max_expectations = max_expectations
        self.expectations: list[FtpExpectation] = []
        # The data endpoint a transfer command will use: set by PORT/EPRT, or by PASV/EPSV whose
        # reply (on the other stream, possibly parsed later) fills it in.
        self._slot: FtpExpectation | None = None
        self._passive_slots: deque[FtpExpectation] = deque()  # PASV/EPSV sent, reply not seen
        self._awaiting_reply: deque[FtpExpectation] = deque()
        self._sizes: dict[str, int] = {}
        self._size_queries: deque[str] = deque()
        self._lines = {True: _LineSplitter(self._client_line), False: _LineSplitter(self._server_line)}
        self.client = self._lines[True]
        self.server = self._lines[False]

    def feed(self, data: bytes, from_client: bool) -> None:
        self._lines[from_client].data(memoryview(data))

    def predicted(self) -> list[tuple[str, int]]:
        return [(e.ip, e.port) for e in self.expectations if not e.matched and e.ip is not None]

    def match(self, ip: str, port: int) -> FtpExpectation | None:
        """The expectation for a new data flow towards (ip, port), marked as matched."""
        for exact in (True, False):
            for e in self.expectations:
                if e.matched or e.ip is None or e.port != port:
                    continue
                # Servers behind NAT often announce a private address: accept the control peer's.
                peer = self.server_ip if e.mode == "passive" else self.client_ip
                if e.ip == ip if exact else ip == peer:
                    e.matched = True
                    return e
        return None

    def data_sink(self, expectation: FtpExpectation) -> FtpDataReceiver:
        return FtpDataReceiver(self, expectation)

    # -- control lines ---------------------------------------------------------------------------
    def _client_line(self, line: str) -> None:
        verb, _, arg = line.strip().partition(" ")
        verb = verb.upper()
        arg = arg.strip()
        if verb == "PORT":
            m = _PORT_ARGS.fullmatch(arg.replace(" ", ""))
            if m:
                g = [int(x) for x in m.groups()]
                self._slot = FtpExpectation(".".join(map(str, g[:4])), g[4] * 256 + g[5], "active")
        elif verb == "EPRT" and len(arg) > 2:
            parts = arg.split(arg[0])  # |proto|addr|port|, any delimiter
            if len(parts) >= 5 and _is_number(parts[3]):
                self._slot = FtpExpectation(parts[2], int(parts[3]), "active")
        elif verb in ("PASV", "EPSV") and arg.upper() != "ALL":
            self._slot = FtpExpectation(None, 0, "passive")
            self._passive_slots.append(self._slot)
        elif verb in FTP_TRANSFER_COMMANDS or verb in FTP_LISTING_COMMANDS:
            e, self._slot = self._slot, None
            if e is None:
                return  # no data endpoint announced: nothing to predict
            e.command = verb
            e.remote_name = arg or None
            e.filename = safe_filename(arg) if arg else None
            e.direction = FTP_TRANSFER_COMMANDS.get(verb, "toclient")
            if arg and arg in self._sizes:
                e.declared_size = self._sizes[arg]
            self.expectations.append(e)
            self._awaiting_reply.append(e)
            if len(self.expectations) > self.max_expectations:
                del self.expectations[0]
        elif verb == "SIZE" and arg:
            self._size_queries.append(arg)

    def _server_line(self, line: str) -> None:
        if len(line) < 3 or not _is_number(line[:3]) or (len(line) > 3 and line[3] == "-"):
            return  # continuation lines of multi-line replies carry nothing we use
        code = int(line[:3])
        text = line[4:]
        if code == 227:
            m = _PORT_ARGS.search(text)
            if m:
                g = [int(x) for x in m.groups()]
                self._passive_reply(".".join(map(str, g[:4])), g[4] * 256 + g[5])
        elif code == 229:
            m = re.search(r"\((.)\1\1(\d+)\1\)", text)
            if m:
                self._passive_reply(self.server_ip, int(m.group(2)))
        elif code == 213 and self._size_queries:
            name = self._size_queries.popleft()
            if _is_number(text.strip()):
                self._sizes[name] = int(text.strip())
                for e in self.expectations:
                    if e.remote_name == name and e.declared_size is None:
                        e.declared_size = self._sizes[name]
        elif code in (125, 150):
            # Preliminary reply to the oldest transfer command still waiting for one.
            for e in self._awaiting_reply:
                if not e.opened:
                    e.opened = True
                    m = _BYTES_IN_REPLY.search(text)
                    if m and e.declared_size is None:
                        e.declared_size = int(m.group(1))
                    break
        elif (code in (226, 250) or code >= 400) and self._awaiting_reply and self._awaiting_reply[0].opened:
            # Only a transfer that was opened gets a completion reply; other commands' replies
            # (logins, CWD, TYPE) cannot be mistaken for it.
            self._awaiting_reply.popleft().reply = code
        elif code == 550 and self._size_queries:
            self._size_queries.popleft()

    def _passive_reply(self, ip: str, port: int) -> None:
        if self._passive_slots:
            e = self._passive_slots.popleft()
            e.ip, e.port = ip, port


class _LineSplitter:
    """StreamSink that cuts a text stream into lines (bounded) for a callback."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self.on_line = on_line
        self.buf = bytearray()

    def data(self, chunk: memoryview) -> None:
        self.buf += chunk
        start = 0
        buf = self.buf
        while True:
            j = buf.find(b"\n", start)
            if j < 0:
                break
            if j - start <= MAX_LINE:
                self.on_line(bytes(buf[start:j]).rstrip(b"\r").decode("utf-8", "replace"))
            start = j + 1
        del buf[:start]
        if len(buf) > MAX_LINE:
            buf.clear()

    def gap(self, length: int) -> None:
        self.buf.clear()

    def end(self) -> None:
        if self.buf:
            self.on_line(bytes(self.buf).rstrip(b"\r").decode("utf-8", "replace"))
            self.buf.clear()


class FtpDataReceiver:
    """StreamSink for the file-carrying direction of an FTP data connection."""

    def __init__(self, tracker: FtpTracker, expectation: FtpExpectation) -> None:
        self.tracker = tracker
        self.expectation = expectation
        t = Transfer(
            protocol="ftp",
            direction=expectation.direction or "toclient",
            method=expectation.command,
            filename=expectation.filename,
            declared_size=expectation.declared_size,
            extra={
                "mode": expectation.mode,
                "data_endpoint": [expectation.ip, expectation.port],
                "remote_name": expectation.remote_name,
            },
        )
        self.body = _Body(t, tracker.max_carve, tracker.max_carve > 0)
        self.done = False

    def data(self, chunk: memoryview) -> None:
        self.body.add(chunk)

    def gap(self, length: int) -> None:
        self.body.gap(length)

    def end(self) -> None:
        if self.done:
            return
        self.done = True
        e = self.expectation
        t = self.body.transfer
        if t.declared_size is None:
            t.declared_size = e.declared_size
        framed = t.declared_size is None or self.body.size >= t.declared_size
        if t.declared_size is not None and self.body.size < t.declared_size:
            self.body.gap(t.declared_size - self.body.size, fill=False)
        self.tracker._emit(self.body.finish(framed))


# -- TFTP -----------------------------------------------------------------------------------------
TFTP_PORT = 69
TFTP_RRQ, TFTP_WRQ, TFTP_DATA, TFTP_ACK, TFTP_ERROR, TFTP_OACK = 1, 2, 3, 4, 5, 6
TFTP_DEFAULT_BLKSIZE = 512
TFTP_MAX_AHEAD = 64  # out-of-order DATA blocks held (windowsize > 1, RFC 7440)
_U16 = struct.Struct("!H")
_U16X2 = struct.Struct("!HH")


class _TftpTransfer:
    __slots__ = (
        "ahead",
        "blksize",
        "body",
        "client",
        "last_ts",
        "next_block",
        "options",
        "server_ip",
        "server_tid",
        "write",
    )

    def __init__(self, client: tuple[str, int], server_ip: str, write: bool, body: _Body) -> None:
        self.client = client
        self.server_ip = server_ip
        self.server_tid: int | None = None
        self.write = write
        self.body = body
        self.blksize = TFTP_DEFAULT_BLKSIZE
        self.options: dict[str, str] = {}
        self.next_block = 1  # absolute block number expected next (16-bit on the wire)
        self.ahead: dict[int, bytes] = {}
        self.last_ts = 0.0


class TftpTracker(_Emitter):
    """TFTP transfers from UDP payloads.

    A transfer starts with RRQ/WRQ from client:cport to server:69; the server answers from a new
    port (its TID), so the transfer is keyed by the client endpoint (ip, cport) plus the server
    address, and the server TID is learned from its first answer. Feed every UDP packet of
    those endpoints with `packet()`; `wants()` tells whether a packet belongs to a transfer."""

    def __init__(
        self,
        on_transfer: TransferCallback | None = None,
        *,
        max_carve: int = DEFAULT_MAX_CARVE,
        max_transfers: int = 256,
    ) -> None:
        super().__init__(on_transfer, max_carve)
        self.max_transfers = max_transfers
        self._by_client: dict[tuple[str, int], _TftpTransfer] = {}
        self.duplicates = 0
        self.malformed = 0

    @property
    def active(self) -> int:
        return len(self._by_client)

    def wants(self, src_ip: str, src_port: int, dst_ip: str, dst_port: int) -> bool:
        if dst_port == TFTP_PORT:
            return True
        t = self._by_client.get((dst_ip, dst_port))
        if t is not None and t.server_ip == src_ip:
            return True
        t = self._by_client.get((src_ip, src_port))
        return t is not None and t.server_ip == dst_ip

    def packet(
        self,
        src_ip: str,
        src_port: int,
        dst_ip: str,
        dst_port: int,
        payload: bytes | memoryview,
        ts: float = 0.0,
    ) -> None:
        p = bytes(payload)
        if len(p) < 4:
            self.malformed += 1
            return
        op = _U16.unpack_from(p)[0]
        if dst_port == TFTP_PORT and op in (TFTP_RRQ, TFTP_WRQ):
            self._request(src_ip, src_port, dst_ip, op == TFTP_WRQ, p, ts)
            return
        from_server = True
        t = self._by_client.get((dst_ip, dst_port))
        if t is None or t.server_ip != src_ip:
            from_server = False
            t = self._by_client.get((src_ip, src_port))
            if t is None or t.server_ip != dst_ip:
                return
        if from_server:
            if t.server_tid is None:
                t.server_tid = src_port
            elif src_port != t.server_tid:
                return  # another TID: not part of this transfer (RFC 1350 §4)
        elif t.server_tid is not None and dst_port != t.server_tid:
            return
        t.last_ts = ts or t.last_ts
        if op == TFTP_DATA:
            # Data goes server->client for a read, client->server for a write.
            if from_server == t.write:
                return
            self._data(t, _U16.unpack_from(p, 2)[0], p[4:])
        elif op == TFTP_OACK and from_server:
            opts = _tftp_options(p[2:])
            t.options.update({f"oack_{k}": v for k, v in opts.items()})
            blk = opts.get("blksize", "")
            if _is_number(blk) and 8 <= int(blk) <= 65464:
                t.blksize = int(blk)
            tsize = opts.get("tsize", "")
            if _is_number(tsize):
                t.body.transfer.declared_size = int(tsize)
        elif op == TFTP_ERROR:
            code = _U16.unpack_from(p, 2)[0]
            msg = p[4:].split(b"\0", 1)[0].decode("latin-1")
            t.body.transfer.extra["error"] = {"code": code, "message": msg}
            self._close(t, False)

    def expire(self, now: float, idle: float = 30.0) -> None:
        """Close transfers idle for `idle` seconds (incomplete)."""
        for t in [t for t in self._by_client.values() if now - t.last_ts > idle]:
            self._close(t, False)

    def close(self) -> None:
        for t in list(self._by_client.values()):
            self._close(t, False)

    # -- internals -------------------------------------------------------------------------------
    def _request(self, cip: str, cport: int, sip: str, write: bool, p: bytes, ts: float) -> None:
        fields = p[2:].split(b"\0")
        if len(fields) < 3:
            self.malformed += 1
            return
        name = fields[0].decode("latin-1")
        mode = fields[1].decode("latin-1").lower()
        key = (cip, cport)
        old = self._by_client.get(key)
        if old is not None:
            if old.server_ip == sip and old.body.transfer.extra.get("remote_name") == name:
                return  # retransmitted request
            self._close(old, False)
        while len(self._by_client) >= self.max_transfers:
            self._close(min(self._by_client.values(), key=lambda x: x.last_ts), False)
        t = Transfer(
            protocol="tftp",
            direction="toserver" if write else "toclient",
            method="WRQ" if write else "RRQ",
            filename=safe_filename(name),
            extra={"mode": mode, "remote_name": name, "server": sip, "client": [cip, cport]},
        )
        opts = _tftp_options(b"\0".join(fields[2:]))
        if opts:
            t.extra["options"] = opts
            if write and _is_number(opts.get("tsize", "")):
                t.declared_size = int(opts["tsize"])
        tr = _TftpTransfer(key, sip, write, _Body(t, self.max_carve, self.max_carve > 0))
        tr.last_ts = ts
        self._by_client[key] = tr

    def _data(self, t: _TftpTransfer, block: int, payload: bytes) -> None:
        expected = t.next_block & 0xFFFF
        diff = (block - expected) & 0xFFFF
        if diff >= 0x8000:
            self.duplicates += 1  # an earlier block again (lost ACK): first copy kept
            return
        if diff == 1 and expected == 0 and not t.ahead:
            # Block numbers wrapped to 1 instead of 0 (both conventions exist).
            t.next_block += 1
            diff = 0
        if diff:
            if diff <= TFTP_MAX_AHEAD and len(t.ahead) < TFTP_MAX_AHEAD:
                t.ahead.setdefault(t.next_block + diff, payload)
            return
        while True:
            t.body.add(payload)
            t.next_block += 1
            if len(payload) < t.blksize:
                t.body.transfer.extra["blocks"] = t.next_block - 1
                self._close(t, True)
                return
            nxt = t.ahead.pop(t.next_block, None)
            if nxt is None:
                return
            payload = nxt

    def _close(self, t: _TftpTransfer, framed: bool) -> None:
        if self._by_client.get(t.client) is not t:
            return
        del self._by_client[t.client]
        tr = t.body.transfer
        tr.extra["blksize"] = t.blksize
        tr.extra["server_tid"] = t.server_tid
        if t.options:
            tr.extra.setdefault("options", {}).update(t.options)
        if not framed and tr.declared_size is not None and t.body.size < tr.declared_size:
            t.body.gap(tr.declared_size - t.body.size, fill=False)
        self._emit(t.body.finish(framed))


def _tftp_options(raw: bytes) -> dict[str, str]:
    """name\\0value\\0 pairs (RFC 2347), names lower-cased."""
    fields = raw.split(b"\0")
    out: dict[str, str] = {}
    for i in range(0, len(fields) - 1, 2):
        if fields[i]:
            out[fields[i].decode("latin-1").lower()] = fields[i + 1].decode("latin-1")
    return out


# -- firmware recognition -------------------------------------------------------------------------
HIK_XOR_KEY = bytes.fromhex("BACDBCFED6CADDD3BAB9A3ABBFCBB5BE")


def hik_xor(buf: bytes, start: int = 0) -> bytes:
    """XOR-decode (or encode) `buf` located at absolute file offset `start` of a digicap image:
    byte i uses key[(i + (i >> 4)) & 0x0F] (firmware-formats.md §2.1)."""
    return bytes(b ^ HIK_XOR_KEY[((start + n) + ((start + n) >> 4)) & 0x0F] for n, b in enumerate(buf))


@dataclass(frozen=True, slots=True)
class ContentRule:
    id: str
    vendor: str
    offset: int
    magics: tuple[bytes, ...]
    transform: str | None = None
    zip_members: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class NameRule:
    id: str
    vendor: str
    confidence: str
    regex: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class UpdatePatterns:
    content: tuple[ContentRule, ...]
    filenames: tuple[NameRule, ...]
    uris: tuple[NameRule, ...]


class PatternError(ValueError):
    """rules/update-patterns.yaml is malformed; the message names the file and the entry."""


def load_update_patterns(path: Path | str | None = None) -> UpdatePatterns:
    """Parse and validate an update-patterns file (default: rules/update-patterns.yaml)."""
    p = Path(path) if path is not None else RULES_FILE
    try:
        raw = parse_yaml(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PatternError(f"{p}: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("version") != 1:
        raise PatternError(f"{p}: expected a mapping with version: 1")

    def entries(section: str) -> list[dict[str, Any]]:
        items = raw.get(section) or []
        if not isinstance(items, list) or not all(isinstance(e, dict) and e.get("id") for e in items):
            raise PatternError(f"{p}: {section}: expected a list of mappings with an id")
        return items

    content = []
    for e in entries("content"):
        where = f"{p}: content {e['id']}"
        magics: list[bytes] = []
        try:
            magics += [bytes.fromhex(str(h)) for h in e.get("magic_hex") or []]
        except ValueError as exc:
            raise PatternError(f"{where}: magic_hex: {exc}") from exc
        magics += [str(a).encode("latin-1") for a in e.get("magic_ascii") or []]
        if not magics or not all(magics):
            raise PatternError(f"{where}: needs magic_hex or magic_ascii")
        transform = e.get("transform")
        if transform not in (None, "hikvision-xor"):
            raise PatternError(f"{where}: unknown transform {transform!r}")
        offset = e.get("offset", 0)
        if not isinstance(offset, int) or offset < 0:
            raise PatternError(f"{where}: offset must be a non-negative integer")
        members = frozenset(str(m).lower() for m in e.get("zip_members") or [])
        vendor = str(e.get("vendor", ""))
        content.append(ContentRule(str(e["id"]), vendor, offset, tuple(magics), transform, members))

    def names(section: str) -> tuple[NameRule, ...]:
        out = []
        for e in entries(section):
            pats = e.get("patterns")
            if not isinstance(pats, list) or not pats:
                raise PatternError(f"{p}: {section} {e['id']}: needs a list of patterns")
            rx = "|".join(f"(?:{fnmatch.translate(str(x).lower())})" for x in pats)
            vendor, confidence = str(e.get("vendor", "")), str(e.get("confidence", "medium"))
            out.append(NameRule(str(e["id"]), vendor, confidence, re.compile(rx)))
        return tuple(out)

    return UpdatePatterns(tuple(content), names("filenames"), names("uris"))


@lru_cache(maxsize=1)
def default_patterns() -> UpdatePatterns:
    return load_update_patterns()


SNIFF_WINDOW = 1 * MiB  # content rules look at most this far (ZIP local headers included)
_ZIP_LOCAL = struct.Struct("<4sHHHHHIIIHH")
MAX_ZIP_HEADERS = 64


def zip_member_names(data: bytes, first_magic: bytes = b"PK\x03\x04") -> list[str]:
    """Names of the ZIP local headers visible in `data` (which starts with a local header whose
    magic may be `first_magic`, e.g. Dahua's DH). Walks by compressed size, and falls back to
    searching the next local header when sizes are deferred to a data descriptor."""
    names: list[str] = []
    pos = 0
    magic = first_magic
    while len(names) < MAX_ZIP_HEADERS and pos + 30 <= len(data):
        if data[pos : pos + 4] != magic:
            break
        _sig, _ver, flags, _meth, _t, _d, _crc, csize, _usize, nlen, xlen = _ZIP_LOCAL.unpack_from(data, pos)
        name = data[pos + 30 : pos + 30 + nlen]
        if len(name) < nlen:
            break
        names.append(name.decode("utf-8" if flags & 0x800 else "cp437", "replace"))
        magic = b"PK\x03\x04"
        nxt = pos + 30 + nlen + xlen + csize
        if flags & 0x08 or csize == 0 or data[nxt : nxt + 4] != magic:
            nxt = data.find(magic, pos + 30 + nlen)
            if nxt < 0:
                break
        pos = nxt
    return names


def _content_match(rule: ContentRule, data: bytes) -> bool:
    for magic in rule.magics:
        end = rule.offset + len(magic)
        if len(data) < end:
            continue
        window = data[rule.offset : end]
        if rule.transform == "hikvision-xor":
            window = hik_xor(window, rule.offset)
        if window != magic:
            continue
        if not rule.zip_members:
            return True
        for name in zip_member_names(data[rule.offset :], magic):
            if name.rstrip("/").rsplit("/", 1)[-1].lower() in rule.zip_members:
                return True
    return False


def sniff_firmware(
    first_bytes: bytes | bytearray | memoryview,
    filename: str | None = None,
    patterns: UpdatePatterns | None = None,
) -> str | None:
    """Id of the first content rule matching `first_bytes`, else of the first file-name rule
    matching `filename`, else None (rules/update-patterns.yaml)."""
    pats = patterns or default_patterns()
    data = bytes(first_bytes[:SNIFF_WINDOW])
    if data:
        for rule in pats.content:
            if _content_match(rule, data):
                return rule.id
    return match_update_filename(filename, pats) if filename else None


def match_update_filename(name: str | None, patterns: UpdatePatterns | None = None) -> str | None:
    """Id of the first file-name rule matching `name` (its last path component), or None."""
    base = safe_filename(name)
    if not base:
        return None
    base = base.lower()
    for rule in (patterns or default_patterns()).filenames:
        if rule.regex.match(base):
            return rule.id
    return None


def match_update_uri(uri: str | None, patterns: UpdatePatterns | None = None) -> str | None:
    """Id of the first URI rule matching the request path of `uri` (query ignored), or None."""
    if not uri:
        return None
    try:
        path = unquote(urlsplit(uri).path).lower()
    except ValueError:
        return None
    for rule in (patterns or default_patterns()).uris:
        if rule.regex.match(path):
            return rule.id
    return None
