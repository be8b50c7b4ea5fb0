"""The pipeline fuzz target resets its session in place instead of building one per input
(tests/fuzz/traffic/session_state.py). These tests hold it to "every input starts from a fresh
session": an input gives the same events and counters on a brand-new Engine, as the first input of
the target, and after 500 other inputs; and after a reset the whole reachable object graph, the
loaded rules, the camwatch modules' globals and the state store are as they were.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import random
import re
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fuzz.traffic import fuzz_pipeline as target
from tests.fuzz.traffic.session_state import SessionSnapshot, state_fingerprint

OTHER_INPUTS = 500
_WALL_TIMESTAMP = re.compile(r'"timestamp":\s*"[^"]*"')


def _mutants(count: int, seed: int = 7) -> list[bytes]:
    """Deterministic variations of the seeds: spliced records, flipped bytes, time steps past the
    flow timeouts, other link types; enough to leave flows, devices, names and buffers behind."""
    rng = random.Random(seed)
    seeds = target.seeds()
    out: list[bytes] = []
    while len(out) < count:
        data = bytearray(rng.choice(seeds))
        other = rng.choice(seeds)
        cut = rng.randrange(1, max(2, len(other)))
        data += other[cut:] if rng.random() < 0.5 else other[1:]
        for _ in range(rng.randrange(0, 6)):
            data[rng.randrange(1, len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            data[0] = rng.randrange(len(target.LINKTYPES))
        out.append(bytes(data))
    return out


def _outcome(events_text: str, counters: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Events and counters of one run, without what depends on the wall clock."""
    events = [json.loads(line) for line in events_text.splitlines()]
    for event in events:
        event.pop("pcap_filename", None)
        if event["event_type"] == "stats" and event["stats"]["packets"] == 0:
            event.pop("timestamp")  # no packet time: the stats event is stamped with the wall clock
    # copied: the target resets its Counters in place, so the live ones change with the next input
    wall_clock = ("_lock", "last_processed_wall")
    values = {k: copy.deepcopy(v) for k, v in vars(counters).items() if k not in wall_clock}
    return events, values


def _run_in_target(data: bytes) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    target.fuzz_one(data)
    return _outcome(target._events.getvalue(), target.ENGINE.counters)


