"""Transfer carving: HTTP framing and uploads, FTP, TFTP, firmware recognition and its rules file."""

from __future__ import annotations

import io
import itertools
import struct
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.carving import (
    FtpTracker,
    HttpCarver,
    PatternError,
    TftpTracker,
    Transfer,
    carve_http,
    disposition_filename,
    hik_xor,
    load_update_patterns,
    match_update_filename,
    match_update_uri,
    sniff_firmware,
    zip_member_names,
)
from agent.reassembly import StreamReassembler, TcpConversation

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# firmware-formats.md §2.5: the first 108 bytes of a real Hikvision DS-76xxN NVR digicap.dav.
HIK_NVR_HEAD = bytes.fromhex(
    "E99AF7B654AEDDD342B8A3ABB5CBB5BE CFBCFED6E6DDD3BA465C5440344A4145"
    "43012935222C4546 5C544034B5BEBACD FED6CADDC6B9AC83AABFCBB5BEBACDBC"
    "BEA3BEBCC8DC8DDFDEB99BD2C0A0DDFE CADDD3BAB9A3ABBFCBB5BEBACDBCFED6"
    "25D2BAB9D3EE91CB15DAB0DA".replace(" ", "")
)


def feed(sink: object, data: bytes, cuts: list[int] | None = None) -> None:
    """Deliver `data` to a StreamSink in pieces cut at `cuts`."""
    points = [0, *sorted(c for c in (cuts or []) if 0 < c < len(data)), len(data)]
    for a, b in itertools.pairwise(points):
        if b > a:
            sink.data(memoryview(data)[a:b])  # type: ignore[attr-defined]


def dh_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("Install", '{"Commands": ["burn kernel.img kernel"]}\n//IPC_RestoreDefault')
        z.writestr("kernel.img", b"\x27\x05\x19\x56" + bytes(60) + b"kernel" * 300)
    raw = buf.getvalue()
    return b"DH" + raw[2:]


# -- HTTP ---------------------------------------------------------------------------------------
def test_content_length_response_and_request_pairing() -> None:
    body = bytes(range(256)) * 20
    out = carve_http(
        b"GET /files/update.img?x=1 HTTP/1.1\r\nHost: cam\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body,
    )
    req, resp = out
    assert (req.method, req.uri, req.direction, req.size) == ("GET", "/files/update.img?x=1", "toserver", 0)
    assert resp.status == 200 and resp.reason == "OK" and resp.direction == "toclient"
    assert resp.method == "GET" and resp.filename == "update.img" and resp.declared_size == len(body)
    assert resp.data == body and resp.complete and resp.bytes_missing == 0 and resp.sha256
    assert resp.firmware == "xiongmai-image"  # by file name
    assert resp.first_bytes == body[:8192] and resp.content_type == "application/octet-stream"


def test_pipelined_keepalive_with_head_304_and_interim_responses() -> None:
    reqs = (
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
        b"HEAD /b HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET /c HTTP/1.1\r\nIf-None-Match: x\r\n\r\n"
        b"PUT /d HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"
        b"\r\nGET /e HTTP/1.1\r\n\r\n"  # stray CRLF between messages is tolerated
    )
    resps = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
        b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n"  # HEAD: no body despite the length
        b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n"
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
        b"HTTP/1.1 200 OK\r\n\r\nuntil close"
    )
    out = carve_http(reqs, resps)
    got_reqs = [(t.method, t.uri, bytes(t.data)) for t in out if t.direction == "toserver"]
    assert got_reqs == [
        ("GET", "/a", b""),
        ("HEAD", "/b", b""),
        ("GET", "/c", b""),
        ("PUT", "/d", b"hello"),
        ("GET", "/e", b""),
    ]
    got = [(t.status, t.method, t.uri, bytes(t.data), t.complete) for t in out if t.direction == "toclient"]
    assert got == [
        (200, "GET", "/a", b"abc", True),
        (200, "HEAD", "/b", b"", True),
        (304, "GET", "/c", b"", True),
        (100, "PUT", "/d", b"", True),
        (201, "PUT", "/d", b"", True),
        (200, "GET", "/e", b"until close", True),
    ]


