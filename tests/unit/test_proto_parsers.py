"""Wire-format parsers of analyzers/protocols: layouts from camera-network.md §2-3, byte-exact round
trips for the binary formats, and robustness (truncated / garbage input gives None, never raises)."""

from __future__ import annotations

import hashlib
import random
import struct

import pytest

from analyzers.protocols import dahua_dvrip, dahua_legacy, dhip, http_head, onvif, rtsp, sadp, tls, xm_dvrip

SADP_REPLY = sadp.build(
    "ProbeMatch",
    {
        "Uuid": "X",
        "DeviceDescription": "DS-2CD2143G2-I",
        "DeviceSN": "DS-2CD2143G2-I20230101AAWRJ1",
        "MAC": "44-19-B6-00-00-20",
        "IPv4Address": "192.168.10.20",
        "SoftwareVersion": "V5.7.3build 220112",
        "DetailOEMCode": "1",
    },
)


def test_sadp_probe_match_fields() -> None:
    msg = sadp.parse(SADP_REPLY)
    assert msg is not None and msg.is_reply
    assert (msg.model, msg.firmware, msg.mac, msg.ipv4, msg.oem_code) == (
        "DS-2CD2143G2-I",
        "V5.7.3build 220112",
        "44:19:b6:00:00:20",
        "192.168.10.20",
        "1",
    )
    assert b"\r\n" in SADP_REPLY  # CRLF-separated leaves, as devices send them
    probe = sadp.parse(
        b'<?xml version="1.0" encoding="utf-8"?><Probe><Uuid>U</Uuid><Types>inquiry</Types></Probe>'
    )
    assert probe is not None and not probe.is_reply and probe.fields["Types"] == "inquiry"


def test_sadp_malformed_xml_still_parsed_line_by_line() -> None:
    text = b"<ProbeMatch>\r\n<DeviceSN>ABC123</DeviceSN>\r\n<MAC>00-11-22-33-44-55</MAC>\r\n<Broken"
    msg = sadp.parse(text)
    assert msg is not None and msg.serial == "ABC123" and msg.mac == "00:11:22:33:44:55"


def test_sadp_l2_round_trip() -> None:
    raw = (
        bytes.fromhex("21 01 42 0f 00000007 0406 04 00 beef")
        + bytes.fromhex("4419b6000020")
        + bytes([192, 168, 10, 20])
        + b"\xff" * 6
        + bytes(4)
        + bytes([255, 255, 255, 0])
        + b"payload"
    )
    msg = sadp.parse_l2(raw)
    assert msg is not None and msg.pack() == raw
    assert (msg.is_response, msg.query_name, msg.mac, msg.ipv4, msg.counter) == (
        True,
        "InquiryResponse",
        "44:19:b6:00:00:20",
        "192.168.10.20",
        7,
    )
    assert sadp.parse_l2(raw[:37]) is None
    assert sadp.parse_l2(b"\x22" + raw[1:]) is None  # wrong marker


def test_dhip_round_trip_and_fields() -> None:
    body = {
        "mac": "4c:11:bf:00:00:21",
        "method": "client.notifyDevInfo",
        "params": {
            "deviceInfo": {
                "DeviceType": "IPC-HDW5421S",
                "SerialNo": "1F006E4PAX00075",
                "Vendor": "Dahua",
                "Manufacturer": "Private",
                "Version": "2.400.0.8",
            }
        },
    }
    raw = dhip.build(body, session=5, request_id=9)
    assert raw[:8] == b"\x20\x00\x00\x00DHIP"
    assert struct.unpack_from("<I", raw, 16)[0] == len(raw) - 32 == struct.unpack_from("<I", raw, 24)[0]
    msg = dhip.parse(raw)
    assert msg is not None and msg.pack() == raw and msg.is_reply
    assert (msg.info("SerialNo"), msg.info("Vendor"), msg.session, msg.request_id) == (
        "1F006E4PAX00075",
        "Dahua",
        5,
        9,
    )
    search = dhip.parse(dhip.build({"method": "DHDiscover.search", "params": {"mac": "", "uni": 0}}))
    assert search is not None and not search.is_reply and search.method == "DHDiscover.search"


