"""The whole decode hot path through the public replay API: a pcap wrapping fuzzed frames (link
type chosen by the input) goes through Engine.replay() and Engine.finish(), so link / network /
transport slicing, the flow table with its timers, dispatch and every registered analyzer run.

Input: byte 0 picks the link type; then records of [time step u8][length u16][frame bytes]. A
well-formed pcap must replay without a CaptureError and every event must be one valid JSON line.

Building an Engine costs ~0.1 s (rule files), so one is built per process. Each input then starts
from state equal to a fresh session's: the whole object graph of the engine (flow table, inventory,
passive DNS, counters, policy, event writer, analyzer runtime state) is put back in place to the
values it had right after set-up (tests/fuzz/traffic/session_state.py; only the loaded rules and
the state store are kept as they are), and everything the input wrote to the state store is rolled
back, so an input's outcome does not depend on earlier ones (tests/unit/test_fuzz_pipeline_isolation.py).
"""

from __future__ import annotations

import atexit
import gc
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from agent.config import Config
from agent.engine import Engine
from tests.fuzz.traffic.common import ByteReader, as_file, pcap_bytes, sample_frames
from tests.fuzz.traffic.session_state import SessionSnapshot

MAX_LEN = 16384
TIMEOUT_S = 20
MAX_FRAMES = 64
LINKTYPES = (1, 101, 113, 276, 228, 229, 0, 1)  # Ethernet, raw IP, SLL, SLL2, raw v4, raw v6, null
# Attributes holding rules loaded at set-up (never changed by a session): shared, not reset. The
# isolation test checks that claim by fingerprinting them before and after many inputs.
SHARED_ATTRIBUTES = frozenset(
    {
        "config",
        "catalogue",
        "geo",
        "store",
        "dispatch",
        "known_rules",
        "_local_nets",
        "rules",
        "hashes",
        "sigs",
        "creds",
        "services",
        "signatures",
        "by_proto",
        "worker",
        "defaults",
        "paths",
    }
)

_state_dir = Path(tempfile.mkdtemp(prefix="camwatch-fuzz-pipeline-"))
atexit.register(shutil.rmtree, _state_dir, True)
_config = Config()
_config.state_dir = _state_dir
_config.analyzer_options = {"updates": {"scan": False}}  # no firmware worker processes
_events = io.StringIO()
ENGINE = Engine(_config, events=_events)
# The agent counts and logs an analyzer's exception and goes on; here it must surface as a crash.
ENGINE.pipeline.isolate_analyzers = False


def _discard_writes() -> None:
    """Engine.commit() replacement: roll the input's store writes back instead of keeping them."""
    conn = ENGINE.store._c
    if conn.in_transaction:
        conn.execute("ROLLBACK")


ENGINE.commit = _discard_writes  # type: ignore[method-assign]
PRISTINE = SessionSnapshot([ENGINE], shared_names=SHARED_ATTRIBUTES)
if "atheris" in sys.modules:
    # Under the fuzzer only: the ~40k long-lived objects (rules, modules, the pristine session)
    # leave the collector's generations, so collections walk only what an input allocated.
    gc.freeze()


def _fresh_session() -> None:
    # An input that crashed mid-way left its transaction open (the regression test goes on).
    _discard_writes()
    PRISTINE.restore()
    _events.seek(0)
    _events.truncate()
    # A fresh engine's commit clock starts now: no periodic commit falls inside a short input.
    ENGINE._last_commit = time.monotonic()


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
