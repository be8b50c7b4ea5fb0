"""Exploit / credential matching on HTTP and RTSP requests (analyzers/traffic/exploit_http.py and
the ExploitAnalyzer's request handler): the incremental RequestParser fed data in fuzzed chunks
with gaps, every HTTP signature, the Dahua login matcher on bodies, Basic-auth decoding and the
credential table. The parser's buffers must stay bounded whatever the stream holds."""

from __future__ import annotations

from analyzers.traffic import exploit_http
from analyzers.traffic.cleartext_logins import decode_basic, load_credentials
from analyzers.traffic.exploits import DEFAULT_SIGNATURES, printable
from tests.fuzz.traffic.common import ByteReader

MAX_LEN = 32768
CREDENTIALS = load_credentials()


def _on_request(req: exploit_http.Request) -> None:
    sigs = DEFAULT_SIGNATURES
    assert len(req.body) <= exploit_http.MAX_BODY, "request body kept beyond MAX_BODY"
    for sig in sigs.http:
        evidence = sig.match(req)
        if evidence is not None:
            printable(evidence)
    if req.body and req.path.lower() in sigs.dahua.paths:
        for _rule, login in sigs.dahua.findings(req.body):
            printable(f"{req.method} {req.uri} {req.body.decode('latin-1')} {login}")
    auth = req.header("authorization")
    creds = decode_basic(auth) if auth else None
    if creds is not None:
        CREDENTIALS.match(*creds)


def fuzz_one(data: bytes) -> None:
    parser = exploit_http.RequestParser(_on_request)
    r = ByteReader(data)
    while r.left:
        control = r.u8()
        size = r.u8() | (control & 0x3E) << 3
        if control & 1:
            parser.gap(size + 1)  # a hole in the reassembled stream
        else:
            parser.data(memoryview(r.take(size)))
        assert len(parser.buf) <= exploit_http.MAX_HEAD + 4, f"parser holds {len(parser.buf)} bytes"
        assert len(parser.body) <= exploit_http.MAX_BODY
    parser.end()


def _chunk(data: bytes) -> bytes:
    out = b""
    for i in range(0, len(data), 200):
        piece = data[i : i + 200]
        out += bytes([0, len(piece)]) + piece
    return out


def seeds() -> list[bytes]:
    requests = [
        b"GET /System/configurationFile?auth=YWRtaW46MTEK HTTP/1.1\r\nHost: cam\r\n\r\n",
        b"PUT /SDK/webLanguage HTTP/1.1\r\nHost: cam\r\nContent-Length: 60\r\n\r\n"
        b"<?xml version='1.0'?><language>$(id>webLib/x)</language>\r\n",
        b"POST /RPC2_Login HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 101\r\n\r\n"
        b'{"method":"global.login","params":{"userName":"admin","password":"","loginType":"Direct",'
        b'"clientType":"NetKeyboard"}}',
        b"GET / HTTP/1.1\r\nAuthorization: Basic YWRtaW46MTIzNDU=\r\n\r\n",
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
        b"DESCRIBE rtsp://10.0.0.5/ RTSP/1.0\r\nCSeq: 1\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\n\r\n",
    ]
    out = [_chunk(req) for req in requests]
    out.append(_chunk(requests[0][:30]) + bytes([1, 10]) + _chunk(requests[3]))  # a gap, then resync
    return out