@PROPS
@given(
    body=st.binary(max_size=5000),
    sizes=st.lists(st.integers(1, 700), max_size=30),
    cuts=st.lists(st.integers(0, 7000), max_size=25),
    ext=st.booleans(),
)
def test_chunked_bodies_any_chunk_sizes_any_delivery(
    body: bytes, sizes: list[int], cuts: list[int], ext: bool
) -> None:
    wire = bytearray()
    pos = 0
    for n in [*sizes, len(body)]:
        piece = body[pos : pos + n]
        if not piece:
            break
        wire += b"%x%s\r\n" % (len(piece), b";name=val" if ext else b"") + piece + b"\r\n"
        pos += len(piece)
    wire += b"0\r\nX-Checksum: abc\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + bytes(wire)
    resp += b"HTTP/1.1 204 No Content\r\n\r\n"  # next message on the same connection
    c = HttpCarver()
    c.pending.extend([("GET", "/fw.bin"), ("GET", "/x")])
    feed(c.responses, resp, cuts)
    c.responses.end()
    first, second = c.drain()
    assert first.data == body and first.size == len(body) and first.complete
    assert first.trailers == [("X-Checksum", "abc")] and first.declared_size is None
    assert second.status == 204


def test_put_upload_of_hikvision_image() -> None:
    image = HIK_NVR_HEAD + bytes(range(256)) * 64
    req = (
        b"PUT /ISAPI/System/updateFirmware HTTP/1.1\r\nHost: 192.168.1.64\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % len(image)
    ) + image
    resp = b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: 11\r\n\r\n<ok>1</ok>\n"
    out = carve_http(req, resp)
    up = out[0]
    assert up.method == "PUT" and up.direction == "toserver" and up.data == image and up.complete
    assert up.firmware == "hikvision-digicap-swkh"
    assert match_update_uri(up.uri) == "hikvision-isapi-update"


@PROPS
@given(cuts=st.lists(st.integers(0, 9000), max_size=30), data=st.data())
def test_multipart_post_upload_extracts_the_file_part(cuts: list[int], data: st.DataObject) -> None:
    firmware = dh_zip()
    # Contents that nearly contain the delimiter must not end the part early.
    tricky = data.draw(st.sampled_from([b"", b"\r\n--XyZbound", b"--XyZboundary", b"\r\n--XyZboundar"]))
    firmware += tricky
    boundary = b"XyZboundary"
    body = (
        b"preamble\r\n--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="action"\r\n\r\nupgrade\r\n'
        b"--" + boundary + b"  \r\n"  # transport padding after a delimiter is allowed
        b'Content-Disposition: form-data; name="file"; filename="C:\\fw\\DH_IPC-HX2XXX.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
        + firmware
        + b"\r\n--"
        + boundary
        + b"--\r\nepilogue"
    )
    req = (
        b"POST /cgi-bin/upgrade.cgi HTTP/1.1\r\nContent-Type: multipart/form-data; boundary="
        + boundary
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )
    c = HttpCarver()
    feed(c.requests, req, cuts)
    c.requests.end()
    out = c.drain()
    parts = [t for t in out if t.extra.get("multipart")]
    assert len(parts) == 1
    part = parts[0]
    assert part.filename == "DH_IPC-HX2XXX.bin" and part.extra["form_field"] == "file"
    assert part.data == firmware and part.complete and part.method == "POST"
    assert part.firmware == "dahua-dh-zip" and part.content_type == "application/octet-stream"
    whole = out[-1]
    assert whole.extra["parts"] == ["DH_IPC-HX2XXX.bin"] and whole.size == len(body) and whole.complete
    assert not whole.kept and whole.data == b""  # the body is only hashed: the part holds the bytes


def test_truncated_bodies_report_bytes_missing() -> None:
    body = b"A" * 1000
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    out = carve_http(b"GET /x.bin HTTP/1.1\r\n\r\n", head + body[:600])
    resp = out[-1]
    assert not resp.complete and resp.bytes_missing == 400 and resp.size == 1000
    assert resp.data == body[:600] and resp.gaps == [(600, 400)] and resp.sha256 is None

    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked = carve_http(b"GET / HTTP/1.1\r\n\r\n", head + b"10\r\nabc")
    assert not chunked[-1].complete and chunked[-1].data == b"abc"


