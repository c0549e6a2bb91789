"""``brainbench compare [EXPERIMENT or PARENT RUN ID]``: the cells of a matrix, read back from MLflow."""

from __future__ import annotations

import re
from typing import Any

import typer

from brainbench.errors import BrainbenchError

FORMATS = ("table", "csv", "markdown", "json", "latex")
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare(
        target: str | None = typer.Argument(
            None,
            help="An experiment name (its latest matrix) or a parent run id. Default: experiment "
            "'brainbench'.",
        ),
        output_format: str = typer.Option(
            "table", "--format", "-f", help="table | csv | markdown | json | latex."
        ),
        baseline: str | None = typer.Option(
            None,
            "--baseline",
            "-b",
            help="An encoder (or row label, e.g. 'ridge alpha=10'): mark each row better / no difference / "
            "worse than it, by a paired test over the same test images, Holm-corrected.",
        ),
        tracking_uri: str | None = typer.Option(
            None,
            "--tracking-uri",
            envvar="MLFLOW_TRACKING_URI",
            help="MLflow store (default sqlite:///mlflow.db).",
        ),
        experiment: str = typer.Option(
            "brainbench", "--experiment", help="Experiment holding a parent run id."
        ),
        all_cells: bool = typer.Option(
            False, "--all", help="Every cell run of the experiment, not one matrix."
        ),
        interval: str = typer.Option(
            "seeds+items",
            "--interval",
            help="What intervals and paired tests resample: seeds+items (a hierarchical bootstrap: training "
            "seeds, then test images; the default), items (test images only, seeds averaged per image: the "
            "older, narrower view) or both (the item-only interval shown beside the hierarchical one).",
        ),
    ) -> None:
        """Rows: encoders (and settings) per subject over seeds; columns: test metrics with 95% intervals over
        training seeds and test images, best marked; with --baseline, paired tests against one encoder. See
        docs/compare.md."""
        from brainbench.matrix.summary import INTERVAL_LEVELS

        if output_format not in FORMATS:
            raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--format")
        if interval not in INTERVAL_LEVELS:
            raise typer.BadParameter(f"choose one of {', '.join(INTERVAL_LEVELS)}", param_hint="--interval")
        title, runs, tracker = select_runs(target, tracking_uri, experiment, all_cells)
        print_comparison(title, runs, output_format, baseline, tracker, interval)


def select_runs(
    target: str | None, tracking_uri: str | None, experiment: str, all_cells: bool = False
) -> tuple[str, list[Any], Any]:
    from brainbench.records.query import cell_runs, children, get_run, matrix_parents
    from brainbench.records.tracker import SafeTracker

    if target and RUN_ID.match(target):
        tracker = SafeTracker(tracking_uri, experiment)
        tracker.check()
        run = get_run(tracker, target)
        if run is None:
            raise BrainbenchError(f"no run {target} in {tracker.uri}")
        return f"matrix {run.name!r} (run {target}, {run.status})", children(tracker, target), tracker
    name = target or experiment
    tracker = SafeTracker(tracking_uri, name)
    tracker.check()
    _ensure_experiment(tracker, name)
    parents = [] if all_cells else matrix_parents(tracker)
    if parents:
        parent = parents[0]
        return (
            f"matrix {parent.name!r} (latest in experiment {name!r}, run {parent.run_id}, {parent.status})",
            children(tracker, parent.run_id),
            tracker,
        )
    runs = cell_runs(tracker)
    if not runs:
        raise BrainbenchError(f"experiment {name!r} in {tracker.uri} has no cell runs yet")
    return f"all cell runs of experiment {name!r}", runs, tracker


def _ensure_experiment(tracker: Any, name: str) -> None:
    # Tracker creates a missing experiment on first use; reading must not, so look first.
    from brainbench.records.query import experiment_exists

    if not experiment_exists(tracker.uri, name):
        raise BrainbenchError(
            f"no experiment {name!r} in {tracker.uri}; pass an experiment name or a parent run id"
        )


def print_comparison(
    title: str,
    runs: list[Any],
    output_format: str,
    baseline: str | None = None,
    tracker: Any | None = None,
    interval: str = "seeds+items",
) -> None:
    from brainbench.matrix.summary import (
        BaselineError,
        cell_rows,
        compare_to_baseline,
        directions,
        group_rows,
        to_csv,
        to_json,
        to_latex,
        to_markdown,
    )

    rows = cell_rows(runs, tracker)
    unfinished = [row for row in rows if row.status != "FINISHED"]
    if not rows:
        raise BrainbenchError(f"{title}: no cells ran (the matrix has no child runs)")
    if len(unfinished) == len(rows):
        first = next((row.error for row in unfinished if row.error), None)
        raise BrainbenchError(
            f"{title}: no cell finished ({_status_counts(unfinished)}), so there is nothing to compare"
            + (f"; first error: {first}" if first else "")
        )
    groups = group_rows(rows, interval)
    higher = directions(rows)
    if baseline:
        try:
            compare_to_baseline(groups, baseline, higher)
        except BaselineError as exc:
            raise BrainbenchError(str(exc)) from None
    if output_format == "csv":
        typer.echo(to_csv(groups), nl=False)
    elif output_format == "markdown":
        typer.echo(to_markdown(groups, higher, baseline), nl=False)
    elif output_format == "json":
        typer.echo(to_json(groups, higher, baseline))
    elif output_format == "latex":
        typer.echo(to_latex(groups, higher, baseline), nl=False)
    else:
        from rich.console import Console

        from brainbench.matrix.summary import rich_table

        console = Console()
        console.print(rich_table(groups, higher, title, baseline))
        if unfinished:
            console.print(
                f"[yellow]{len(unfinished)} cell(s) not finished:[/yellow] "
                + ", ".join(f"{row.label} ({row.status})" for row in unfinished),
                highlight=False,
            )
    if unfinished and output_format != "table":
        typer.echo(f"note: {len(unfinished)} cell(s) not finished ({_status_counts(unfinished)})", err=True)


def _status_counts(rows: list[Any]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
