"""Run a matrix: one MLflow parent run, a child per cell (through a launcher), resume, summary and figures."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from brainbench.errors import BrainbenchError
from brainbench.launch import LAUNCHERS
from brainbench.launch.jobs import CellJob, CellOutcome
from brainbench.matrix.spec import Cell, MatrixSpec, matrix_id
from brainbench.records.query import KIND_TAG, MATRIX_TAG


@dataclass
class LaunchOptions:
    launcher: str = "local"
    ray_address: str | None = None
    workers: int | None = None  # local-gpus: cap on GPUs used, or CPU workers when there is no GPU
    cpus_per_cell: float = 1
    threads_per_worker: int | None = None
    system_metrics: bool = True
    restart: bool = False  # cells discard interrupted checkpoints instead of refusing to start over them


@dataclass
class MatrixReport:
    name: str
    matrix_id: str
    parent_run_id: str
    resumed: bool
    n_cells: int
    skipped: int
    outcomes: list[CellOutcome] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)

    @property
    def ran(self) -> int:
        return sum(o.status == "FINISHED" for o in self.outcomes)

    @property
    def failed(self) -> int:
        return sum(o.status != "FINISHED" for o in self.outcomes)

    def counts(self) -> str:
        return f"ran {self.ran}, skipped {self.skipped} (finished before), failed {self.failed}"


def check_cells(cells: list[Cell]) -> None:
    """Unknown plugin names stop the matrix before any run is created."""
    from brainbench.plugins import get_plugins

    plugins = get_plugins()
    problems = []
    for kind, registry in (
        ("encoder", plugins.encoders),
        ("task", plugins.tasks),
        ("dataset", plugins.datasets),
    ):
        names = sorted({getattr(cell.config, kind) for cell in cells} - {None})
        unknown = [name for name in names if name not in registry]
        if unknown:
            problems.append(
                f"unknown {kind}(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(sorted(registry.names()))}"
            )
    if problems:
        raise BrainbenchError("; ".join(problems))


def run_matrix(
    spec: MatrixSpec,
    cells: list[Cell],
    tracking_uri: str | None,
    experiment: str,
    resume: bool,
    options: LaunchOptions,
    echo: Callable[[str], None] = print,
) -> MatrixReport:
    from brainbench.records.query import finished_cell_keys, matrix_parents, set_status, set_tags
    from brainbench.records.tracker import SafeTracker

    if options.launcher not in LAUNCHERS:
        raise BrainbenchError(f"unknown launcher {options.launcher!r}; choose one of {', '.join(LAUNCHERS)}")
    if not cells:
        raise BrainbenchError(f"{spec.source}: the matrix has no cells")
    check_cells(cells)
    mid = matrix_id([cell.config for cell in cells])
    tracker = SafeTracker(tracking_uri, experiment)
    tracker.check()
    tracker.check_writable()

    previous = matrix_parents(tracker, mid)[:1] if resume else []
    done: set[str] = set()
    parent_id: str | None = None
    if previous:
        parent_id = previous[0].run_id
        done = finished_cell_keys(tracker, parent_id) & {cell.config.key for cell in cells}
        echo(
            f"resuming matrix {spec.name!r} ({mid}) in parent run {parent_id} (was {previous[0].status}): "
            f"{len(done)} of {len(cells)} cells finished before"
        )
        set_status(tracker, parent_id, "RUNNING")
    elif resume:
        echo(f"no earlier run of matrix {spec.name!r} ({mid}) in experiment {experiment!r}; starting afresh")

    tags = {KIND_TAG: "matrix", MATRIX_TAG: mid, "brainbench.matrix_name": spec.name}
    report: MatrixReport | None = None
    with tracker.run(spec.name, tags=tags, run_id=parent_id) as parent:
        report = MatrixReport(spec.name, mid, parent.run_id, bool(previous), len(cells), len(done))
        set_tags(tracker, parent.run_id, {"brainbench.launcher": options.launcher})
        if not previous:
            parent.log_params({"matrix.name": spec.name, "matrix.id": mid, "matrix.n_cells": len(cells)})
        parent.log_text(spec.text, "matrix.toml")
        jobs = [
            CellJob(
                cell.config.to_dict(),
                tracker.uri,
                experiment,
                parent.run_id,
                mid,
                resume=resume,
                system_metrics=options.system_metrics,
                restart=options.restart,
            )
            for cell in cells
            if cell.config.key not in done
        ]
        echo(
            f"matrix {spec.name!r}: {len(cells)} cells, {len(jobs)} to run "
            f"with launcher {options.launcher!r}; MLflow parent run {parent.run_id} in {tracker.uri}"
        )
        started = time.perf_counter()

        def on_done(outcome: CellOutcome) -> None:
            report.outcomes.append(outcome)
            echo(_progress_line(outcome, len(report.outcomes), len(jobs)))

        try:
            _launch(jobs, on_done, options)
        except KeyboardInterrupt:
            echo(
                f"interrupted: {report.counts()}; {len(jobs) - len(report.outcomes)} cells not run. "
                "Run the same command with --resume to finish."
            )
            raise
        parent.log_metrics(
            {
                "cells.finished": report.ran + report.skipped,
                "cells.failed": report.failed,
                "wall_seconds": time.perf_counter() - started,
            }
        )
        report.artifacts = _log_summary(tracker, parent, echo)
    if report.failed:
        set_status(tracker, report.parent_run_id, "FAILED")  # so --resume picks it up to retry those cells
        set_tags(tracker, report.parent_run_id, {"brainbench.error": f"{report.failed} cell(s) failed"})
    return report


def _launch(jobs: list[CellJob], on_done: Callable[[CellOutcome], None], options: LaunchOptions) -> None:
    if not jobs:
        return
    if options.launcher == "local":
        from brainbench.launch.local import run_local

        run_local(jobs, on_done)
    elif options.launcher == "local-gpus":
        from brainbench.launch.local_gpus import run_local_gpus

        run_local_gpus(jobs, on_done, workers=options.workers, threads_per_worker=options.threads_per_worker)
    else:
        from brainbench.launch.ray_cluster import run_ray

        run_ray(
            jobs,
            on_done,
            address=options.ray_address,
            cpus_per_cell=options.cpus_per_cell,
            local_cpus=options.workers,
        )


def _progress_line(outcome: CellOutcome, done: int, total: int) -> str:
    head = f"[{done}/{total}] {outcome.label} {outcome.status} in {outcome.wall_seconds:.1f}s"
    if outcome.status != "FINISHED":
        return f"{head}: {outcome.error}"
    shown = ", ".join(f"{k}={v:.4f}" for k, v in list(outcome.metrics.items())[:2])
    return f"{head} ({shown})"


def _log_summary(tracker: object, parent: object, echo: Callable[[str], None]) -> list[str]:
    """Summary tables and figures of every child (this session's and earlier ones) into the parent run."""
    from brainbench.matrix.figures import write_figures
    from brainbench.matrix.summary import (
        cell_rows,
        cells_csv,
        comparison_table,
        directions,
        group_rows,
        parent_metrics,
        to_csv,
        to_markdown,
    )
    from brainbench.records.query import children

    try:
        runs = children(tracker, parent.run_id)  # type: ignore[arg-type, attr-defined]
        try:
            _log_parent_inputs(tracker, parent, [run.run_id for run in runs])
        except Exception as exc:  # a Dataset column left empty must not cost the summary
            echo(f"warning: could not log the cells' dataset inputs on the parent run: {type(exc).__name__}: {exc}")
        rows = cell_rows(runs, tracker)  # type: ignore[arg-type]
        groups = group_rows(rows)
        higher = directions(rows)
        parent.log_metrics(parent_metrics(groups))  # type: ignore[attr-defined]
        parent.log_table(comparison_table(groups), "summary/comparison.json")  # type: ignore[attr-defined]
        parent.log_text(cells_csv(rows), "summary/cells.csv")  # type: ignore[attr-defined]
        parent.log_text(to_csv(groups), "summary/summary.csv")  # type: ignore[attr-defined]
        parent.log_text(to_markdown(groups, higher), "summary/summary.md")  # type: ignore[attr-defined]
        names = ["summary/cells.csv", "summary/summary.csv", "summary/summary.md", "summary/comparison.json"]
        with tempfile.TemporaryDirectory() as folder:
            for path in write_figures(groups, rows, Path(folder)):
                parent.log_artifact(path, "figures")  # type: ignore[attr-defined]
                names.append(f"figures/{path.name}")
        return names
    except Exception as exc:  # the cells' results are safe in their own runs; say what went wrong
        echo(f"warning: could not write the matrix summary: {type(exc).__name__}: {exc}")
        return []


def _log_parent_inputs(tracker: object, parent: object, child_ids: list[str]) -> None:
    """The union of the children's dataset inputs on the parent run too, so the runs table's Dataset column
    says what the matrix read (each split once, however many cells read it; a resumed matrix adds only new
    ones)."""
    import json

    client = tracker.client  # type: ignore[attr-defined]

    def identity(item: object) -> tuple[str, str, str]:
        context = {tag.key: tag.value for tag in item.tags}.get("mlflow.data.context", "")  # type: ignore[attr-defined]
        return item.dataset.name, item.dataset.digest, context  # type: ignore[attr-defined]

    seen = {identity(item) for item in client.get_run(parent.run_id).inputs.dataset_inputs}  # type: ignore[attr-defined]
    for run_id in child_ids:
        for item in client.get_run(run_id).inputs.dataset_inputs:
            key = identity(item)
            if key in seen:
                continue
            seen.add(key)
            dataset = item.dataset
            try:
                source = json.loads(dataset.source).get("uri", dataset.source)
                profile = json.loads(dataset.profile) if dataset.profile else {}
            except (ValueError, AttributeError):
                source, profile = dataset.source, {}
            parent.log_dataset(dataset.name, dataset.digest, str(source), key[2], profile)  # type: ignore[attr-defined]
