"""Devices by maker and brand: bounded labels, relabel count."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from agent.metrics import CamwatchCollector, MetricsSnapshot
from agent.stats import Counters


def test_devices_by_brand_and_relabel_count() -> None:
    snap = MetricsSnapshot(
        counters=Counters(),
        devices_by_maker_brand={("dahua", "intelbras"): 2, ("hikvision", "hikvision"): 3},
        relabelled_devices=2,
    )
    reg = CollectorRegistry(auto_describe=False)
    reg.register(CamwatchCollector(lambda: snap))
    assert reg.get_sample_value("camwatch_devices_by_brand", {"maker": "dahua", "brand": "intelbras"}) == 2
    assert (
        reg.get_sample_value("camwatch_devices_by_brand", {"maker": "hikvision", "brand": "hikvision"}) == 3
    )
    assert reg.get_sample_value("camwatch_relabelled_devices") == 2


def test_relabelled_camera_is_counted_end_to_end(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from agent.config import Config
    from agent.engine import Engine
    from agent.scenarios import fingerprints

    path = fingerprints.write_scenario("dhip_relabel", tmp_path / "relabel.pcap")
    cfg = Config()
    cfg.state_dir = tmp_path / "state"
    engine = Engine(cfg)
    engine.replay([str(path)])
    engine.finish()
    snap = engine.metrics_snapshot()
    engine.close()
    assert snap.relabelled_devices == 1
