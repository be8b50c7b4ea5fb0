"""Credential checks: passwd/shadow/htpasswd lines (whole files and lines embedded in binaries) and
Xiongmai Sofia password fields, cracked against the weak-password table by computing the real hash.

A hash is reported above info only when a weak password reproduces it; empty passwords and extra
uid-0 accounts are findings of their own. Cracking is a short list on purpose: full cracking is left
to external tools (indicators.md 4.2).
"""

from __future__ import annotations

import functools
import hashlib
import re
import string
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from passlib.hash import apr_md5_crypt, bcrypt, des_crypt, md5_crypt, sha256_crypt, sha512_crypt

from agent.errors import UsageError
from analyzers.firmware.model import Finding, Severity

from .catalogue import builtin
from .evidence import line_at, printable

WEAK_TABLE_NAME = "weak-passwords.txt"
PASSWD_FILE_NAMES = frozenset(
    {"passwd", "passwd-", "shadow", "shadow-", "master.passwd", "htpasswd", ".htpasswd", "passwd.bak"}
)
MAX_PASSWD_FILE = 1024 * 1024
MAX_LINES_PER_MEMBER = 2000
# Cost caps: a hostile image must not make us spend minutes per hash (sha-crypt rounds, bcrypt cost).
MAX_SHA_ROUNDS = 20_000
MAX_BCRYPT_COST = 10

_USER = re.compile(rb"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,31}\$?\Z")
_DES = re.compile(rb"[./0-9A-Za-z]{13}\Z")
_MODULAR = re.compile(rb"\$(1|5|6|apr1|2[abxy])\$[^:\s]+\Z")
_SOFIA_FIELD = re.compile(rb'"Pass[Ww]ord"[ \t]*:[ \t]*"([0-9A-Za-z]{8})"')
_INTERACTIVE_SHELL = re.compile(r"/(ba|a|da|p|z|k|c|tc)?sh\Z")
_SOFIA_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase


@dataclass(frozen=True, slots=True)
class WeakEntry:
    user: str
    password: str
    source: str


class WeakTable:
    def __init__(self, entries: list[WeakEntry]):
        self.entries = entries
        seen: dict[str, str] = {}
        for e in entries:
            seen.setdefault(e.password, e.source)
        self.sources = seen  # password -> first source
        self.sofia = {sofia_hash(p): p for p in seen}

    def candidates(self, user: str) -> list[str]:
        # the account's own name first (user == password is a classic default), then the table
        out = [user] if user not in self.sources else []
        out.extend(self.sources)
        return out


def load_weak_table(dirs: Iterable[Path]) -> WeakTable:
    entries: list[WeakEntry] = []
    for d in dirs:
        path = Path(d) / WEAK_TABLE_NAME
        if not path.is_file():
            continue
        for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 2:
                raise UsageError(f"{path}:{lineno}: expected 'USER PASSWORD [SOURCE]'")
            password = "" if parts[1] == "(none)" else parts[1]
            entries.append(WeakEntry(parts[0], password, parts[2] if len(parts) > 2 else path.name))
    return WeakTable(entries)


def sofia_hash(password: str) -> str:
    """Xiongmai "Sofia" hash: MD5, then 8 chars, char i = (d[2i] + d[2i+1]) % 62 over 0-9A-Za-z."""
    d = hashlib.md5(password.encode("utf-8"), usedforsecurity=False).digest()
    return "".join(_SOFIA_ALPHABET[(d[2 * i] + d[2 * i + 1]) % 62] for i in range(8))


@dataclass(frozen=True, slots=True)
class Account:
    user: str
    secret: str
    uid: int | None
    gid: int | None
    shell: str
    kind: str  # passwd, shadow, htpasswd
    offset: int
    line: bytes


