"""Replay every input the fuzzers ever kept, and every target's seeds, through the targets.

No atheris needed: each ``tests/fuzz/regressions/<area>/<target>/*.bin`` goes through that
target's ``fuzz_one`` exactly as the fuzzer fed it, so a fixed crash, hang or memory blow-up
that comes back fails here. See docs/reliability.md.
"""

from __future__ import annotations

import importlib
import resource
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.fuzz.run import FUZZ_DIR, discover_targets

REGRESSIONS = FUZZ_DIR / "regressions"
TARGETS = {target.key: target for target in discover_targets()}
# Generous: the fuzzers run with -rss_limit_mb=2048; a replay must stay well below that.
MAX_RSS_GROWTH_MB = 1024


def _regression_inputs() -> list[Path]:
    return sorted(REGRESSIONS.glob("*/*/*.bin")) if REGRESSIONS.is_dir() else []


def _load(key: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(TARGETS[key].module)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Hang(Exception):
    pass


@contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    """Fail an input that runs longer than the fuzzer's own per-input timeout allows (with slack)."""

    def _expire(signum: int, frame: object) -> None:
        raise _Hang(f"input still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _replay(key: str, data: bytes) -> None:
    module = _load(key)
    limit = 3 * int(getattr(module, "TIMEOUT_S", 10))
    before = _peak_rss_mb()
    with _time_limit(limit):
        module.fuzz_one(data)
    grown = _peak_rss_mb() - before
    assert grown < MAX_RSS_GROWTH_MB, f"{key}: peak RSS grew by {grown:.0f} MB on one input"


def test_targets_exist() -> None:
    assert any(key.startswith("traffic/") for key in TARGETS), "no traffic fuzz targets found"


@pytest.mark.parametrize("key", sorted(TARGETS))
def test_target_imports_and_its_seeds_run(key: str) -> None:
    module = _load(key)
    assert callable(module.fuzz_one)
    seeds = module.seeds()
    assert seeds, f"{key}: seeds() returned nothing"
    for seed in seeds:
        assert isinstance(seed, bytes), f"{key}: seeds must be bytes, got {type(seed).__name__}"
        _replay(key, seed)


def _input_id(path: Path) -> str:
    return f"{path.parent.parent.name}/{path.parent.name}/{path.stem[:12]}"


@pytest.mark.parametrize("path", _regression_inputs(), ids=_input_id)
def test_regression_input_stays_fixed(path: Path) -> None:
    key = f"{path.parent.parent.name}/{path.parent.name}"
    assert key in TARGETS, f"{path}: no fuzz target {key} (renamed? move or delete the input)"
    _replay(key, path.read_bytes())


# -- the runner's reading of libFuzzer output (tests/fuzz/run.py) ---------------------------------
_CRASH_LOG = """\
#7\tNEW    cov: 3 ft: 3 corp: 2/2b lim: 4 exec/s: 0 rss: 62Mb L: 1/1 MS: 1 ShuffleBytes-
#8192\tpulse  cov: 41 ft: 97 corp: 9/120b lim: 80 exec/s: 2048 rss: 62Mb

 === Uncaught Python exception: ===
UnicodeDecodeError: 'utf-8' codec can't decode byte 0xc0 in position 7: invalid start byte
Traceback (most recent call last):
  File "/work/main/tests/fuzz/traffic/fuzz_http_head.py", line 15, in fuzz_one
    head = http_head.parse(memoryview(data))
  File "/work/main/analyzers/protocols/http_head.py", line 72, in parse
    head = Head(proto, False, version=parts[0].decode())
UnicodeDecodeError: 'utf-8' codec can't decode byte 0xc0 in position 7: invalid start byte

==17596== ERROR: libFuzzer: fuzz target exited
MS: 2 ChangeBinInt-CopyPart-; base unit: f13494597b2a645258087fc90134aa01a7faf599
artifact_prefix='/x/'; Test unit written to /x/crash-b9fff92175111f19262282a8d4b803e1865623e1
stat::number_of_executed_units: 9001
stat::average_exec_per_sec:     1500
stat::peak_rss_mb:              66
"""


def test_runner_reads_a_crash_log() -> None:
    from tests.fuzz import run

    assert run._summarise_crash(_CRASH_LOG).startswith("UnicodeDecodeError: 'utf-8' codec")
    assert run._crash_signature(_CRASH_LOG) == (
        'UnicodeDecodeError at /work/main/analyzers/protocols/http_head.py", line 72'
    )
    assert run._ARTIFACT_RE.findall(_CRASH_LOG) == ["/x/crash-b9fff92175111f19262282a8d4b803e1865623e1"]
    result = run.Result(area="traffic", target="http_head")
    run._Runner._account(result, _CRASH_LOG, 6.0)
    run._Runner._account(result, _CRASH_LOG.replace("9001", "999"), 4.0)
    assert (result.executions, result.seconds, result.coverage, result.features, result.peak_rss_mb) == (
        10_000,
        10.0,
        41,
        97,
        66,
    )


def test_runner_only_prefers_an_exact_target_name() -> None:
    from tests.fuzz import run

    names = [t.name for t in run.discover_targets("traffic", "pcap")]
    assert names == ["pcap"]
    assert {t.name for t in run.discover_targets("traffic", "dahua")} >= {"dahua_dvrip", "dahua_legacy"}
