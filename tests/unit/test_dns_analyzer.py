"""DNS analyzer: tolerant parsing (real captures), passive DNS for the querying device only, one
`dns` event per response, mDNS names to the inventory but never to destination naming."""

from __future__ import annotations

import contextlib
import struct

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzers.traffic.dns import DnsAnalyzer, DnsParseError, _tcp_messages, parse_dns
from tests.conftest import corpus_path
from tests.unit.test_destinations_harness import (
    Driver,
    FakeContext,
    FakeStore,
    dns_query,
    dns_response,
    read_frames,
    tcp_frame,
    udp_frame,
)

CAM, RESOLVER_MAC, PC = "bc:ad:28:00:00:01", "f4:f2:6d:57:79:8e", "84:fd:d1:a5:b7:43"


def _udp_payloads(path: str) -> list[tuple[float, bytes, int, int]]:
    out = []
    for ts, frame in read_frames(corpus_path("pcaps", path)):
        eth = dpkt.ethernet.Ethernet(frame)
        ip = eth.data
        if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) and isinstance(ip.data, dpkt.udp.UDP):
            out.append((ts, bytes(ip.data.data), ip.data.sport, ip.data.dport))
    return out


def test_parse_real_responses() -> None:
    msgs = [parse_dns(p) for _, p, sport, _ in _udp_payloads("tcpdump_dns_udp.pcap") if sport == 53]
    (resp,) = msgs
    assert resp.qr and resp.rcode == 0 and resp.questions == [("www.tcpdump.org", 1)]
    assert sorted(r.data for r in resp.answers) == ["192.139.46.66", "198.199.88.104"]
    ptr = [parse_dns(p) for _, p, sport, _ in _udp_payloads("dpkt_dns_icmp.pcap") if sport == 53]
    assert ptr[0].answers[0].type_name == "PTR" and ptr[0].answers[0].data == "google-public-dns-a.google.com"
    assert any(m.answers and m.answers[0].data == "174.137.42.65" for m in ptr)


def test_parser_survives_nsec_records_dpkt_rejects() -> None:
    """mDNS responses with NSEC (type 47): dpkt.dns raises, our parser keeps the other records."""
    payloads = [p for _, p, sport, _ in _udp_payloads("zeek_mdns.pcap") if sport == 5353]
    rejected = 0
    for p in payloads:
        try:
            dpkt.dns.DNS(p)
        except dpkt.UnpackError:
            rejected += 1
    msgs = [parse_dns(p) for p in payloads]
    names = {r.name for m in msgs for r in m.answers + m.additional}
    assert "johanna-QEMU-Virtual-Machine.local" in names
    assert rejected == 0 or any(r.rrtype == 47 for m in msgs for r in m.additional + m.answers)


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_parse_never_crashes_unexpectedly(data: bytes) -> None:
    with contextlib.suppress(DnsParseError):
        parse_dns(data)


