"""Device inventory: identity facts, classes, device events (once, on change), persistence."""

from __future__ import annotations

import pytest

from agent.catalogue import EndpointCatalogue
from agent.config import Config
from agent.inventory import Device, Inventory, device_key
from tests.unit.test_destinations_harness import FakeContext, FakeStore

HIK = "bc:ad:28:00:00:01"
DAHUA = "38:af:29:bb:bc:ab"
BILIAN = "0c:8c:24:0b:39:7b"
PC = "84:fd:d1:a5:b7:43"


@pytest.fixture(scope="module")
def catalogue() -> EndpointCatalogue:
    return EndpointCatalogue(Config())


@pytest.fixture
def inv(catalogue: EndpointCatalogue) -> Inventory:
    return Inventory(Config(), catalogue)


def test_device_key() -> None:
    assert device_key("BC:AD:28:00:00:01", "10.0.0.2") == HIK
    assert device_key(None, "10.0.0.2") == "10.0.0.2"  # no link layer
    assert device_key("ff:ff:ff:ff:ff:ff", "192.168.1.255") == ""  # broadcast frame: not a device
    assert device_key("01:00:5e:7f:ff:fa", "239.255.255.250") == ""


def test_observe_creates_device_with_oui_vendor(inv: Inventory) -> None:
    dev = inv.observe(HIK, "10.20.0.31", 100.0, (20,))
    assert dev is not None
    assert (dev.vendor, dev.family, dev.vendor_weak, dev.vendor_source) == (
        "hikvision",
        "hikvision",
        False,
        "oui",
    )
    assert dev.device_class == "camera"  # strong camera-maker OUI
    assert dev.vlan == (20,) and dev.ip == "10.20.0.31"
    weak = inv.observe(BILIAN, "10.20.0.32", 100.0)
    assert (
        weak is not None and weak.vendor == "bilian" and weak.vendor_weak and weak.device_class == "unknown"
    )
    assert inv.observe("ff:ff:ff:ff:ff:ff", "10.20.0.255", 1.0) is None
    assert inv.observe(None, "0.0.0.0", 1.0) is None
    assert inv.observe(None, "10.20.0.40", 1.0).key == "10.20.0.40"  # type: ignore[union-attr]
    assert inv.by_ip("10.20.0.31") is dev and inv.lookup(HIK, None) is dev


def test_ips_are_bounded_and_ordered(inv: Inventory) -> None:
    for i in range(40):
        inv.observe(PC, f"10.0.0.{i}", float(i))
    dev = inv.get(PC)
    assert dev is not None and len(dev.ips) == 16 and dev.ip == "10.0.0.39"
    inv.observe(PC, "fd00::5", 50.0)
    assert dev.ip == "10.0.0.39"  # IPv4 preferred as "the" address


def test_dns_names_bounded(inv: Inventory) -> None:
    inv.observe(HIK, "10.0.0.2", 0.0)
    for i in range(300):
        inv.add_dns_name(HIK, f"n{i}.example")
    dev = inv.get(HIK)
    assert dev is not None and len(dev.dns_names) == 256 and "n299.example" in dev.dns_names


def test_classes_from_traffic(inv: Inventory) -> None:
    cam = inv.observe(BILIAN, "10.0.0.2", 0.0)
    nvr = inv.observe(PC, "10.0.0.9", 0.0)
    other = inv.observe("00:11:22:33:44:55", "10.0.0.3", 0.0)
    assert cam is not None and nvr is not None and other is not None
    inv.note_server_port(cam.key, "tcp", 554)
    assert cam.device_class == "camera"  # serves RTSP
    inv.note_rtsp_client(nvr.key, cam.key)
    assert nvr.device_class == "unknown"  # one RTSP peer: could be a viewer
    inv.note_rtsp_client(nvr.key, other.key)
    assert nvr.device_class == "nvr"  # records two cameras
    inv.set_dhcp(other.key, hostname="DS-7608NI-NVR")
    assert other.device_class == "nvr"
    assert Inventory.classify(Device("x", None, 0.0, 0.0, hostname="IPCAM-1")) == "camera"


def test_device_events_once_and_on_identity_change(catalogue: EndpointCatalogue) -> None:
    ctx = FakeContext(catalogue=catalogue)
    inv = ctx.inventory
    for t in range(5):  # many packets: one event
        inv.observe(HIK, "10.0.0.2", float(t))
        inv.publish(ctx, ts=float(t))
    (first,) = ctx.of("device")
    assert first["change"] == "new" and first["mac"] == HIK and first["vendor"] == "hikvision"
    assert first["confidence"] == 0.5 and first["sources"] == ["oui"]
    assert "hostname" not in first  # unknown facts are left out
    inv.add_dns_name(HIK, "litedev.ezvizlife.com")  # not an identity fact
    inv.set_dhcp(HIK, requested_ip="10.0.0.2")  # neither
    inv.publish(ctx, ts=6.0)
    assert len(ctx.of("device")) == 1
    inv.set_dhcp(HIK, hostname="cam-door", vendor_class="udhcp 1.20.2")
    inv.publish(ctx, ts=7.0)
    second = ctx.of("device")[-1]
    assert second["change"] == "updated" and second["changed"] == ["hostname", "vendor_class"]
    assert second["sources"] == ["oui", "dhcp"] and second["confidence"] == 0.6
    inv.set_dhcp(HIK, hostname="cam-door")  # same value again
    inv.publish(ctx, ts=8.0)
    assert len(ctx.of("device")) == 2