def test_dahua_legacy_round_trip() -> None:
    raw = dahua_legacy.build_reply(
        "IPC-HFW1230S",
        "192.168.1.108",
        "255.255.255.0",
        "192.168.1.1",
        "38:af:29:bb:bc:ab",
        {"Name": "cam", "Device": "IPC-HFW1230S", "SerialNo": "4H01D66PAJ2FA64"},
    )
    msg = dahua_legacy.parse(raw)
    assert msg is not None and msg.serial == "4H01D66PAJ2FA64" and msg.ipv4 == "192.168.1.108"
    assert msg.mac == "38:af:29:bb:bc:ab" and msg.model == "IPC-HFW1230S"
    assert dahua_legacy.is_request(dahua_legacy.build_request())


def test_dahua_dvrip_round_trip() -> None:
    raw = dahua_dvrip.build(0xF4, b'{"method":"magicBox.getSystemInfo"}', extra=b"\x01\x02")
    msg = dahua_dvrip.parse(raw)
    assert msg is not None and msg.pack() == raw and msg.command == 0xF4
    assert msg.json_body() == {"method": "magicBox.getSystemInfo"}
    assert dahua_dvrip.parse(b"\x17" + raw[1:]) is None


def test_xm_dvrip_header_layout_and_round_trip() -> None:
    raw = xm_dvrip.build(
        1531,
        {
            "NetWork.NetCommon": {
                "HostIP": xm_dvrip.host_ip_hex("192.168.1.100"),
                "SN": "abc",
                "TCPPort": 34567,
            }
        },
        session=0x12,
        sequence=3,
    )
    head, ver, _r, session, seq, _t, _c, msg_id, length = struct.unpack_from("<BBHIIBBHI", raw)
    assert (head, ver, session, seq, msg_id, length) == (0xFF, 1, 0x12, 3, 1531, len(raw) - 20)
    assert raw.endswith(b"\n\x00")
    msg = xm_dvrip.parse(raw)
    assert msg is not None and msg.pack() == raw and msg.name == "discovery_rsp"
    assert msg.host_ip == "192.168.1.100" and msg.text("SN") == "abc"
    assert xm_dvrip.host_ip_hex("192.168.1.100") == "0x6401A8C0"


def test_onvif_probe_matches_scopes() -> None:
    raw = onvif.build_probe_matches(
        ["http://10.0.0.5/onvif/device_service"],
        ["onvif://www.onvif.org/name/IPC%20Front", "onvif://www.onvif.org/hardware/DS-2CD2387G2-LU"],
        message_id="m",
        relates_to="r",
        address="a",
    )
    msg = onvif.parse(raw)
    assert msg is not None and msg.kind == "ProbeMatches" and msg.is_announcement
    assert msg.hardware == "DS-2CD2387G2-LU" and msg.name == "IPC Front"
    assert msg.xaddrs == ["http://10.0.0.5/onvif/device_service"]
    assert onvif.parse(b"<?xml version='1.0'?><hello>not wsd</hello>") is None


def test_http_and_rtsp_heads() -> None:
    req = http_head.parse(b"POST /RPC2_Login HTTP/1.1\r\nHost: 192.168.1.108\r\nUser-Agent: x\r\n\r\n{}")
    assert req is not None and req.is_request and req.method == "POST" and req.path == "/RPC2_Login"
    rsp = http_head.parse(
        b"HTTP/1.1 401 Unauthorized\r\nServer: App-webs/\r\n"
        b'WWW-Authenticate: Digest realm="hikvision", nonce="x"\r\n\r\n'
    )
    assert rsp is not None and rsp.status == 401 and rsp.server == "App-webs/" and rsp.realm == "hikvision"
    r = rtsp.parse(
        b"RTSP/1.0 401 Unauthorized\r\nCSeq: 2\r\n"
        b'WWW-Authenticate: Digest realm="Login to 4H01D66PAJ2FA64", nonce="n"\r\n'
        b"Server: Rtsp Server/3.0\r\n\r\n"
    )
    assert (
        r is not None
        and r.protocol == "RTSP"
        and r.realm == "Login to 4H01D66PAJ2FA64"
        and r.server == "Rtsp Server/3.0"
    )
    assert http_head.parse(b"RTSP/1.0 200 OK\r\n\r\n") is None  # RTSP is not HTTP
    assert rtsp.parse(b"$\x00\x01\x00" + bytes(40)) is None  # interleaved RTP


