"""One cell from the terminal: a progress display, an MLflow run, a results table."""

from __future__ import annotations

from typing import Any


def run_single(cell: Any, tracking_uri: str | None, experiment: str, resume: bool, restart: bool = False) -> None:
    """``cell``: a RunConfig, or the ResolvedCell preflight built (its plugin objects are not built again)."""
    from rich.console import Console

    from brainbench.cli.tables import results_table
    from brainbench.records.journal import StoreOfflineError
    from brainbench.records.tracker import SafeTracker
    from brainbench.reporting import RichReporter, TrackingReporter
    from brainbench.tracked_cell import run_tracked_cell

    console = Console()
    errors = Console(stderr=True)
    tracker = SafeTracker(tracking_uri, experiment)  # retries while other processes write the same SQLite file
    tracker.check()  # an unreachable server is reported before any training
    tracker.check_writable()  # so is a folder this run could not write
    try:
        result = run_tracked_cell(
            cell, tracker, lambda record: TrackingReporter(RichReporter(errors), record),
            resume=resume, restart=restart, say=errors.print,
        )
    except StoreOfflineError as exc:
        if getattr(exc, "cell_result", None) is not None:
            console.print(results_table(exc.cell_result))  # trained and evaluated: show it, then say how to log it
        raise
    console.print(results_table(result))
    console.print(
        f"[dim]{'SYNTHETIC data' if result.synthetic else 'real data'} | {result.n_parameters:,} parameters | "
        f"train {result.train_seconds:.1f}s, eval {result.eval_seconds:.1f}s | MLflow run {result.run_id} in "
        f"{tracker.uri} (experiment {experiment!r})[/dim]"
    )
