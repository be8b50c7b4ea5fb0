"""CamwatchCollector on isolated registries, bounded labels, the HTTP server and the textfile writer."""

from __future__ import annotations

import gzip
import ipaddress
import platform
import re
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent import __version__
from agent.errors import CamwatchError
from agent.events import EVENT_TYPES
from agent.metrics import (
    KNOWN_VENDORS,
    CamwatchCollector,
    MetricsServer,
    MetricsSnapshot,
    bounded_label,
    bounded_vendor,
    build_registry,
    devices_by_vendor_class,
    split_listen,
    write_textfile,
)
from agent.stats import DECODE_ERROR_REASONS, EVICTION_REASONS, Counters

HIK = "bc:ad:28:00:00:01"
DAHUA = "38:af:29:bb:bc:ab"


def busy_counters() -> Counters:
    c = Counters()
    c.packets, c.bytes = 123_456, 98_765_432
    c.decode_errors["truncated_frame"] += 3
    c.decode_errors["weird new reason"] += 1  # not a plain label value -> "other"
    c.flows_total, c.flows_active = 900, 42
    c.flows_evicted["idle"] += 850
    c.last_packet_ts, c.last_processed_wall = 1_740_910_504.5, 1_740_910_504.75
    c.events["destination"] += 12
    c.events["alert"] += 2
    c.destination_verdicts[("unexpected", "direct_ip", "hikvision")] += 2
    c.destination_verdicts[("vendor-cloud", "catalogue", "Dahua")] += 5
    c.destination_verdicts[("allowed", "policy", "Acme Cams Ltd")] += 1  # unknown vendor -> other
    c.alerts[("CW-DEST-001", "high")] += 2
    c.alerts[("203.0.113.7", "low")] += 1  # an IP smuggled in as a rule id must not become a label
    c.capture_files, c.capture_errors = 2, 1
    return c


def snapshot(per_device: dict | None = None, **kw) -> MetricsSnapshot:
    return MetricsSnapshot(
        counters=busy_counters().snapshot(),
        devices_by_vendor_class={("hikvision", "camera"): 3, ("dahua", "nvr"): 1, ("unknown", "unknown"): 2},
        per_device=per_device,
        **kw,
    )


def registry_for(snap: MetricsSnapshot, cap: int = 64) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(CamwatchCollector(lambda: snap, per_device_cap=cap))
    return reg


def test_counters_and_gauges_published() -> None:
    reg = registry_for(snapshot())
    get = reg.get_sample_value
    assert get("camwatch_build_info", {"version": __version__, "python": platform.python_version()}) == 1
    assert get("camwatch_processed_packets_total") == 123_456
    assert get("camwatch_processed_bytes_total") == 98_765_432
    assert get("camwatch_decode_errors_total", {"reason": "truncated_frame"}) == 3
    assert get("camwatch_decode_errors_total", {"reason": "other"}) == 1
    assert get("camwatch_flows_total") == 900
    assert get("camwatch_flows_active") == 42
    assert get("camwatch_flows_evicted_total", {"reason": "idle"}) == 850
    assert get("camwatch_last_packet_timestamp_seconds") == 1_740_910_504.5
    assert get("camwatch_processing_lag_seconds") == pytest.approx(0.25)
    assert get("camwatch_events_total", {"event_type": "destination"}) == 12
    assert get("camwatch_capture_files_read_total") == 2
    assert get("camwatch_capture_errors_total") == 1
    assert (
        get(
            "camwatch_destination_verdicts_total",
            {"verdict": "unexpected", "reason": "direct_ip", "vendor": "hikvision"},
        )
        == 2
    )
    assert (
        get(
            "camwatch_destination_verdicts_total",
            {"verdict": "vendor-cloud", "reason": "catalogue", "vendor": "dahua"},
        )
        == 5
    )
    assert (
        get(
            "camwatch_destination_verdicts_total",
            {"verdict": "allowed", "reason": "policy", "vendor": "other"},
        )
        == 1
    )
    assert get("camwatch_alerts_total", {"rule_id": "CW-DEST-001", "severity": "high"}) == 2
    assert get("camwatch_alerts_total", {"rule_id": "other", "severity": "low"}) == 1
    assert get("camwatch_devices", {"vendor": "hikvision", "class": "camera"}) == 3
    assert get("camwatch_devices", {"vendor": "unknown", "class": "unknown"}) == 2
    assert get("camwatch_scrape_duration_seconds") is not None


