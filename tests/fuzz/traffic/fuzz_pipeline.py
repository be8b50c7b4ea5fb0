"""The whole decode hot path through the public replay API: a pcap wrapping fuzzed frames (link
type chosen by the input) goes through Engine.replay() and Engine.finish(), so link / network /
transport slicing, the flow table with its timers, dispatch and every registered analyzer run.

Input: byte 0 picks the link type; then records of [time step u8][length u16][frame bytes]. A
well-formed pcap must replay without a CaptureError and every event must be one valid JSON line.

Building an Engine costs ~0.1 s (rule files), so one is built per process; each input then runs
on fresh per-session state (flow table, inventory, passive DNS, counters, analyzer runtime state
copied from pristine analyzers that share only the immutable rules), and everything the input
wrote to the state store is rolled back, so an input's outcome does not depend on earlier ones.
"""

from __future__ import annotations

import atexit
import copy
import io
import json
import shutil
import tempfile
from pathlib import Path

from agent.config import Config
from agent.engine import Engine
from agent.events import EventWriter
from agent.pipeline import Pipeline
from agent.stats import Counters
from tests.fuzz.traffic.common import ByteReader, as_file, pcap_bytes, sample_frames

MAX_LEN = 16384
TIMEOUT_S = 20
MAX_FRAMES = 64
LINKTYPES = (1, 101, 113, 276, 228, 229, 0, 1)  # Ethernet, raw IP, SLL, SLL2, raw v4, raw v6, null
# Analyzer attributes holding rules loaded at setup (immutable during a session): shared, not copied.
SHARED_ATTRIBUTES = frozenset(
    {"ctx", "store", "rules", "hashes", "sigs", "creds", "services", "signatures", "by_proto", "worker"}
)

_state_dir = Path(tempfile.mkdtemp(prefix="camwatch-fuzz-pipeline-"))
atexit.register(shutil.rmtree, _state_dir, True)
_config = Config()
_config.state_dir = _state_dir
_config.analyzer_options = {"updates": {"scan": False}}  # no firmware worker processes
_events = io.StringIO()
ENGINE = Engine(_config, events=_events)
PRISTINE = list(ENGINE.analyzers)
# Set up by the analyzers (known brand / maker labels) and loaded from the empty store: copied per input.
PRISTINE_INVENTORY = copy.deepcopy(ENGINE.inventory, {id(ENGINE.catalogue): ENGINE.catalogue})
PRISTINE_DNS = copy.deepcopy(ENGINE.dns)


def _discard_writes() -> None:
    """Engine.commit() replacement: roll the input's store writes back instead of keeping them."""
    conn = ENGINE.store._c
    if conn.in_transaction:
        conn.execute("ROLLBACK")


ENGINE.commit = _discard_writes  # type: ignore[method-assign]


def _fresh_session() -> None:
    engine = ENGINE
    engine.counters = Counters()
    engine.inventory = copy.deepcopy(PRISTINE_INVENTORY, {id(engine.catalogue): engine.catalogue})
    engine.dns = copy.deepcopy(PRISTINE_DNS)
    _events.seek(0)
    _events.truncate()
    engine.writer = EventWriter(_events)
    engine.alerts_by_severity.clear()
    engine.unexpected.clear()
    analyzers = []
    for pristine in PRISTINE:
        memo = {id(engine): engine}
        for name in SHARED_ATTRIBUTES:
            value = getattr(pristine, name, None)
            if value is not None:
                memo[id(value)] = value
        analyzers.append(copy.deepcopy(pristine, memo))
    engine.analyzers = analyzers
    engine.pipeline = Pipeline(
        analyzers,
        engine.counters,
        idle_timeout=_config.flow_idle_timeout,
        active_timeout=_config.flow_active_timeout,
        max_flows=_config.max_flows,
    )
    # The agent counts and logs an analyzer's exception and goes on; here it must surface as a crash.
    engine.pipeline.isolate_analyzers = False


def _frames(data: bytes) -> tuple[int, list[tuple[float, bytes]]]:
    r = ByteReader(data)
    linktype = LINKTYPES[r.u8() % len(LINKTYPES)]
    frames: list[tuple[float, bytes]] = []
    ts = 0.0
    while r.left >= 3 and len(frames) < MAX_FRAMES:
        step = r.u8()
        ts += 200.0 if step == 255 else step * 0.05  # 255: past the flow idle timeout
        frames.append((ts, r.take(r.uint(2) % 4096)))
    return linktype, frames


def fuzz_one(data: bytes) -> None:
    linktype, frames = _frames(data)
    start = 1_700_000_000.0
    capture = pcap_bytes([f for _, f in frames], linktype=linktype, start=start, times=[t for t, _ in frames])
    _fresh_session()
    errors = ENGINE.replay([as_file(capture)])
    assert not errors, f"a well-formed pcap was refused: {errors[0]}"
    ENGINE.finish()
    assert ENGINE.counters.packets == len(frames), f"{ENGINE.counters.packets} packets of {len(frames)}"
    for line in _events.getvalue().splitlines():
        event = json.loads(line)
        assert isinstance(event, dict) and "event_type" in event, f"malformed event {line[:200]!r}"


def seeds() -> list[bytes]:
    by_link: dict[int, list[bytes]] = {}
    for linktype, frame in sample_frames(400):
        by_link.setdefault(linktype, []).append(frame)
    out = []
    for linktype, frames in by_link.items():
        selector = LINKTYPES.index(linktype) if linktype in LINKTYPES else 0
        for i in range(0, len(frames), 8):
            chunk = frames[i : i + 8]
            out.append(
                bytes([selector]) + b"".join(bytes([1]) + len(f).to_bytes(2, "big") + f for f in chunk)
            )
            if len(out) >= 40:
                return out
    return out or [b"\0" + b"\1\0\x3c" + bytes(60)]
