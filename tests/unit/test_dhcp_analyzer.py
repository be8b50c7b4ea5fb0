"""DHCP analyzer on real captures: DHCPv4 facts (incl. option 161 MUD URL), DHCPv6 relay unwrapping
(incl. option 112 MUD URL), and device events only when identity facts change."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import Config
from analyzers.traffic.dhcp import DhcpAnalyzer, parse_dhcp4, parse_dhcp6
from tests.conftest import corpus_path
from tests.unit.test_destinations_harness import Driver, FakeContext, udp_frame

MUD_URL = "https://mudctl.example.com/.well-known/mud/v1/rasbp101"
PI = "b8:27:eb:b8:53:c8"


def run(path: str, *, local_all: bool = False, config: Config | None = None) -> FakeContext:
    ctx = FakeContext(config, local_all=local_all)
    drv = Driver(ctx, [DhcpAnalyzer()])
    drv.replay(corpus_path("pcaps", path))
    drv.finish()
    return ctx


def test_zeek_dora() -> None:
    ctx = run("zeek_dhcp.pcap", local_all=True)
    dev = ctx.inventory.get("90:b1:1c:99:49:29")
    assert dev is not None
    assert dev.hostname == "btest.is.cool"
    assert dev.requested_ip == "128.2.6.189"  # from the last request
    assert "128.2.6.189" in dev.ips  # the DHCPACK's yiaddr
    assert "128.2.6.97" not in dev.ips  # offered (not acknowledged) addresses are not the device's
    events = ctx.of("device")
    assert events[0]["change"] == "new" and events[0]["hostname"] == "btest.is.cool"
    assert [e.get("changed") for e in events[1:]] == [["ips"]]  # requests, NAK, release: no new identity


def test_zeek_dora_not_local_is_ignored() -> None:
    ctx = run("zeek_dhcp.pcap", config=Config(local_cidrs=[]))
    # Only broadcast destinations count as local here; the ACK to a public address is ignored.
    dev = ctx.inventory.get("90:b1:1c:99:49:29")
    assert dev is not None and "128.2.6.189" not in dev.ips


def test_dhcp_option_161_mud_url_relayed() -> None:
    ctx = run("tcpdump_dhcp-mud.pcap", local_all=True)
    assert ctx.inventory.get("00:23:eb:10:2c:29") is None  # the relay's MAC is not the client
    dev = ctx.inventory.get(PI)
    assert dev is not None
    assert dev.mud_url == MUD_URL
    assert dev.hostname == "raspberrypi"
    assert dev.vendor_class == "dhcpcd-6.11.5:Linux-4.1.18-v7+:armv7l:BCM2709"
    assert dev.dhcp_fingerprint == "1,121,33,3,6,12,15,28,42,51,54,58,59,100,101,119"
    assert dev.client_id == "01b827ebb853c8"
    assert "62.12.173.123" in dev.ips
    (ev, *_) = ctx.of("device")
    assert ev["mud_url"] == MUD_URL and ev["dhcp_fingerprint"].startswith("1,121")


def test_dhcpv6_option_112_mud_url_in_relay_forward() -> None:
    ctx = run("tcpdump_dhcpv6-mud.pcap", local_all=True)
    assert len(ctx.inventory) == 1
    dev = ctx.inventory.get(PI)  # MAC from the DUID-LLT inside the relayed Solicit
    assert dev is not None
    assert dev.mud_url == MUD_URL
    assert dev.hostname == "raspberrypi"
    assert dev.dhcpv6_fingerprint == "v6:23,24,31,39,82,83"
    assert dev.ips == {}  # a relayed message's source address is the relay's
    assert len(ctx.of("device")) == 1  # five Solicits, one identity


def test_yi_camera_vendor_class() -> None:
    ctx = run("mudproject_yi_camera.pcap")
    dev = ctx.inventory.get("0c:8c:24:0b:39:7b")
    assert dev is not None
    assert (dev.vendor_class, dev.dhcp_fingerprint, dev.vendor, dev.vendor_weak) == (
        "udhcp 1.20.2",
        "1,3,6,12,15,28,42",
        "bilian",
        True,
    )
    assert dev.ip == "192.168.1.143"


def test_parsers_reject_non_dhcp() -> None:
    assert parse_dhcp4(b"\x01" * 300) is None  # no magic cookie
    assert parse_dhcp4(b"") is None
    assert parse_dhcp6(b"\x0c\x00") is None  # truncated relay
    assert parse_dhcp6(b"\x0c" + b"\x00" * 33) is None  # relay without a relay-message option


_GARBAGE_DRIVER = Driver(FakeContext(local_all=True), [DhcpAnalyzer()])


@given(st.binary(max_size=600))
@settings(max_examples=300)
def test_garbage_never_raises(data: bytes) -> None:
    drv = _GARBAGE_DRIVER
    drv.feed(
        udp_frame("00:11:22:33:44:55", "ff:ff:ff:ff:ff:ff", "0.0.0.0", "255.255.255.255", 68, 67, data), 1.0
    )
    drv.feed(udp_frame("00:11:22:33:44:55", "33:33:00:01:00:02", "fe80::1", "ff02::1:2", 546, 547, data), 1.0)
    # Whatever the bytes, parsing is in a try/except for the decode errors it can meet.
    parse_dhcp6(data)
