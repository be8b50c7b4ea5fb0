"""Signed rule bundles: one file carrying a rules tree, a manifest and an Ed25519 signature.

Format (docs/writing-rules.md, "Signed rule bundles"): an uncompressed POSIX ustar archive with, in
this order, `manifest.json` (canonical JSON: format version, bundle name and version, creation time,
signing key id, and the path, size and SHA-256 of every rule file), `manifest.sig` (the 64-byte
Ed25519 signature over SIGNING_CONTEXT + the manifest bytes) and `rules/<path>` for every file.
The signature binds the manifest, the manifest binds every file by hash, so one verification covers
the whole tree. Packing is deterministic: same files, key and creation time give the same bytes.

A bundle is hostile input until verified: it is read by a strict ustar reader of our own (regular
files only, no links, no directories, no pax/GNU extension headers), with bounded sizes and member
counts, and only data files with safe relative names; nothing is written to disk before the
signature and every hash have been checked. Verified bundles are unpacked into a fresh directory
under the state directory and then made current by renaming a symlink, so a loader sees one complete
rule set or the previous one, never a mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import CamwatchError, ConfigError, UsageError

FORMAT = "camwatch-rule-bundle"
FORMAT_VERSION = 1
# Domain separation: a key used for bundles signs nothing that could be mistaken for another message.
SIGNING_CONTEXT = b"camwatch rule bundle v1\x00"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
RULES_PREFIX = "rules/"
SIGNATURE_SIZE = 64

# Hostile-input bounds. The shipped rules tree is about 170 KiB in 23 files.
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_TOTAL_BYTES = 64 * 1024 * 1024
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_FILES = 4096
MAX_PATH_CHARS = 200
MAX_DEPTH = 8
MAX_TEXT_FIELD = 200  # name, version, created

DATA_SUFFIXES = (".yaml", ".yml", ".yar", ".yara", ".txt", ".json", ".csv")
_COMPONENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_VERSION_SAFE_RE = re.compile(r"[^A-Za-z0-9._+-]")

ACTIVE_LINK = "current"  # state_dir/rules/current -> the directory of the active rule set
KEEP_PREVIOUS = 2  # unpacked rule sets kept besides the current one (a process may still read them)
STALE_UNPACK_SECONDS = 3600.0


class RuleBundleError(CamwatchError):
    """A bundle that is damaged, unsigned, tampered with, signed by an untrusted key or hostile.

    Exit code 1 for `camwatch rules verify`; the agent turns it into a start-up refusal (exit 2)."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = str(path), problem


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the rules tree, POSIX separators
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    created: str
    key_id: str
    files: tuple[FileEntry, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class TrustKey:
    path: Path
    key: Any  # cryptography Ed25519PublicKey
    key_id: str


@dataclass(frozen=True)
class Bundle:
    """A bundle read and checked against its manifest; `trusted_by` is set once the signature verified."""

    path: Path
    manifest: Manifest
    manifest_bytes: bytes
    signature: bytes | None
    files: dict[str, bytes]
    trusted_by: TrustKey | None = None

    @property
    def digest(self) -> str:
        """SHA-256 of the manifest: identifies the exact rule set."""
        return hashlib.sha256(self.manifest_bytes).hexdigest()


# --------------------------------------------------------------------------- keys


def key_id_of(public_key: Any) -> str:
    """A short, stable id of an Ed25519 public key (first 16 hex digits of SHA-256 of the raw key)."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key(out: Path) -> tuple[Path, str]:
    """Write a new Ed25519 private key (PKCS#8 PEM, mode 0600) to `out` and its public key to
    `out.pub`; refuses to overwrite either. Returns the public key path and the key id."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub = out.with_name(out.name + ".pub")
    for p in (out, pub):
        if p.exists() or p.is_symlink():
            raise UsageError(f"{p}: already exists (refusing to overwrite a key)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        _write_new(out, private_pem, 0o600)
        _write_new(pub, public_pem, 0o644)
    except OSError as exc:
        with contextlib.suppress(OSError):
            out.unlink()
        raise UsageError(f"{exc.filename or out}: cannot write key: {exc.strerror or exc}") from None
    return pub, key_id_of(key.public_key())


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow what we promise
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_private_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read key: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path}: not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path}: not an Ed25519 private key ({type(key).__name__})")
    return key


_PEM_BLOCK_RE = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


def load_trust_keys(paths: list[Path], *, source: str = "", key: str = "rules.trust_key") -> list[TrustKey]:
    """Ed25519 public keys (PEM; a file may hold several) from each path. Errors name the config
    file and key when `source` is given, else the key file alone."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    def fail(i: int, problem: str) -> CamwatchError:
        where = f"{key}[{i}]" if len(paths) > 1 else key
        if source:
            return ConfigError(source, where, f"{paths[i]}: {problem}")
        return UsageError(f"{paths[i]}: {problem}")

    keys: list[TrustKey] = []
    for i, path in enumerate(paths):
        try:
            if path.stat().st_size > 1024 * 1024:
                raise fail(i, "too large for a public key file")
            data = path.read_bytes()
        except FileNotFoundError:
            raise fail(i, "file not found") from None
        except OSError as exc:
            raise fail(i, f"cannot read: {exc.strerror or exc}") from None
        blocks = _PEM_BLOCK_RE.findall(data)
        if not blocks:
            raise fail(i, "no PEM public key in it (expected '-----BEGIN PUBLIC KEY-----')")
        for block in blocks:
            try:
                pub = serialization.load_pem_public_key(block)
            except (ValueError, TypeError) as exc:
                raise fail(i, f"not a valid PEM public key: {exc}") from None
            if not isinstance(pub, Ed25519PublicKey):
                raise fail(i, f"not an Ed25519 public key ({type(pub).__name__})")
            keys.append(TrustKey(path, pub, key_id_of(pub)))
    return keys


# --------------------------------------------------------------------------- names


def check_member_path(rel: str) -> str | None:
    """Why a rule file path is unacceptable, or None. Names are plain relative POSIX paths of safe
    characters: no absolute paths, no '..', no empty or hidden components, data suffixes only."""
    if not rel or len(rel) > MAX_PATH_CHARS:
        return f"path length {len(rel)} is outside 1..{MAX_PATH_CHARS}"
    if rel.startswith("/") or "\\" in rel:
        return "absolute or backslash path leaves the bundle"
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "path leaves the bundle or is not normalised ('..', '.', '//')"
    if len(parts) > MAX_DEPTH:
        return f"path is nested deeper than {MAX_DEPTH} levels"
    for p in parts:
        if not _COMPONENT_RE.match(p):
            return f"path component {p!r} has characters outside [A-Za-z0-9._+-] or starts with '.'"
    if not rel.lower().endswith(DATA_SUFFIXES):
        return f"not a rule data file (allowed: {' '.join(DATA_SUFFIXES)})"
    return None


# --------------------------------------------------------------------------- manifest


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


def parse_manifest(path: Path, data: bytes) -> Manifest:
    """The manifest of a bundle; every field is type- and range-checked (it is attacker-supplied
    until the signature verified, and the signature may be missing)."""

    def bad(problem: str) -> RuleBundleError:
        return RuleBundleError(path, f"{MANIFEST_NAME}: {problem}")

    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"not valid JSON: {exc}") from None
    except RecursionError:  # nesting bomb in an unsigned manifest
        raise bad("not valid JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise bad("expected a JSON object")
    if doc.get("format") != FORMAT:
        raise bad(f"format is {doc.get('format')!r}, expected {FORMAT!r}")
    if doc.get("format_version") != FORMAT_VERSION:
        raise bad(
            f"format_version {doc.get('format_version')!r} is not supported (this camwatch reads "
            f"{FORMAT_VERSION})"
        )
    fields: dict[str, str] = {}
    for name in ("name", "version", "created", "key_id"):
        value = doc.get(name)
        if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT_FIELD or not value.isprintable():
            raise bad(f"{name}: expected a printable string of 1..{MAX_TEXT_FIELD} characters")
        fields[name] = value
    files = doc.get("files")
    if not isinstance(files, list) or not 0 < len(files) <= MAX_FILES:
        raise bad(f"files: expected a list of 1..{MAX_FILES} entries")
    entries: list[FileEntry] = []
    seen: set[str] = set()
    total = 0
    for i, f in enumerate(files):
        if not isinstance(f, dict) or set(f) != {"path", "size", "sha256"}:
            raise bad(f"files[{i}]: expected an object with path, size and sha256")
        rel, size, digest = f["path"], f["size"], f["sha256"]
        if not isinstance(rel, str) or (why := check_member_path(rel)) is not None:
            raise bad(f"files[{i}]: {rel!r}: {why or 'not a string'}")
        if rel in seen:
            raise bad(f"files[{i}]: {rel!r} listed twice")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_BYTES:
            raise bad(f"files[{i}]: size must be an integer in 0..{MAX_FILE_BYTES}")
        if not isinstance(digest, str) or not _SHA256_RE.match(digest):
            raise bad(f"files[{i}]: sha256 must be 64 lower-case hex digits")
        seen.add(rel)
        total += size
        entries.append(FileEntry(rel, size, digest))
    if total > MAX_TOTAL_BYTES:
        raise bad(f"files add up to {total} bytes, over the {MAX_TOTAL_BYTES}-byte limit")
    _check_no_file_dir_clash(path, [e.path for e in entries])
    return Manifest(files=tuple(entries), **fields)


def _check_no_file_dir_clash(path: Path, rels: list[str]) -> None:
    names = set(rels)
    for rel in rels:
        parts = rel.split("/")
        for n in range(1, len(parts)):
            if "/".join(parts[:n]) in names:
                raise RuleBundleError(path, f"{RULES_PREFIX}{rel}: a parent of this path is also a file")


# --------------------------------------------------------------------------- writing


def collect_rules(rules_dir: Path) -> dict[str, bytes]:
    """The data files of a rules tree, keyed by relative POSIX path. Dot files and __pycache__ are
    skipped; anything else that is not a regular data file (a link, a script, a device) is refused
    so a bundle never silently lacks a file its author expected in it."""
    if not rules_dir.is_dir():
        raise UsageError(f"{rules_dir}: not a directory")
    files: dict[str, bytes] = {}
    total = 0
    for dirpath, dirnames, filenames in os.walk(rules_dir, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        for d in dirnames:
            if (Path(dirpath) / d).is_symlink():
                raise UsageError(f"{Path(dirpath) / d}: symbolic link (a bundle holds regular files only)")
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            rel = full.relative_to(rules_dir).as_posix()
            if full.is_symlink() or not full.is_file():
                raise UsageError(f"{full}: not a regular file (a bundle holds regular files only)")
            why = check_member_path(rel)
            if why is not None:
                raise UsageError(f"{full}: {why}")
            data = full.read_bytes()
            if len(data) > MAX_FILE_BYTES:
                raise UsageError(f"{full}: {len(data)} bytes, over the {MAX_FILE_BYTES}-byte limit")
            total += len(data)
            files[rel] = data
    if not files:
        raise UsageError(f"{rules_dir}: no rule files in it")
    if len(files) > MAX_FILES or total > MAX_TOTAL_BYTES:
        raise UsageError(f"{rules_dir}: {len(files)} files, {total} bytes: over the bundle limits")
    return files


def build_manifest(files: dict[str, bytes], *, name: str, version: str, created: str, key_id: str) -> bytes:
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": version,
        "created": created,
        "key_id": key_id,
        "files": [
            {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for rel, data in sorted(files.items())
        ],
    }
    return _canonical(doc)


def pack(
    rules_dir: Path,
    private_key: Any,
    out: Path,
    *,
    version: str | None = None,
    name: str = "camwatch-rules",
    created: float | None = None,
) -> Manifest:
    """Sign and write a bundle of `rules_dir` to `out` (atomically). `created` (epoch seconds)
    defaults to SOURCE_DATE_EPOCH or now; it is also every member's mtime, for reproducible bytes."""
    files = collect_rules(rules_dir)
    if created is None:
        sde = os.environ.get("SOURCE_DATE_EPOCH", "")
        created = float(sde) if sde.isdigit() else time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
    version = version or time.strftime("%Y%m%d.%H%M%S", time.gmtime(created))
    for label, value in (("--version", version), ("--name", name)):
        if not 0 < len(value) <= MAX_TEXT_FIELD or not value.isprintable():
            raise UsageError(f"{label} {value!r}: expected 1..{MAX_TEXT_FIELD} printable characters")
    manifest_bytes = build_manifest(
        files, name=name, version=version, created=stamp, key_id=key_id_of(private_key.public_key())
    )
    signature = private_key.sign(SIGNING_CONTEXT + manifest_bytes)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        members = [(MANIFEST_NAME, manifest_bytes), (SIGNATURE_NAME, signature)]
        members += [(RULES_PREFIX + rel, data) for rel, data in sorted(files.items())]
        for member_name, data in members:
            info = tarfile.TarInfo(member_name)
            info.size = len(data)
            info.mtime = int(created)
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    _atomic_write(out, buf.getvalue())
    return parse_manifest(out, manifest_bytes)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- reading


def _octal(field: bytes) -> int | None:
    text = field.rstrip(b"\0 ").lstrip(b" ")
    if not text:
        return 0
    if not all(48 <= ch <= 55 for ch in text):  # base-256 and other extensions are refused
        return None
    return int(text, 8)


def read_members(path: Path, data: bytes) -> list[tuple[str, bytes]]:
    """Members of a ustar archive, strictly: regular files only, checksums verified, bounded."""
    members: list[tuple[str, bytes]] = []
    names: set[str] = set()
    pos = 0
    while True:
        if pos + 512 > len(data):
            raise RuleBundleError(path, f"truncated archive at byte {pos} (no end-of-archive marker)")
        header = data[pos : pos + 512]
        if header == b"\0" * 512:
            if any(data[pos:]):
                # tar ends with zero blocks; bytes hidden after them would escape every check
                raise RuleBundleError(path, f"data after the end-of-archive marker at byte {pos}")
            return members
        if len(members) >= MAX_FILES + 2:
            raise RuleBundleError(path, f"more than {MAX_FILES} members")
        stored = _octal(header[148:156])
        computed = sum(header[:148]) + 8 * 32 + sum(header[156:])
        if stored is None or stored != computed:
            raise RuleBundleError(path, f"damaged archive header at byte {pos} (checksum mismatch)")
        if header[257:263] not in (b"ustar\x00", b"ustar "):
            raise RuleBundleError(path, f"member at byte {pos} is not a ustar header")
        try:
            name = header[0:100].split(b"\0", 1)[0].decode("ascii")
            prefix = header[345:500].split(b"\0", 1)[0].decode("ascii")
        except UnicodeDecodeError:
            raise RuleBundleError(path, f"member at byte {pos}: name is not ASCII") from None
        full = f"{prefix}/{name}" if prefix else name
        typeflag = header[156:157]
        if typeflag not in (b"0", b"\0"):
            kind = {
                b"1": "a hard link",
                b"2": "a symbolic link",
                b"3": "a character device",
                b"4": "a block device",
                b"5": "a directory",
                b"6": "a FIFO",
                b"x": "a pax extended header",
                b"g": "a pax global header",
                b"L": "a GNU long name",
                b"K": "a GNU long link name",
            }.get(typeflag, f"of type {typeflag!r}")
            raise RuleBundleError(path, f"member {full!r} is {kind}: only regular files are allowed")
        size = _octal(header[124:136])
        if size is None:
            raise RuleBundleError(path, f"member {full!r}: size field is not octal")
        if size > MAX_FILE_BYTES:
            raise RuleBundleError(
                path, f"member {full!r} is {size} bytes, over the {MAX_FILE_BYTES}-byte limit"
            )
        start = pos + 512
        if start + size > len(data):
            raise RuleBundleError(path, f"member {full!r} is truncated ({size} bytes announced)")
        if full in names:
            raise RuleBundleError(path, f"member {full!r} appears twice")
        if full not in (MANIFEST_NAME, SIGNATURE_NAME):
            if not full.startswith(RULES_PREFIX):
                raise RuleBundleError(path, f"unexpected member {full!r} (path leaves the rules tree)")
            why = check_member_path(full[len(RULES_PREFIX) :])
            if why is not None:
                raise RuleBundleError(path, f"member {full!r}: {why}")
        names.add(full)
        members.append((full, data[start : start + size]))
        pos = start + (size + 511) // 512 * 512
        if any(data[start + size : pos]):
            # padding is zeros when written by pack(); anything else is a change after signing
            raise RuleBundleError(path, f"member {full!r}: non-zero padding after its data")


def read_bundle(path: Path) -> Bundle:
    """Read a bundle and check its files against its manifest (not the signature: see verify)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not _is_regular(st.st_mode):
                raise RuleBundleError(path, "not a regular file")
            if st.st_size > MAX_BUNDLE_BYTES:
                raise RuleBundleError(path, f"{st.st_size} bytes, over the {MAX_BUNDLE_BYTES}-byte limit")
            data = fh.read(MAX_BUNDLE_BYTES + 1)
    except FileNotFoundError:
        raise RuleBundleError(path, "file not found") from None
    except OSError as exc:
        raise RuleBundleError(path, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_BUNDLE_BYTES:  # grew while we read it
        raise RuleBundleError(path, f"over the {MAX_BUNDLE_BYTES}-byte limit")
    if len(data) < 512 or data[257:262] != b"ustar":
        raise RuleBundleError(path, "not a camwatch rule bundle (not a tar archive)")
    members = read_members(path, data)
    by_name = dict(members)
    if MANIFEST_NAME not in by_name:
        raise RuleBundleError(path, f"not a camwatch rule bundle ({MANIFEST_NAME} missing)")
    manifest_bytes = by_name.pop(MANIFEST_NAME)
    if len(manifest_bytes) > MAX_MANIFEST_BYTES:
        raise RuleBundleError(path, f"{MANIFEST_NAME} is over the {MAX_MANIFEST_BYTES}-byte limit")
    signature = by_name.pop(SIGNATURE_NAME, None)
    manifest = parse_manifest(path, manifest_bytes)
    files = {name[len(RULES_PREFIX) :]: body for name, body in by_name.items()}
    listed = {e.path: e for e in manifest.files}
    for rel in sorted(files):
        if rel not in listed:
            raise RuleBundleError(
                path, f"{RULES_PREFIX}{rel}: not listed in the signed manifest (added file)"
            )
    for entry in manifest.files:
        body = files.get(entry.path)
        if body is None:
            raise RuleBundleError(
                path, f"{RULES_PREFIX}{entry.path}: listed in the signed manifest but missing (removed file)"
            )
        if len(body) != entry.size or hashlib.sha256(body).hexdigest() != entry.sha256:
            raise RuleBundleError(
                path,
                f"{RULES_PREFIX}{entry.path}: content does not match the signed manifest "
                f"({len(body)} bytes, sha256 {hashlib.sha256(body).hexdigest()[:16]}…; manifest: "
                f"{entry.size} bytes, {entry.sha256[:16]}…)",
            )
    return Bundle(path, manifest, manifest_bytes, signature, files)


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def verify_bundle(path: Path, trust_keys: list[TrustKey]) -> Bundle:
    """Read a bundle and verify its signature with one of `trust_keys`; raises RuleBundleError
    with one line naming the file and what is wrong."""
    from cryptography.exceptions import InvalidSignature

    bundle = read_bundle(path)
    sig = bundle.signature
    if sig is None:
        raise RuleBundleError(path, f"unsigned bundle ({SIGNATURE_NAME} missing)")
    if len(sig) != SIGNATURE_SIZE:
        raise RuleBundleError(path, f"{SIGNATURE_NAME} is {len(sig)} bytes, not an Ed25519 signature")
    message = SIGNING_CONTEXT + bundle.manifest_bytes
    for tk in trust_keys:
        try:
            tk.key.verify(sig, message)
        except InvalidSignature:
            continue
        return Bundle(bundle.path, bundle.manifest, bundle.manifest_bytes, sig, bundle.files, trusted_by=tk)
    trusted = ", ".join(f"{tk.key_id} ({tk.path})" for tk in trust_keys)
    claimed = bundle.manifest.key_id
    if any(tk.key_id == claimed for tk in trust_keys):
        raise RuleBundleError(
            path, f"bad signature: the manifest or signature was modified after signing (key {claimed})"
        )
    raise RuleBundleError(path, f"signed by key {claimed}, which is not trusted (trusted: {trusted})")


# --------------------------------------------------------------------------- unpacking, activation


def rules_root(state_dir: Path) -> Path:
    return Path(state_dir) / "rules"


def unpack(bundle: Bundle, root: Path) -> Path:
    """Write a verified bundle's files into a fresh directory under `root` and return it. The
    directory appears under its final name only when complete (written in a temporary directory
    and renamed), and its files are read-only."""
    if bundle.trusted_by is None:
        raise RuleBundleError(bundle.path, "refusing to unpack a bundle whose signature was not verified")
    import tempfile

    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o750)
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
    except OSError as exc:
        raise CamwatchError(f"{root}: cannot create the rules directory: {exc.strerror or exc}") from None
    try:
        for rel, body in sorted(bundle.files.items()):
            # names were checked (check_member_path): relative, no '..', safe characters
            dest = tmp.joinpath(*rel.split("/"))
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            _write_new(dest, body, 0o444)
        for d in sorted({p for p in tmp.rglob("*") if p.is_dir()} | {tmp}):
            d.chmod(0o755)
        (tmp / ".bundle.json").write_text(
            json.dumps(
                {
                    "bundle": str(bundle.path),
                    "name": bundle.manifest.name,
                    "version": bundle.manifest.version,
                    "created": bundle.manifest.created,
                    "manifest_sha256": bundle.digest,
                    "key_id": bundle.trusted_by.key_id,
                    "unpacked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                indent=1,
            )
            + "\n"
        )
        _fsync_dir(tmp)
        label = _VERSION_SAFE_RE.sub("_", bundle.manifest.version)[:40]
        final = root / f"{label}-{bundle.digest[:12]}-{time.time_ns()}"
        os.rename(tmp, final)
        _fsync_dir(root)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CamwatchError(f"{root}: cannot unpack the rule bundle: {exc.strerror or exc}") from None
    return final


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_current(root: Path, directory: Path) -> None:
    """Point root/current at `directory` with one rename (atomic for every reader)."""
    link = root / ACTIVE_LINK
    tmp = root / f".{ACTIVE_LINK}.tmp-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.symlink(directory.name, tmp)
        os.replace(tmp, link)
        _fsync_dir(root)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise CamwatchError(f"{link}: cannot switch the active rule set: {exc.strerror or exc}") from None


def current_dir(root: Path) -> Path | None:
    link = root / ACTIVE_LINK
    try:
        target = os.readlink(link)
    except OSError:
        return None
    return root / target


def prune(root: Path, keep: set[Path]) -> None:
    """Remove unpacked rule sets beyond the newest KEEP_PREVIOUS ones besides `keep`, and stale
    half-written directories of interrupted unpacks."""
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    now = time.time()
    sets = []
    for p in entries:
        if p.name.startswith(".unpack-"):
            with contextlib.suppress(OSError):
                if now - p.stat().st_mtime > STALE_UNPACK_SECONDS:
                    shutil.rmtree(p, ignore_errors=True)
        elif p.is_dir() and not p.is_symlink() and not p.name.startswith("."):
            sets.append(p)
    keep_resolved = {k.resolve() for k in keep}
    cur = current_dir(root)
    if cur is not None:
        keep_resolved.add(cur.resolve())
    others = sorted((p for p in sets if p.resolve() not in keep_resolved), key=_unpack_time, reverse=True)
    for old in others[KEEP_PREVIOUS:]:
        shutil.rmtree(old, ignore_errors=True)


def _unpack_time(p: Path) -> int:
    tail = p.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def discard(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def verify_configured(cfg: Any) -> Bundle | None:
    """Verify the configured bundle (`rules.bundle` with `rules.trust_key`); None without a trust
    key. A bad bundle is a configuration error: the agent refuses to start (exit 2)."""
    if not cfg.trust_keys:
        return None
    keys = load_trust_keys(cfg.trust_keys, source=cfg.source)
    try:
        return verify_bundle(cfg.rules_bundle, keys)
    except RuleBundleError as exc:
        raise UsageError(f"{exc}; refusing the rule bundle (rules.bundle in {cfg.source})") from None


def stage_configured(cfg: Any, *, state_dir: Path | None = None) -> tuple[Bundle, Path] | None:
    """Verify the configured bundle and unpack it into a fresh directory (not yet current) under
    `state_dir` (default: the configuration's); point `cfg.rules_dir` (and the default policy) at
    it. None without a trust key."""
    bundle = verify_configured(cfg)
    if bundle is None:
        return None
    directory = unpack(bundle, rules_root(state_dir or cfg.state_dir))
    use_rules_dir(cfg, directory)
    return bundle, directory


def use_rules_dir(cfg: Any, directory: Path) -> None:
    cfg.rules_dir = directory
    if not cfg.policy_explicit:
        bundled_policy = directory / "policy" / "default.yaml"
        if bundled_policy.is_file():
            cfg.policy_paths = [bundled_policy]


def activate_configured(cfg: Any) -> Bundle | None:
    """At start-up: verify, unpack and make the configured bundle current. No-op without a trust
    key, or when this configuration object was already activated."""
    if not cfg.trust_keys or cfg.rules_bundle_active is not None:
        return None
    staged = stage_configured(cfg)
    assert staged is not None
    bundle, directory = staged
    root = rules_root(cfg.state_dir)
    make_current(root, directory)
    prune(root, {directory})
    cfg.rules_bundle_active = bundle
    return bundle


# --------------------------------------------------------------------------- CLI


def add_rules_parser(sub: Any) -> None:
    import argparse

    p = sub.add_parser(
        "rules",
        help="signed rule bundles: keygen, pack, verify, show (docs/writing-rules.md)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes:\n  0  success\n  1  the bundle is damaged, unsigned, tampered with or "
        "signed by an untrusted key\n  2  usage error\n",
    )
    rsub = p.add_subparsers(dest="rules_command", metavar="ACTION")
    k = rsub.add_parser("keygen", help="make an Ed25519 signing key (KEY, mode 0600) and KEY.pub")
    k.add_argument("--out", required=True, metavar="KEY", help="private key file to create")
    k = rsub.add_parser("pack", help="sign a rules directory into a bundle")
    k.add_argument("rules_dir", metavar="RULES_DIR")
    k.add_argument("--key", required=True, metavar="KEY", help="Ed25519 private key (PEM)")
    k.add_argument("--out", required=True, metavar="BUNDLE", help="bundle file to write")
    k.add_argument("--version", metavar="V", help="bundle version (default: creation time)")
    k.add_argument("--name", default="camwatch-rules", help="bundle name (default camwatch-rules)")
    k = rsub.add_parser("verify", help="check a bundle's signature and every file against its manifest")
    k.add_argument("bundle", metavar="BUNDLE")
    k.add_argument(
        "--trust-key",
        required=True,
        action="append",
        metavar="PUB",
        help="trusted Ed25519 public key (PEM; repeatable)",
    )
    k = rsub.add_parser("show", help="print a bundle's manifest summary (the signature is not checked)")
    k.add_argument("bundle", metavar="BUNDLE")
    k.add_argument("--files", action="store_true", help="list every file")


def run_cli(args: Any) -> int:
    import sys

    cmd = args.rules_command
    if cmd == "keygen":
        out = Path(args.out)
        pub, kid = generate_key(out)
        print(f"camwatch: wrote private key {out} (mode 0600, keep it off the sensors) and public key {pub}")
        print(f"key id {kid}")
        return 0
    if cmd == "pack":
        key = load_private_key(Path(args.key))
        _check_rules_load(Path(args.rules_dir))
        m = pack(Path(args.rules_dir), key, Path(args.out), version=args.version, name=args.name)
        print(
            f"camwatch: wrote {args.out}: {m.name} {m.version}, {len(m.files)} files, "
            f"{m.total_bytes} bytes, signed by key {m.key_id}"
        )
        return 0
    if cmd == "verify":
        keys = load_trust_keys([Path(k) for k in args.trust_key])
        b = verify_bundle(Path(args.bundle), keys)
        assert b.trusted_by is not None
        m = b.manifest
        print(
            f"{args.bundle}: ok: {m.name} {m.version} ({m.created}), {len(m.files)} files, "
            f"signed by key {b.trusted_by.key_id} ({b.trusted_by.path})"
        )
        return 0
    if cmd == "show":
        b = read_bundle(Path(args.bundle))
        m = b.manifest
        lines = [
            f"bundle:    {args.bundle}",
            f"name:      {m.name}",
            f"version:   {m.version}",
            f"created:   {m.created}",
            f"key id:    {m.key_id}",
            f"signature: {'present' if b.signature else 'MISSING'} (not checked: `camwatch rules verify`)",
            f"files:     {len(m.files)}, {m.total_bytes} bytes",
            f"manifest:  sha256 {b.digest}",
        ]
        if args.files:
            lines += [f"  {e.sha256[:16]}  {e.size:>9}  {e.path}" for e in m.files]
        sys.stdout.write("\n".join(lines) + "\n")
        return 0
    raise UsageError("rules: give an action: keygen, pack, verify or show (see `camwatch rules --help`)")


def _check_rules_load(rules_dir: Path) -> None:
    """Refuse to sign a tree the agent could not load: the endpoint catalogue and the default
    policy are parsed the way the agent parses them; missing core files are reported."""
    import sys

    from agent.catalogue import EndpointCatalogue
    from agent.policy import Policy

    catalogue = EndpointCatalogue.load(rules_dir)
    policy = rules_dir / "policy" / "default.yaml"
    if policy.is_file():
        Policy.load([policy], None, catalogue)
    missing = [
        n for n in ("oui.yaml", "endpoints.yaml", "policy/default.yaml") if not (rules_dir / n).is_file()
    ]
    if missing:
        print(
            f"camwatch: {rules_dir}: warning: no {', '.join(missing)}; the agent falls back to the "
            "rules installed with camwatch for these",
            file=sys.stderr,
        )
