"""Transfer carving on reassembled streams (agent/carving.py), as the update analyzer uses it:
HTTP/1.x in both directions (Content-Length, chunked, close-delimited, multipart uploads, gaps),
the FTP control-channel tracker and its data sink, and TFTP packets. Carved bytes must respect
max_carve; everything else may only end in transfers, never in an exception."""

from __future__ import annotations

from agent import carving
from tests.fuzz.traffic.common import ByteReader

MAX_LEN = 32768
MAX_CARVE = 4096


def _check(transfers: list[carving.Transfer]) -> None:
    for t in transfers:
        assert t.data is None or len(t.data) <= MAX_CARVE, f"carved {len(t.data)} bytes > {MAX_CARVE}"


def _stream_events(r: ByteReader, sinks: tuple[object, object]) -> None:
    while r.left:
        control = r.u8()
        sink = sinks[control & 1]
        size = r.u8() | (control & 0x3C) << 6
        if control & 0x40:
            sink.gap(size + 1)  # type: ignore[attr-defined]
        else:
            sink.data(memoryview(r.take(size)))  # type: ignore[attr-defined]


def fuzz_one(data: bytes) -> None:
    r = ByteReader(data)
    mode = r.u8() % 3
    if mode == 0:
        http = carving.HttpCarver(max_carve=MAX_CARVE)
        _stream_events(r, (http.requests, http.responses))
        http.requests.end()
        http.responses.end()
        _check(http.drain())
    elif mode == 1:
        ftp = carving.FtpTracker("10.0.0.5", "198.51.100.7", max_carve=MAX_CARVE)
        split = r.uint(2) % (r.left + 1)
        control = ByteReader(r.take(split))
        _stream_events(control, (ftp.client, ftp.server))
        for ip, port in ftp.predicted():
            expectation = ftp.match(ip, port)
            if expectation is not None:
                sink = ftp.data_sink(expectation)
                _stream_events(r, (sink, sink))
                sink.end()
                break
        _check(ftp.drain())
    else:
        tftp = carving.TftpTracker(max_carve=MAX_CARVE, max_transfers=4)
        ts = 0.0
        while r.left:
            control = r.u8()
            payload = r.take(r.u8() | (control & 0x0E) << 7)
            ts += 0.5
            server_port = 69 if control & 0x10 else 40000 + (control >> 5)
            if control & 1:
                tftp.packet("10.0.0.5", 5000, "10.0.0.9", server_port, memoryview(payload), ts)
            else:
                tftp.packet("10.0.0.9", server_port, "10.0.0.5", 5000, memoryview(payload), ts)
        tftp.expire(ts + 60)
        tftp.close()
        _check(tftp.drain())


def _events(chunks: list[tuple[int, bytes]]) -> bytes:
    out = b""
    for direction, payload in chunks:
        for i in range(0, len(payload), 200):
            piece = payload[i : i + 200]
            out += bytes([direction, len(piece)]) + piece
    return out


def seeds() -> list[bytes]:
    firmware = b"\x27\x05\x19\x56" + bytes(60)  # a uImage magic, so sniffing recognises it
    upload = (
        b"POST /up HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=XX\r\nContent-Length: 120\r\n\r\n"
        b'--XX\r\nContent-Disposition: form-data; name=f; filename="a.bin"\r\n\r\nDATA\r\n--XX--\r\n'
    )
    http = _events(
        [
            (0, b"GET /fw/digicap.dav HTTP/1.1\r\nHost: upd\r\n\r\n"),
            (1, b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n" + firmware),
            (0, upload),
            (1, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n"),
        ]
    )
    control = _events(
        [
            (1, b"220 hi\r\n"),
            (0, b"USER a\r\nPASV\r\n"),
            (1, b"227 Entering Passive Mode (198,51,100,7,19,137)\r\n"),
            (0, b"RETR fw.bin\r\n"),
            (1, b"150 Opening BINARY mode data connection for fw.bin (64 bytes)\r\n"),
        ]
    )
    ftp = bytes([1]) + len(control).to_bytes(2, "big") + control + _events([(0, firmware)])
    tftp = bytes([2, 0x11, 15]) + b"\x00\x01fw.bin\x00octet\x00"
    tftp += bytes([0x00, 68]) + b"\x00\x03\x00\x01" + firmware + bytes([0x01, 4]) + b"\x00\x04\x00\x01"
    return [bytes([0]) + http, ftp, tftp]
