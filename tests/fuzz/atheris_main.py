"""Per-target fuzzing process: instrument camwatch, seed the corpus, hand control to libFuzzer.

Usage (normally started by ``tests.fuzz.run``)::

    python -m tests.fuzz.atheris_main tests.fuzz.traffic.fuzz_dns CORPUS_DIR [libFuzzer flags...]

Nothing from ``agent``/``analyzers`` may be imported at module level here: atheris only
instruments modules imported inside ``instrument_imports()``.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import traceback
from pathlib import Path

# Exit code telling the runner the target module could not even be imported / seeded.
EXIT_IMPORT_ERROR = 3
DEFAULT_MAX_LEN = 65536
DEFAULT_TIMEOUT_S = 10
INSTRUMENTED_PACKAGES = ("agent", "analyzers")


def _load_and_seed(module_name: str, corpus: Path):  # type: ignore[no-untyped-def]
    """Import the target, write its seeds and run each once, all while instrumenting imports:
    camwatch modules imported lazily (inside functions) are then instrumented too."""
    import atheris

    with atheris.instrument_imports(include=list(INSTRUMENTED_PACKAGES)):
        module = importlib.import_module(module_name)
        seeds = module.seeds()
        for seed in seeds:
            module.fuzz_one(seed)
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        name = hashlib.sha1(seed).hexdigest()  # a file name, not security
        path = corpus / name
        if not path.exists():
            path.write_bytes(seed)
    return module, len(seeds)


def _has_flag(flags: list[str], name: str) -> bool:
    return any(flag.startswith(f"-{name}=") for flag in flags)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: atheris_main MODULE CORPUS_DIR [libFuzzer flags]", file=sys.stderr)
        return 2
    module_name, corpus = argv[1], Path(argv[2])
    flags = argv[3:]
    try:
        module, seeded = _load_and_seed(module_name, corpus)
    except Exception as exc:
        # The runner reports this line; the traceback helps whoever fixes the target.
        traceback.print_exc()
        print(f"FUZZ-IMPORT-ERROR: {module_name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return EXIT_IMPORT_ERROR
    print(f"FUZZ-SEEDS: {seeded}", file=sys.stderr, flush=True)

    if not _has_flag(flags, "max_len"):
        flags.append(f"-max_len={getattr(module, 'MAX_LEN', DEFAULT_MAX_LEN)}")
    if not _has_flag(flags, "timeout"):
        flags.append(f"-timeout={getattr(module, 'TIMEOUT_S', DEFAULT_TIMEOUT_S)}")
    if not _has_flag(flags, "print_final_stats"):
        flags.append("-print_final_stats=1")

    import atheris

    atheris.Setup([argv[0], *flags, str(corpus)], module.fuzz_one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
