"""RTSP message heads (TCP 554): Server and the Digest realm (Dahua serial numbers live there)."""

from __future__ import annotations

from analyzers.protocols import rtsp
from tests.fuzz.traffic.common import fingerprint_rules, touch

MAX_LEN = 10000


def fuzz_one(data: bytes) -> None:
    head = rtsp.parse(memoryview(data))
    if head is None:
        return
    touch(head.server, head.realm, head.status, head.method, head.target)
    rules = fingerprint_rules()
    rules.rtsp_server_maker(head.server)
    rules.rtsp_realm_facts(head.realm)


def seeds() -> list[bytes]:
    return [
        b'RTSP/1.0 401 Unauthorized\r\nCSeq: 2\r\nWWW-Authenticate: Digest realm="Login to 4H01D66PAJ2FA64",'
        b' nonce="x"\r\nServer: Rtsp Server/3.0\r\n\r\n',
        b"DESCRIBE rtsp://10.0.0.5:554/Streaming/Channels/101 RTSP/1.0\r\nCSeq: 3\r\n\r\n",
        b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nServer: Hipcam RealServer/V1.0\r\nPublic: OPTIONS, DESCRIBE\r\n\r\n",
    ]
