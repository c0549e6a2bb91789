"""``brainbench compare [EXPERIMENT or PARENT RUN ID]``: the cells of a matrix, read back from MLflow."""

from __future__ import annotations

import re
from typing import Any

import typer

from brainbench.errors import BrainbenchError

FORMATS = ("table", "csv", "markdown", "json")
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare(
        target: str | None = typer.Argument(
            None,
            help="An experiment name (its latest matrix) or a parent run id. Default: experiment "
            "'brainbench'.",
        ),
        output_format: str = typer.Option("table", "--format", "-f", help="table | csv | markdown | json."),
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
    ) -> None:
        """Rows: cells grouped over seeds; columns: test metrics as mean ± 95% t-interval, best marked."""
        if output_format not in FORMATS:
            raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--format")
        title, runs = select_runs(target, tracking_uri, experiment, all_cells)
        print_comparison(title, runs, output_format)


def select_runs(
    target: str | None, tracking_uri: str | None, experiment: str, all_cells: bool = False
) -> tuple[str, list[Any]]:
    from brainbench.tracking_query import SafeTracker, cell_runs, children, get_run, matrix_parents

    if target and RUN_ID.match(target):
        tracker = SafeTracker(tracking_uri, experiment)
        tracker.check()
        run = get_run(tracker, target)
        if run is None:
            raise BrainbenchError(f"no run {target} in {tracker.uri}")
        return f"matrix {run.name!r} (run {target})", children(tracker, target)
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
        )
    runs = cell_runs(tracker)
    if not runs:
        raise BrainbenchError(f"experiment {name!r} in {tracker.uri} has no cell runs yet")
    return f"all cell runs of experiment {name!r}", runs


def _ensure_experiment(tracker: Any, name: str) -> None:
    # Tracker creates a missing experiment on first use; reading must not, so look first.
    from brainbench.tracking_query import experiment_exists

    if not experiment_exists(tracker.uri, name):
        raise BrainbenchError(
            f"no experiment {name!r} in {tracker.uri}; pass an experiment name or a parent run id"
        )


def print_comparison(title: str, runs: list[Any], output_format: str) -> None:
    from brainbench.matrix.summary import cell_rows, directions, group_rows, to_csv, to_json, to_markdown

    rows = cell_rows(runs)
    groups = group_rows(rows)
    higher = directions(rows)
    if output_format == "csv":
        typer.echo(to_csv(groups), nl=False)
    elif output_format == "markdown":
        typer.echo(to_markdown(groups, higher), nl=False)
    elif output_format == "json":
        typer.echo(to_json(groups, higher))
    else:
        from rich.console import Console

        from brainbench.matrix.summary import rich_table

        console = Console()
        console.print(rich_table(groups, higher, title))
        unfinished = [row for row in rows if row.status != "FINISHED"]
        if unfinished:
            console.print(
                f"[yellow]{len(unfinished)} cell(s) not finished:[/yellow] "
                + ", ".join(f"{row.label} ({row.status})" for row in unfinished),
                highlight=False,
            )
