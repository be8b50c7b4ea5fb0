"""Hikvision / EZVIZ `digicap.dav` update container (firmware-formats.md section 2).

The header is XOR-obfuscated with a fixed public key indexed by absolute file offset. Decoded, it
holds the magic (SWKH, 02KH or 03KH), a byte-sum header checksum, the header length, the file count,
the language/region byte, device class, OEM code, version and a table of 44-byte entries
(name[32], offset, size, byte-sum checksum). Members are carved by offset. 03KH bodies (and the IPC
G0 key-ladder payloads) are AES-encrypted: they are reported as encrypted, with the member list,
never as failures.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass, field

import numpy as np

from analyzers.firmware.handlers.base import (
    Blob,
    Child,
    ContainerHandler,
    HandlerDoc,
    HandlerResult,
    Magic,
    NotMyFormat,
    UnpackContext,
)
from analyzers.firmware.handlers.magic import classify_payload, entropy
from analyzers.firmware.model import Finding, Severity

HIK_XOR_KEY = bytes.fromhex("BACDBCFED6CADDD3BAB9A3ABBFCBB5BE")
RAW_MAGICS = {
    b"\xe9\x9a\xf7\xb6": "SWKH",
    b"\x8a\xff\xf7\xb6": "02KH",
    b"\x8a\xfe\xf7\xb6": "03KH",
}
ENTRY_SIZE = 44
TABLE_START = 0x40
MAX_FILES = 4096  # far above any real package (30 in the largest known); bounds the header read
LANGUAGES = {1: "EN/multi-language", 2: "CN"}
UNSET = 0xFFFFFFFF


def hik_xor(buf: Blob, start: int = 0) -> bytes:
    """Encode or decode `buf`, which sits at absolute file offset `start` (the operation is its own
    inverse). The key index uses the absolute offset: key[(pos + (pos >> 4)) & 0x0F]."""
    n = len(buf)
    if n == 0:
        return b""
    # the key sequence repeats every 256 bytes (pos & 0xFF determines the index), so build one
    # period starting at `start` and XOR whole integers instead of looping per byte
    period = bytes(HIK_XOR_KEY[((start + i) + ((start + i) >> 4)) & 0x0F] for i in range(256))
    stream = (period * (n // 256 + 1))[:n]
    return (int.from_bytes(bytes(buf), "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def byte_sum(data: Blob) -> int:
    # NumPy sums 64 MiB in ~20 ms; the builtin sum() over bytes takes ~0.5 s
    return int(np.frombuffer(data, dtype=np.uint8).sum(dtype=np.uint64)) & 0xFFFFFFFF


@dataclass(slots=True)
class DigicapEntry:
    name: str
    raw_name: bytes
    offset: int
    size: int
    checksum: int


@dataclass(slots=True)
class DigicapHeader:
    magic: str
    checksum: int
    header_length: int
    file_count: int
    language: int
    device_class: int
    oem_code: int
    version: int
    extra: bytes  # 0x20-0x3F: product-line specific fields, reported raw
    entries: list[DigicapEntry] = field(default_factory=list)
    decoded: bytes = b""  # the decoded header bytes available
    problems: list[str] = field(default_factory=list)


def version_text(value: int) -> str | None:
    """0x05040000 -> 'V5.4.0' (major.minor.build bytes); None when unset."""
    if value == UNSET:
        return None
    return f"V{value >> 24}.{(value >> 16) & 0xFF}.{value & 0xFFFF}"


def parse_header(data: Blob) -> DigicapHeader:
    """Decode and parse the header (as far as `data` reaches). Raise NotMyFormat without a magic."""
    magic = RAW_MAGICS.get(bytes(data[:4]))
    if magic is None or len(data) < TABLE_START:
        raise NotMyFormat("no digicap magic")
    first = hik_xor(data[:TABLE_START])
    checksum, header_length, file_count, language, device_class, oem, version = struct.unpack_from(
        "<7I", first, 4
    )
    header = DigicapHeader(
        magic, checksum, header_length, file_count, language, device_class, oem, version, first[0x20:0x40]
    )
    expected = TABLE_START + ENTRY_SIZE * file_count
    if file_count > MAX_FILES:
        header.problems.append(f"file count {file_count} is implausible")
        file_count = 0
    if header_length != expected:
        header.problems.append(
            f"header length {header_length} != 0x40 + 44 x {file_count} (= {expected}); malformed header"
        )
    table_end = min(max(header_length, expected), len(data), TABLE_START + ENTRY_SIZE * MAX_FILES)
    decoded = first + hik_xor(data[TABLE_START:table_end], TABLE_START)
    header.decoded = decoded
    if table_end < expected:
        header.problems.append(f"header truncated: {len(data)} bytes present, table needs {expected}")
    for index in range(file_count):
        base = TABLE_START + index * ENTRY_SIZE
        if base + ENTRY_SIZE > len(decoded):
            break
        raw_name = decoded[base : base + 32].split(b"\x00", 1)[0]
        offset, size, checksum = struct.unpack_from("<3I", decoded, base + 32)
        header.entries.append(DigicapEntry(raw_name.decode("latin-1"), raw_name, offset, size, checksum))
    return header


class HikvisionDigicapHandler(ContainerHandler):
    NAME = "hikvision_digicap"
    PATTERNS = tuple(Magic(raw) for raw in RAW_MAGICS)
    DOC = HandlerDoc(
        name="Hikvision digicap.dav",
        vendor="Hikvision / EZVIZ",
        description="XOR-obfuscated header (SWKH/02KH/03KH), byte-sum checksums, flat file table.",
        references=(
            "firmware-formats.md section 2",
            "renaudallard/hikvision_R2_firmware hikfw.py (format reference)",
        ),
        limitations=(
            "03KH and IPC G0 payloads are AES-encrypted: reported as encrypted, not decrypted.",
            "Header fields 0x18-0x3F differ between product lines; they are reported raw.",
        ),
    )

    def unpack(self, data: memoryview, ctx: UnpackContext) -> HandlerResult:
        header = parse_header(data)
        if ctx.carving and (header.problems or not header.entries):
            raise NotMyFormat("digicap magic without a consistent header inside another blob")
        findings: list[Finding] = []
        for problem in header.problems:
            findings.append(ctx.finding("CW-FW-HIK-MALFORMED", Severity.LOW, f"digicap: {problem}"))
        # the checksum covers the decoded header from 0x0C to header_length
        header_ok: bool | None = None
        if len(header.decoded) >= header.header_length >= 0x0C:
            header_ok = byte_sum(header.decoded[0x0C : header.header_length]) == header.checksum
            if not header_ok:
                findings.append(
                    ctx.finding(
                        "CW-FW-HIK-HEADER-CHECKSUM",
                        Severity.LOW,
                        f"digicap header checksum mismatch (stored {header.checksum:#x})",
                        offset=4,
                        category="integrity",
                    )
                )
        names = [e.name for e in header.entries]
        meta: dict[str, object] = {
            "magic": header.magic,
            "header_checksum": header.checksum,
            "header_checksum_ok": header_ok,
            "header_length": header.header_length,
            "file_count": header.file_count,
            "language": header.language,
            "language_name": LANGUAGES.get(header.language, "unknown"),
            "device_class": header.device_class,
            "oem_code": header.oem_code,
            "version": header.version,
            "version_text": version_text(header.version),
            "header_extra_hex": header.extra.hex(),
            "files": [
                {"name": e.name, "offset": e.offset, "size": e.size, "checksum": e.checksum}
                for e in header.entries
            ],
        }
        signature = "hikvision-byte-checksum (forgeable)"
        if "_cfgUpgSecPls" in names:
            signature = "hikvision-_cfgUpgSecPls (AES with public key, forgeable)"
        end = max(
            [header.header_length]
            + [e.offset + e.size for e in header.entries if e.offset + e.size <= len(data)]
        )
        info = ctx.container(self.NAME, size=min(end, len(data)), metadata=meta, signature=signature)
        children: list[Child] = []
        encrypted = header.magic == "03KH"
        self._check_entries(header, data, ctx, findings, children, meta)
        if header.magic == "02KH" and children:
            # 02KH wraps either a nested 03KH header or key-ladder-encrypted payloads (IPC G0)
            opaque = [c.name for c in children if self._looks_encrypted(c.read())]
            if opaque and len(opaque) == len(children):
                encrypted = True
        if encrypted:
            info.encrypted = True
            findings.append(
                ctx.finding(
                    "CW-FW-ENCRYPTED",
                    Severity.LOW,
                    f"digicap {header.magic} body is encrypted — not analysable "
                    f"({len(header.entries)} members listed: {', '.join(names[:10])})",
                    category="encrypted",
                    vendor="hikvision",
                )
            )
            if header.magic == "03KH":
                children = []  # AES bodies: the member list is in the metadata, the bytes are noise
        if ctx.header_only:
            children = []
        return HandlerResult([info], children, findings, encrypted=encrypted, size=info.size)

    @staticmethod
    def _looks_encrypted(blob: Blob) -> bool:
        head = blob[: 1 << 16]
        return bytes(head[:4]) in RAW_MAGICS or (classify_payload(head) is None and entropy(head) > 7.0)

    @staticmethod
    def _check_entries(
        header: DigicapHeader,
        data: memoryview,
        ctx: UnpackContext,
        findings: list[Finding],
        children: list[Child],
        meta: dict[str, object],
    ) -> None:
        spans: list[tuple[int, int, str]] = []
        bad_sums: list[str] = []
        for entry in header.entries:
            if entry.offset + entry.size > len(data) or entry.offset < TABLE_START:
                findings.append(
                    ctx.finding(
                        "CW-FW-HIK-MALFORMED",
                        Severity.LOW,
                        f"digicap entry {entry.name!r} points outside the file "
                        f"(offset {entry.offset}, size {entry.size}, file {len(data)} bytes)",
                    )
                )
                if entry.offset >= len(data) or entry.offset < TABLE_START:
                    continue
            body = data[entry.offset : min(entry.offset + entry.size, len(data))]
            spans.append((entry.offset, entry.offset + len(body), entry.name))
            verify = not ctx.header_only and header.magic != "03KH" and len(body) == entry.size
            if verify and byte_sum(body) != entry.checksum:
                bad_sums.append(entry.name)
            children.append(Child(entry.raw_name, data=body, size=len(body), flat_name=True))
        for name in bad_sums:
            findings.append(
                ctx.finding(
                    "CW-FW-HIK-FILE-CHECKSUM",
                    Severity.LOW,
                    f"digicap member {name!r}: byte-sum checksum mismatch",
                    category="integrity",
                )
            )
        meta["file_checksums_ok"] = None if ctx.header_only or header.magic == "03KH" else not bad_sums
        spans.sort()
        for (_s1, e1, n1), (s2, _e2, n2) in itertools.pairwise(spans):
            if s2 < e1:
                findings.append(
                    ctx.finding(
                        "CW-FW-HIK-MALFORMED", Severity.LOW, f"digicap members {n1!r} and {n2!r} overlap"
                    )
                )
