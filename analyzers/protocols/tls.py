"""TLS handshake fingerprints: ClientHello (SNI, ALPN, JA4) and the server certificate (TLS <= 1.2).

Record: type u8 (22 handshake) | version u16 | length u16; handshake: type u8 | length u24.
ClientHello: version u16, random[32], session id<u8>, cipher suites<u16>, compression<u8>,
extensions<u16> (type u16, length u16, data). All big-endian.

JA4 (FoxIO's published spec, https://github.com/FoxIO-LLC/ja4/blob/main/technical_details/JA4.md):
    JA4_a = "t" + version ("13", "12", "11", "10", "s3"; highest supported_versions entry, else the
            ClientHello version) + "d"/"i" (SNI present or not) + cipher count (2 digits, max 99)
            + extension count (2 digits, max 99) + first and last character of the first ALPN value
            ("00" without ALPN; its hex first/last digits when not alphanumeric)
    JA4_b = first 12 hex digits of SHA-256 over the cipher suites as 4-digit hex, sorted, comma-joined
    JA4_c = same over the sorted extension types without SNI (0x0000) and ALPN (0x0010), then "_"
            and the signature algorithms in wire order (no "_" part when there are none)
GREASE values (0x?a?a) are ignored everywhere; an empty list hashes to "000000000000".
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

CONTENT_HANDSHAKE = 22
CONTENT_CCS = 20
HS_CLIENT_HELLO, HS_SERVER_HELLO, HS_CERTIFICATE = 1, 2, 11
EXT_SNI, EXT_ALPN, EXT_SIG_ALGS, EXT_SUPPORTED_VERSIONS = 0x0000, 0x0010, 0x000D, 0x002B
MAX_RECORD = 16_384 + 2048
MAX_BUFFER = 65_536
_U16 = struct.Struct("!H")
_REC = struct.Struct("!BHH")
VERSION_CODES = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2"}
EMPTY_HASH = "000000000000"


def is_grease(value: int) -> bool:
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


@dataclass(slots=True)
class ClientHello:
    version: int
    ciphers: list[int] = field(default_factory=list)
    extensions: list[int] = field(default_factory=list)  # wire order, GREASE included
    sni: str | None = None
    alpn: list[str] = field(default_factory=list)
    sig_algs: list[int] = field(default_factory=list)
    supported_versions: list[int] = field(default_factory=list)

    @property
    def ja4(self) -> str:
        return ja4(self)


@dataclass(slots=True)
class ServerHandshake:
    version: int | None = None  # negotiated (supported_versions in ServerHello, else legacy)
    cipher: int | None = None
    certificates: list[bytes] = field(default_factory=list)  # DER, leaf first
    encrypted: bool = False  # TLS 1.3: certificates are not visible

    def leaf(self) -> dict[str, Any] | None:
        return certificate_names(self.certificates[0]) if self.certificates else None


class _Reader:
    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data, self.pos, self.end = data, pos, len(data) if end is None else end

    def u8(self) -> int:
        if self.pos + 1 > self.end:
            raise ValueError("short")
        self.pos += 1
        return self.data[self.pos - 1]

    def u16(self) -> int:
        if self.pos + 2 > self.end:
            raise ValueError("short")
        self.pos += 2
        return int(_U16.unpack_from(self.data, self.pos - 2)[0])

    def u24(self) -> int:
        return self.u8() << 16 | self.u16()

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise ValueError("short")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def sub(self, n: int) -> _Reader:
        if n < 0 or self.pos + n > self.end:
            raise ValueError("short")
        r = _Reader(self.data, self.pos, self.pos + n)
        self.pos += n
        return r

    @property
    def left(self) -> int:
        return self.end - self.pos


def handshake_messages(data: bytes | bytearray | memoryview) -> tuple[list[tuple[int, bytes]], bool, bool]:
    """Split a byte stream of TLS records into handshake messages.

    Returns (messages as (type, body), complete: the stream ended on a record boundary,
    saw_non_handshake: a ChangeCipherSpec / application-data record was met (stop looking))."""
    raw = bytes(data[:MAX_BUFFER])
    pos, hs = 0, bytearray()
    other = False
    while pos + 5 <= len(raw):
        ctype, version, length = _REC.unpack_from(raw, pos)
        if ctype not in (20, 21, 22, 23) or version >> 8 != 3 or length > MAX_RECORD:
            return [], False, other
        if pos + 5 + length > len(raw):
            break
        if ctype == CONTENT_HANDSHAKE:
            hs += raw[pos + 5 : pos + 5 + length]
        else:
            other = True
            pos += 5 + length
            break
        pos += 5 + length
    messages = []
    r = _Reader(bytes(hs))
    while r.left >= 4:
        start = r.pos
        try:
            mtype = r.u8()
            body = r.take(r.u24())
        except ValueError:
            r.pos = start
            break
        messages.append((mtype, body))
    return messages, pos == len(raw) and r.left == 0, other


def parse_client_hello(data: bytes | bytearray | memoryview) -> ClientHello | None:
    """The ClientHello at the start of a client's TCP payload (possibly several records), or None."""
    try:
        messages, _complete, _other = handshake_messages(data)
        if not messages or messages[0][0] != HS_CLIENT_HELLO:
            return None
        return _client_hello(messages[0][1])
    except (ValueError, struct.error, UnicodeDecodeError):
        return None


