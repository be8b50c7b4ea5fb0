"""Destination analyzer: one verdict per (device, destination, port, proto), alerts for unexpected
ones, no verdicts for local traffic (false-positive cases), exposure, persistence, real captures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import Config
from analyzers.traffic.destinations import DESTINATION_RULES, KNOWN_RULES, DestinationAnalyzer
from analyzers.traffic.dhcp import DhcpAnalyzer
from analyzers.traffic.dns import DnsAnalyzer
from tests.conftest import REPO, corpus_path
from tests.unit.test_destinations_harness import (
    TCP_ACK,
    TCP_SYN,
    Driver,
    FakeContext,
    FakeStore,
    NoGeo,
    dns_response,
    icmp_frame,
    tcp_frame,
    udp_frame,
)

CAM = "bc:ad:28:00:00:01"  # Hikvision OUI
CAM2 = "bc:ad:28:00:00:02"
NVR = "bc:ad:28:00:00:10"
GW = "f4:f2:6d:57:79:8e"  # router + local resolver
CAM_IP, CAM2_IP, NVR_IP, GW_IP = "10.20.0.31", "10.20.0.32", "10.20.0.10", "10.20.0.1"


def setup(**kw: Any) -> tuple[FakeContext, Driver]:
    ctx = FakeContext(**kw)
    drv = Driver(ctx, [DhcpAnalyzer(), DnsAnalyzer(), DestinationAnalyzer()])
    return ctx, drv


def resolve(drv: Driver, name: str, ip: str, ts: float, mac: str = CAM, dev_ip: str = CAM_IP) -> None:
    drv.feed(udp_frame(GW, mac, GW_IP, dev_ip, 53, 41000, dns_response(name, [(name, "A", ip, 300)])), ts)


# --- false-positive cases: no alerts -----------------------------------------------------------------


def test_ntp_to_an_allowed_pool_is_allowed() -> None:
    ctx, drv = setup()
    resolve(drv, "0.pool.ntp.org", "162.159.200.1", 1.0)
    drv.feed(udp_frame(CAM, GW, CAM_IP, "162.159.200.1", 123, 123, b"\x23" + b"\x00" * 47), 1.1)
    drv.feed(udp_frame(GW, CAM, "162.159.200.1", CAM_IP, 123, 123, b"\x24" + b"\x00" * 47), 1.2)
    (dest,) = ctx.of("destination")
    assert (dest["verdict"], dest["reason"], dest["dns_name"], dest["rule"]) == (
        "allowed",
        "policy",
        "0.pool.ntp.org",
        "defaults.ntp-pools",
    )
    assert dest["direct_ip"] is False and dest["device"] == CAM and dest["direction"] == "outbound"
    assert ctx.of("alert") == []
    assert ctx.counters.destination_verdicts == {("allowed", "policy", "hikvision"): 1}


def test_dns_to_the_local_resolver_gets_no_verdict() -> None:
    ctx, drv = setup()
    drv.feed(udp_frame(CAM, GW, CAM_IP, GW_IP, 41000, 53, b"\x00" * 12), 1.0)
    resolve(drv, "litedev.ezvizlife.com", "34.246.1.2", 1.1)
    assert ctx.of("destination") == [] and ctx.of("alert") == []
    assert len(ctx.of("dns")) == 1


def test_rtsp_and_rtp_to_the_nvr_get_no_verdict_and_classify_devices() -> None:
    ctx, drv = setup()
    for i, (mac, ip) in enumerate(((CAM, CAM_IP), (CAM2, CAM2_IP))):
        drv.feed(tcp_frame(NVR, mac, NVR_IP, ip, 50000 + i, 554, TCP_SYN), 1.0 + i)
        drv.feed(tcp_frame(mac, NVR, ip, NVR_IP, 554, 50000 + i, TCP_SYN | TCP_ACK), 1.0 + i)
        for seq in range(20):  # RTP video stream
            drv.feed(
                udp_frame(mac, NVR, ip, NVR_IP, 6970, 51000 + i, b"\x80" + bytes(11) + b"x" * 200), 2.0 + seq
            )
    drv.finish()
    assert ctx.of("destination") == [] and ctx.of("alert") == []
    assert ctx.inventory.get(NVR).device_class == "nvr"  # type: ignore[union-attr]
    cam = ctx.inventory.get(CAM)
    assert cam is not None and cam.device_class == "camera" and "tcp/554" in cam.server_ports
    assert cam.counters["packets"] > 20  # local flows count for per-device metrics


def test_multicast_discovery_is_local() -> None:
    ctx, drv = setup()
    drv.feed(udp_frame(CAM, "01:00:5e:7f:ff:fa", CAM_IP, "239.255.255.250", 37020, 37020, b"<Probe/>"), 1.0)
    drv.feed(udp_frame(CAM, "ff:ff:ff:ff:ff:ff", CAM_IP, "10.20.0.255", 5050, 5050, b"\xb3"), 1.0)
    assert ctx.of("destination") == [] and list(ctx.inventory.devices) == [CAM]


# --- verdicts and alerts ------------------------------------------------------------------------------


def test_vendor_cloud_by_name_no_alert() -> None:
    ctx, drv = setup()
    resolve(drv, "litedev.ezvizlife.com", "34.246.1.2", 1.0)
    drv.feed(tcp_frame(CAM, GW, CAM_IP, "34.246.1.2", 40000, 8666), 1.1)
    (dest,) = ctx.of("destination")
    assert (dest["verdict"], dest["reason"], dest["service"], dest["service_category"]) == (
        "vendor-cloud",
        "catalogue",
        "ezviz-cloud",
        "cloud",
    )
    assert dest["service_evidence"] == "domain" and dest["rule"] == "catalogue:ezviz-cloud"
    assert ctx.of("alert") == []
    flow = ctx.events[-1][3]
    assert (
        flow is not None and flow.tags["verdict"] == "vendor-cloud" and flow.tags["service"] == "ezviz-cloud"
    )


def test_direct_ip_is_unexpected_with_one_alert() -> None:
    ctx, drv = setup(geo=NoGeo({"203.0.113.7": "NL"}))
    for i in range(5):  # five flows to the same destination: one event, one alert
        drv.feed(tcp_frame(CAM, GW, CAM_IP, "203.0.113.7", 40000 + i, 4444), 1.0 + i)
    (dest,) = ctx.of("destination")
    assert (dest["verdict"], dest["reason"], dest["direct_ip"], dest["country"]) == (
        "unexpected",
        "direct_ip",
        True,
        "NL",
    )
    (alert,) = ctx.of("alert")
    assert (alert["rule_id"], alert["severity"], alert["category"], alert["device"]) == (
        "CW-DEST-002",
        "medium",
        "unexpected-destination",
        CAM,
    )
    assert "203.0.113.7" in alert["message"]
    assert ctx.counters.destination_verdicts == {("unexpected", "direct_ip", "hikvision"): 1}
    assert ctx.counters.alerts == {("CW-DEST-002", "medium"): 1}
    dev = ctx.inventory.get(CAM)
    assert dev is not None and dev.counters["unexpected_destinations"] == 1 and dev.counters["alerts"] == 1


def test_other_hosts_answer_does_not_name_the_camera_destination() -> None:
    ctx, drv = setup()
    pc = "84:fd:d1:a5:b7:43"
    resolve(drv, "www.example.org", "93.184.216.34", 1.0, mac=pc, dev_ip="10.20.0.50")
    drv.feed(tcp_frame(CAM, GW, CAM_IP, "93.184.216.34", 40000, 443), 1.1)
    (dest,) = ctx.of("destination")
    assert dest["reason"] == "direct_ip" and dest["dns_name"] is None


def test_named_but_not_in_policy() -> None:
    ctx, drv = setup()
    resolve(drv, "c2.evil.example", "198.51.100.66", 1.0)
    drv.feed(tcp_frame(CAM, GW, CAM_IP, "198.51.100.66", 40000, 443), 1.1)
    assert ctx.of("destination")[0]["reason"] == "not_in_policy"
    assert ctx.of("alert")[0]["rule_id"] == "CW-DEST-001"


def test_port_only_service_is_weak_evidence() -> None:
    ctx, drv = setup()
    drv.feed(udp_frame(CAM, GW, CAM_IP, "47.88.59.209", 10000, 32100, b"\xf1\x00\x00\x00"), 1.0)
    (dest,) = ctx.of("destination")
    assert (dest["verdict"], dest["service"], dest["service_evidence"]) == ("vendor-cloud", "cs2-p2p", "port")


def test_a_named_destination_is_not_attributed_by_port() -> None:
    ctx, drv = setup()
    resolve(drv, "c2.evil.example", "198.51.100.66", 1.0)
    drv.feed(udp_frame(CAM, GW, CAM_IP, "198.51.100.66", 10000, 32100, b"\xf1\x00\x00\x00"), 1.1)
    (dest,) = ctx.of("destination")
    assert (dest["verdict"], dest["reason"], dest["service"]) == ("unexpected", "not_in_policy", None)


POLICY = {
    "defaults": {"vendor_cloud": "alert", "deny_countries": ["KP"]},
    "groups": [
        {
            "name": "cams",
            "match": {"cidrs": ["10.20.0.0/24"]},
            "vendor_cloud": "deny",
            "allow_services": ["hik-ntp"],
            "allow": [{"name": "vms", "domains": ["vms.example.net"], "ports": ["tcp/7660"]}],
        }
    ],
}


@pytest.mark.parametrize(
    ("name", "port", "country", "expected", "rule"),
    [
        ("litedev.ezvizlife.com", 8666, None, ("unexpected", "catalogue"), "CW-DEST-005"),
        ("time.ys7.com", 123, None, ("vendor-cloud", "catalogue"), None),
        ("vms.example.net", 7660, None, ("allowed", "policy"), None),
        ("vms.example.net", 80, None, ("unexpected", "port"), "CW-DEST-004"),
        ("x.example", 443, "KP", ("unexpected", "country"), "CW-DEST-003"),
    ],
)
def test_policy_driven_alerts(
    name: str, port: int, country: str | None, expected: tuple[str, str], rule: str | None
) -> None:
    ctx, drv = setup(policy_doc=POLICY, geo=NoGeo({"192.0.2.80": country} if country else {}))
    resolve(drv, name, "192.0.2.80", 1.0)
    proto_frame = udp_frame if port == 123 else tcp_frame
    drv.feed(proto_frame(CAM, GW, CAM_IP, "192.0.2.80", 40000, port), 1.1)
    (dest,) = ctx.of("destination")
    assert (dest["verdict"], dest["reason"]) == expected and dest["group"] == "cams"
    alerts = ctx.of("alert")
    assert [a["rule_id"] for a in alerts] == ([rule] if rule else [])
    if rule:
        assert alerts[0]["severity"] == DESTINATION_RULES[rule][0]


def test_vendor_cloud_alert_mode() -> None:
    ctx, drv = setup(policy_doc=POLICY)
    resolve(drv, "litedev.ezvizlife.com", "34.246.1.2", 1.0, mac="38:af:29:00:00:01", dev_ip="10.30.0.5")
    drv.feed(tcp_frame("38:af:29:00:00:01", GW, "10.30.0.5", "34.246.1.2", 40000, 8666), 1.1)
    (dest,) = ctx.of("destination")
    assert dest["verdict"] == "vendor-cloud" and dest["group"] == "defaults"
    (alert,) = ctx.of("alert")
    assert (alert["rule_id"], alert["severity"], alert["category"]) == ("CW-DEST-006", "low", "vendor-cloud")


# --- direction -------------------------------------------------------------------------------------


def test_inbound_syn_from_outside_is_exposure() -> None:
    ctx, drv = setup()
    drv.feed(tcp_frame(GW, CAM, "198.51.100.23", CAM_IP, 51515, 8000, TCP_SYN), 1.0)
    drv.feed(tcp_frame(GW, CAM, "198.51.100.24", CAM_IP, 51516, 8000, TCP_SYN), 2.0)
    drv.feed(tcp_frame(GW, CAM, "198.51.100.23", CAM_IP, 51517, 8000, TCP_SYN), 3.0)  # same key again
    dests = ctx.of("destination")
    assert len(dests) == 2
    assert (
        dests[0]["direction"] == "inbound" and dests[0]["proto"] == "tcp-in" and dests[0]["dest_port"] == 8000
    )
    alerts = ctx.of("alert")
    assert [a["rule_id"] for a in alerts] == ["CW-DEST-100", "CW-DEST-100"]
    assert alerts[0]["severity"] == "high" and alerts[0]["category"] == "exposure"


def test_inbound_allowed_by_an_explicit_rule() -> None:
    doc = {"defaults": {"allow": [{"name": "vpn", "cidrs": ["198.51.100.0/24"], "ports": ["tcp/554"]}]}}
    ctx, drv = setup(policy_doc=doc)
    drv.feed(tcp_frame(GW, CAM, "198.51.100.23", CAM_IP, 51515, 554, TCP_SYN), 1.0)
    (dest,) = ctx.of("destination")
    assert (dest["verdict"], dest["rule"], dest["direction"]) == ("allowed", "defaults.vpn", "inbound")
    assert ctx.of("alert") == []


def test_inbound_not_accepted_by_ports_only_rules_nor_learnt() -> None:
    doc = {"defaults": {"allow": [{"name": "https-out", "ports": ["tcp/443"]}]}}
    ctx, drv = setup(policy_doc=doc, config=Config(learning_enabled=True), store=FakeStore())
    drv.feed(tcp_frame(GW, CAM, "198.51.100.23", CAM_IP, 51515, 443, TCP_SYN), 1.0)
    (dest,) = ctx.of("destination")
    assert (dest["verdict"], dest["direction"]) == ("unexpected", "inbound")
    assert [a["rule_id"] for a in ctx.of("alert")] == ["CW-DEST-100"]
    assert ctx.policy.baseline == {}
    drv.feed(tcp_frame(CAM, GW, CAM_IP, "198.51.100.23", 40000, 443), 2.0)  # outbound: the rule applies
    assert ctx.of("destination")[-1]["verdict"] == "allowed"


def test_remote_answer_seen_first_is_judged_on_the_remote_port() -> None:
    ctx, drv = setup()
    resolve(drv, "0.pool.ntp.org", "162.159.200.1", 1.0)
    drv.feed(udp_frame(GW, CAM, "162.159.200.1", CAM_IP, 123, 123, b"\x24" + bytes(47)), 1.1)
    (dest,) = ctx.of("destination")
    assert (dest["dest_ip"], dest["dest_port"], dest["verdict"]) == ("162.159.200.1", 123, "allowed")
    assert dest["direction"] == "outbound"


def test_icmp_errors_are_not_destinations_but_pings_are() -> None:
    ctx, drv = setup()
    drv.feed(icmp_frame(CAM, GW, CAM_IP, "47.88.59.209", 3, 3), 1.0)  # port unreachable back to a peer
    assert ctx.of("destination") == []
    drv.feed(icmp_frame(CAM, GW, CAM_IP, "8.8.8.8", 8), 2.0)  # connectivity check
    (dest,) = ctx.of("destination")
    assert (dest["proto"], dest["dest_port"], dest["reason"]) == ("icmp", 8, "direct_ip")


def test_transit_traffic_is_ignored() -> None:
    ctx, drv = setup()
    drv.feed(tcp_frame(GW, CAM, "198.51.100.1", "203.0.113.1", 1, 2), 1.0)
    assert ctx.events == []


# --- persistence -----------------------------------------------------------------------------------


def test_store_batches_and_restart_does_not_report_again() -> None:
    store = FakeStore()
    _ctx, drv = setup(store=store)
    drv.feed(tcp_frame(CAM, GW, CAM_IP, "203.0.113.7", 40000, 4444), 100.0)
    assert store.destinations == {}  # batched: nothing written per flow
    drv.feed(tcp_frame(CAM, GW, CAM_IP, "203.0.113.7", 40001, 4444), 105.0)
    drv.feed(tcp_frame(CAM, GW, CAM_IP, "203.0.113.7", 40002, 4444), 115.0)  # tick after 10 s flushes
    row = store.destinations[(CAM, "203.0.113.7", 4444, "tcp")]
    assert row["info"]["verdict"] == "unexpected" and row["first_seen"] == 100.0 and row["last_seen"] >= 105.0
    assert CAM in store.devices  # the inventory is flushed at the same time
    drv.finish()
    assert store.destinations[(CAM, "203.0.113.7", 4444, "tcp")]["last_seen"] == 115.0

    ctx2, drv2 = setup(store=store)  # restart
    assert ctx2.inventory.get(CAM) is not None
    drv2.feed(tcp_frame(CAM, GW, CAM_IP, "203.0.113.7", 40003, 4444), 200.0)
    assert ctx2.of("destination") == [] and ctx2.of("alert") == []
    assert ctx2.of("device") == []
    flow = next(iter(drv2.flows.values()))[0]
    assert flow.tags["verdict"] == "unexpected"  # judged silently to tag the flow
    drv2.finish()
    assert store.destinations[(CAM, "203.0.113.7", 4444, "tcp")]["last_seen"] == 200.0


def test_learning_mode_end_to_end() -> None:
    store = FakeStore()
    cfg = Config(learning_enabled=True, learning_period=60.0)
    ctx, drv = setup(config=cfg, store=store)
    drv.feed(tcp_frame(CAM, GW, CAM_IP, "203.0.113.7", 40000, 4444), 1000.0)
    assert ctx.of("destination")[0]["reason"] == "learning" and ctx.of("alert") == []
    drv.feed(tcp_frame(CAM, GW, CAM_IP, "203.0.113.8", 40001, 4444), 1070.0)  # after the window
    assert ctx.of("destination")[1]["reason"] == "direct_ip"
    drv.finish()
    assert store.meta["learning_started"] == "1000.0"
    assert store.baseline[CAM] == {("ip", "203.0.113.7 tcp/4444")}
    # Restart after the window: the learnt destination is baseline, a new device's is not.
    ctx2, drv2 = setup(config=cfg, store=store)
    drv2.feed(tcp_frame(CAM, GW, CAM_IP, "203.0.113.7", 40002, 4445), 2000.0)  # new key (port)
    drv2.feed(tcp_frame(CAM2, GW, CAM2_IP, "203.0.113.7", 40003, 4444), 2000.0)
    assert [d["reason"] for d in ctx2.of("destination")] == ["direct_ip", "direct_ip"]


def test_real_state_store_round_trip(tmp_path: Path) -> None:
    store_mod = pytest.importorskip("agent.store")
    with store_mod.StateStore(tmp_path) as store:
        _ctx, drv = setup(store=store)
        drv.feed(tcp_frame(CAM, GW, CAM_IP, "203.0.113.7", 40000, 4444), 100.0)
        drv.finish()
        store.commit()
    with store_mod.StateStore(tmp_path) as store:
        ctx2, drv2 = setup(store=store)
        drv2.feed(tcp_frame(CAM, GW, CAM_IP, "203.0.113.7", 40001, 4444), 300.0)
        drv2.finish()
        assert ctx2.of("destination") == []
        (row,) = store.list_destinations(CAM)
        assert row["verdict"] == "unexpected" and row["first_seen"] == 100.0 and row["last_seen"] == 300.0
        assert store.load_devices()[CAM]["vendor"] == "hikvision"


# --- real capture ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yi_run() -> FakeContext:
    from agent.geo import GeoLookup

    ctx = FakeContext(store=FakeStore())
    ctx.geo = GeoLookup(ctx.config)
    drv = Driver(ctx, [DhcpAnalyzer(), DnsAnalyzer(), DestinationAnalyzer()])
    drv.replay(corpus_path("pcaps", "mudproject_yi_camera.pcap"))
    drv.finish()
    return ctx


def test_yi_camera_capture(yi_run: FakeContext) -> None:
    yi = "0c:8c:24:0b:39:7b"
    dests = {
        (d["dest_ip"], d["dest_port"], d["proto"]): d
        for d in yi_run.of("destination")
        if d.get("device") == yi
    }
    cloud = dests[("3.120.55.194", 443, "tcp")]
    assert (cloud["verdict"], cloud["service"], cloud["dns_name"], cloud["country"]) == (
        "vendor-cloud",
        "yi-cloud",
        "api.eu.xiaoyi.com",
        "DE",
    )
    assert "AMAZON" in cloud["as_org"]
    p2p = [d for k, d in dests.items() if k[1] == 32100]
    assert len(p2p) == 3 and all(d["service"] == "cs2-p2p" and d["service_evidence"] == "port" for d in p2p)
    assert not any(a.get("device") == yi for a in yi_run.of("alert"))  # the camera stays in its clouds
    assert len(dests) == 6
    device = yi_run.inventory.get(yi)
    assert device is not None and device.ip == "192.168.1.143" and device.vendor_class == "udhcp 1.20.2"
    # The laptop on the same LAN talks to many unnamed addresses: those are flagged.
    assert any(a["rule_id"] == "CW-DEST-002" for a in yi_run.of("alert"))


def test_yi_events_validate_against_the_event_schema(yi_run: FakeContext) -> None:
    schema_mod = pytest.importorskip("tests.unit.test_events_schema")
    from agent.events import build_event

    validator = schema_mod.MiniValidator(json.loads((REPO / "docs" / "events.schema.json").read_text()))
    seen = set()
    for event_type, body, ts, flow, pkt in yi_run.events:
        event = json.loads(json.dumps(build_event(event_type, body, ts=ts, flow=flow, pkt=pkt)))
        assert validator.errors(event) == [], (event_type, body)
        seen.add(event_type)
    assert seen == {"device", "dns", "destination", "alert"}


def test_known_rules_cover_every_rule() -> None:
    assert {r for r, _ in KNOWN_RULES} == set(DESTINATION_RULES)
    assert all(sev in ("info", "low", "medium", "high", "critical") for _, sev in KNOWN_RULES)


_CAT = None


def _shared_catalogue() -> Any:
    global _CAT
    if _CAT is None:
        from agent.catalogue import EndpointCatalogue

        _CAT = EndpointCatalogue(Config())
    return _CAT


@given(
    flows=st.lists(
        st.tuples(
            st.integers(0, 5), st.sampled_from([443, 8666, 32100, 123]), st.sampled_from(["tcp", "udp"])
        ),
        max_size=30,
    )
)
@settings(max_examples=60, deadline=None)
def test_one_event_per_key_and_one_alert_per_unexpected(flows: list[tuple[int, int, str]]) -> None:
    ctx = FakeContext(catalogue=_shared_catalogue())
    drv = Driver(ctx, [DestinationAnalyzer()])
    for i, (host, port, proto) in enumerate(flows):
        frame = tcp_frame if proto == "tcp" else udp_frame
        drv.feed(frame(CAM, GW, CAM_IP, f"198.51.100.{host}", 30000 + i, port), float(i))
    dests = ctx.of("destination")
    keys = {(f"198.51.100.{h}", p, proto) for h, p, proto in flows}
    assert {(d["dest_ip"], d["dest_port"], d["proto"]) for d in dests} == keys
    assert len(dests) == len(keys)
    assert len(ctx.of("alert")) == sum(d["verdict"] == "unexpected" for d in dests)
    assert sum(ctx.counters.destination_verdicts.values()) == len(keys)
