"""Configuration errors through the real command line (`agent.cli.main`): every key the file
supports, given a wrong type or a bad value, misspelt, or in a broken YAML file, gives one line
`camwatch: FILE: KEY: problem` on stderr, exit code 2 and no traceback, before anything is processed."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import rulebundle
from agent.cli import main
from agent.config import ANALYZER_OPTIONS, KNOWN_KEYS, load_config
from agent.engine import SAMPLE_CAPTURE

# (configuration text, dotted key (or "line N"), fragment of the problem). {tmp} is a directory
# holding `trusted.pub` (a real Ed25519 public key), `notakey.txt`, `afile` and `bundle.cwrb`.
MATRIX: list[tuple[str, str, str]] = [
    # unknown keys, with a did-you-mean
    ("netwroks: {}\n", "netwroks", "did you mean 'networks'?"),
    ("flows: {idle_timeot: 5}\n", "flows.idle_timeot", "did you mean 'idle_timeout'?"),
    ("rules: {bundel: x.cwrb}\n", "rules.bundel", "did you mean 'bundle'?"),
    ("capture: {ringsize: 8}\n", "capture.ringsize", "did you mean 'ring_size'?"),
    ("analyzers: {destinatons: {}}\n", "analyzers.destinatons", "did you mean 'destinations'?"),
    ("analyzers: {dns: {cachesize: 5}}\n", "analyzers.dns.cachesize", "did you mean 'cache_size'?"),
    ("analyzers: {fp_tls: {depth: 5}}\n", "analyzers.fp_tls.depth", "known: none"),
    ("zzz: 1\n", "zzz", "unknown key"),
    # networks
    ("networks: {cidrs: [10.0.0.300/8]}\n", "networks.cidrs[0]", "not a CIDR"),
    ("networks: {cidrs: {a: 1}}\n", "networks.cidrs", "expected a string or a non-empty list"),
    ("networks: {vlans: [5000]}\n", "networks.vlans", "VLAN ids 0-4095"),
    ("networks: {vlans: ten}\n", "networks.vlans", "VLAN ids 0-4095"),
    ("networks: [10.0.0.0/8]\n", "networks", "expected a mapping"),
    # rules, policy, state
    ("rules_dir: {tmp}/nowhere\n", "rules_dir", "not a directory"),
    ("rules_dir: [a, b]\n", "rules_dir", "expected a non-empty string"),
    ("rules: {bundle: {tmp}/bundle.cwrb}\n", "rules.bundle", "needs rules.trust_key"),
    ("rules: {trust_key: {tmp}/trusted.pub}\n", "rules.trust_key", "needs rules.bundle"),
    ("rules: {bundle: {tmp}/bundle.cwrb, trust_key: {tmp}/none.pub}\n", "rules.trust_key", "file not found"),
    (
        "rules: {bundle: {tmp}/bundle.cwrb, trust_key: {tmp}/notakey.txt}\n",
        "rules.trust_key",
        "no PEM public key",
    ),
    (
        "rules: {bundle: {tmp}/bundle.cwrb, trust_key: [{tmp}/trusted.pub, {tmp}/notakey.txt]}\n",
        "rules.trust_key[1]",
        "no PEM public key",
    ),
    ("rules: {bundle: {tmp}/gone.cwrb, trust_key: {tmp}/trusted.pub}\n", "rules.bundle", "file not found"),
    ("rules: {bundle: 5, trust_key: {tmp}/trusted.pub}\n", "rules.bundle", "expected a non-empty string"),
    (
        "rules_dir: {tmp}\nrules: {bundle: {tmp}/bundle.cwrb, trust_key: {tmp}/trusted.pub}\n",
        "rules_dir",
        "plain rules directory is refused",
    ),
    ("rules: on\n", "rules", "expected a mapping"),
    ("policy: missing.yaml\n", "policy[0]", "file not found"),
    ("policy: 5\n", "policy", "expected a string"),
    ("state_dir: {tmp}/afile\n", "state_dir", "not a directory"),
    ("state_dir: 42\n", "state_dir", "expected a non-empty string"),
    # geoip
    ("geoip: {mmdb: {tmp}/none.mmdb}\n", "geoip.mmdb", "file not found"),
    ("geoip: {asn_mmdb: []}\n", "geoip.asn_mmdb", "expected a non-empty string"),
    # flows, dns, learning
    ("flows: {idle_timeout: soon}\n", "flows.idle_timeout", "duration"),
    ("flows: {idle_timeout: 0}\n", "flows.idle_timeout", "above zero"),
    ("flows: {active_timeout: -5}\n", "flows.active_timeout", "duration"),
    ("flows: {max_flows: 1.5}\n", "flows.max_flows", "positive integer"),
    ("flows: {max_flows: true}\n", "flows.max_flows", "positive integer"),
    ("dns: {min_ttl: x}\n", "dns.min_ttl", "duration"),
    ("dns: {max_ttl: 0}\n", "dns.max_ttl", "above zero"),
    ("dns: {min_ttl: 2h, max_ttl: 1h}\n", "dns.min_ttl", "is above dns.max_ttl"),
    ("learning: {enabled: 'yes'}\n", "learning.enabled", "true or false"),
    ("learning: {period: 0s}\n", "learning.period", "above zero"),
    # metrics
    ("metrics: {listen: 'localhost:http'}\n", "metrics.listen", "ADDR:PORT"),
    ("metrics: {listen: 'bad host!:80'}\n", "metrics.listen", "bad address"),
    ("metrics: {listen: 70000}\n", "metrics.listen", "ADDR:PORT"),
    ("metrics: {listen: [a]}\n", "metrics.listen", "ADDR:PORT"),
    ("metrics: {per_device: 1}\n", "metrics.per_device", "true or false"),
    ("metrics: {per_device_cap: 0}\n", "metrics.per_device_cap", "positive integer"),
    # analyzers
    ("analyzers: [dns]\n", "analyzers", "expected a mapping"),
    ("analyzers: {dns: 5}\n", "analyzers.dns", "expected a mapping"),
    ("analyzers: {dns: {cache_size: big}}\n", "analyzers.dns.cache_size", "positive integer"),
    ("analyzers: {geo: {asn: 1}}\n", "analyzers.geo.asn", "true or false"),
    ("analyzers: {inventory: {max_devices: -1}}\n", "analyzers.inventory.max_devices", "positive integer"),
    ("analyzers: {destinations: {max_keys: x}}\n", "analyzers.destinations.max_keys", "positive integer"),
    ("analyzers: {cloud_p2p: {max_keys: 0}}\n", "analyzers.cloud_p2p.max_keys", "positive integer"),
    ("analyzers: {exploits: {reassembly_budget: lots}}\n", "analyzers.exploits.reassembly_budget", "a size"),
    (
        "analyzers: {exploits: {signatures: {tmp}/no.yaml}}\n",
        "analyzers.exploits.signatures",
        "file not found",
    ),
    ("analyzers: {exploits: {credentials: {tmp}}}\n", "analyzers.exploits.credentials", "file not found"),
    ("analyzers: {updates: {scan: 'no'}}\n", "analyzers.updates.scan", "true or false"),
    ("analyzers: {updates: {wait_for_scan: 0}}\n", "analyzers.updates.wait_for_scan", "true or false"),
    ("analyzers: {updates: {sandbox: null}}\n", "analyzers.updates.sandbox", "true or false"),
    ("analyzers: {updates: {scan_in_process: 2}}\n", "analyzers.updates.scan_in_process", "true or false"),
    ("analyzers: {updates: {max_carve: big}}\n", "analyzers.updates.max_carve", "a size"),
    ("analyzers: {updates: {min_firmware_size: 0}}\n", "analyzers.updates.min_firmware_size", "a size"),
    (
        "analyzers: {updates: {scan_rule_dirs: [{tmp}/x]}}\n",
        "analyzers.updates.scan_rule_dirs[0]",
        "not a directory",
    ),
    ("analyzers: {updates: {update_sources: [nope]}}\n", "analyzers.updates.update_sources[0]", "not a CIDR"),
    # capture
    ("capture: {ring_size: big}\n", "capture.ring_size", "expected a size such as 32MiB, got 'big'"),
    ("capture: {ring_size: 1536KiB}\n", "capture.ring_size", "whole MiB"),
    ("capture: {ring_size: 0}\n", "capture.ring_size", "a size such as 32MiB"),
    ("capture: {workers: 0}\n", "capture.workers", "positive integer"),
    ("capture: {interfaces: [averyveryverylongname0]}\n", "capture.interfaces[0]", "not a network interface"),
    ("capture: {interfaces: 5}\n", "capture.interfaces", "expected a string"),
    ("capture: {filter: [port 80]}\n", "capture.filter", "BPF filter string"),
    # the file itself
    ("- just\n- a list\n", "-", "top level must be a mapping"),
    ("flows: [unclosed\n", "line 2", "not valid YAML"),
    ("flows:\n  idle_timeout: 5\n\tmax_flows: 3\n", "line 3", "not valid YAML"),
    ("flows: {}\nlearning: {}\nflows: {max_flows: 3}\n", "line 3", "duplicate key 'flows'"),
    ("flows: {max_flows: 3, max_flows: 4}\n", "line 1", "duplicate key 'max_flows'"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cfgfiles")
    rulebundle.generate_key(d / "signer.pem")
    (d / "trusted.pub").write_bytes((d / "signer.pem.pub").read_bytes())
    (d / "notakey.txt").write_text("hello\n")
    (d / "afile").write_text("x\n")
    (d / "bundle.cwrb").write_bytes(b"")  # exists; these cases fail before it is read
    return d


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(args)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(("text", "key", "fragment"), MATRIX, ids=[m[1] + ":" + m[2][:20] for m in MATRIX])
def test_bad_config_names_file_and_key_exit_2(
    tmp_path: Path, files: Path, capsys: pytest.CaptureFixture[str], text: str, key: str, fragment: str
) -> None:
    conf = tmp_path / "camwatch.yaml"
    conf.write_text(text.replace("{tmp}", str(files)), encoding="utf-8")
    events = tmp_path / "events.ndjson"
    rc, err = run_cli(
        ["replay", str(SAMPLE_CAPTURE), "--config", str(conf), "--events", str(events), "-q"], capsys
    )
    assert rc == 2, err
    assert err.startswith(f"camwatch: {conf}: {key}"), err
    assert fragment in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not events.exists()  # refused before anything was processed


def test_matrix_covers_every_supported_key() -> None:
    """A key added to the schema without a bad-value case here fails this test."""
    tested = {key.split("[")[0] for _, key, _ in MATRIX}
    for top, subs in KNOWN_KEYS.items():
        if top == "analyzers":
            continue
        if subs is None:
            assert top in tested, top
        for sub in subs or ():
            assert f"{top}.{sub}" in tested, f"{top}.{sub}"
    for name, options in ANALYZER_OPTIONS.items():
        for opt in options:
            assert f"analyzers.{name}.{opt}" in tested, f"analyzers.{name}.{opt}"


@pytest.mark.parametrize(
    ("setup", "key", "fragment"),
    [
        (lambda p: None, "-", "file not found"),
        (lambda p: p.mkdir(), "-", "is a directory"),
        (lambda p: p.write_bytes(b"flows:\n  max_flows: \xff\xfe\n"), "-", "not UTF-8"),
        (lambda p: p.write_bytes(b"# x\n" * 300_000), "-", "not a configuration file"),
    ],
)
def test_unreadable_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: object, key: str, fragment: str
) -> None:
    conf = tmp_path / "camwatch.yaml"
    setup(conf)  # type: ignore[operator]
    rc, err = run_cli(["demo", "--once", "--config", str(conf), "-q"], capsys)
    assert rc == 2
    assert err.startswith(f"camwatch: {conf}: {key}: ") and fragment in err, err
    assert err.count("\n") == 1


def test_empty_file_and_empty_sections_are_the_defaults(tmp_path: Path) -> None:
    conf = tmp_path / "camwatch.yaml"
    conf.write_text("# nothing configured\nflows:\nanalyzers:\n")
    cfg = load_config(conf)
    assert cfg.max_flows == 200_000 and cfg.analyzer_options == {}


def test_good_values_are_normalised(tmp_path: Path) -> None:
    (tmp_path / "sigs.yaml").write_text("x: 1\n")
    conf = tmp_path / "camwatch.yaml"
    conf.write_text(
        "capture: {ring_size: 64MiB}\n"
        "analyzers:\n"
        "  updates: {max_carve: 8MiB, update_sources: 192.0.2.7/24, scan: false}\n"
        "  exploits: {signatures: sigs.yaml, reassembly_budget: 1048576}\n"
        "  fp_tls: {}\n"
    )
    cfg = load_config(conf)
    assert cfg.ring_size_mb == 64
    assert cfg.analyzer_options["updates"] == {
        "max_carve": 8 * 1024 * 1024,
        "update_sources": ["192.0.2.0/24"],
        "scan": False,
    }
    assert cfg.analyzer_options["exploits"]["signatures"] == str(tmp_path / "sigs.yaml")
    assert cfg.analyzer_options["fp_tls"] == {}


def test_cli_value_errors_name_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = run_cli(["run", "-i", "lo", "--listen", "nope", "--state-dir", str(tmp_path)], capsys)
    assert rc == 2 and err.startswith("camwatch: --listen: address: expected ADDR:PORT"), err
    rc, err = run_cli(["run", "-i", "lo", "--ring-size", "0", "--state-dir", str(tmp_path)], capsys)
    assert rc == 2 and err.startswith("camwatch: --ring-size 0: expected a positive number"), err