def _client_hello(body: bytes) -> ClientHello:
    r = _Reader(body)
    hello = ClientHello(version=r.u16())
    r.take(32)
    r.take(r.u8())
    cs = r.sub(r.u16())
    while cs.left >= 2:
        hello.ciphers.append(cs.u16())
    r.take(r.u8())
    if r.left < 2:
        return hello
    exts = r.sub(r.u16())
    while exts.left >= 4:
        etype = exts.u16()
        ext = exts.sub(exts.u16())
        hello.extensions.append(etype)
        if etype == EXT_SNI:
            names = ext.sub(ext.u16())
            while names.left >= 3:
                kind, name = names.u8(), names.take(names.u16())
                if kind == 0 and hello.sni is None:
                    hello.sni = name.decode("ascii", "replace")[:253]
        elif etype == EXT_ALPN:
            protos = ext.sub(ext.u16())
            while protos.left >= 1:
                hello.alpn.append(protos.take(protos.u8()).decode("latin-1"))
        elif etype == EXT_SIG_ALGS:
            algs = ext.sub(ext.u16())
            while algs.left >= 2:
                hello.sig_algs.append(algs.u16())
        elif etype == EXT_SUPPORTED_VERSIONS:
            vers = ext.sub(ext.u8())
            while vers.left >= 2:
                hello.supported_versions.append(vers.u16())
    return hello


def _hash12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12] if text else EMPTY_HASH


def _alpn_code(alpn: list[str]) -> str:
    if not alpn or not alpn[0]:
        return "00"
    first, last = alpn[0][0], alpn[0][-1]
    if first.isascii() and first.isalnum() and last.isascii() and last.isalnum():
        return first + last
    hexed = alpn[0].encode("latin-1").hex()
    return hexed[0] + hexed[-1]


def ja4_parts(hello: ClientHello) -> tuple[str, str, str]:
    """(JA4_a, the cipher list hashed into JA4_b, the extension + signature text hashed into JA4_c)."""
    versions = [v for v in hello.supported_versions if not is_grease(v)]
    top = max(versions) if versions else hello.version
    # TLS 1.3 drafts (0x7fNN) are TLS 1.3 (camwatch's reading; the spec table lists finals only)
    version = "13" if top >> 8 == 0x7F else VERSION_CODES.get(top, "00")
    ciphers = [c for c in hello.ciphers if not is_grease(c)]
    exts = [e for e in hello.extensions if not is_grease(e)]
    sni = "d" if EXT_SNI in exts else "i"
    a = f"t{version}{sni}{min(len(ciphers), 99):02d}{min(len(exts), 99):02d}{_alpn_code(hello.alpn)}"
    b = ",".join(f"{c:04x}" for c in sorted(ciphers))
    c = ",".join(f"{e:04x}" for e in sorted(e for e in exts if e not in (EXT_SNI, EXT_ALPN)))
    sigs = ",".join(f"{s:04x}" for s in hello.sig_algs if not is_grease(s))
    if c and sigs:
        c = f"{c}_{sigs}"
    return a, b, c


def ja4(hello: ClientHello) -> str:
    a, b, c = ja4_parts(hello)
    return f"{a}_{_hash12(b)}_{_hash12(c)}"


