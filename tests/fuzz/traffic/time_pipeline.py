"""Per-input cost of the pipeline fuzz target, without libFuzzer (not a target: no ``fuzz_`` prefix).

``python -m tests.fuzz.traffic.time_pipeline [--instrument] [--repeat N] [CORPUS_DIR]``

Runs every input of the persistent corpus (default bench/out/fuzz/traffic/pipeline/corpus, or the
target's seeds when it is absent) through ``fuzz_one`` and prints the CPU time per input (best of
``--repeat`` passes; CPU time, so other processes on the machine matter less than for wall time)
and the part of it spent resetting the session. ``--instrument`` imports camwatch under atheris
instrumentation first, as tests/fuzz/atheris_main.py does, to see what the fuzzer pays per input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

DEFAULT_CORPUS = Path(__file__).resolve().parents[3] / "bench/out/fuzz/traffic/pipeline/corpus"
TARGET = "tests.fuzz.traffic.fuzz_pipeline"


def _load(instrument: bool) -> ModuleType:
    if not instrument:
        return importlib.import_module(TARGET)
    import atheris

    with atheris.instrument_imports(include=["agent", "analyzers"]):
        return importlib.import_module(TARGET)


def _cpu_per_input(run: Callable[[bytes], object], inputs: list[bytes], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for data in inputs:
            run(data)
        best = min(best, time.process_time() - started)
    return best / len(inputs)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="time_pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--instrument", action="store_true", help="atheris-instrument camwatch first")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    target = _load(args.instrument)
    if args.corpus.is_dir():
        inputs = [p.read_bytes() for p in sorted(args.corpus.iterdir()) if p.is_file()]
        source = str(args.corpus)
    else:
        inputs, source = target.seeds(), "the target's seeds"
    if not inputs:
        print(f"time_pipeline: {source}: no inputs", file=sys.stderr)
        return 2
    for data in inputs:  # first pass: lazy imports, caches, the corpus in memory
        target.fuzz_one(data)
    per_input = _cpu_per_input(target.fuzz_one, inputs, args.repeat)
    reset = _cpu_per_input(lambda _: target._fresh_session(), inputs, args.repeat)
    mode = "instrumented" if args.instrument else "uninstrumented"
    print(
        f"{len(inputs)} inputs from {source}, {mode}: {per_input * 1e6:.0f} us CPU per input "
        f"({1 / per_input:.0f}/s on one core), of which session reset {reset * 1e6:.1f} us"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
