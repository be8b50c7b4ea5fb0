"""Configuration loading: defaults, values, and one-line errors that name the file and the key."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from agent.config import DEFAULT_METRICS_PORT, load_config
from agent.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "camwatch.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_gives_defaults() -> None:
    cfg = load_config(None)
    assert ipaddress.ip_network("192.168.0.0/16") in cfg.local_cidrs
    assert ipaddress.ip_network("fc00::/7") in cfg.local_cidrs
    assert cfg.metrics_listen.endswith(f":{DEFAULT_METRICS_PORT}")
    assert cfg.policy_paths[0].is_file()


def test_values_are_read_and_relative_paths_resolve_next_to_the_file(tmp_path: Path) -> None:
    policy = tmp_path / "site-policy.yaml"
    policy.write_text("groups: []\n")
    cfg = load_config(
        write(
            tmp_path,
            """
networks: {cidrs: [10.20.0.0/16, "fd00:20::/48"], vlans: [10, 20]}
policy: site-policy.yaml
state_dir: state
flows: {idle_timeout: 90s, active_timeout: 2h, max_flows: 5000}
dns: {min_ttl: 30, max_ttl: 1d}
learning: {enabled: true, period: 7d}
metrics: {listen: ":9999", per_device: true, per_device_cap: 10}
capture: {interfaces: [eth1, eth2], filter: "not port 554", workers: 2}
""",
        )
    )
    assert cfg.local_cidrs == [ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("fd00:20::/48")]
    assert cfg.local_vlans == {10, 20}
    assert cfg.policy_paths == [policy]
    assert cfg.state_dir == tmp_path / "state"
    assert (cfg.flow_idle_timeout, cfg.flow_active_timeout, cfg.max_flows) == (90.0, 7200.0, 5000)
    assert (cfg.dns_min_ttl, cfg.dns_max_ttl) == (30.0, 86400.0)
    assert cfg.learning_enabled and cfg.learning_period == 7 * 86400
    assert cfg.metrics_listen == "127.0.0.1:9999" and cfg.per_device_metrics and cfg.per_device_cap == 10
    assert cfg.interfaces == ["eth1", "eth2"] and cfg.bpf_filter == "not port 554" and cfg.workers == 2


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("netwroks: {}\n", "netwroks", "unknown key"),
        ("networks: {cidr: [10.0.0.0/8]}\n", "networks.cidr", "unknown key"),
        ("networks: {cidrs: [10.0.0.300/8]}\n", "networks.cidrs[0]", "not a CIDR"),
        ("networks: {vlans: [5000]}\n", "networks.vlans", "VLAN ids"),
        ("flows: {idle_timeout: soon}\n", "flows.idle_timeout", "duration"),
        ("flows: {max_flows: -1}\n", "flows.max_flows", "positive integer"),
        ("learning: {enabled: 'yes'}\n", "learning.enabled", "true or false"),
        ("metrics: {listen: 'localhost:http'}\n", "metrics.listen", "ADDR:PORT"),
        ("policy: missing.yaml\n", "policy[0]", "file not found"),
        ("- just\n- a list\n", "-", "mapping"),
        ("flows: [unclosed\n", "line", "not valid YAML"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}")
    assert fragment in message
    assert "\n" not in message
    assert info.value.exit_code == 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
