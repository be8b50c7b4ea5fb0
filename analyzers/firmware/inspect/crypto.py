"""Crypto material: PEM/DER private keys, certificates, OpenSSH and dropbear keys.

YARA locator rules (role "crypto", rules/firmware/keys.yar) find candidate offsets; this module
parses each one with `cryptography`, records it (type, size, encryption, SHA-256 fingerprint of the
public key) and reports private keys. The format is recognised from the bytes at the offset, so a
user rule with role "crypto" works without code changes.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa, x448, x25519
from cryptography.utils import CryptographyDeprecationWarning

from analyzers.firmware.model import Finding, Severity

from .catalogue import builtin
from .engine import RuleHit
from .evidence import printable

# Firmware certificates are often sloppy (negative serials...). We inventory them, we do not trust
# them, so cryptography's deprecation notices about such fields are noise here.
warnings.filterwarnings("ignore", message="Parsed a serial number", category=CryptographyDeprecationWarning)
warnings.filterwarnings("ignore", message="Attribute's length must be", category=UserWarning)
# RSA keys are loaded with unsafe_skip_rsa_key_validation: validation runs primality checks that take
# seconds for large keys (openssl's built-in 15360-bit test key took ~10 s), and we only fingerprint
# the key, never use it.

MAX_PEM_BLOCK = 64 * 1024
BUNDLE_MIN = 3  # this many certificates in one file make it a trust bundle
MAX_ITEMS_PER_MEMBER = 500  # certificate bundles hold ~150; beyond this is hostile or pointless

_Pub = (
    rsa.RSAPublicKey
    | dsa.DSAPublicKey
    | ec.EllipticCurvePublicKey
    | ed25519.Ed25519PublicKey
    | ed448.Ed448PublicKey
    | x25519.X25519PublicKey
    | x448.X448PublicKey
)


@dataclass(slots=True)
class CryptoResult:
    findings: list[Finding] = field(default_factory=list)
    keys: list[dict[str, Any]] = field(default_factory=list)
    certificates: list[dict[str, Any]] = field(default_factory=list)


def spki_fingerprint(pub: Any) -> str:
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def describe_public(pub: Any) -> tuple[str, int, str]:
    """(type, bits, curve) of a public key."""
    if isinstance(pub, rsa.RSAPublicKey):
        return "RSA", pub.key_size, ""
    if isinstance(pub, dsa.DSAPublicKey):
        return "DSA", pub.key_size, ""
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return "EC", pub.curve.key_size, pub.curve.name
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return "Ed25519", 256, ""
    if isinstance(pub, ed448.Ed448PublicKey):
        return "Ed448", 456, ""
    if isinstance(pub, x25519.X25519PublicKey):
        return "X25519", 256, ""
    if isinstance(pub, x448.X448PublicKey):
        return "X448", 448, ""
    return type(pub).__name__, 0, ""


def key_weakness(kind: str, bits: int) -> list[str]:
    if kind in ("RSA", "DSA") and bits < 2048:
        return [f"{kind}-{bits} is below 2048 bits"]
    if kind == "DSA":
        return ["DSA is deprecated"]
    if kind == "EC" and bits < 224:
        return [f"EC-{bits} is below 224 bits"]
    return []


def _der_length(data: bytes, off: int) -> int | None:
    """Total length of the DER SEQUENCE at `off` (tag 0x30), or None."""
    if off + 2 > len(data) or data[off] != 0x30:
        return None
    first = data[off + 1]
    if first < 0x80:
        return 2 + first
    n = first & 0x7F
    if n == 0 or n > 3 or off + 2 + n > len(data):
        return None
    return 2 + n + int.from_bytes(data[off + 2 : off + 2 + n], "big")


def _read_string(buf: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(buf):
        raise ValueError("truncated")
    (n,) = struct.unpack_from(">I", buf, pos)
    if n > 16384 or pos + 4 + n > len(buf):
        raise ValueError("bad length")
    return buf[pos + 4 : pos + 4 + n], pos + 4 + n


def _read_mpint(buf: bytes, pos: int) -> tuple[int, int]:
    raw, pos = _read_string(buf, pos)
    return int.from_bytes(raw, "big", signed=True), pos


def _signed_by_own_key(cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(cert)
        return True
    except Exception:  # noqa: S110 - cryptography refuses SHA-1/MD5 here; check by hand below
        pass
    pub, algo = cert.public_key(), cert.signature_hash_algorithm
    if algo is None:
        return False
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            pub.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), algo)
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algo))
        else:
            return False
    except Exception:
        return False
    return True


class _Collector:
    def __init__(self, path: str, data: bytes, result: CryptoResult):
        self.path, self.data, self.result = path, data, result
        self.done: set[int] = set()

    # -- records -----------------------------------------------------------------------------------

    def private_key(
        self,
        off: int,
        fmt: str,
        key: Any | None,
        encrypted: bool,
        evidence: bytes,
        blob_fp: str = "",
        kind: str = "",
        bits: int = 0,
        curve: str = "",
    ) -> None:
        if key is not None:
            pub = key.public_key()
            kind, bits, curve = describe_public(pub)
            fp, fp_kind = spki_fingerprint(pub), "spki-sha256"
        else:
            fp, fp_kind = blob_fp, "blob-sha256"
        weak = key_weakness(kind, bits)
        self.result.keys.append(
            {
                "path": self.path,
                "offset": off,
                "private": True,
                "format": fmt,
                "type": kind or "unknown",
                "bits": bits,
                "curve": curve,
                "encrypted": encrypted,
                "fingerprint_sha256": fp,
                "fingerprint_kind": fp_kind,
                "weak": weak,
            }
        )
        rule = builtin("CW-FW-KEY-101")
        desc = f"{kind or 'unknown-type'}{f' {bits}-bit' if bits else ''}{f' ({curve})' if curve else ''}"
        state = "encrypted (the passphrase is usually in the same image)" if encrypted else "not encrypted"
        self.result.findings.append(
            Finding(
                rule_id=rule.id,
                severity=Severity.MEDIUM if encrypted else Severity.HIGH,
                message=(
                    f"{desc} private key ({fmt}, {state}): every device running this image shares it"
                    + (f"; weak: {', '.join(weak)}" if weak else "")
                    + f" [sha256:{fp[:16]}]"
                ),
                path=self.path,
                offset=off,
                evidence=printable(evidence),
                category="crypto",
                source="crypto",
                reference="indicators.md GEN-10",
            )
        )

    def public_key(self, off: int, fmt: str, pub: Any, comment: str = "") -> None:
        kind, bits, curve = describe_public(pub)
        name = self.path.rsplit("/", 1)[-1]
        authorized = name in ("authorized_keys", "authorized_keys2")
        fp = spki_fingerprint(pub)
        self.result.keys.append(
            {
                "path": self.path,
                "offset": off,
                "private": False,
                "format": fmt,
                "type": kind,
                "bits": bits,
                "curve": curve,
                "encrypted": False,
                "fingerprint_sha256": fp,
                "fingerprint_kind": "spki-sha256",
                "comment": comment[:80],
                "authorized_keys": authorized,
                "weak": key_weakness(kind, bits),
            }
        )
        if authorized:
            rule = builtin("CW-FW-KEY-106")
            self.result.findings.append(
                Finding(
                    rule_id=rule.id,
                    severity=rule.severity,
                    message=(
                        f"Pre-installed SSH authorized key ({kind} {bits}-bit"
                        f"{', ' + comment[:40] if comment else ''}): whoever holds the matching private "
                        f"key can log in to every device [sha256:{fp[:16]}]"
                    ),
                    path=self.path,
                    offset=off,
                    evidence=printable(self.data[off : off + 60]),
                    category="crypto",
                    source="crypto",
                    reference="indicators.md GEN-10",
                )
            )

    def certificate(self, off: int, fmt: str, cert: x509.Certificate) -> None:
        pub = cert.public_key()
        kind, bits, curve = describe_public(pub)
        try:
            sig_hash = cert.signature_hash_algorithm
            sig_hash_name = sig_hash.name if sig_hash is not None else "none"
        except UnsupportedAlgorithm:
            sig_hash_name = "unsupported"
        try:
            sig_alg = cert.signature_algorithm_oid._name
        except Exception:  # pragma: no cover - defensive: unknown OID naming
            sig_alg = cert.signature_algorithm_oid.dotted_string
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            is_ca = bool(bc.ca)
        except (x509.ExtensionNotFound, ValueError):
            is_ca = False
        subject, issuer = cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()
        self_signed = cert.subject == cert.issuer and _signed_by_own_key(cert)
        not_after = cert.not_valid_after_utc
        weak = key_weakness(kind, bits)
        if sig_hash_name in ("md5", "sha1") and not self_signed:
            # a self-signature is never what a client relies on, so only issued certificates count
            weak.append(f"signed with {sig_hash_name.upper()}")
        record = {
            "path": self.path,
            "offset": off,
            "format": fmt,
            "subject": subject[:300],
            "issuer": issuer[:300],
            "serial": format(cert.serial_number, "x")[:64],
            "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": not_after.isoformat(),
            "expired": not_after < datetime.now(UTC),
            "self_signed": self_signed,
            "is_ca": is_ca,
            "key_type": kind,
            "key_bits": bits,
            "curve": curve,
            "signature_algorithm": sig_alg,
            "signature_hash": sig_hash_name,
            "weak": weak,
            "fingerprint_sha256": hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
            "public_key_sha256": spki_fingerprint(pub),
        }
        self.result.certificates.append(record)
        if weak and not is_ca:
            rule = builtin("CW-FW-KEY-102")
            self.result.findings.append(
                Finding(
                    rule_id=rule.id,
                    severity=rule.severity,
                    message=f"Certificate '{subject[:80]}' is weak: {', '.join(weak)}",
                    path=self.path,
                    offset=off,
                    evidence=printable(subject.encode("utf-8", "replace")),
                    category="crypto",
                    source="crypto",
                    reference="indicators.md GEN-10",
                )
            )

    # -- parsers -----------------------------------------------------------------------------------

    def at(self, off: int) -> bool:
        """Parse whatever crypto object starts at `off`; True when something was recorded."""
        if off in self.done:
            return True
        self.done.add(off)
        head = self.data[off : off + 40]
        try:
            if head.startswith(b"-----BEGIN "):
                return self._pem(off)
            if head.startswith((b"ssh-", b"ecdsa-sha2-")):
                return self._ssh_public(off)
            if head.startswith(b"\x00\x00\x00"):
                return self._dropbear(off)
            if head[:1] == b"\x30":
                return self._der(off)
        except Exception:
            # hostile input: cryptography raises a zoo of types (ValueError, DuplicateExtension,
            # UnsupportedAlgorithm, InvalidVersion...); whatever fails to parse is simply not recorded
            return False
        return False

    def _pem(self, off: int) -> bool:
        data = self.data
        eol = data.find(b"-----", off + 11)
        if eol < 0 or eol - off > 80:
            return False
        label = data[off + 11 : eol]
        end_marker = b"-----END " + label + b"-----"
        end = data.find(end_marker, off, off + MAX_PEM_BLOCK)
        if end < 0:
            return False
        block = data[off : end + len(end_marker)]
        header = data[off : eol + 5]
        if label == b"CERTIFICATE" or label.endswith(b" CERTIFICATE"):
            self.certificate(off, "pem", x509.load_pem_x509_certificate(block))
            return True
        if label in (b"PUBLIC KEY", b"RSA PUBLIC KEY"):
            self.public_key(off, "pem-public", serialization.load_pem_public_key(block))
            return True
        if not label.endswith(b"PRIVATE KEY"):
            return False
        if label == b"OPENSSH PRIVATE KEY":
            return self._openssh_private(off, block, header)
        fmt = {
            b"PRIVATE KEY": "pem-pkcs8",
            b"ENCRYPTED PRIVATE KEY": "pem-pkcs8",
            b"RSA PRIVATE KEY": "pem-pkcs1",
            b"EC PRIVATE KEY": "pem-sec1",
            b"DSA PRIVATE KEY": "pem-dsa",
        }.get(label, "pem")
        try:
            key = serialization.load_pem_private_key(
                block, password=None, unsafe_skip_rsa_key_validation=True
            )
        except TypeError:
            # encrypted: the public key is not readable without the passphrase; fingerprint the blob
            body = b"".join(ln.strip() for ln in block.splitlines()[1:-1] if ln.strip() and b":" not in ln)
            blob_fp = hashlib.sha256(base64.b64decode(body)).hexdigest()
            kind = {b"RSA PRIVATE KEY": "RSA", b"EC PRIVATE KEY": "EC", b"DSA PRIVATE KEY": "DSA"}.get(
                label, ""
            )
            self.private_key(off, fmt, None, True, header, blob_fp=blob_fp, kind=kind)
            return True
        self.private_key(off, fmt, key, False, header)
        return True

    def _openssh_private(self, off: int, block: bytes, header: bytes) -> bool:
        try:
            key = serialization.load_ssh_private_key(
                block, password=None, unsafe_skip_rsa_key_validation=True
            )
            self.private_key(off, "openssh", key, False, header)
            return True
        except TypeError:
            pass  # encrypted: read the public half, which the format stores in clear
        body = b"".join(ln.strip() for ln in block.splitlines()[1:-1])
        raw = base64.b64decode(body)
        magic = b"openssh-key-v1\x00"
        if not raw.startswith(magic):
            return False
        pos = len(magic)
        _cipher, pos = _read_string(raw, pos)
        _kdf, pos = _read_string(raw, pos)
        _kdfopts, pos = _read_string(raw, pos)
        pos += 4  # number of keys
        pub_blob, pos = _read_string(raw, pos)
        key_type, _ = _read_string(pub_blob, 0)
        pub = serialization.load_ssh_public_key(key_type + b" " + base64.b64encode(pub_blob))
        kind, bits, curve = describe_public(pub)
        self.private_key(
            off,
            "openssh",
            None,
            True,
            header,
            blob_fp=spki_fingerprint(pub),
            kind=kind,
            bits=bits,
            curve=curve,
        )
        # the public half *is* the key identity, so the fingerprint is comparable with unencrypted keys
        self.result.keys[-1]["fingerprint_kind"] = "spki-sha256"
        return True

    def _ssh_public(self, off: int) -> bool:
        end = off
        limit = min(len(self.data), off + 16384)
        while end < limit and self.data[end] not in b"\n\r\x00":
            end += 1
        parts = self.data[off:end].split()
        if len(parts) < 2:
            return False
        pub = serialization.load_ssh_public_key(parts[0] + b" " + parts[1])
        comment = printable(b" ".join(parts[2:]), 80) if len(parts) > 2 else ""
        self.public_key(off, "ssh-public", pub, comment)
        return True

    def _dropbear(self, off: int) -> bool:
        buf = self.data[off : off + 16384]
        key_type, pos = _read_string(buf, 0)
        key: Any
        if key_type == b"ssh-rsa":
            e, pos = _read_mpint(buf, pos)
            n, pos = _read_mpint(buf, pos)
            d, pos = _read_mpint(buf, pos)
            p, pos = _read_mpint(buf, pos)
            q, pos = _read_mpint(buf, pos)
            key = rsa.RSAPrivateNumbers(
                p,
                q,
                d,
                rsa.rsa_crt_dmp1(d, p),
                rsa.rsa_crt_dmq1(d, q),
                rsa.rsa_crt_iqmp(p, q),
                rsa.RSAPublicNumbers(e, n),
            ).private_key(unsafe_skip_rsa_key_validation=True)
        elif key_type == b"ssh-dss":
            p, pos = _read_mpint(buf, pos)
            q, pos = _read_mpint(buf, pos)
            g, pos = _read_mpint(buf, pos)
            y, pos = _read_mpint(buf, pos)
            x, pos = _read_mpint(buf, pos)
            key = dsa.DSAPrivateNumbers(
                x, dsa.DSAPublicNumbers(y, dsa.DSAParameterNumbers(p, q, g))
            ).private_key()
        elif key_type.startswith(b"ecdsa-sha2-nistp"):
            curve_name, pos = _read_string(buf, pos)
            _point, pos = _read_string(buf, pos)
            d, pos = _read_mpint(buf, pos)
            curve = {b"nistp256": ec.SECP256R1(), b"nistp384": ec.SECP384R1(), b"nistp521": ec.SECP521R1()}[
                curve_name
            ]
            key = ec.derive_private_key(d, curve)
        elif key_type == b"ssh-ed25519":
            raw, pos = _read_string(buf, pos)
            key = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
        else:
            return False
        self.private_key(off, "dropbear", key, False, b"dropbear host key " + key_type)
        return True

    def _der(self, off: int) -> bool:
        total = _der_length(self.data, off)
        if total is None or total > MAX_PEM_BLOCK or off + total > len(self.data):
            return False
        der = self.data[off : off + total]
        # a TBSCertificate (SEQUENCE) opening with the v3 version tag means a certificate
        inner = 2 + (der[1] & 0x7F if der[1] & 0x80 else 0)
        tbs = inner + 2 + (der[inner + 1] & 0x7F if len(der) > inner + 1 and der[inner + 1] & 0x80 else 0)
        if der[inner : inner + 1] == b"\x30" and der[tbs : tbs + 5] == b"\xa0\x03\x02\x01\x02":
            self.certificate(off, "der", x509.load_der_x509_certificate(der))
            return True
        key = serialization.load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=True)
        self.private_key(off, "der", key, False, b"DER private key")
        return True


def inspect_crypto(path: str, data: bytes, hits: list[RuleHit]) -> CryptoResult:
    """Parse the crypto objects located by `hits` (role "crypto"). Non-silent locators whose object
    does not parse fall back to their own YARA finding, so damaged keys are still reported."""
    result = CryptoResult()
    col = _Collector(path, data, result)
    for hit in hits:
        parsed_any = False
        offsets = sorted({off for _pid, off, _len in hit.matches})
        for off in offsets[:MAX_ITEMS_PER_MEMBER]:
            if col.at(off):
                parsed_any = True
        if not parsed_any and not hit.meta.silent:
            finding = hit.to_finding(path, data)
            finding.message += " (could not be parsed; reported from the marker alone)"
            # evidence is the armour line only: never copy key material into a report
            start = finding.offset or 0
            line_end = data.find(b"\n", start, start + 80)
            finding.evidence = printable(data[start : line_end if line_end >= 0 else start + 80])
            result.findings.append(finding)
    if len(result.certificates) >= BUNDLE_MIN:
        # a CA bundle (old v1 roots carry no CA flag and 1024-bit keys): inventory, not device identities
        result.findings = [f for f in result.findings if f.rule_id != "CW-FW-KEY-102"]
    return result