def _ja4_by_hand(ciphers: str, exts: str, sigs: str, sni: bool, alpn: str, version: str) -> str:
    """JA4 recomputed from tshark's field values (comma-separated decimal/hex), per the spec."""

    def grease(v: int) -> bool:
        return v & 0x0F0F == 0x0A0A and v >> 8 == v & 0xFF

    cs = [int(c, 16) for c in ciphers.split(",") if not grease(int(c, 16))]
    ex = [int(e) for e in exts.split(",") if not grease(int(e))]
    a = f"t{version}{'d' if sni else 'i'}{len(cs):02d}{len(ex):02d}{alpn}"
    b = hashlib.sha256(",".join(f"{c:04x}" for c in sorted(cs)).encode()).hexdigest()[:12]
    c_text = ",".join(f"{e:04x}" for e in sorted(e for e in ex if e not in (0, 16)))
    c_text += "_" + ",".join(s[2:] for s in sigs.split(","))
    return f"{a}_{b}_{hashlib.sha256(c_text.encode()).hexdigest()[:12]}"


def test_ja4_of_built_hello_matches_hand_computation() -> None:
    hello = tls.build_client_hello(
        sni="cam.example",
        ciphers=[0x0A0A, 0x1301, 0xC02F, 0x002F],
        alpn=["h2", "http/1.1"],
        sig_algs=[0x0403, 0x0804],
        extensions=[(0x2A2A, b""), (0x000A, b"\x00\x02\x00\x1d"), (0x002B, b"\x02\x03\x04")],
    )
    parsed = tls.parse_client_hello(hello)
    assert parsed is not None and parsed.sni == "cam.example" and parsed.alpn == ["h2", "http/1.1"]
    want = _ja4_by_hand(
        "0x0a0a,0x1301,0xc02f,0x002f", "10794,10,43,0,16,13", "0x0403,0x0804", True, "h2", "13"
    )
    assert tls.ja4(parsed) == want
    assert tls.ja4(parsed).startswith("t13d0305h2_")  # GREASE neither counted nor hashed


def test_ja4_no_sni_no_alpn() -> None:
    parsed = tls.parse_client_hello(tls.build_client_hello(ciphers=[0x003D], sig_algs=[0x0401]))
    assert parsed is not None and tls.ja4(parsed).startswith("t12i010100_")


@pytest.mark.parametrize(
    "parse",
    [
        sadp.parse,
        sadp.parse_l2,
        dhip.parse,
        dahua_legacy.parse,
        dahua_dvrip.parse,
        xm_dvrip.parse,
        onvif.parse,
        http_head.parse,
        rtsp.parse,
        tls.parse_client_hello,
        tls.parse_server,
    ],
)
def test_parsers_never_raise(parse: object) -> None:
    samples = [
        SADP_REPLY,
        dhip.build({"a": 1}),
        xm_dvrip.build(1531, {"x": 1}),
        tls.build_client_hello(sni="a"),
        dahua_dvrip.build(0xB1, b"x" * 40),
        b"HTTP/1.1 200 OK\r\n\r\n",
    ]
    gen = random.Random(4)
    rnd = [gen.randbytes(n) for n in (0, 1, 5, 20, 32, 37, 100, 600)]
    assert callable(parse)
    for s in samples:
        for cut in range(0, len(s), max(1, len(s) // 40)):
            parse(s[:cut])  # truncated: must not raise
    for r in rnd:
        parse(r)
        parse(memoryview(r))
    assert dhip.parse(dhip.build({"a": 1})[:20]) is None
    assert tls.parse_client_hello(tls.build_client_hello(sni="a")[:30]) is None
    assert xm_dvrip.parse(b"\xff\x05" + bytes(18)) is None  # version must be 0/1