def test_ip_only_devices_have_no_device_events(catalogue: EndpointCatalogue) -> None:
    ctx = FakeContext(catalogue=catalogue)
    ctx.inventory.observe(None, "10.0.0.7", 1.0)
    assert ctx.inventory.publish(ctx, ts=1.0) == 0  # events identify devices by MAC
    assert len(ctx.inventory) == 1


def test_protocol_evidence_beats_oui(inv: Inventory) -> None:
    dev = inv.observe(BILIAN, "10.0.0.2", 0.0)
    assert dev is not None
    inv.update_identity(dev.key, source="mdns", vendor="hikvision", model="DS-2CD2722FWD-IZS")
    assert (dev.vendor, dev.family, dev.vendor_weak, dev.vendor_source) == (
        "hikvision",
        "hikvision",
        False,
        "mdns",
    )
    assert dev.model == "DS-2CD2722FWD-IZS" and dev.device_class == "camera"
    assert dev.confidence() == 0.9
    inv.update_identity(dev.key, source="oui", vendor="bilian")  # weaker evidence never overrides
    assert dev.vendor == "hikvision"


def test_flush_and_load_round_trip(catalogue: EndpointCatalogue) -> None:
    store = FakeStore()
    inv = Inventory(Config(), catalogue)
    inv.observe(HIK, "10.0.0.2", 10.0, (20,))
    inv.set_dhcp(HIK, hostname="cam1", dhcp_fingerprint="1,3,6", mud_url="https://mud.example/cam")
    inv.add_dns_name(HIK, "litedev.ezvizlife.com")
    inv.get(HIK).counters["destinations"] = 3  # type: ignore[union-attr]
    assert inv.dirty() == {HIK}
    assert inv.flush(store) == 1 and inv.dirty() == set()
    assert inv.flush(store) == 0  # nothing changed
    rec = store.devices[HIK]
    assert rec["ip"] == "10.0.0.2" and rec["class"] == "camera" and rec["version"] == 1

    ctx = FakeContext(catalogue=catalogue)
    restored = ctx.inventory
    assert restored.load(store) == 1
    assert restored.load(store) == 0  # idempotent
    dev = restored.get(HIK)
    assert dev is not None
    assert (dev.hostname, dev.mud_url, dev.vlan, dev.first_seen) == (
        "cam1",
        "https://mud.example/cam",
        (20,),
        10.0,
    )
    assert "litedev.ezvizlife.com" in dev.dns_names and dev.counters["destinations"] == 3
    assert restored.by_ip("10.0.0.2") is dev
    # A restored device is not announced as new again.
    restored.observe(HIK, "10.0.0.2", 20.0)
    restored.publish(ctx, ts=20.0)
    assert ctx.of("device") == []


def test_last_seen_only_rewritten_after_a_step(inv: Inventory) -> None:
    store = FakeStore()
    inv.observe(HIK, "10.0.0.2", 0.0)
    inv.flush(store)
    inv.observe(HIK, "10.0.0.2", 30.0)
    assert inv.dirty() == set()  # 30 s later: not worth a write
    inv.observe(HIK, "10.0.0.2", 61.0)
    assert inv.dirty() == {HIK}


def test_max_devices(catalogue: EndpointCatalogue) -> None:
    inv = Inventory(Config(analyzer_options={"inventory": {"max_devices": 2}}), catalogue)
    for i in range(4):
        inv.observe(f"00:11:22:33:44:{i:02x}", f"10.0.0.{i}", 0.0)
    assert len(inv) == 2 and inv.overflow == 2


def test_summaries(inv: Inventory) -> None:
    inv.observe(HIK, "10.0.0.2", 5.0)
    inv.observe(DAHUA, "10.0.0.3", 1.0)
    inv.observe(None, "10.0.0.4", 0.0)
    inv.get(HIK).counters["alerts"] = 2  # type: ignore[union-attr]
    assert inv.count_by_vendor_class() == {
        ("hikvision", "camera"): 1,
        ("dahua", "camera"): 1,
        ("unknown", "unknown"): 1,
    }
    summary = inv.per_device_summary(10)
    assert list(summary) == [DAHUA, HIK]  # first seen first, MAC-keyed devices only
    assert summary[HIK]["alerts"] == 2 and summary[HIK]["last_seen"] == 5.0
    assert list(inv.per_device_summary(1)) == [DAHUA]
    table = inv.summary_table()
    assert HIK in table and "hikvision" in table and "10.0.0.4" in table