def test_compression_loop_is_rejected() -> None:
    buf = struct.pack("!HHHHHH", 1, 0x8180, 1, 0, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    with pytest.raises(DnsParseError):
        parse_dns(buf)


def test_tcp_segment_messages() -> None:
    m = dns_response("a.example", [("a.example", "A", "192.0.2.1", 60)])
    assert _tcp_messages(len(m).to_bytes(2, "big") + m + len(m).to_bytes(2, "big") + m) == [m, m]
    assert _tcp_messages(len(m).to_bytes(2, "big") + m[:-3]) == []  # split across segments: skipped


def drive() -> tuple[FakeContext, Driver]:
    ctx = FakeContext()
    return ctx, Driver(ctx, [DnsAnalyzer()])


def test_response_feeds_the_querying_device_only() -> None:
    ctx, drv = drive()
    drv.feed(
        udp_frame(CAM, RESOLVER_MAC, "10.0.0.2", "10.0.0.1", 40000, 53, dns_query("litedev.ezvizlife.com")),
        1.0,
    )
    answers = [
        ("litedev.ezvizlife.com", "CNAME", "lb.ezvizlife.com", 300),
        ("lb.ezvizlife.com", "A", "34.246.1.2", 30),
    ]
    resp = dns_response("litedev.ezvizlife.com", answers)
    drv.feed(udp_frame(RESOLVER_MAC, CAM, "10.0.0.1", "10.0.0.2", 53, 40000, resp), 1.1)
    assert ctx.dns.name_for(CAM, "34.246.1.2", 2.0) == "litedev.ezvizlife.com"
    assert ctx.dns.name_for(RESOLVER_MAC, "34.246.1.2", 2.0) is None  # the resolver did not ask
    (ev,) = ctx.of("dns")
    assert ev["device"] == CAM and ev["rrname"] == "litedev.ezvizlife.com" and ev["rrtype"] == "A"
    assert (
        ev["rcode"] == "NOERROR" and ev["ttl"] == 30 and ev["answers"] == ["lb.ezvizlife.com", "34.246.1.2"]
    )
    dev = ctx.inventory.get(CAM)
    assert dev is not None and "litedev.ezvizlife.com" in dev.dns_names
    assert ctx.of("device")[0]["mac"] == CAM


def test_response_to_a_remote_host_is_ignored() -> None:
    ctx, drv = drive()
    resp = dns_response("x.example", [("x.example", "A", "192.0.2.1", 60)])
    drv.feed(udp_frame(RESOLVER_MAC, CAM, "8.8.8.8", "203.0.113.5", 53, 40000, resp), 1.0)
    assert ctx.of("dns") == [] and len(ctx.dns) == 0 and len(ctx.inventory) == 0


def test_nxdomain_is_reported_but_caches_nothing() -> None:
    ctx, drv = drive()
    resp = dns_response("nope.example", [], rcode=3)
    drv.feed(udp_frame(RESOLVER_MAC, CAM, "10.0.0.1", "10.0.0.2", 53, 40000, resp), 1.0)
    (ev,) = ctx.of("dns")
    assert ev["rcode"] == "NXDOMAIN" and "answers" not in ev
    assert len(ctx.dns) == 0
    assert "nope.example" in ctx.inventory.get(CAM).dns_names  # type: ignore[union-attr]


def test_query_without_answer_still_records_the_name() -> None:
    ctx, drv = drive()
    drv.feed(
        udp_frame(CAM, RESOLVER_MAC, "10.0.0.2", "114.114.114.114", 40000, 53, dns_query("mac.secu100.net")),
        1.0,
    )
    assert "mac.secu100.net" in ctx.inventory.get(CAM).dns_names  # type: ignore[union-attr]
    assert ctx.of("dns") == []


def test_dns_over_tcp_whole_segment() -> None:
    ctx, drv = drive()
    m = dns_response("www.example.org", [("www.example.org", "A", "93.184.216.34", 60)])
    drv.feed(
        tcp_frame(RESOLVER_MAC, CAM, "10.0.0.1", "10.0.0.2", 53, 40001, 0x18, len(m).to_bytes(2, "big") + m),
        1.0,
    )
    assert ctx.dns.name_for(CAM, "93.184.216.34", 1.5) == "www.example.org"
    assert len(ctx.of("dns")) == 1


def test_mdns_goes_to_inventory_not_to_passive_dns() -> None:
    ctx, drv = drive()
    d = dpkt.dns.DNS(id=0, qr=1, aa=1)
    instance = "HIKVISION DS-2CD2722FWD-IZS - 733050127._http._tcp.local"
    d.an = [
        dpkt.dns.DNS.RR(name="_http._tcp.local", type=dpkt.dns.DNS_PTR, cls=1, ttl=120, ptrname=instance),
        dpkt.dns.DNS.RR(name="hik-cam.local", type=dpkt.dns.DNS_A, cls=1, ttl=120, ip=bytes([10, 0, 0, 2])),
    ]
    d.an[1].rdata = d.an[1].ip
    drv.feed(udp_frame(CAM, "01:00:5e:00:00:fb", "10.0.0.2", "224.0.0.251", 5353, 5353, bytes(d)), 1.0)
    dev = ctx.inventory.get(CAM)
    assert dev is not None
    assert set(dev.mdns_names) == {instance, "hik-cam.local"}
    assert (dev.vendor, dev.vendor_source, dev.model) == ("hikvision", "mdns", "DS-2CD2722FWD-IZS")
    assert len(ctx.dns) == 0 and ctx.of("dns") == []
    assert ctx.of("device")[-1]["model"] == "DS-2CD2722FWD-IZS"


def test_real_mdns_capture() -> None:
    ctx, drv = drive()
    drv.replay(corpus_path("pcaps", "zeek_mdns.pcap"))
    dev = ctx.inventory.get("8a:3c:d6:e1:4d:c4")
    assert dev is not None and "johanna-QEMU-Virtual-Machine.local" in dev.mdns_names
    assert not any(n.endswith(".arpa") for n in dev.mdns_names)
    assert len(ctx.dns) == 0 and ctx.of("dns") == []


def test_real_capture_yi_camera() -> None:
    store = FakeStore()
    ctx = FakeContext(store=store)
    drv = Driver(ctx, [DnsAnalyzer()])
    drv.replay(corpus_path("pcaps", "mudproject_yi_camera.pcap"))
    drv.finish()
    yi = "0c:8c:24:0b:39:7b"
    cam_events = [e for e in ctx.of("dns") if e.get("device") == yi]
    assert len(cam_events) == 8  # one per response, no duplicates for the query
    assert all(e["rrname"] == "api.eu.xiaoyi.com" for e in cam_events)
    assert ctx.dns.name_for(yi, "3.120.55.194", 1549970499.3) == "api.eu.xiaoyi.com"
    assert ctx.dns.name_for("84:3a:4b:13:82:24", "3.120.55.194", 1549970499.3) is None  # the PC never asked
    # names persisted for restarts (batched), with first/last sighting
    first, last = store.names[(yi, "3.120.55.194", "api.eu.xiaoyi.com")]
    assert first < last


def test_garbage_on_port_53_is_counted_not_raised() -> None:
    ctx, drv = drive()
    drv.feed(udp_frame(RESOLVER_MAC, CAM, "10.0.0.1", "10.0.0.2", 53, 40000, b"\x00\x01garbage"), 1.0)
    assert drv.analyzers[0].parse_errors == 1 and ctx.of("dns") == []
