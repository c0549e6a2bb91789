"""``brainbench report [MATRIX]``: a matrix as report.html (self-contained) and report.md, for a paper."""

from __future__ import annotations

from pathlib import Path

import typer

from brainbench.errors import BrainbenchError


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        target: str | None = typer.Argument(
            None, help="A parent run id, or an experiment name (its latest matrix). Default: 'brainbench'."
        ),
        output: Path | None = typer.Option(
            None, "--output", "-o", help="Folder for report.html, report.md, figures/ (default report-<name>)."
        ),
        baseline: str | None = typer.Option(
            None, "--baseline", "-b", help="Paired tests of every row against this encoder (see compare)."
        ),
        tracking_uri: str | None = typer.Option(
            None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow store (default sqlite:///mlflow.db)."
        ),
        experiment: str = typer.Option("brainbench", "--experiment", help="Experiment holding a parent run id."),
    ) -> None:
        """The comparison table with paired tests, the figures, the recipe, data digests and rerun commands."""
        from brainbench.cli.compare_cmd import RUN_ID, _ensure_experiment
        from brainbench.matrix.report import collect, write_report
        from brainbench.matrix.summary import BaselineError
        from brainbench.records.query import children, get_run, matrix_parents
        from brainbench.records.tracker import SafeTracker

        name = experiment if target is None or RUN_ID.match(target) else target
        tracker = SafeTracker(tracking_uri, name)
        tracker.check()
        _ensure_experiment(tracker, name)
        if target and RUN_ID.match(target):
            parent = get_run(tracker, target)
            if parent is None:
                raise BrainbenchError(f"no run {target} in {tracker.uri}")
        else:
            parents = matrix_parents(tracker)
            if not parents:
                raise BrainbenchError(f"experiment {name!r} in {tracker.uri} has no matrix runs")
            parent = parents[0]
        runs = children(tracker, parent.run_id)
        if not any(run.status == "FINISHED" for run in runs):
            raise BrainbenchError(f"matrix {parent.name!r} ({parent.run_id}) has no finished cells to report")
        try:
            data = collect(tracker, parent, runs, baseline)
        except BaselineError as exc:
            raise BrainbenchError(str(exc)) from None
        folder = output or Path(f"report-{parent.name}")
        for path in write_report(data, folder):
            typer.echo(f"wrote {path}")