def parse_line(line: bytes, offset: int) -> Account | None:
    """One passwd (7 fields, or a truncated 4-6), shadow (9 fields) or htpasswd (2 fields) line."""
    line = line.rstrip(b"\r")
    if len(line) > 512 or b":" not in line:
        return None
    fields = line.split(b":")
    user = fields[0]
    if not _USER.match(user):
        return None
    secret = fields[1]
    if len(fields) == 2:
        if not _MODULAR.match(secret):
            return None
        return Account(user.decode(), secret.decode(), None, None, "", "htpasswd", offset, line)
    if len(fields) == 9:
        # shadow: name:hash:lastchg:min:max:warn:inactive:expire:reserved (numeric or empty)
        if not all(f == b"" or f.isdigit() for f in fields[2:8]):
            return None
        if not _plausible_secret(secret):
            return None
        return Account(user.decode(), secret.decode(), None, None, "", "shadow", offset, line)
    if 4 <= len(fields) <= 7 and fields[2].isdigit() and fields[3].isdigit():
        if not _plausible_secret(secret):
            return None
        uid, gid = int(fields[2][:9]), int(fields[3][:9])
        shell = fields[6].decode("latin-1") if len(fields) == 7 else ""
        return Account(user.decode(), secret.decode(), uid, gid, shell, "passwd", offset, line)
    return None


def _plausible_secret(secret: bytes) -> bool:
    if secret in (b"", b"x", b"*", b"!", b"!!", b"!*", b"*LK*", b"NP"):
        return True
    if secret[:1] in (b"!", b"*"):
        return True  # locked account, possibly with a hash after the marker
    return bool(_DES.match(secret) or _MODULAR.match(secret))


def accounts_in_file(data: bytes) -> list[Account]:
    out: list[Account] = []
    pos = 0
    for line in data[:MAX_PASSWD_FILE].split(b"\n")[:MAX_LINES_PER_MEMBER]:
        acc = parse_line(line, pos)
        if acc is not None:
            out.append(acc)
        pos += len(line) + 1
    return out


def accounts_at(data: bytes, offsets: Iterable[int]) -> list[Account]:
    """Accounts on the lines around YARA locator offsets (lines embedded in binaries)."""
    out: list[Account] = []
    starts: set[int] = set()
    for off in sorted(offsets):
        start, line = line_at(data, off)
        if start in starts:
            continue
        starts.add(start)
        acc = parse_line(line, start)
        if acc is not None:
            out.append(acc)
        if len(starts) >= MAX_LINES_PER_MEMBER:
            break
    return out


@dataclass(frozen=True, slots=True)
class CrackResult:
    scheme: str
    password: str | None  # cleartext when a candidate matched
    checked: bool
    note: str = ""


_SCHEMES = {
    "1": ("md5-crypt", md5_crypt),
    "5": ("sha256-crypt", sha256_crypt),
    "6": ("sha512-crypt", sha512_crypt),
    "apr1": ("apr1-md5", apr_md5_crypt),
}


def _scheme(secret: str) -> tuple[str, object | None, str]:
    """(scheme name, passlib handler or None, reason when not checkable)."""
    if _DES.match(secret.encode()):
        return "des-crypt", des_crypt, ""
    m = re.match(r"\$(1|5|6|apr1|2[abxy])\$", secret)
    if not m:
        return "unknown", None, "unrecognised hash format"
    ident = m.group(1)
    if ident.startswith("2"):
        cost = re.match(r"\$2[abxy]\$(\d{2})\$", secret)
        if not cost or int(cost.group(1)) > MAX_BCRYPT_COST:
            return "bcrypt", None, f"bcrypt cost above the cap ({MAX_BCRYPT_COST})"
        return "bcrypt", bcrypt, ""
    name, handler = _SCHEMES[ident]
    rounds = re.match(r"\$[56]\$rounds=(\d+)\$", secret)
    if rounds and int(rounds.group(1)) > MAX_SHA_ROUNDS:
        return name, None, f"rounds={rounds.group(1)} above the cap ({MAX_SHA_ROUNDS})"
    return name, handler, ""


@functools.lru_cache(maxsize=4096)
def _crack_cached(secret: str, candidates: tuple[str, ...]) -> CrackResult:
    name, handler, why = _scheme(secret)
    if handler is None:
        return CrackResult(name, None, False, why)
    for pw in candidates:
        try:
            if handler.verify(pw, secret):  # type: ignore[attr-defined]
                return CrackResult(name, pw, True)
        except (ValueError, TypeError) as exc:
            return CrackResult(name, None, False, f"malformed hash ({exc})")
    return CrackResult(name, None, True)


_CRACK_LOCK = threading.Lock()


def crack(secret: str, candidates: list[str]) -> CrackResult:
    with _CRACK_LOCK:  # lru_cache is thread-safe, but this avoids cracking the same hash twice at once
        return _crack_cached(secret, tuple(candidates))