def test_fixed_label_sets_are_pre_initialised_to_zero() -> None:
    reg = registry_for(MetricsSnapshot(counters=Counters().snapshot()))
    get = reg.get_sample_value
    for reason in DECODE_ERROR_REASONS:
        assert get("camwatch_decode_errors_total", {"reason": reason}) == 0
    for reason in EVICTION_REASONS:
        assert get("camwatch_flows_evicted_total", {"reason": reason}) == 0
    for event_type in EVENT_TYPES:
        assert get("camwatch_events_total", {"event_type": event_type}) == 0
    for verdict, reason in (
        ("unexpected", "not_in_policy"),
        ("vendor-cloud", "catalogue"),
        ("allowed", "policy"),
    ):
        assert (
            get(
                "camwatch_destination_verdicts_total",
                {"verdict": verdict, "reason": reason, "vendor": "unknown"},
            )
            == 0
        )
    assert get("camwatch_processing_lag_seconds") == 0  # no packet yet: no bogus lag
    # Vendors present in the inventory get their verdict series at 0 too.
    reg = registry_for(snapshot())
    assert (
        reg.get_sample_value(
            "camwatch_destination_verdicts_total",
            {"verdict": "unexpected", "reason": "country", "vendor": "dahua"},
        )
        == 0
    )


def test_known_rules_pre_initialise_alerts() -> None:
    reg = registry_for(snapshot(known_rules=(("CW-FW-002", "critical"),)))
    assert (
        reg.get_sample_value("camwatch_alerts_total", {"rule_id": "CW-FW-002", "severity": "critical"}) == 0
    )


IPV4ISH = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
HASHISH = re.compile(r"[0-9a-fA-F]{16,}")


def all_samples(reg: CollectorRegistry):
    for family in text_string_to_metric_families(generate_latest(reg).decode()):
        yield from family.samples


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def test_no_label_value_looks_like_an_ip_or_hash() -> None:
    per_device = {HIK: {"packets": 5}, "203.0.113.9": {"packets": 1}, "10.0.0.1": {"bytes": 2}}
    reg = registry_for(snapshot(per_device=per_device))
    seen = 0
    for sample in all_samples(reg):
        for name, value in sample.labels.items():
            seen += 1
            assert not _is_ip(value) and not IPV4ISH.match(value), (sample.name, name, value)
            assert not HASHISH.search(value), (sample.name, name, value)
            if name == "device":  # the only place a MAC may appear
                assert re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", value)
            else:
                assert not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", value), (sample.name, value)
    assert seen > 50


def test_vendor_and_label_bounding() -> None:
    assert bounded_vendor("HIKVISION ") == "hikvision"
    assert bounded_vendor(None) == bounded_vendor("") == bounded_vendor("Unknown") == "unknown"
    assert bounded_vendor("<script>") == "other"
    assert all(bounded_vendor(v) == v for v in KNOWN_VENDORS)
    assert bounded_label("CW-DEST-001") == "CW-DEST-001"
    assert bounded_label("2001:db8::1") == "other"
    assert bounded_label("e3b0c44298fc1c149afbf4c8996fb924") == "other"
    assert bounded_label("x" * 65) == "other"
    assert devices_by_vendor_class(
        [{"vendor": "Hikvision", "class": "camera"}, {"vendor": "Foo", "device_class": "nvr"}, {}]
    ) == {("hikvision", "camera"): 1, ("other", "nvr"): 1, ("unknown", "unknown"): 1}


def test_per_device_metrics_capped_with_dropped_gauge() -> None:
    macs = [f"bc:ad:28:00:00:{i:02x}" for i in range(10)]
    per_device = {
        mac: {
            "packets": i,
            "bytes": 10 * i,
            "destinations": 1,
            "unexpected_destinations": 0,
            "alerts": 0,
            "last_seen": 1.5,
        }
        for i, mac in enumerate(macs)
    }
    reg = registry_for(snapshot(per_device=per_device), cap=4)
    get = reg.get_sample_value
    assert get("camwatch_device_packets_total", {"device": macs[3]}) == 3
    assert get("camwatch_device_bytes_total", {"device": macs[3]}) == 30
    assert get("camwatch_device_last_seen_timestamp_seconds", {"device": macs[0]}) == 1.5
    assert get("camwatch_device_packets_total", {"device": macs[4]}) is None  # beyond the cap
    assert get("camwatch_per_device_dropped_devices") == 6
    devices = {s.labels["device"] for s in all_samples(reg) if "device" in s.labels}
    assert devices == set(macs[:4])


def test_per_device_off_means_no_device_label_at_all() -> None:
    reg = registry_for(snapshot(per_device=None))
    assert all("device" not in s.labels for s in all_samples(reg))
    assert reg.get_sample_value("camwatch_per_device_dropped_devices") is None


