"""Launchers: where a matrix's cells run (in process, one process per GPU, a Ray cluster)."""

from __future__ import annotations

LAUNCHERS = ("local", "local-gpus", "ray")
