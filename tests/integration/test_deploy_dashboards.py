"""The Grafana dashboards and the alert rules against a real Prometheus fed by real camwatch agents.

Four `camwatch replay --serve` processes (the bundled sample, and the exploit, update-channel and
cloud/fingerprint scenario captures of agent/scenarios/) stand in for four sensors at three sites;
a fifth target serves a real `camwatch firmware scan --metrics-textfile` result the way
node_exporter's textfile collector would. Prometheus runs the shipped file_sd configuration
(deploy/prometheus/prometheus-file-sd.yml, relabelling included) with the shipped rule file, on
loopback ports, in a temporary directory; every wait is bounded and every process is stopped.

Then every panel query of every dashboard (and every template-variable query) is sent to
/api/v1/query with Grafana's variables substituted, and must parse and return data, except the
panels listed in NO_DATA_IN_REPLAY (live-capture health and firing alerts, which a replay cannot
produce). Every alert and recording expression must evaluate through the API as well.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, require_tool

pytestmark = pytest.mark.slow

DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
RULES = REPO / "deploy" / "prometheus" / "camwatch.rules.yml"
FILE_SD_CONFIG = REPO / "deploy" / "prometheus" / "prometheus-file-sd.yml"
SAMPLE = REPO / "agent" / "sample" / "camera_vlan.pcap"
CAMWATCH = str(Path(sys.executable).with_name("camwatch"))
WAIT = 40.0  # seconds: upper bound of every wait below

# (dashboard uid, panel title) -> why a replay cannot give it data. Keep this list small: every other
# panel must show data for the bundled captures.
NO_DATA_IN_REPLAY: dict[tuple[str, str], str] = {
    ("camwatch-fleet", "Captured packets per interface"): "camwatch_capture_* exist only in `camwatch run`",
    ("camwatch-fleet", "Kernel drops per interface"): "live capture only",
    ("camwatch-fleet", "Kernel drop ratio"): "live capture only",
    ("camwatch-fleet", "Capture up"): "live capture only",
    ("camwatch-fleet", "Configuration reloads"): "SIGHUP reloads exist only under `camwatch run`",
    ("camwatch-exploits", "Firing Prometheus alerts"): "replayed counters do not increase while scraped",
}
MAX_NO_DATA = 6

# Substitutions for Grafana's built-in and template variables.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}


@dataclass(frozen=True)
class Sensor:
    name: str
    site: str
    vlan: str
    captures: tuple[str, ...]  # file name patterns in the scenario directory
    extra: tuple[str, ...] = ()


SENSORS = (
    Sensor("hq-span1", "hq", "cameras", ("sample.pcap",), ("--per-device-metrics",)),
    Sensor("hq-lab", "hq", "lab", ("exp_*.pcap",)),
    Sensor("br1-span1", "branch1", "cameras", ("upd_*.pcap",)),
    Sensor("br2-span1", "branch2", "cctv", ("cld_*.pcap", "fp_*.pcap")),
)


# ------------------------------------------------------------------ helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, timeout: float = 5.0) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:  # Prometheus answers bad queries with 400 + a JSON body
        return dict(json.loads(exc.read()))


def query(base: str, expr: str) -> dict[str, Any]:
    return get_json(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")


def wait_until(what: str, check: Callable[[], Any], procs: list[subprocess.Popen[bytes]]) -> Any:
    deadline = time.monotonic() + WAIT
    last: object = None
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"{proc.args!r} exited with {proc.returncode} while waiting for {what}")
        try:
            result = check()
            if result:
                return result
            last = result
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(0.3)
    pytest.fail(f"timed out after {WAIT:.0f}s waiting for {what} (last: {last!r})")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def substitute(expr: str) -> str:
    for name, value in GRAFANA_VARS.items():
        expr = expr.replace(name, value)
    # every template variable ($job, ${site}, [[vlan]]) becomes the "All" regex
    expr = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", ".*", expr)
    return expr


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # panels of collapsed rows


def panel_queries() -> list[tuple[str, str, str]]:
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in panels(board):
            for target in panel.get("targets", []):
                out.append((board["uid"], panel["title"], target["expr"]))
    return out


def variable_queries() -> list[tuple[str, str, str]]:
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
                out.append((board["uid"], var["name"], q))
    return out


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


# ------------------------------------------------------------------ the fleet


@dataclass
class Fleet:
    base: str
    procs: list[subprocess.Popen[bytes]]


def write_scenarios(out: Path) -> None:
    from agent.scenarios import clouds, exploits, fingerprints, updates

    for name in exploits.SCENARIOS:
        exploits.write_scenario(name, out / f"exp_{name}.pcap")
    for name, frames in updates.SCENARIOS.items():
        updates.write(out / f"upd_{name}.pcap", frames())
    for name, frames in clouds.SCENARIOS.items():
        updates.write(out / f"cld_{name}.pcap", frames())
    for name in fingerprints.SCENARIOS:
        fingerprints.write_scenario(name, out / f"fp_{name}.pcap")
    (out / "sample.pcap").symlink_to(SAMPLE)
    # two small firmware images with telnet enablers for the firmware scan textfile
    (out / "fw").mkdir()
    (out / "fw" / "bad.uimage").write_bytes(updates.firmware_uimage(bad=True))
    (out / "fw" / "bad.zip").write_bytes(updates.dahua_zip(bad=True))


def start_agent(sensor: Sensor, scen: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    captures = sorted(str(p) for pattern in sensor.captures for p in scen.glob(pattern))
    assert captures, sensor
    state = tmp / f"state-{sensor.name}"
    state.mkdir()
    for _attempt in range(3):
        port = free_port()
        log = (tmp / f"{sensor.name}.log").open("wb")
        proc = subprocess.Popen(
            [
                CAMWATCH,
                "replay",
                "-q",
                "--state-dir",
                str(state),
                *sensor.extra,
                "--serve",
                f"127.0.0.1:{port}",
                *captures,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and proc.poll() is None:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp,
            ):
                if resp.status == 200:
                    return proc, port
            time.sleep(0.2)
        stop(proc)
        if "listen address" not in (tmp / f"{sensor.name}.log").read_text():
            break
    tail = (tmp / f"{sensor.name}.log").read_text()[-2000:]
    pytest.fail(f"camwatch replay for {sensor.name} did not serve:\n{tail}")


def prometheus_config(tmp: Path, targets: Path, textfile_port: int) -> Path:
    """The shipped file_sd configuration with test timing, local paths and the textfile target."""
    cfg = yaml.safe_load(FILE_SD_CONFIG.read_text())
    cfg["global"].update({"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"})
    cfg["rule_files"] = [str(RULES)]
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "camwatch"]
    job["file_sd_configs"] = [{"files": [str(targets)], "refresh_interval": "1s"}]
    cfg["scrape_configs"].append(
        {
            "job_name": "node",
            "metrics_path": "/camwatch_firmware.prom",
            "static_configs": [
                {"targets": [f"127.0.0.1:{textfile_port}"], "labels": {"site": "hq", "vlan": "lab"}}
            ],
        }
    )
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    prometheus_bin = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("fleet")
    scen = tmp / "captures"
    scen.mkdir()
    write_scenarios(scen)
    textfiles = tmp / "textfile"
    textfiles.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        scan = subprocess.run(
            [
                CAMWATCH,
                "firmware",
                "scan",
                "--quiet",
                "--no-binwalk",
                "--metrics-textfile",
                str(textfiles / "camwatch_firmware.prom"),
                str(scen / "fw"),
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert scan.returncode == 0, scan.stderr.decode()[-2000:]
        sd: list[dict[str, Any]] = []
        for sensor in SENSORS:
            proc, port = start_agent(sensor, scen, tmp)
            procs.append(proc)
            sd.append(
                {
                    "targets": [f"127.0.0.1:{port}"],
                    "labels": {"site": sensor.site, "vlan": sensor.vlan, "sensor": sensor.name},
                }
            )
        targets = tmp / "camwatch-test.json"
        targets.write_text(json.dumps(sd))
        textfile_port = free_port()
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "http.server",
                    "--bind",
                    "127.0.0.1",
                    "--directory",
                    str(textfiles),
                    str(textfile_port),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        config = prometheus_config(tmp, targets, textfile_port)
        prom_port = free_port()
        prom_log = (tmp / "prometheus.log").open("wb")
        prom = subprocess.Popen(
            [
                prometheus_bin,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=prom_log,
            stderr=subprocess.STDOUT,
        )
        prom_log.close()
        procs.append(prom)
        base = f"http://127.0.0.1:{prom_port}"
        wait_until(
            "prometheus ready",
            lambda: urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200,
            procs,
        )
        expected = len(SENSORS) + 1

        def all_up_with_history() -> bool:
            # every target up, and at least 5 samples each so rate()/increase() over 1m have data
            res = query(base, "count_over_time(up[1m]) >= 5 and up == 1")["data"]["result"]
            return len(res) == expected

        wait_until(f"{expected} targets up with 5 samples", all_up_with_history, procs)
        yield Fleet(base, procs)
    finally:
        for proc in reversed(procs):
            stop(proc)


# ------------------------------------------------------------------ tests against the fleet


def test_targets_carry_file_sd_labels(fleet: Fleet) -> None:
    res = query(fleet.base, "camwatch_build_info")["data"]["result"]
    got = {(r["metric"]["instance"], r["metric"]["site"], r["metric"]["vlan"]) for r in res}
    assert got == {(s.name, s.site, s.vlan) for s in SENSORS}, "relabelling sensor -> instance"
    assert all("sensor" not in r["metric"] for r in res)


def test_every_panel_query_parses_and_shows_data(fleet: Fleet) -> None:
    checked = 0
    empty: set[tuple[str, str]] = set()
    errors = []
    queries = panel_queries()
    for uid, title, expr in queries:
        result = query(fleet.base, substitute(expr))
        if result.get("status") != "success":
            errors.append(f"{uid} / {title}: {result.get('error')} in {substitute(expr)}")
            continue
        checked += 1
        if not result["data"]["result"]:
            empty.add((uid, title))
    assert not errors, "\n".join(errors)
    assert checked == len(queries) >= 70, checked
    unexpected_empty = empty - set(NO_DATA_IN_REPLAY)
    assert not unexpected_empty, f"panels without data: {sorted(unexpected_empty)}"
    # the allow-list stays small and honest: every entry exists and really has no data here
    assert len(NO_DATA_IN_REPLAY) <= MAX_NO_DATA
    titles = {(uid, title) for uid, title, _ in queries}
    assert set(NO_DATA_IN_REPLAY) <= titles, set(NO_DATA_IN_REPLAY) - titles
    assert set(NO_DATA_IN_REPLAY) <= empty, (
        f"now has data, drop it from the list: {set(NO_DATA_IN_REPLAY) - empty}"
    )


def test_template_variable_queries_return_values(fleet: Fleet) -> None:
    for uid, name, q in variable_queries():
        m = re.fullmatch(r"label_values\((?:(.+),\s*)?(\w+)\)", q.strip())
        assert m, f"{uid} ${name}: unsupported variable query {q!r}"
        selector, label = m.group(1), m.group(2)
        params = {"match[]": substitute(selector)} if selector else {}
        res = get_json(f"{fleet.base}/api/v1/label/{label}/values?{urllib.parse.urlencode(params)}")
        assert res["status"] == "success", (uid, name, res)
        assert res["data"], f"{uid} ${name} ({q}) has no values"


def test_every_rule_expression_evaluates(fleet: Fleet) -> None:
    rules = alert_rules()
    for rule in rules:
        res = query(fleet.base, rule["expr"])
        assert res.get("status") == "success", (rule.get("alert") or rule.get("record"), res.get("error"))
    loaded = get_json(f"{fleet.base}/api/v1/rules")["data"]["groups"]
    names = {r["name"] for g in loaded for r in g["rules"]}
    assert names == {r.get("alert") or r.get("record") for r in rules}
    assert not [r for g in loaded for r in g["rules"] if r.get("health") == "err"]


def test_replayed_counters_do_not_fire_event_alerts(fleet: Fleet) -> None:
    """A replay's counters are final at the first scrape: increase() sees no step, so no alert fires
    (and the replay agents have no capture_up, so CamwatchAgentSilent stays quiet too)."""
    res = query(fleet.base, 'ALERTS{alertname=~"Camwatch.*"}')["data"]["result"]
    assert res == []


# ------------------------------------------------------------------ static checks (no fleet)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_conventions(path: Path) -> None:
    board = json.loads(path.read_text())
    names = {v["name"]: v for v in board["templating"]["list"]}
    assert names["datasource"]["type"] == "datasource" and names["datasource"]["query"] == "prometheus"
    for var in ("job", "instance", "site", "vlan"):
        assert var in names and names[var]["includeAll"] and names[var]["allValue"] == ".*", var
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert target["datasource"]["uid"] == "${datasource}"
            for call in re.finditer(r"\b(?:rate|irate)\([^\[]*\[([^\]]+)\]", expr):
                assert call.group(1) == "$__rate_interval", f"{panel['title']}: {expr}"
            if "{" in expr:
                for var in ("job", "instance", "site", "vlan"):
                    assert f'{var}=~"${var}"' in expr, f"{panel['title']}: no {var} filter in {expr}"


def test_dashboards_cover_the_required_topics() -> None:
    uids = {json.loads(p.read_text())["uid"] for p in DASHBOARDS}
    assert uids == {
        "camwatch-fleet",
        "camwatch-devices",
        "camwatch-destinations",
        "camwatch-firmware",
        "camwatch-exploits",
    }
    exprs = " ".join(expr for _uid, _title, expr in panel_queries())
    for metric in (
        "camwatch_processed_packets_total",
        "camwatch_capture_kernel_drops_total",
        "camwatch_processing_lag_seconds",
        "camwatch_devices",
        "camwatch_devices_by_brand",
        "camwatch_relabelled_devices",
        "camwatch_destination_verdicts_total",
        "camwatch_cloud_sessions_total",
        "camwatch_update_events_total",
        "camwatch_firmware_carved_total",
        "camwatch_firmware_findings",
        "camwatch_alerts_total",
    ):
        assert metric in exprs, metric


def test_grafana_provisioning_points_at_the_dashboards() -> None:
    prov = REPO / "deploy" / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "camwatch.yml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus"
    dash = yaml.safe_load((prov / "dashboards" / "camwatch.yml").read_text())
    path = dash["providers"][0]["options"]["path"]
    compose = yaml.safe_load((REPO / "deploy" / "docker" / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(m.endswith(":" + path + ":ro") and "grafana/dashboards" in m for m in mounts), mounts
