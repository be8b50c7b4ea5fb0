"""`camwatch run` on real interfaces: a network namespace created by the test, a veth pair inside it,
the daemon capturing one end and tcpreplay sending the bundled sample into the other end.

Nothing is ever sent outside the namespace this test created (unique names; always deleted). Every
wait is bounded; every process started here is stopped in `finally`. Needs root (namespaces, veth,
and the least-privilege cases switch to `nobody`); skipped otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, require_tool

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces and veth pairs"),
]

SAMPLE = REPO / "agent" / "sample" / "camera_vlan.pcap"
SAMPLE_PACKETS = 2500
CAMWATCH = str(Path(sys.executable).with_name("camwatch"))
PPS = 2000
WAIT = 20.0  # seconds: upper bound of every wait below


# --------------------------------------------------------------------------- helpers


@dataclass
class Netns:
    name: str
    tx: str  # tcpreplay sends here
    rx: str  # the daemon captures here

    def exec(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]


def _run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def netns() -> Iterator[Netns]:
    require_tool("ip")
    tag = uuid.uuid4().hex[:6]
    ns = Netns(f"cwtest-{os.getpid()}-{tag}", f"cwt{tag}a", f"cwt{tag}b")
    res = _run(["ip", "netns", "add", ns.name])
    if res.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {res.stderr.strip()}")
    try:
        # No IPv6 autoconfiguration chatter (router solicitations, MLD) on the test link: the daemon
        # must see exactly the replayed packets.
        for cmd in (
            ns.exec(
                "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"
            ),
            ["ip", "-n", ns.name, "link", "add", ns.tx, "type", "veth", "peer", "name", ns.rx],
            ["ip", "-n", ns.name, "link", "set", ns.tx, "up"],
            ["ip", "-n", ns.name, "link", "set", ns.rx, "up"],
            ["ip", "-n", ns.name, "link", "set", "lo", "up"],
        ):
            res = _run(cmd)
            assert res.returncode == 0, f"{' '.join(cmd)}: {res.stderr}"
        yield ns
    finally:
        _run(["ip", "netns", "del", ns.name])


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory the unprivileged user can also reach (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="camwatch-live-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def norm_events(path: Path) -> set[tuple[Any, ...]]:
    """Events without time stamps and flow ids: what the daemon must reproduce."""
    out: set[tuple[Any, ...]] = set()
    for line in path.read_text().splitlines():
        e = json.loads(line)
        kind = e["event_type"]
        if kind == "destination":
            d = e["destination"]
            out.add((kind, d["device"], d["dest_ip"], d["dest_port"], d["proto"], d["verdict"], d["reason"]))
        elif kind == "alert":
            a = e["alert"]
            out.add((kind, a["rule_id"], a.get("device"), e.get("dest_ip"), e.get("dest_port")))
        elif kind == "device":
            out.add((kind, e["device"]["mac"]))
        elif kind in ("dns", "cloud", "update"):
            out.add((kind, e.get("src_ip"), e.get("dest_ip"), e.get("dest_port")))
    return out


@pytest.fixture(scope="module")
def offline() -> tuple[set[tuple[Any, ...]], set[str]]:
    """Normalised events and device MACs of `camwatch replay` of the sample."""
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "events.ndjson"
        res = _run(
            [CAMWATCH, "replay", str(SAMPLE), "--state-dir", f"{tmp}/state", "--events", str(events), "-q"]
        )
        assert res.returncode == 0, res.stderr
        return norm_events(events), devices(Path(tmp) / "state")


def devices(state_dir: Path) -> set[str]:
    res = _run([CAMWATCH, "devices", "--json", "--state-dir", str(state_dir)])
    assert res.returncode == 0, res.stderr
    return {d["mac"] for d in json.loads(res.stdout)}


def http_get(ns: Netns, url: str) -> tuple[int, str]:
    """GET inside the namespace (the daemon's metrics address is only reachable there)."""
    code = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        f"    r = urllib.request.urlopen({url!r}, timeout=2); print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
        "except OSError:\n"
        "    print(0)\n"
    )
    res = _run(ns.exec(sys.executable, "-c", code), timeout=10)
    status, _, body = res.stdout.partition("\n")
    return int(status or 0), body


