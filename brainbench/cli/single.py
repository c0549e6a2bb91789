"""One cell from the terminal: a progress display, an MLflow run, a results table."""

from __future__ import annotations

from brainbench.config import RunConfig


def run_single(
    config: RunConfig, tracking_uri: str | None, experiment: str, resume: bool, restart: bool = False
) -> None:
    from rich.console import Console

    from brainbench.cli.tables import results_table
    from brainbench.records.journal import StoreOfflineError
    from brainbench.records.tracker import SafeTracker
    from brainbench.reporting import RichReporter, TrackingReporter
    from brainbench.runner import run_cell
    from brainbench.workdirs import claim_run_folder

    console = Console()
    errors = Console(stderr=True)
    tracker = SafeTracker(tracking_uri, experiment)  # retries while other processes write the same SQLite file
    tracker.check()  # an unreachable server is reported before any training
    tracker.check_writable()  # so is a folder this run could not write
    # A folder of this run's own (see brainbench/workdirs.py): runs of the same cell never share files.
    with claim_run_folder(config.key, config.label(), resume, say=errors.print, restart=restart) as folder:
        tags = {"brainbench.kind": "cell", "brainbench.work_dir": str(folder.path)}
        try:
            # every record is also kept in the run folder: a store that goes away mid-run loses nothing
            with tracker.run(config.label(), tags=tags, keep_in=folder.path) as record:
                folder.note_run_id(record.run_id)
                reporter = TrackingReporter(RichReporter(errors), record)
                result = run_cell(config, reporter, folder.path, record=record)
        except StoreOfflineError:
            console.print(results_table(result))  # trained and evaluated: show it, then say how to log it
            raise
    console.print(results_table(result))
    console.print(
        f"[dim]{'SYNTHETIC data' if result.synthetic else 'real data'} | {result.n_parameters:,} parameters | "
        f"train {result.train_seconds:.1f}s, eval {result.eval_seconds:.1f}s | MLflow run {result.run_id} in "
        f"{tracker.uri} (experiment {experiment!r})[/dim]"
    )
