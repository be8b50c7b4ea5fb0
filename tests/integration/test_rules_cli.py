"""`camwatch rules keygen/pack/verify/show` and the agent's use of signed rule bundles, through the
real `camwatch` executable: a tampered, unsigned or wrongly signed bundle is refused with one line
(exit 1 for `rules verify`, exit 2 for replay/demo/run); a good bundle's rules are the ones in force
(a changed endpoint catalogue changes a verdict on the bundled sample); SIGHUP with a tampered bundle
keeps the running daemon on its previous rule set."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from agent.catalogue import BUNDLED_RULES
from agent.engine import SAMPLE_CAPTURE

pytestmark = pytest.mark.slow

CAMWATCH = str(Path(sys.executable).with_name("camwatch"))
SUSPECT_IP = "203.0.113.88"  # www.88safce.com in the sample: "unexpected" with the shipped catalogue
EXTRA_SERVICE = """  - name: site-88safce
    vendor: generic
    category: cloud
    description: test service added by a signed bundle
    domains: ["www.88safce.com"]
    ports: [tcp/80]
"""


def camwatch(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CAMWATCH, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def one_line_error(proc: subprocess.CompletedProcess[str], rc: int, *fragments: str) -> str:
    assert proc.returncode == rc, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr
    assert err.startswith("camwatch: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keys, a copy of the shipped rules, a bundle of it (v1) and one with an extra service (v2)."""
    d = tmp_path_factory.mktemp("rulescli")
    for name in ("signer", "other"):
        assert camwatch("rules", "keygen", "--out", str(d / f"{name}.pem")).returncode == 0
    rules = d / "rules"
    shutil.copytree(BUNDLED_RULES, rules)
    proc = camwatch(
        "rules",
        "pack",
        str(rules),
        "--key",
        str(d / "signer.pem"),
        "--out",
        str(d / "v1.cwrb"),
        "--version",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    endpoints = rules / "endpoints.yaml"
    endpoints.write_text(endpoints.read_text().replace("services:\n", "services:\n" + EXTRA_SERVICE, 1))
    proc = camwatch(
        "rules",
        "pack",
        str(rules),
        "--key",
        str(d / "signer.pem"),
        "--out",
        str(d / "v2.cwrb"),
        "--version",
        "2",
    )
    assert proc.returncode == 0, proc.stderr
    return d


def tampered(work: Path, source: str = "v2.cwrb") -> Path:
    out = work / f"tampered-{source}"
    data = bytearray((work / source).read_bytes())
    at = data.index(b"www.88safce.com")
    data[at] ^= 0x20  # 'w' -> 'W' inside rules/endpoints.yaml
    out.write_bytes(bytes(data))
    return out


def unsigned(work: Path) -> Path:
    """The v1 bundle with its signature member dropped, everything else kept."""
    out = work / "unsigned.cwrb"
    buf = io.BytesIO()
    with (
        tarfile.open(work / "v1.cwrb") as src,
        tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as dst,
    ):
        for m in src.getmembers():
            if m.name != "manifest.sig":
                dst.addfile(m, src.extractfile(m))
    out.write_bytes(buf.getvalue())
    return out


def config(tmp: Path, bundle: Path, trust: Path, extra: str = "") -> Path:
    conf = tmp / "camwatch.yaml"
    conf.write_text(f"rules:\n  bundle: {bundle}\n  trust_key: {trust}\nstate_dir: {tmp / 'state'}\n{extra}")
    return conf


def verdicts(events: Path) -> dict[str, tuple[str, str | None]]:
    out = {}
    for line in events.read_text().splitlines():
        ev = json.loads(line)
        if ev.get("event_type") == "destination":
            d = ev["destination"]
            out[ev["dest_ip"]] = (d.get("verdict"), d.get("service"))
    return out


# --------------------------------------------------------------------------- rules subcommands


def test_keygen_pack_verify_show(work: Path) -> None:
    assert oct((work / "signer.pem").stat().st_mode & 0o777) == "0o600"
    again = camwatch("rules", "keygen", "--out", str(work / "signer.pem"))
    one_line_error(again, 2, "already exists")

    ok = camwatch("rules", "verify", str(work / "v1.cwrb"), "--trust-key", str(work / "signer.pem.pub"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"{work / 'v1.cwrb'}: ok: camwatch-rules 1 ")

    shown = camwatch("rules", "show", str(work / "v2.cwrb"), "--files")
    assert shown.returncode == 0
    assert "version:   2" in shown.stdout and "endpoints.yaml" in shown.stdout
    assert "signature: present" in shown.stdout


def test_verify_refusals_exit_1_with_one_line(work: Path) -> None:
    trust = str(work / "signer.pem.pub")
    bad = tampered(work)
    one_line_error(
        camwatch("rules", "verify", str(bad), "--trust-key", trust),
        1,
        f"camwatch: {bad}: rules/endpoints.yaml: content does not match the signed manifest",
    )
    one_line_error(
        camwatch("rules", "verify", str(work / "v1.cwrb"), "--trust-key", str(work / "other.pem.pub")),
        1,
        "which is not trusted",
    )
    one_line_error(
        camwatch("rules", "verify", str(unsigned(work)), "--trust-key", trust), 1, "unsigned bundle"
    )
    one_line_error(
        camwatch("rules", "verify", str(work / "nope.cwrb"), "--trust-key", trust), 1, "file not found"
    )


def test_pack_refuses_a_tree_the_agent_could_not_load(work: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(BUNDLED_RULES, rules, ignore=shutil.ignore_patterns("firmware"))
    (rules / "endpoints.yaml").write_text("version: 1\nservices:\n  - name: Bad Name\n")
    proc = camwatch(
        "rules", "pack", str(rules), "--key", str(work / "signer.pem"), "--out", str(tmp_path / "x")
    )
    one_line_error(proc, 2, "endpoints.yaml")
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- the agent


def test_agent_refuses_to_start_on_a_bad_bundle(work: Path, tmp_path: Path) -> None:
    trust = work / "signer.pem.pub"
    events = tmp_path / "events.ndjson"
    cases = [
        (tampered(work), trust, "content does not match the signed manifest"),
        (work / "v1.cwrb", work / "other.pem.pub", "which is not trusted"),
        (unsigned(work), trust, "unsigned bundle"),
    ]
    for bundle, key, fragment in cases:
        conf = config(tmp_path, bundle, key)
        replay = camwatch("replay", str(SAMPLE_CAPTURE), "--config", str(conf), "--events", str(events), "-q")
        one_line_error(replay, 2, str(bundle), fragment, f"refusing the rule bundle (rules.bundle in {conf})")
        assert not events.exists()
        assert not (tmp_path / "state" / "rules").exists()  # nothing unpacked
    # demo and run (which refuses before opening the capture, whatever the privileges) too
    conf = config(tmp_path, tampered(work), trust)
    one_line_error(camwatch("demo", "--once", "--config", str(conf), "-q"), 2, "content does not match")
    run = camwatch("run", "-i", "lo", "--config", str(conf), "--listen", "127.0.0.1:1")
    one_line_error(run, 2, "content does not match")
    assert not (tmp_path / "state" / "rules").exists()


def test_plain_rules_dir_is_refused_with_a_trust_key(work: Path, tmp_path: Path) -> None:
    conf = config(tmp_path, work / "v1.cwrb", work / "signer.pem.pub", f"rules_dir: {work / 'rules'}\n")
    one_line_error(
        camwatch("replay", str(SAMPLE_CAPTURE), "--config", str(conf), "-q"),
        2,
        f"camwatch: {conf}: rules_dir: a plain rules directory is refused",
    )


def test_agent_uses_the_rules_of_the_verified_bundle(work: Path, tmp_path: Path) -> None:
    trust = work / "signer.pem.pub"
    seen = {}
    for version in ("1", "2"):
        run_dir = tmp_path / version
        run_dir.mkdir()
        conf = config(run_dir, work / f"v{version}.cwrb", trust)
        events = run_dir / "events.ndjson"
        proc = camwatch("replay", str(SAMPLE_CAPTURE), "--config", str(conf), "--events", str(events), "-q")
        assert proc.returncode == 0, proc.stderr
        seen[version] = verdicts(events)
        current = run_dir / "state" / "rules" / "current"
        assert current.is_symlink()
        meta = json.loads((current / ".bundle.json").read_text())
        assert meta["version"] == version
        assert (current / "endpoints.yaml").read_bytes() != b""
    assert seen["1"][SUSPECT_IP] == ("unexpected", None)
    assert seen["2"][SUSPECT_IP] == ("vendor-cloud", "site-88safce")
    others = {ip: v for ip, v in seen["1"].items() if ip != SUSPECT_IP}
    assert others == {ip: v for ip, v in seen["2"].items() if ip != SUSPECT_IP}


def test_without_a_trust_key_nothing_changes(tmp_path: Path) -> None:
    events = tmp_path / "events.ndjson"
    proc = camwatch(
        "replay", str(SAMPLE_CAPTURE), "--state-dir", str(tmp_path / "state"), "--events", str(events), "-q"
    )
    assert proc.returncode == 0, proc.stderr
    assert verdicts(events)[SUSPECT_IP] == ("unexpected", None)
    assert not (tmp_path / "state" / "rules").exists()


# --------------------------------------------------------------------------- live daemon, SIGHUP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metric(url: str, name: str) -> float:
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def _wait(
    what: str, predicate: object, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"daemon exited ({proc.returncode}) waiting for {what}:\n{log.read_text()}")
        try:
            if predicate():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()}")


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs CAP_NET_RAW (run as root)")
def test_sighup_with_a_tampered_bundle_keeps_the_running_rule_set(work: Path, tmp_path: Path) -> None:
    live = tmp_path / "live.cwrb"
    shutil.copy(work / "v1.cwrb", live)
    conf = config(tmp_path, live, work / "signer.pem.pub")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    log = tmp_path / "daemon.log"
    root = tmp_path / "state" / "rules"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [CAMWATCH, "run", "-i", "lo", "--config", str(conf), "--listen", f"127.0.0.1:{port}"],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait("metrics", lambda: _metric(url, "camwatch_config_reloads_total") == 0, proc, log)
        first = os.readlink(root / "current")

        tmp = tmp_path / "incoming.cwrb"  # how an operator drops in a new bundle: copy, then rename
        shutil.copy(tampered(work), tmp)
        os.replace(tmp, live)
        proc.send_signal(signal.SIGHUP)
        _wait(
            "the failed reload", lambda: _metric(url, "camwatch_config_reload_failures_total") == 1, proc, log
        )
        lines = [ln for ln in log.read_text().splitlines() if "reload failed" in ln]
        assert len(lines) == 1 and "content does not match the signed manifest" in lines[0], lines
        assert os.readlink(root / "current") == first
        assert sorted(p.name for p in root.iterdir()) == sorted([first, "current"])

        shutil.copy(work / "v2.cwrb", tmp)
        os.replace(tmp, live)
        proc.send_signal(signal.SIGHUP)
        _wait("the reload", lambda: _metric(url, "camwatch_config_reloads_total") == 2, proc, log)
        assert _metric(url, "camwatch_config_reload_failures_total") == 1
        now = os.readlink(root / "current")
        assert now != first
        assert json.loads((root / now / ".bundle.json").read_text())["version"] == "2"
        assert "reloaded rule bundle camwatch-rules 2" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs CAP_NET_RAW (run as root)")
def test_busy_metrics_address_from_config_names_the_key(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        conf = tmp_path / "camwatch.yaml"
        conf.write_text(
            f"metrics: {{listen: '127.0.0.1:{port}'}}\ncapture: {{interfaces: [lo], ring_size: 4MiB}}\n"
        )
        proc = camwatch("run", "--config", str(conf), "--state-dir", str(tmp_path / "state"))
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.splitlines()[-1]  # after the daemon's privilege log line
    assert last.startswith(f"camwatch: {conf}: metrics.listen: ") and str(port) in last, proc.stderr
    assert "Traceback" not in proc.stderr