def test_hole_inside_a_body_from_the_reassembler_is_zero_filled_at_its_offset() -> None:
    body = bytes(range(256)) * 40
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    head = len(resp) - len(body)
    got: list[Transfer] = []
    c = HttpCarver(got.append)
    conv = TcpConversation(c.requests, c.responses)
    conv.add(True, 100, b"", 0x02)
    conv.add(False, 5000, b"", 0x12)
    conv.add(True, 101, b"GET /digicap.dav HTTP/1.1\r\n\r\n", 0x18)
    for off in range(0, len(resp), 1000):
        if off == 3000:
            continue  # lost for good
        conv.add(False, 5001 + off, resp[off : off + 1000], 0x18)
    conv.add(False, 5001 + len(resp), b"", 0x11)
    conv.close()
    r = got[-1]
    assert r.bytes_missing == 1000 and r.gaps == [(3000 - head, 1000)] and not r.complete
    expected = bytearray(body)
    expected[3000 - head : 4000 - head] = bytes(1000)
    assert r.data == expected and r.size == len(body)


def test_gap_in_a_head_resynchronises_on_the_next_message() -> None:
    c = HttpCarver()
    r = StreamReassembler(0, sink=c.requests)
    msgs = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n" + b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n"
    r.add(1, msgs[:5])
    r.add(1 + 10, msgs[10:])  # bytes 5..10 of the first head never arrive
    r.finish()
    out = c.drain()
    assert [t.uri for t in out] == ["/two"] and c.requests.resyncs == 1


