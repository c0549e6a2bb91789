"""One cell as a self-contained job: everything a worker needs travels in it, nothing in driver memory."""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

from brainbench.config import RunConfig


@dataclass
class CellJob:
    config: dict[str, Any]  # RunConfig.to_dict()
    tracking_uri: str
    experiment: str
    parent_run_id: str
    matrix_id: str
    resume: bool = False  # keep the cell's work dir (checkpoints) from an interrupted run
    system_metrics: bool = True
    restart: bool = False  # discard an interrupted run's checkpoints (without it, a fresh start refuses to)

    @property
    def key(self) -> str:
        return RunConfig.from_dict(self.config).key


@dataclass
class CellOutcome:
    key: str
    label: str
    status: str  # FINISHED | FAILED | KILLED
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    n_parameters: int = 0
    train_seconds: float = 0.0
    wall_seconds: float = 0.0
    error: str | None = None
    worker: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cell_tags(config: RunConfig, matrix_id: str) -> dict[str, str]:
    return {"brainbench.kind": "cell", "brainbench.cell_key": config.key, "brainbench.matrix_id": matrix_id}


def execute_job(job: CellJob, worker: str = "") -> CellOutcome:
    """One cell as a child run of the parent: a failure becomes a FAILED outcome; Ctrl-C propagates."""
    from brainbench.records.tracker import SafeTracker
    from brainbench.reporting import LineReporter, TrackingReporter
    from brainbench.tracked_cell import run_tracked_cell

    config = RunConfig.from_dict(job.config)
    started = time.perf_counter()
    tracker = SafeTracker(job.tracking_uri, job.experiment)
    run_ids: list[str] = []
    try:
        # one line per cell and about every 10 s: the epoch, loss and time left, as cells may run side by side
        result = run_tracked_cell(
            config, tracker, lambda record: TrackingReporter(LineReporter(config.label()), record),
            resume=job.resume, restart=job.restart, parent_run_id=job.parent_run_id,
            tags={**cell_tags(config, job.matrix_id), "brainbench.worker": worker},
            system_metrics=job.system_metrics, started=run_ids.append,
        )
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return CellOutcome(
            config.key,
            config.label(),
            "FAILED",
            run_ids[0] if run_ids else None,
            error=detail,
            wall_seconds=time.perf_counter() - started,
            worker=worker,
        )
    return CellOutcome(
        config.key,
        config.label(),
        "FINISHED",
        result.run_id,
        metrics=result.metric_dict(),
        n_parameters=result.n_parameters,
        train_seconds=result.train_seconds,
        wall_seconds=time.perf_counter() - started,
        worker=worker,
    )