def metric(body: str, name: str, iface: str | None = None) -> float | None:
    label = f'{{interface="{iface}"}}' if iface else ""
    m = re.search(rf"^{re.escape(name + label)} (\S+)$", body, re.M)
    return float(m.group(1)) if m else None


def wait_until(what: str, predicate: Callable[[], Any], proc: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"daemon exited ({proc.returncode}) while waiting for {what}:\n{log.read_text()[-3000:]}"
            )
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


class Daemon:
    def __init__(self, ns: Netns, work: Path, *extra: str, prefix: tuple[str, ...] = ()) -> None:
        self.ns = ns
        self.port = 19000 + int(uuid.uuid4().int % 900)
        self.state = work / "state"
        self.events = work / "events.ndjson"
        self.log = work / "daemon.log"
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = ns.exec(
            *prefix,
            CAMWATCH,
            "run",
            "-i",
            ns.rx,
            "--state-dir",
            str(self.state),
            "--events",
            str(self.events),
            "--listen",
            f"127.0.0.1:{self.port}",
            *extra,
        )
        self._log_file = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        wait_until(
            "/healthz 200", lambda: http_get(self.ns, f"{self.url}/healthz")[0] == 200, self.proc, self.log
        )

    def metrics(self) -> str:
        status, body = http_get(self.ns, f"{self.url}/metrics")
        assert status == 200, status
        return body

    def wait_packets(self, n: int) -> str:
        def enough() -> str | None:
            body = self.metrics()
            got = metric(body, "camwatch_capture_packets_total", self.ns.rx)
            return body if got is not None and got >= n else None

        return str(wait_until(f"{n} packets", enough, self.proc, self.log))

    def signal(self, sig: int) -> None:
        # `ip netns exec` execs the command, so the Popen pid is the daemon itself.
        self.proc.send_signal(sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log_file.close()
        assert "Traceback" not in self.log.read_text(), self.log.read_text()
        return int(self.proc.returncode)

    def status(self) -> dict[str, str]:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


@contextlib.contextmanager
def daemon(ns: Netns, work: Path, *extra: str, prefix: tuple[str, ...] = ()) -> Iterator[Daemon]:
    d = Daemon(ns, work, *extra, prefix=prefix)
    try:
        yield d
    finally:
        d.stop()


def replay(ns: Netns, pps: int = PPS) -> None:
    require_tool("tcpreplay")
    res = _run(ns.exec("tcpreplay", "-q", "-i", ns.tx, f"--pps={pps}", str(SAMPLE)), timeout=60)
    assert res.returncode == 0, res.stderr + res.stdout


# --------------------------------------------------------------------------- tests


def test_live_capture_matches_offline_replay(
    netns: Netns, workdir: Path, offline: tuple[set[tuple[Any, ...]], set[str]]
) -> None:
    offline_events, offline_devices = offline
    evidence = workdir / "evidence.pcap"
    with daemon(netns, workdir, "--evidence-pcap", str(evidence)) as d:
        d.wait_ready()
        replay(netns)
        body = d.wait_packets(SAMPLE_PACKETS)
        assert metric(body, "camwatch_capture_up", netns.rx) == 1
        assert metric(body, "camwatch_up") == 1
        assert metric(body, "camwatch_capture_kernel_drops_total", netns.rx) == 0

        # SIGHUP: rules and policy reloaded, the daemon keeps running and capturing.
        d.signal(signal.SIGHUP)
        wait_until("the reload", lambda: "reloaded rules" in d.log.read_text(), d.proc, d.log)
        replay(netns, pps=5 * PPS)
        body = d.wait_packets(2 * SAMPLE_PACKETS)
        assert metric(body, "camwatch_config_reloads_total") == 1
        assert metric(body, "camwatch_config_reload_failures_total") == 0
        time.sleep(1.2)  # one PACKET_STATISTICS read after the last packet
        body = d.metrics()
        assert metric(body, "camwatch_capture_kernel_packets_total", netns.rx) == 2 * SAMPLE_PACKETS
        assert metric(body, "camwatch_capture_kernel_drops_total", netns.rx) == 0
        assert metric(body, "camwatch_processed_packets_total") == 2 * SAMPLE_PACKETS
        rc = d.stop()
    log = d.log.read_text()
    assert rc == 0, log
    assert "0 dropped by the kernel" in log
    live = norm_events(d.events)
    assert live == offline_events, (sorted(live - offline_events), sorted(offline_events - live))
    assert sum(1 for e in live if e[0] == "destination") >= 10
    assert devices(d.state) == offline_devices
    # the evidence ring kept the alerting flows' packets (2 alerting TCP flows in the sample, replayed twice)
    from agent.capture.pcapfile import open_capture

    with open_capture(evidence) as reader:
        kept = sum(len(batch.offsets) for batch in reader.batches())
    assert kept >= 6


@pytest.mark.parametrize("how", ["setpriv", "user"])
def test_runs_unprivileged_with_only_cap_net_raw(
    how: str, netns: Netns, workdir: Path, offline: tuple[set[tuple[Any, ...]], set[str]]
) -> None:
    require_tool("setpriv")
    os.chown(workdir, 65534, 65534)
    if how == "setpriv":
        prefix = (
            "setpriv",
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            "--inh-caps",
            "+net_raw",
            "--ambient-caps",
            "+net_raw",
        )
        extra: tuple[str, ...] = ()
    else:
        prefix, extra = (), ("--user", "nobody")
    with daemon(netns, workdir, *extra, prefix=prefix) as d:
        d.wait_ready()
        status = d.status()
        assert status["Uid"].split() == ["65534"] * 4
        assert int(status["CapEff"], 16) == 1 << 13  # CAP_NET_RAW only
        assert int(status["CapPrm"], 16) == 1 << 13
        if how == "user":
            assert int(status["CapBnd"], 16) == 1 << 13
        replay(netns)
        d.wait_packets(SAMPLE_PACKETS)
        rc = d.stop()
    assert rc == 0, d.log.read_text()
    assert norm_events(d.events) == offline[0]
    assert devices(d.state) == offline[1]
    assert (d.state / "camwatch.db").stat().st_uid == 65534


def test_dumpcap_backend(netns: Netns, workdir: Path, offline: tuple[set[tuple[Any, ...]], set[str]]) -> None:
    require_tool("dumpcap")
    with daemon(netns, workdir, "--backend", "dumpcap") as d:
        d.wait_ready()
        replay(netns)
        d.wait_packets(SAMPLE_PACKETS)
        rc = d.stop()
    log = d.log.read_text()
    assert rc == 0, log
    assert "0 dropped by the kernel" in log
    assert norm_events(d.events) == offline[0]


def test_capture_filter_applied_in_kernel(netns: Netns, workdir: Path) -> None:
    with daemon(netns, workdir, "--filter", "udp port 53") as d:
        d.wait_ready()
        replay(netns, pps=5 * PPS)
        # 32 DNS packets in the sample (16 queries, 16 answers; 9 of them VLAN-tagged)
        d.wait_packets(32)
        time.sleep(1.2)
        body = d.metrics()
        assert metric(body, "camwatch_capture_kernel_packets_total", netns.rx) == 32
        rc = d.stop()
    assert rc == 0
    kinds = {json.loads(line)["event_type"] for line in d.events.read_text().splitlines()}
    assert "dns" in kinds and "destination" not in kinds


def test_one_line_errors() -> None:
    res = _run([CAMWATCH, "run", "-i", "cwt-no-such0"])
    assert res.returncode == 2
    assert res.stderr.strip() == "camwatch: cwt-no-such0: no such network interface"
    # No capability at all: a clear line naming CAP_NET_RAW. Opens no socket, sends nothing.
    res = _run(
        ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", CAMWATCH, "run", "-i", "lo"]
    )
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert "CAP_NET_RAW" in res.stderr
    res = _run([CAMWATCH, "run"])
    assert res.returncode == 2 and "no capture interface" in res.stderr