def test_non_http_stream_is_left_alone_after_a_bounded_search() -> None:
    c = HttpCarver()
    tls = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) * 8000
    feed(c.responses, tls, list(range(0, len(tls), 1460)))
    feed(c.responses, b"\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # too late: not looked at
    c.responses.end()
    assert c.drain() == [] and not c.is_http


def test_joined_mid_message_finds_the_next_head() -> None:
    c = HttpCarver()
    c.pending.extend([("GET", "/a"), ("GET", "/b")])
    stream = b"tail of an earlier body\r\n" + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    feed(c.responses, stream, [5, 30])
    c.responses.end()
    (t,) = c.drain()
    assert t.status == 200 and t.data == b"ok" and t.complete


def test_want_body_and_carve_cap() -> None:
    body = b"Z" * 5000
    c = HttpCarver(max_carve=1000, want_body=lambda t: t.status == 200)
    c.pending.extend([("GET", "/a"), ("GET", "/b")])
    feed(
        c.responses,
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 5000\r\n\r\n"
        + body
        + b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"
        + body,
    )
    skipped, kept = c.drain()
    assert not skipped.kept and skipped.data == b"" and skipped.complete
    assert skipped.first_bytes == body[:5000]
    assert kept.kept and kept.truncated and kept.data == body[:1000] and kept.complete and kept.sha256


def test_content_disposition_file_names() -> None:
    assert disposition_filename('attachment; filename="../../etc/passwd"') == "passwd"
    assert disposition_filename("attachment; filename*=UTF-8''fw%20v2.bin; filename=x") == "fw v2.bin"
    assert disposition_filename('form-data; name="f"; filename="a\\"b.bin"') == 'a"b.bin'
    assert disposition_filename("inline") is None


# -- FTP ----------------------------------------------------------------------------------------
def test_ftp_passive_and_active_transfers() -> None:
    firmware = b"hsqs" + bytes(range(256)) * 30
    ftp = FtpTracker("192.168.1.108", "192.168.1.10")
    client = (
        b"USER cam\r\nPASS x\r\nTYPE I\r\nSIZE digicap.dav\r\nPASV\r\nRETR digicap.dav\r\n"
        b"EPRT |1|192.168.1.108|50123|\r\nSTOR backup.cfg\r\nEPSV\r\nLIST\r\n"
    )
    server = (
        b"220 hi\r\n331 pw\r\n230-Welcome\r\n230 ok\r\n200 binary\r\n213 %d\r\n"
        % len(firmware)
        + b"227 Entering Passive Mode (10,0,0,5,195,80).\r\n"  # a private address behind NAT
        b"150 Opening BINARY mode data connection for digicap.dav (%d bytes).\r\n226 done\r\n"
        % len(firmware)
        + b"200 EPRT ok\r\n150 ok\r\n226 done\r\n229 Entering Extended Passive Mode (|||40001|)\r\n"
    )
    feed(ftp.client, client)
    feed(ftp.server, server, [7, 50, 51, 120])
    assert ftp.predicted() == [("10.0.0.5", 50000), ("192.168.1.108", 50123), ("192.168.1.10", 40001)]
    e = ftp.match("192.168.1.10", 50000)  # the client reaches the server's real address
    assert e is not None and e.command == "RETR" and e.filename == "digicap.dav"
    assert e.mode == "passive" and not e.data_from_originator and e.declared_size == len(firmware)
    assert e.reply == 226
    rx = ftp.data_sink(e)
    feed(rx, firmware, [1000, 2000])
    rx.end()
    (t,) = ftp.drain()
    assert t.protocol == "ftp" and t.direction == "toclient" and t.data == firmware and t.complete
    assert t.firmware == "squashfs"

    up = ftp.match("192.168.1.108", 50123)
    assert up is not None and up.mode == "active" and up.command == "STOR"
    assert up.data_from_originator is False and up.direction == "toserver"
    listing = ftp.match("192.168.1.10", 40001)
    assert listing is not None and listing.command == "LIST"
    assert ftp.match("192.168.1.10", 50000) is None  # used up


def test_ftp_short_data_connection_is_incomplete() -> None:
    ftp = FtpTracker("10.0.0.2", "10.0.0.1")
    ftp.feed(b"PORT 10,0,0,2,4,1\r\nRETR fw.bin\r\n", True)
    ftp.feed(b"200 ok\r\n150 Opening data connection (1000 bytes)\r\n426 aborted\r\n", False)
    e = ftp.match("10.0.0.2", 1025)
    assert e is not None and e.data_from_originator and e.reply == 426
    rx = ftp.data_sink(e)
    rx.data(memoryview(b"x" * 300))
    rx.end()
    (t,) = ftp.drain()
    assert not t.complete and t.bytes_missing == 700 and t.size == 1000


# -- TFTP ---------------------------------------------------------------------------------------
def tftp_data(block: int, payload: bytes) -> bytes:
    return struct.pack("!HH", 3, block & 0xFFFF) + payload


@PROPS
@given(size=st.integers(0, 6000), blksize=st.sampled_from([512, 1024, 1468]), data=st.data())
def test_tftp_read_with_options_duplicates_and_new_tid(size: int, blksize: int, data: st.DataObject) -> None:
    content = bytes((i * 7) & 0xFF for i in range(size))
    cam, srv = ("192.0.0.64", 2000), ("192.0.0.128", 69)
    tid = 53001
    tr = TftpTracker()
    rrq = b"\x00\x01digicap.dav\x00octet\x00blksize\x00%d\x00tsize\x000\x00" % blksize
    tr.packet(*cam, *srv, rrq)
    tr.packet(*cam, *srv, rrq)  # retransmitted request
    tr.packet(srv[0], tid, *cam, b"\x00\x06blksize\x00%d\x00tsize\x00%d\x00" % (blksize, size))
    blocks = [content[i : i + blksize] for i in range(0, size + 1, blksize)]
    if len(blocks[-1]) == blksize:
        blocks.append(b"")
    sends = [(n + 1, b) for n, b in enumerate(blocks)]
    dups = data.draw(st.lists(st.sampled_from(sends), max_size=5))
    for blk, payload in sends + dups:
        tr.packet(srv[0], tid, *cam, tftp_data(blk, payload))
        tr.packet(*cam, srv[0], tid, struct.pack("!HH", 4, blk))
        tr.packet(srv[0], tid + 1, *cam, tftp_data(blk, b"evil" * 10))  # another TID: ignored
    (t,) = tr.drain()
    assert t.protocol == "tftp" and t.direction == "toclient" and t.method == "RRQ"
    assert t.filename == "digicap.dav" and t.extra["mode"] == "octet" and t.extra["blksize"] == blksize
    assert t.extra["server_tid"] == tid and t.declared_size == size
    assert t.data == content and t.complete and tr.active == 0


def test_tftp_write_block_number_wraparound_both_conventions() -> None:
    for rollover in (0, 1):
        tr = TftpTracker()
        cli, srv = ("10.0.0.9", 3333), ("10.0.0.1", 69)
        tr.packet(*cli, *srv, b"\x00\x02u-boot.bin.img\x00octet\x00blksize\x008\x00")
        tr.packet(srv[0], 4444, *cli, b"\x00\x06blksize\x008\x00")
        n_blocks = 65540
        for i in range(1, n_blocks + 1):
            wire = i if i <= 65535 else (i - 65536 + rollover)
            tr.packet(*cli, srv[0], 4444, tftp_data(wire, (i % 251).to_bytes(1, "big") * 8))
        tr.packet(*cli, srv[0], 4444, tftp_data(n_blocks + 1 - 65536 + rollover, b"end"))
        (t,) = tr.drain()
        assert t.direction == "toserver" and t.complete and t.size == n_blocks * 8 + 3
        assert t.data[-3:] == b"end" and t.data[65536 * 8 - 8] == 65536 % 251
        assert t.firmware == "xiongmai-image"


def test_tftp_error_and_windowed_reordering() -> None:
    tr = TftpTracker()
    cli, srv = ("10.0.0.9", 3333), ("10.0.0.1", 69)
    tr.packet(*cli, *srv, b"\x00\x01upgrade_info_7db780a713a4.txt\x00octet\x00windowsize\x004\x00")
    for blk in (2, 1, 4, 3):  # a window arrives out of order
        tr.packet(srv[0], 999, *cli, tftp_data(blk, bytes([blk]) * (512 if blk < 4 else 10)))
    (ok,) = tr.drain()
    assert ok.complete and ok.data == b"\x01" * 512 + b"\x02" * 512 + b"\x03" * 512 + b"\x04" * 10
    assert ok.firmware == "dahua-tftp-reflash"

    tr.packet(*cli, *srv, b"\x00\x01missing.img\x00octet\x00")
    tr.packet(srv[0], 998, *cli, b"\x00\x05\x00\x01File not found\x00")
    (bad,) = tr.drain()
    assert not bad.complete and bad.extra["error"] == {"code": 1, "message": "File not found"}


# -- firmware recognition ------------------------------------------------------------------------
def test_sniff_firmware_by_content() -> None:
    assert sniff_firmware(HIK_NVR_HEAD) == "hikvision-digicap-swkh"
    assert hik_xor(HIK_NVR_HEAD[:4]) == b"SWKH"
    for magic in (b"02KH", b"03KH"):
        assert sniff_firmware(hik_xor(magic + bytes(60))) == f"hikvision-digicap-{magic.decode().lower()}"
    assert sniff_firmware(dh_zip()) == "dahua-dh-zip"
    assert zip_member_names(dh_zip(), b"DH\x03\x04") == ["Install", "kernel.img"]

    def pk(*names: str) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for n in names:
                z.writestr(n, b"x" * 3000)
        return buf.getvalue()

    assert sniff_firmware(pk("InstallDesc", "romfs-x.cramfs.img")) == "xiongmai-zip"
    assert sniff_firmware(pk("Install", "check.img")) == "dahua-pk-zip"
    assert sniff_firmware(pk("docs/readme.txt", "photo.jpg")) is None  # an ordinary zip
    assert sniff_firmware(b"\x27\x05\x19\x56" + bytes(60)) == "uimage"
    assert sniff_firmware(b"hsqs" + bytes(100)) == sniff_firmware(b"sqsh" + bytes(100)) == "squashfs"
    assert sniff_firmware(b"\x45\x3d\xcd\x28" + bytes(10)) == "cramfs"
    assert sniff_firmware(b"<html>") is None and sniff_firmware(b"") is None


def test_sniff_firmware_by_name_and_uri() -> None:
    assert sniff_firmware(b"opaque", "digicap.dav") == "hikvision-digicap"
    assert match_update_filename("General_IPC_HI3516EV300_85H30AI_S38.Nat.dss.OnvifS.HIK_V5.00.R02.bin")
    assert match_update_filename("DH_IPC-HX2XXX-Nobel_MultiLang_PN_V2.800.bin") == "dahua-package"
    assert match_update_filename("user-x.cramfs.img") == "xiongmai-image"
    assert match_update_filename("holiday.jpg") is None and match_update_filename(None) is None
    assert match_update_uri("/cgi-bin/upgrade.cgi?action=x") == "dahua-upgrade-cgi"
    online = match_update_uri("http://cam/ISAPI/System/onlineUpgrade/status")
    assert online == "hikvision-isapi-online-upgrade"
    assert match_update_uri("/index.html") is None


def test_rules_file_drives_recognition(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(
        "version: 1\ncontent:\n  - {id: acme-fw, vendor: acme, offset: 4, magic_ascii: [ACME]}\n"
        "filenames:\n  - {id: acme-name, vendor: acme, patterns: ['acme_*.pkg']}\n"
    )
    pats = load_update_patterns(f)
    assert sniff_firmware(b"\0\0\0\0ACME", patterns=pats) == "acme-fw"
    assert sniff_firmware(b"hsqs", "ACME_1.pkg", patterns=pats) == "acme-name"  # squashfs is not in this file
    f.write_text("version: 1\ncontent:\n  - {id: broken, magic_hex: [zz]}\n")
    with pytest.raises(PatternError, match="broken"):
        load_update_patterns(f)
    f.write_text("version: 1\nuris:\n  - {id: nopat}\n")
    with pytest.raises(PatternError, match="nopat"):
        load_update_patterns(f)
    assert load_update_patterns().content  # the shipped file is valid


@st.composite
def exchange(draw: st.DrawFn) -> tuple[bytes, bytes, list[bytes]]:
    """Pipelined requests and their responses; bodies framed by length, chunks or the close."""
    reqs, resps, bodies = bytearray(), bytearray(), []
    n = draw(st.integers(1, 4))
    for i in range(n):
        body = draw(st.binary(max_size=3000))
        bodies.append(body)
        reqs += b"GET /f%d.bin HTTP/1.1\r\nHost: cam\r\n\r\n" % i
        kind = draw(st.sampled_from(["length", "chunked", "close"] if i == n - 1 else ["length", "chunked"]))
        if kind == "length":
            resps += b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        elif kind == "chunked":
            resps += b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            for j in range(0, len(body), 700):
                resps += b"%X\r\n" % len(body[j : j + 700]) + body[j : j + 700] + b"\r\n"
            resps += b"0\r\n\r\n"
        else:
            resps += b"HTTP/1.0 200 OK\r\n\r\n" + body
    return bytes(reqs), bytes(resps), bodies


@PROPS
@given(ex=exchange(), data=st.data())
def test_http_over_any_segmentation_reordering_and_duplication(
    ex: tuple[bytes, bytes, list[bytes]], data: st.DataObject
) -> None:
    reqs, resps, bodies = ex
    got: list[Transfer] = []
    c = HttpCarver(got.append)
    conv = TcpConversation(c.requests, c.responses)
    conv.add(True, 7, b"", 0x02)
    conv.add(False, 2**32 - 50, b"", 0x12)  # the response crosses the sequence wrap
    conv.add(True, 8, reqs, 0x18)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(resps) - 1), max_size=30)))
    spans = list(itertools.pairwise([0, *cuts, len(resps)]))
    order = data.draw(st.permutations(spans + data.draw(st.lists(st.sampled_from(spans), max_size=5))))
    for a, b in order:
        conv.add(False, (2**32 - 49 + a) % 2**32, resps[a:b], 0x18)
    conv.add(False, (2**32 - 49 + len(resps)) % 2**32, b"", 0x11)
    conv.close()
    responses = [t for t in got if t.direction == "toclient"]
    assert [bytes(t.data) for t in responses] == bodies
    assert all(t.complete for t in responses)
    assert [t.filename for t in responses] == [f"f{i}.bin" for i in range(len(bodies))]
