"""Local sequential launcher: cells run one after another in this process."""

from __future__ import annotations

from collections.abc import Callable

from brainbench.launch.jobs import CellJob, CellOutcome, execute_job


def run_local(jobs: list[CellJob], on_done: Callable[[CellOutcome], None]) -> list[CellOutcome]:
    outcomes = []
    for job in jobs:
        outcome = execute_job(job, worker="local")
        on_done(outcome)
        outcomes.append(outcome)
    return outcomes
