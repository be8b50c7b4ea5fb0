"""Deterministic scenario captures for detector tests (written with agent.capture.writer)."""