def ja4_raw(hello: ClientHello) -> str:
    """JA4_r: the unhashed form (useful when comparing with other tools)."""
    a, b, c = ja4_parts(hello)
    return f"{a}_{b}_{c}"


def parse_server(data: bytes | bytearray | memoryview) -> ServerHandshake | None:
    """ServerHello (+ Certificate when sent in clear, TLS <= 1.2) from the server's first bytes."""
    try:
        messages, _complete, other = handshake_messages(data)
    except (ValueError, struct.error):
        return None
    if not messages or messages[0][0] != HS_SERVER_HELLO:
        return None
    out = ServerHandshake()
    try:
        r = _Reader(messages[0][1])
        out.version = r.u16()
        r.take(32)
        r.take(r.u8())
        out.cipher = r.u16()
        r.u8()
        if r.left >= 2:
            exts = r.sub(r.u16())
            while exts.left >= 4:
                etype, ext = exts.u16(), None
                ext = exts.sub(exts.u16())
                if etype == EXT_SUPPORTED_VERSIONS and ext.left >= 2:
                    out.version = ext.u16()
    except ValueError:
        return out
    if out.version == 0x0304:
        out.encrypted = True
        return out
    for mtype, body in messages[1:]:
        if mtype != HS_CERTIFICATE:
            continue
        try:
            r = _Reader(body)
            chain = r.sub(r.u24())
            while chain.left >= 3 and len(out.certificates) < 4:
                out.certificates.append(chain.take(chain.u24()))
        except ValueError:
            pass
        break
    del other
    return out


def certificate_names(der: bytes) -> dict[str, Any] | None:
    """Subject / issuer (RFC 4514 text and CN/O), serial and validity of a DER certificate."""
    try:
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        cert = x509.load_der_x509_certificate(der)

        def attr(name: Any, oid: Any) -> str | None:
            values = name.get_attributes_for_oid(oid)
            return str(values[0].value)[:256] if values else None

        return {
            "subject": cert.subject.rfc4514_string()[:512],
            "issuer": cert.issuer.rfc4514_string()[:512],
            "subject_cn": attr(cert.subject, NameOID.COMMON_NAME),
            "subject_o": attr(cert.subject, NameOID.ORGANIZATION_NAME),
            "issuer_cn": attr(cert.issuer, NameOID.COMMON_NAME),
            "issuer_o": attr(cert.issuer, NameOID.ORGANIZATION_NAME),
            "serial": format(cert.serial_number, "x"),
            "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "self_signed": cert.subject == cert.issuer,
        }
    except Exception:
        return None


def build_client_hello(
    *,
    sni: str | None = None,
    ciphers: list[int] | None = None,
    extensions: list[tuple[int, bytes]] | None = None,
    alpn: list[str] | None = None,
    sig_algs: list[int] | None = None,
    version: int = 0x0303,
    random: bytes = b"\x00" * 32,
) -> bytes:
    """A ClientHello record (for tests and scenarios). Extensions are written in the order given,
    then SNI / ALPN / signature_algorithms when requested and not already listed."""
    exts = list(extensions or [])
    listed = {t for t, _ in exts}
    if sni is not None and EXT_SNI not in listed:
        name = sni.encode()
        exts.append((EXT_SNI, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name))
    if alpn and EXT_ALPN not in listed:
        body = b"".join(bytes([len(p)]) + p.encode() for p in alpn)
        exts.append((EXT_ALPN, _U16.pack(len(body)) + body))
    if sig_algs and EXT_SIG_ALGS not in listed:
        body = b"".join(_U16.pack(s) for s in sig_algs)
        exts.append((EXT_SIG_ALGS, _U16.pack(len(body)) + body))
    cs = b"".join(_U16.pack(c) for c in (ciphers or [0x1301, 0xC02F]))
    ext_bytes = b"".join(_U16.pack(t) + _U16.pack(len(d)) + d for t, d in exts)
    hello = _U16.pack(version) + random + b"\x00" + _U16.pack(len(cs)) + cs + b"\x01\x00"
    hello += _U16.pack(len(ext_bytes)) + ext_bytes
    hs = bytes([HS_CLIENT_HELLO]) + len(hello).to_bytes(3, "big") + hello
    return _REC.pack(CONTENT_HANDSHAKE, 0x0301, len(hs)) + hs
