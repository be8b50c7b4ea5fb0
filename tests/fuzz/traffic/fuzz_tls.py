"""TLS: ClientHello (SNI, ALPN, JA4 / JA4_r), ServerHello and the clear-text certificate chain."""

from __future__ import annotations

import struct

from analyzers.protocols import tls
from tests.fuzz.traffic.common import fingerprint_rules, touch

MAX_LEN = 20000


def fuzz_one(data: bytes) -> None:
    view = memoryview(data)
    tls.handshake_messages(view)
    hello = tls.parse_client_hello(view)
    if hello is not None:
        fingerprint = tls.ja4(hello)
        a, b, c = fingerprint.split("_")
        assert len(a) == 10 and len(b) == 12 and len(c) == 12, f"malformed JA4 {fingerprint!r}"
        touch(tls.ja4_raw(hello), hello.sni, hello.alpn)
    server = tls.parse_server(view)
    if server is not None:
        leaf = server.leaf()
        if leaf is not None:
            fingerprint_rules().tls_subject_maker(leaf.get("subject"))


def _server_hello_with_certificate(der: bytes) -> bytes:
    hello = struct.pack("!H", 0x0303) + b"\x11" * 32 + b"\x00" + struct.pack("!HB", 0xC02F, 0)
    msg = bytes([tls.HS_SERVER_HELLO]) + len(hello).to_bytes(3, "big") + hello
    chain = len(der).to_bytes(3, "big") + der
    cert = len(chain).to_bytes(3, "big") + chain
    msg += bytes([tls.HS_CERTIFICATE]) + len(cert).to_bytes(3, "big") + cert
    return struct.pack("!BHH", tls.CONTENT_HANDSHAKE, 0x0303, len(msg)) + msg


def seeds() -> list[bytes]:
    out = [
        tls.build_client_hello(
            sni="device.example.com", alpn=["h2", "http/1.1"], sig_algs=[0x0403, 0x0804],
            extensions=[(0x2A2A, b""), (tls.EXT_SUPPORTED_VERSIONS, b"\x04\x03\x04\x03\x03")],
        ),
        tls.build_client_hello(),
    ]  # fmt: skip
    try:  # a small self-signed certificate, so the certificate path has something real to chew on
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "IPC"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hikvision")])  # fmt: skip
        start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        end = start + datetime.timedelta(days=3650)
        builder = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        builder = builder.serial_number(1).not_valid_before(start).not_valid_after(end)
        cert = builder.sign(key, hashes.SHA256())
        out.append(_server_hello_with_certificate(cert.public_bytes(serialization.Encoding.DER)))
    except ImportError:
        pass
    return out
