"""camwatch agent: the daemon and CLI (capture sources, pipeline, flow table, state, events, metrics)."""

__version__ = "0.1.0"
