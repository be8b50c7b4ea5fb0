"""Passive DNS: per-device names, CNAME chains, TTL clamping, capture-time expiry, LRU bound."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.config import Config
from agent.dnscache import PassiveDNS
from tests.unit.test_destinations_harness import FakeStore

CAM = "bc:ad:28:00:00:01"
PC = "84:fd:d1:a5:b7:43"


def test_cname_chain_resolves_to_the_queried_name() -> None:
    pdns = PassiveDNS(Config())
    answers = [
        ("api.eu.xiaoyi.com", "CNAME", "home-interface.mi-ae.com.de", 594),
        ("home-interface.mi-ae.com.de", "A", "3.120.65.247", 6),
        ("home-interface.mi-ae.com.de", "A", "3.120.55.194", 6),
    ]
    assert pdns.add_response(CAM, "api.eu.xiaoyi.com.", answers, now=100.0) == [
        "3.120.65.247",
        "3.120.55.194",
    ]
    assert pdns.name_for(CAM, "3.120.55.194", 101.0) == "api.eu.xiaoyi.com"
    assert pdns.name_for(CAM, "3.120.65.247", 101.0) == "api.eu.xiaoyi.com"


def test_multi_hop_chain_and_out_of_chain_records() -> None:
    pdns = PassiveDNS(Config())
    answers = [
        ("b.example", "CNAME", "c.example", 300),
        ("a.example", "CNAME", "b.example", 300),  # order in the response does not matter
        ("c.example", "AAAA", "2001:db8::7", 300),
        ("unrelated.example", "A", "192.0.2.66", 300),  # not on the chain from the question
    ]
    assert pdns.add_response(CAM, "A.Example", answers, 0.0) == ["2001:db8::7"]
    assert pdns.name_for(CAM, "2001:db8::7", 1.0) == "a.example"
    assert pdns.name_for(CAM, "192.0.2.66", 1.0) is None


def test_cname_loop_terminates() -> None:
    pdns = PassiveDNS(Config())
    answers = [("a.x", "CNAME", "b.x", 60), ("b.x", "CNAME", "a.x", 60), ("b.x", "A", "192.0.2.1", 60)]
    assert pdns.add_response(CAM, "a.x", answers, 0.0) == ["192.0.2.1"]


def test_names_are_per_device() -> None:
    pdns = PassiveDNS(Config())
    pdns.add_response(PC, "evil.example", [("evil.example", "A", "192.0.2.9", 300)], 0.0)
    assert pdns.name_for(PC, "192.0.2.9", 1.0) == "evil.example"
    # The camera never asked: another host's answer does not name the camera's destination.
    assert pdns.name_for(CAM, "192.0.2.9", 1.0) is None


def test_ttl_clamped_and_expiry_by_capture_time() -> None:
    pdns = PassiveDNS(Config(dns_min_ttl=60.0, dns_max_ttl=3600.0))
    pdns.add(CAM, "192.0.2.1", "short.example", ttl=1, now=1000.0)
    pdns.add(CAM, "192.0.2.2", "long.example", ttl=10**9, now=1000.0)
    assert pdns.name_for(CAM, "192.0.2.1", 1059.0) == "short.example"  # min TTL 60 s
    assert pdns.name_for(CAM, "192.0.2.1", 1061.0) is None
    assert pdns.name_for(CAM, "192.0.2.2", 1000.0 + 3600.0) == "long.example"
    assert pdns.name_for(CAM, "192.0.2.2", 1000.0 + 3601.0) is None  # max TTL 1 h
    assert len(pdns) == 0  # expired entries were dropped on lookup


def test_most_recent_name_first_and_refresh_extends() -> None:
    pdns = PassiveDNS(Config(dns_min_ttl=10.0))
    pdns.add(CAM, "192.0.2.1", "cdn-a.example", 100, 0.0)
    pdns.add(CAM, "192.0.2.1", "cdn-b.example", 100, 5.0)
    assert pdns.names_for(CAM, "192.0.2.1", 6.0) == ["cdn-b.example", "cdn-a.example"]
    pdns.add(CAM, "192.0.2.1", "cdn-a.example", 100, 50.0)  # asked again: most recent, later expiry
    assert pdns.names_for(CAM, "192.0.2.1", 120.0) == ["cdn-a.example"]


def test_lru_bound() -> None:
    pdns = PassiveDNS(Config(), max_entries=3)
    for i in range(5):
        pdns.add(CAM, f"192.0.2.{i}", f"n{i}.example", 300, float(i))
    assert len(pdns) == 3 and pdns.evictions == 2
    assert pdns.name_for(CAM, "192.0.2.0", 10.0) is None
    assert pdns.name_for(CAM, "192.0.2.4", 10.0) == "n4.example"


def test_size_from_analyzer_options() -> None:
    assert PassiveDNS(Config(analyzer_options={"dns": {"cache_size": 7}})).max_entries == 7


def test_expire_housekeeping() -> None:
    pdns = PassiveDNS(Config(dns_min_ttl=1.0))
    pdns.add(CAM, "192.0.2.1", "a.example", 5, 0.0)
    pdns.add(CAM, "192.0.2.2", "b.example", 500, 0.0)
    assert pdns.expire(100.0) == 1
    assert len(pdns) == 1


def test_restore_from_store_is_short_lived() -> None:
    store = FakeStore()
    store.record_name(CAM, "192.0.2.1", "litedev.ezvizlife.com", 1000.0)
    pdns = PassiveDNS(Config(dns_min_ttl=60.0))
    assert pdns.load(store) == 1
    assert pdns.load(store) == 0  # idempotent
    assert pdns.name_for(CAM, "192.0.2.1", 1030.0) == "litedev.ezvizlife.com"
    assert pdns.name_for(CAM, "192.0.2.1", 5000.0) is None


@given(
    ttl=st.integers(min_value=0, max_value=10**7),
    now=st.integers(min_value=0, max_value=2 * 10**9),
    later=st.integers(min_value=0, max_value=10**6),
)
def test_validity_window_property(ttl: int, now: int, later: int) -> None:
    # Whole seconds: exact in floating point, so the boundary itself is tested exactly.
    pdns = PassiveDNS(Config(dns_min_ttl=30.0, dns_max_ttl=86_400.0))
    pdns.add(CAM, "192.0.2.1", "x.example", ttl, now)
    valid = later <= min(max(ttl, 30.0), 86_400.0)
    assert (pdns.name_for(CAM, "192.0.2.1", now + later) is not None) == valid