def test_collector_builds_fresh_families_each_scrape() -> None:
    counters = Counters()
    reg = CollectorRegistry()
    reg.register(CamwatchCollector(lambda: MetricsSnapshot(counters=counters.snapshot())))
    assert reg.get_sample_value("camwatch_processed_packets_total") == 0
    counters.packets += 7
    counters.alerts[("R1", "low")] += 1
    assert reg.get_sample_value("camwatch_processed_packets_total") == 7
    assert reg.get_sample_value("camwatch_alerts_total", {"rule_id": "R1", "severity": "low"}) == 1


def test_global_registry_untouched() -> None:
    before = set(REGISTRY._names_to_collectors)
    build_registry(lambda: snapshot())
    assert set(REGISTRY._names_to_collectors) == before


def test_concurrent_scrapes_do_not_interfere() -> None:
    reg = build_registry(lambda: snapshot(per_device={HIK: {"packets": 1}}), process_metrics=False)
    outputs: list[bytes] = []
    errors: list[BaseException] = []

    def scrape() -> None:
        try:
            for _ in range(20):
                outputs.append(generate_latest(reg))
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=scrape) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    strip = re.compile(rb"camwatch_scrape_duration_seconds \S+")
    assert len({strip.sub(b"", o) for o in outputs}) == 1


# ------------------------------------------------------------------ HTTP server


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_server_endpoints() -> None:
    ready = threading.Event()
    server = MetricsServer("127.0.0.1:0", build_registry(lambda: snapshot()), ready=ready.is_set)
    server.start()
    try:
        assert server.port > 0
        status, headers, body = fetch(f"{server.url}/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert b"camwatch_build_info{" in body and b"process_cpu_seconds_total" in body
        status, headers, body = fetch(
            f"{server.url}/metrics",
            {"Accept": "application/openmetrics-text;version=1.0.0", "Accept-Encoding": "gzip"},
        )
        assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
        assert headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(body).rstrip().endswith(b"# EOF")
        status, headers, body = fetch(f"{server.url}/")
        assert status == 200 and b'href="/metrics"' in body
        assert fetch(f"{server.url}/healthz")[0] == 503
        ready.set()
        assert fetch(f"{server.url}/healthz")[:3:2] == (200, b"ok\n")
        assert fetch(f"{server.url}/nope")[0] == 404
    finally:
        server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_failed_collection_is_http_500() -> None:
    def broken() -> MetricsSnapshot:
        raise RuntimeError("pipeline gone")

    with MetricsServer("127.0.0.1:0", build_registry(broken, process_metrics=False)) as server:
        status, _, body = fetch(f"{server.url}/metrics")
    assert status == 500 and b"pipeline gone" in body


def test_busy_port_is_one_line_error() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        server = MetricsServer(f"127.0.0.1:{port}", CollectorRegistry())
        with pytest.raises(CamwatchError) as info:
            server.start()
    assert f"127.0.0.1:{port}" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        (":80", ("127.0.0.1", 80)),
        ("8080", ("127.0.0.1", 8080)),
        ("[::1]:9000", ("::1", 9000)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_split_listen(text: str, expected: tuple[str, int]) -> None:
    assert split_listen(text) == expected


def test_split_listen_rejects_garbage() -> None:
    with pytest.raises(CamwatchError):
        split_listen("localhost:http")


def test_ipv6_loopback_server() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support")
    try:
        server = MetricsServer("[::1]:0", build_registry(lambda: snapshot(), process_metrics=False))
        server.start()
    except CamwatchError as exc:
        pytest.skip(f"IPv6 loopback unavailable: {exc}")
    try:
        assert fetch(f"{server.url}/metrics")[0] == 200
    finally:
        server.stop()


# ------------------------------------------------------------------ textfile


def test_textfile_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "textfile" / "camwatch.prom"
    reg = build_registry(lambda: snapshot(), process_metrics=False)
    write_textfile(target, reg)
    text = target.read_text()
    assert "camwatch_processed_packets_total 123456.0" in text
    assert list(target.parent.iterdir()) == [target]  # no temporary files left behind
    with pytest.raises(CamwatchError, match=r"must end in \.prom"):
        write_textfile(tmp_path / "camwatch.txt", reg)


def test_every_oui_vendor_id_is_a_known_label_value() -> None:
    """rules/oui.yaml ids are "used in events, metrics labels": none may collapse into "other"."""
    import yaml

    oui = Path(__file__).resolve().parents[2] / "rules" / "oui.yaml"
    if not oui.is_file():
        pytest.skip("rules/oui.yaml not present")
    ids = {entry["vendor"] for entry in yaml.safe_load(oui.read_text())["entries"]}
    assert ids and ids <= KNOWN_VENDORS, sorted(ids - KNOWN_VENDORS)
