"""One cell as one tracked run, the same for ``brainbench run`` and for every launcher's worker: a run folder
of its own (brainbench/workdirs.py), an MLflow run kept in that folder too (brainbench/journal.py), then the
cell itself (brainbench.runner.run_cell)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from brainbench.config import RunConfig


def run_tracked_cell(
    cell: Any,
    tracker: Any,
    reporter_for: Callable[[Any], Any],
    *,
    resume: bool = False,
    restart: bool = False,
    tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    system_metrics: bool = False,
    say: Callable[[str], None] | None = None,
    started: Callable[[str], None] | None = None,
) -> Any:
    """Run ``cell`` (a RunConfig, or a ResolvedCell preflight built) as one MLflow run; returns its CellResult.

    ``reporter_for(record)``: the reporter the cell talks to. ``started(run_id)``: told the run's id as soon
    as it exists (a failed cell's outcome names it). A store that goes offline mid-run ends in a
    StoreOfflineError that carries the cell's result (``.cell_result``) when it had finished.
    """
    from brainbench.records.journal import StoreOfflineError
    from brainbench.records.record import SystemMetrics
    from brainbench.runner import run_cell
    from brainbench.workdirs import claim_run_folder

    config: RunConfig = getattr(cell, "config", cell)
    result = None
    try:
        with claim_run_folder(config.key, config.label(), resume, say=say, restart=restart) as folder:
            run_tags = {"brainbench.kind": "cell", **(tags or {}), "brainbench.work_dir": str(folder.path)}
            # every record is also kept in the run folder: a store that goes away mid-run loses nothing
            with tracker.run(config.label(), parent_run_id=parent_run_id, tags=run_tags,
                             keep_in=folder.path) as record:
                folder.note_run_id(record.run_id)
                if started is not None:
                    started(record.run_id)
                monitor = SystemMetrics(tracker.uri, record.run_id) if system_metrics else contextlib.nullcontext()
                with monitor:
                    result = run_cell(cell, reporter_for(record), folder.path, record=record)
    except StoreOfflineError as exc:
        exc.cell_result = result  # trained and evaluated: the caller may still show it
        raise
    return result
