"""One cell from the terminal: a progress display, an MLflow run, a results table."""

from __future__ import annotations

import shutil

from brainbench.config import RunConfig


def cell_work_dir(config: RunConfig):
    from brainbench.paths import home

    return home() / "runs" / config.key


def run_single(config: RunConfig, tracking_uri: str | None, experiment: str, resume: bool) -> None:
    from rich.console import Console

    from brainbench.reporting import RichReporter, TrackingReporter
    from brainbench.runner import run_cell
    from brainbench.tracking import Tracker

    console = Console()
    tracker = Tracker(tracking_uri, experiment)
    tracker.check()  # an unreachable server is reported before any training
    work_dir = cell_work_dir(config)
    if not resume and work_dir.exists():
        shutil.rmtree(work_dir)
    with tracker.run(config.label(), tags={"brainbench.kind": "cell"}) as record:
        reporter = TrackingReporter(RichReporter(Console(stderr=True)), record)
        result = run_cell(config, reporter, work_dir, record=record)
    from brainbench.cli.tables import results_table

    console.print(results_table(result))
    console.print(
        f"[dim]{'SYNTHETIC data' if result.synthetic else 'real data'} | {result.n_parameters:,} parameters | "
        f"train {result.train_seconds:.1f}s, eval {result.eval_seconds:.1f}s | MLflow run {result.run_id} in "
        f"{tracker.uri} (experiment {experiment!r})[/dim]"
    )
