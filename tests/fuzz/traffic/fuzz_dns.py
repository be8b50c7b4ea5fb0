"""DNS / mDNS messages (analyzers/traffic/dns.py) and the passive DNS cache fed with their answers
(agent/dnscache.py), as the DNS analyzer does for UDP datagrams and TCP length-prefixed messages."""

from __future__ import annotations

import struct

from agent.catalogue import normalize_name
from agent.dnscache import PassiveDNS
from analyzers.traffic import dns
from tests.fuzz.traffic.common import touch, udp_payloads

MAX_LEN = 4096


def fuzz_one(data: bytes) -> None:
    # Odd first byte: a TCP segment of length-prefixed messages; even: one UDP datagram.
    messages = dns._tcp_messages(data[1:]) if data[:1] and data[0] & 1 else [data[1:]]
    cache = PassiveDNS(max_entries=8)
    for buf in messages:
        try:
            msg = dns.parse_dns(buf)
        except dns.DnsParseError:
            continue  # the parser's documented verdict on bad input
        touch(*(r.type_name for r in msg.answers + msg.additional))
        if not msg.questions:
            continue
        qname = msg.questions[0][0].rstrip(".").lower()
        answers = [(r.name, r.type_name, r.data, r.ttl) for r in msg.answers]
        recorded = cache.add_response("aa:bb:cc:dd:ee:ff", qname, answers, 1000.0)
        if recorded:
            # the most recent answer is never evicted by the LRU, and its TTL is at least min_ttl
            names = cache.names_for("aa:bb:cc:dd:ee:ff", recorded[-1], 1000.0)
            assert normalize_name(qname) in names, f"recorded {recorded[-1]} for {qname!r}, found {names}"
        cache.expire(1000.0 + 90_000.0)


def _query(name: str, qtype: int = 1) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + labels + struct.pack("!HH", qtype, 1)


def _response(name: str) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    out = struct.pack("!HHHHHH", 0x1234, 0x8180, 1, 3, 0, 1) + labels + struct.pack("!HH", 1, 1)
    target = b"\x03cdn\xc0\x0c"
    out += b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 300, len(target)) + target  # CNAME -> cdn.<name>
    out += b"\xc0\x2b" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([203, 0, 113, 7])
    out += b"\xc0\x2b" + struct.pack("!HHIH", 28, 1, 60, 16) + bytes(15) + b"\x01"
    out += b"\xc0\x0c" + struct.pack("!HHIH", 33, 1, 60, 8) + b"\0\0\0\0\0\x50\xc0\x0c"
    return out


def seeds() -> list[bytes]:
    udp = [b"\0" + _query("api.hik-connect.com"), b"\0" + _response("p2p.example.com")]
    tcp = b"\1" + b"".join(
        len(m).to_bytes(2, "big") + m for m in (_query("a.example"), _response("a.example"))
    )
    return [*udp, tcp, *(b"\0" + p for p in udp_payloads(53, 4)), *(b"\0" + p for p in udp_payloads(5353, 4))]
