"""Deterministic scenario captures for vendor cloud / P2P recognition (analyzers/traffic/cloud_p2p.py).

Payload layouts follow shared/reference/camera-network.md §1-§2: CS2/PPPP hellos and LAN
announcements, Dahua DHPOST over UDP 8800, the bit-inverted STUN probe and PTCP, EZVIZ MQTT on
31006, XMeye cleartext JSON; plus look-alikes that must not match (RTP, NTP, a UDP datagram to
32100 that is not CS2).
"""

from __future__ import annotations

import json
import struct

from agent.scenarios.updates import DAHUA_CAM, GATEWAY_MAC, HIK_CAM, XM_CAM, Frames, Scenario, http_request

CS2_CAM = ("192.168.1.143", "0c:8c:24:0b:39:7b")
NVR = ("192.168.1.200", "c0:56:e3:00:02:00")
CS2_SERVERS = ("47.88.59.209", "47.90.240.160", "47.74.255.9")


def cs2(msg_type: int, body: bytes = b"") -> bytes:
    return bytes([0xF1, msg_type]) + struct.pack("!H", len(body)) + body


def inverted_stun(length: int = 24) -> bytes:
    """A STUN Binding Request with every byte XORed with 0xFF (length counts the attributes)."""
    plain = struct.pack("!HHI12s", 0x0001, length, 0x2112A442, bytes(range(12))) + bytes(length)
    return bytes(b ^ 0xFF for b in plain)


def ptcp(seq: int) -> bytes:
    return b"PTCP" + struct.pack("!IIII", seq, 0, 0x00010000, 0) + bytes(8)


def cloud_sessions() -> Frames:
    s = Scenario()
    for server in CS2_SERVERS:
        for _ in range(3):
            s.udp(CS2_CAM, 10000, (server, GATEWAY_MAC), 32100, cs2(0x00))
    s.udp(
        CS2_CAM, 32108, ("255.255.255.255", "ff:ff:ff:ff:ff:ff"), 32108, cs2(0x31, b"TNPUSAF\0" + bytes(12))
    )
    easy4ip = ("198.51.100.40", GATEWAY_MAC)
    dh = (
        b'DHPOST /probe/p2psrv HTTP/1.1\r\nCSeq: 1\r\nX-WSSE: UsernameToken Username="P2PClient"\r\n'
        b"Content-Length: 0\r\n\r\n"
    )
    s.udp(DAHUA_CAM, 51145, easy4ip, 8800, dh)
    s.udp(DAHUA_CAM, 51146, ("198.51.100.41", GATEWAY_MAC), 47001, inverted_stun())
    s.udp(DAHUA_CAM, 51147, ("198.51.100.42", GATEWAY_MAC), 47002, ptcp(1))
    mqtt = b"\x10\x1c\x00\x04MQTT\x04\xc2\x00\x3c\x00\x08DS123456\x00\x04test\x00\x00"
    s.tcp_session(HIK_CAM, 48614, ("198.51.100.20", GATEWAY_MAC), 31006, [(True, mqtt)])
    body = json.dumps({"CfgProtocol": {"Header": {"MessageType": "MSG_DSS_CFG_QUERY_REQ"}}}).encode()
    s.tcp_session(
        XM_CAM,
        48768,
        ("198.51.100.50", GATEWAY_MAC),
        8086,
        [(True, http_request("POST", "/", "pub-cfg", body))],
    )
    return s.frames


def look_alikes() -> Frames:
    """Traffic on or near the same ports that is not a vendor cloud protocol."""
    s = Scenario()
    # RTP to the NVR (version 2, PT 96), NTP to a public server, a DNS query to the local resolver
    for seq in range(5):
        rtp = struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, 0x1234) + bytes(200)
        s.udp(HIK_CAM, 50000, NVR, 50002, rtp)
    s.udp(HIK_CAM, 123, ("162.159.200.1", GATEWAY_MAC), 123, b"\x23" + bytes(47))
    # f1 magic but a length that disagrees with the datagram; and a non-f1 datagram to 32100
    s.udp(CS2_CAM, 10001, ("47.88.59.209", GATEWAY_MAC), 32100, cs2(0x00) + b"xx")
    s.udp(CS2_CAM, 10002, ("47.88.59.209", GATEWAY_MAC), 32100, b"\x00\x01\x02\x03")
    # ff fe prefix with a length that does not agree (not an inverted STUN probe)
    s.udp(DAHUA_CAM, 51150, ("198.51.100.43", GATEWAY_MAC), 47003, b"\xff\xfe\x00\x00" + bytes(40))
    return s.frames


SCENARIOS = {"cloud_sessions": cloud_sessions, "look_alikes": look_alikes}