def _finding(
    rule_id: str,
    message: str,
    path: str,
    offset: int,
    evidence: bytes,
    severity: Severity | None = None,
    reference: str = "",
) -> Finding:
    rule = builtin(rule_id)
    return Finding(
        rule_id=rule_id,
        severity=rule.severity if severity is None else severity,
        message=message,
        path=path,
        offset=offset,
        evidence=printable(evidence),
        category="credentials",
        source="passwd",
        reference=reference or f"indicators.md {rule.indicator}",
    )


def check_accounts(accounts: list[Account], path: str, table: WeakTable) -> list[Finding]:
    findings: list[Finding] = []
    embedded = not is_passwd_file(path)
    for acc in accounts:
        secret = acc.secret
        where = f"{acc.kind} line embedded in a program/config" if embedded else f"{acc.kind} file"
        if acc.uid == 0 and acc.user != "root":
            locked = secret[:1] in ("!", "*")
            findings.append(
                _finding(
                    "CW-FW-CRED-103",
                    f"Account '{acc.user}' has uid 0 (root-equivalent) besides root"
                    + (" (locked)" if locked else ""),
                    path,
                    acc.offset,
                    acc.line,
                    Severity.LOW if locked else None,
                )
            )
        if secret == "":
            findings.append(
                _finding(
                    "CW-FW-CRED-102",
                    f"Account '{acc.user}' has an empty password ({where}): login without a password",
                    path,
                    acc.offset,
                    acc.line,
                    _empty_severity(acc),
                )
            )
            continue
        if secret in ("x", "*", "!", "!!", "!*", "*LK*", "NP") or secret[:1] in ("!", "*"):
            continue  # shadowed or locked: nothing to crack here
        result = crack(secret, table.candidates(acc.user))
        if result.password is not None:
            pw = result.password
            shown = "(empty)" if pw == "" else pw
            source = table.sources.get(pw, "user name as password")
            findings.append(
                _finding(
                    "CW-FW-CRED-101",
                    f"Hard-coded credential {acc.user} / {shown} ({result.scheme}, {where}): "
                    f"known default password [{source}]",
                    path,
                    acc.offset,
                    acc.line,
                    reference=f"indicators.md GEN-01/GEN-02 ({source}); weak-passwords.txt",
                )
            )
        elif result.checked:
            findings.append(
                _finding(
                    "CW-FW-CRED-104",
                    f"Password hash for '{acc.user}' ({result.scheme}, {where}) is not in the weak-password "
                    f"table ({len(table.sources)} passwords tried)",
                    path,
                    acc.offset,
                    acc.line,
                )
            )
        else:
            findings.append(
                _finding(
                    "CW-FW-CRED-105",
                    f"Password hash for '{acc.user}' not checked: {result.note}",
                    path,
                    acc.offset,
                    acc.line,
                )
            )
    return findings


def _empty_severity(acc: Account) -> Severity:
    if acc.uid == 0 or (acc.uid is None and acc.user == "root"):
        return Severity.HIGH
    if acc.kind == "shadow" or _INTERACTIVE_SHELL.search(acc.shell):
        return Severity.MEDIUM
    return Severity.LOW  # no interactive shell (nologin, /bin/false, truncated line)


def check_sofia(data: bytes, offsets: Iterable[int], path: str, table: WeakTable) -> list[Finding]:
    """Xiongmai config "Password" : "xxxxxxxx" fields whose Sofia hash belongs to a weak password."""
    findings: list[Finding] = []
    done: set[int] = set()
    for off in sorted(offsets):
        m = _SOFIA_FIELD.match(data, off)
        if m is None or off in done:
            continue
        done.add(off)
        value = m.group(1).decode()
        pw = table.sofia.get(value)
        if pw is None:
            continue
        shown = "the empty password" if pw == "" else f"'{pw}'"
        findings.append(
            _finding(
                "CW-FW-CRED-106",
                f"Sofia password field {value} is the Xiongmai hash of {shown} [{table.sources.get(pw, '')}]",
                path,
                off,
                m.group(0),
            )
        )
    return findings


def is_passwd_file(path: str) -> bool:
    name = path.rsplit("/", 1)[-1].rsplit("!", 1)[-1]
    return name in PASSWD_FILE_NAMES
