"""Data model of a firmware scan: severities, findings, members, containers, limits and the report.

This is the contract between the unpacking layer (containers, extraction, limits), the inspectors
(YARA rules, crypto material, password hashes, integrity) and the report writers (JSON, HTML,
Prometheus). Everything here is plain data, picklable, so reports can cross process boundaries.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


class Severity(enum.IntEnum):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(
                f"unknown severity {text!r} (expected one of: {', '.join(s.label for s in cls)})"
            ) from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(slots=True)
class Finding:
    """One piece of evidence. `path` is the member path inside the image ("" = the image itself);
    `offset` is the byte offset of the evidence inside that member (None when not applicable)."""

    rule_id: str
    severity: Severity
    message: str
    path: str = ""
    offset: int | None = None
    evidence: str = ""  # short, printable excerpt (never more than ~200 chars)
    category: str = ""  # backdoor, credentials, telnet, bricking, endpoint, crypto, integrity, limit...
    source: str = ""  # yara, handler, crypto, passwd, hashlist, binwalk, limits, integrity
    cve: list[str] = field(default_factory=list)
    reference: str = ""
    vendor: str = ""

    def to_dict(self) -> dict[str, Any]:
        # field by field: dataclasses.asdict deep-copies recursively and is slow on big reports
        d = {name: getattr(self, name) for name in _FINDING_FIELDS}
        d["severity"] = self.severity.label
        d["cve"] = list(self.cve)
        return d


@dataclass(slots=True)
class Member:
    """A file found inside the image (at any nesting depth)."""

    path: str  # e.g. "digicap.dav!/rootfs.squashfs!/etc/init.d/rcS" ('!' separates nesting levels)
    size: int
    sha256: str
    kind: str = "file"  # file, dir, symlink, hardlink, device, fifo, socket
    mode: int | None = None
    link_target: str | None = None
    tlsh: str | None = None  # executables and large files only
    container: str | None = None  # handler NAME when this member was itself unpacked
    depth: int = 0


@dataclass(slots=True)
class ContainerInfo:
    """What a handler recognised: the format, where it sits, and what its header says."""

    handler: str
    path: str  # member path of the blob that holds the container ("" = image)
    offset: int
    size: int | None
    metadata: dict[str, Any] = field(default_factory=dict)
    encrypted: bool = False
    signature: str = ""  # e.g. "hikvision-checksum (forgeable)", "dahua-sign.img", "none"


@dataclass(slots=True)
class Limits:
    """Bounds for hostile input; hitting one ends that branch with a `limit` finding."""

    max_depth: int = 8
    max_total_bytes: int = 2 * 1024**3  # all decompressed bytes of one image
    max_file_bytes: int = 512 * 1024**2  # one member
    max_ratio: float = 200.0  # decompressed / compressed, per stream (only past 1 MiB output)
    max_files: int = 100_000
    max_seconds: float = 600.0  # wall time per image


@dataclass(slots=True)
class ImageReport:
    path: str
    size: int
    sha256: str
    tlsh: str | None = None
    containers: list[ContainerInfo] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    keys: list[dict[str, Any]] = field(default_factory=list)  # private keys / SSH host keys found
    certificates: list[dict[str, Any]] = field(default_factory=list)
    integrity: dict[str, Any] = field(default_factory=dict)  # signed?, how, region lock, downgrade
    hash_verdict: str = "unknown"  # known-good, known-bad, unknown
    binwalk: list[dict[str, Any]] = field(default_factory=list)  # carved signatures (offset, description)
    entropy: list[float] = field(default_factory=list)  # Shannon entropy (bits/byte) per block, for the plot
    entropy_block_size: int = 0
    error: str | None = None  # set when the image could not be analysed at all
    duration_seconds: float = 0.0
    bytes_unpacked: int = 0

    def max_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(replace(self, members=[], findings=[]))
        d["members"] = [{name: getattr(m, name) for name in _MEMBER_FIELDS} for m in self.members]
        d["findings"] = [f.to_dict() for f in self.findings]
        return d


# Finding and Member hold only plain values (and Finding.cve, a list of str), so a shallow copy
# field by field equals asdict()
_FINDING_FIELDS = tuple(f.name for f in fields(Finding))
_MEMBER_FIELDS = tuple(f.name for f in fields(Member))
