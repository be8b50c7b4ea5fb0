"""camwatch agent: the daemon and CLI (capture sources, pipeline, flow table, state, events, metrics)."""

import os

__version__ = "0.1.0"

# numpy (agent.vectordecode) starts an OpenBLAS worker thread at import unless told not to. camwatch
# needs no BLAS threads, and a thread that exists before `camwatch run --user` drops privileges keeps
# its own capability sets (they are per thread; agent/daemon.py refuses to run then).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
