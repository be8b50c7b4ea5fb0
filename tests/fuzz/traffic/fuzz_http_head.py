"""HTTP/1.x message heads (fp_banners): start line, headers, Server / User-Agent / realm / path."""

from __future__ import annotations

from analyzers.protocols import http_head
from tests.fuzz.traffic.common import fingerprint_strings, touch

MAX_LEN = 10000


def fuzz_one(data: bytes) -> None:
    head = http_head.parse(memoryview(data))
    if head is None:
        return
    touch(head.server, head.user_agent, head.realm, head.path, head.header("Content-Type"))
    fingerprint_strings(head.server, head.realm, head.path)


def seeds() -> list[bytes]:
    return [
        b"HTTP/1.1 401 Unauthorized\r\nServer: App-webs/\r\n"
        b'WWW-Authenticate: Digest realm="IP Camera(C6021)", nonce="abc"\r\n\r\n',
        b"GET /ISAPI/System/deviceInfo?x=1 HTTP/1.1\r\nHost: 10.0.0.5\r\nUser-Agent: curl/8\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nServer: uc-httpd 1.0.0\r\nContent-Length: 3\r\n\r\nabc",
    ]