def _run_on_new_engine(data: bytes, state_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """What `camwatch replay` does with the same capture: a new Engine on an empty state store."""
    from agent.config import Config
    from agent.engine import Engine
    from tests.fuzz.traffic.common import as_file, pcap_bytes

    linktype, frames = target._frames(data)
    capture = pcap_bytes(
        [f for _, f in frames], linktype=linktype, start=1_700_000_000.0, times=[t for t, _ in frames]
    )
    config = Config()
    config.state_dir = state_dir
    config.analyzer_options = {"updates": {"scan": False}}
    events = io.StringIO()
    engine = Engine(config, events=events)
    engine.pipeline.isolate_analyzers = False
    try:
        assert not engine.replay([as_file(capture)])
        engine.finish()
        return _outcome(events.getvalue(), engine.counters)
    finally:
        engine.close()


@functools.cache
def _probes() -> list[bytes]:
    """Seeds whose replay says the most (events of several types), plus a few mutants."""
    ranked = []
    for data in target.seeds():
        events, _ = _run_in_target(data)
        ranked.append((len({e["event_type"] for e in events}), len(events), data))
    ranked.sort(key=lambda r: (r[0], r[1]), reverse=True)
    return [data for _, _, data in ranked[:6]] + _mutants(3, seed=99)


def test_an_input_gives_what_a_new_engine_gives_before_and_after_500_others(tmp_path: Path) -> None:
    probes = _probes()
    first = [_run_in_target(data) for data in probes]
    assert sum(len(events) for events, _ in first) > 2 * len(probes), "probes that emit next to nothing"
    for data in _mutants(OTHER_INPUTS):
        target.fuzz_one(data)
    again = [_run_in_target(data) for data in probes]
    for i, data in enumerate(probes):
        fresh = _run_on_new_engine(data, tmp_path / f"probe{i}")
        assert first[i] == fresh, f"probe {i}: the target's first run differs from a new engine's: " + _diff(
            first[i], fresh
        )
        assert again[i] == fresh, f"probe {i}: after {OTHER_INPUTS} other inputs: " + _diff(again[i], fresh)


def _diff(got: tuple[list[Any], dict[str, Any]], want: tuple[list[Any], dict[str, Any]]) -> str:
    if got[0] != want[0]:
        return f"events {got[0]} != {want[0]}"
    return ", ".join(f"{k}: {got[1][k]} != {want[1].get(k)}" for k in got[1] if got[1][k] != want[1].get(k))


def _is_pure_cache(value: object) -> bool:
    # lru caches of pure functions (geo lookups, community ids): what they hold changes nothing
    return type(value).__name__ == "_lru_cache_wrapper"


def _engine_fingerprint() -> Any:
    engine = target.ENGINE
    # The shared rules are walked too: that they never change is what lets the target share them.
    return state_fingerprint([engine, *target.PRISTINE.shared], skip=_is_pure_cache)


def _address_text_is_pure() -> bool:
    """agent.model._TEXT memoises address bytes -> text: a cache, as long as every entry is what
    ip_text / mac_text would compute again."""
    from agent import model

    def again(raw: bytes) -> str:
        if len(raw) in (4, 16):
            return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
        return raw.hex(":")

    return all(text == again(raw) for raw, text in model._TEXT.items())


# Module globals that only memoise pure functions (checked by the function next to each name).
PURE_MODULE_CACHES = {"agent.model._TEXT": _address_text_is_pure}


def _module_globals_fingerprint() -> Any:
    """Data held in the camwatch modules' globals (hidden state no snapshot of the engine sees)."""
    data = {}
    for name, module in sorted(sys.modules.items()):
        if module is None or not name.startswith(("agent", "analyzers")):
            continue
        for attr, value in sorted(vars(module).items()):
            if attr.startswith("__") or callable(value) or type(value).__name__ == "module":
                continue
            if f"{name}.{attr}" in PURE_MODULE_CACHES:
                assert PURE_MODULE_CACHES[f"{name}.{attr}"](), f"{name}.{attr} holds a wrong entry"
                continue
            data[f"{name}.{attr}"] = state_fingerprint([value], skip=_is_pure_cache)
    return data


def _store_dump() -> list[str]:
    return list(target.ENGINE.store._c.iterdump())


def _reset() -> None:
    target._fresh_session()
    target.ENGINE._last_commit = 0.0  # wall-clock start of the commit interval, set per input


def test_a_reset_restores_the_whole_session_graph_the_rules_and_the_store() -> None:
    _reset()
    before = (_engine_fingerprint(), _module_globals_fingerprint(), _store_dump())
    outputs = 0
    for data in _mutants(OTHER_INPUTS, seed=11):
        target.fuzz_one(data)
        outputs += len(target._events.getvalue().splitlines())
    assert outputs > OTHER_INPUTS, "the inputs did not do enough to test a reset"
    assert _engine_fingerprint() != before[0], "the inputs left no state behind: nothing was tested"
    _reset()
    after = (_engine_fingerprint(), _module_globals_fingerprint(), _store_dump())
    assert after[0] == before[0], "the reset session differs from the pristine one"
    changed = sorted(name for name in before[1] if after[1].get(name) != before[1][name])
    assert not changed, f"camwatch module globals changed across inputs: {changed}"
    assert after[2] == before[2], "state store rows outlived their input"


def test_the_fingerprint_sees_a_change_in_shared_rules() -> None:
    # The check above is only worth something if it notices state the reset does not cover.
    _reset()
    before = _engine_fingerprint()
    vendors = target.ENGINE.catalogue.vendors
    vendors.add("not-a-vendor")
    try:
        assert _engine_fingerprint() != before
    finally:
        vendors.discard("not-a-vendor")
    assert _engine_fingerprint() == before


class _Budget:
    def __init__(self) -> None:
        self.used = 0


class _Table:
    __slots__ = ("budget", "by_key", "get")

    def __init__(self, budget: _Budget) -> None:
        self.budget = budget
        self.by_key: dict[str, list[int]] = {}
        self.get = self.by_key.get  # a cached bound method: only an in-place reset keeps it valid


class _Session:
    def __init__(self) -> None:
        self.budget = _Budget()
        self.table = _Table(self.budget)
        self.seen: set[str] = {"pristine"}
        self.rules = {"rule": "kept"}


def test_snapshot_resets_in_place_and_keeps_aliasing() -> None:
    session = _Session()
    snapshot = SessionSnapshot([session], shared_names={"rules"}, owned_modules=(__name__,))
    table, budget, rules = session.table, session.budget, session.rules
    session.budget.used = 5
    session.table.by_key["a"] = [1]
    session.table.by_key.setdefault("b", []).append(2)
    session.seen.add("new")
    session.later = "added during the session"  # type: ignore[attr-defined]
    session.table = _Table(_Budget())  # rebound: the reset must put the original back
    snapshot.restore()
    assert session.table is table and session.budget is budget and session.table.budget is budget
    assert session.rules is rules
    assert budget.used == 0 and table.by_key == {} and session.seen == {"pristine"}
    assert not hasattr(session, "later")
    table.by_key["x"] = [3]
    assert table.get("x") == [3], "the cached bound method points at another dict"
    snapshot.restore()
    assert table.get("x") is None


def test_snapshot_refuses_a_weak_container_it_cannot_record() -> None:
    import weakref

    class Holder:
        def __init__(self) -> None:
            self.streams: weakref.WeakSet[_Budget] = weakref.WeakSet()

    holder = Holder()
    alive = _Budget()
    holder.streams.add(alive)
    with pytest.raises(ValueError, match="WeakSet"):
        SessionSnapshot([holder], owned_modules=(__name__,))
