"""``brainbench matrix run SPEC.toml``, and the matrix behind ``brainbench run a b --seed 0 --seed 1``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

LAUNCHER_HELP = "local (sequential) | local-gpus (a process per visible GPU) | ray (--ray-address)."


def register(app: typer.Typer) -> None:
    matrix_app = typer.Typer(
        help="Experiment matrices: encoders x tasks x subjects x seeds x hyperparameters.",
        no_args_is_help=True,
    )

    @matrix_app.command("run")
    def run(
        spec_path: Path = typer.Argument(
            ..., help="Matrix spec (TOML): name, \\[defaults], \\[axes], \\[\\[overrides]] (see docs/matrix.md)."
        ),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Check every cell (options, plugins, data), print the cells and exit."
        ),
        resume: bool = typer.Option(
            False, "--resume", help="Rerun only the cells the last run left unfinished."
        ),
        restart: bool = typer.Option(
            False, "--restart",
            help="Discard interrupted checkpoints of the cells and start them again (without it, a cell with "
            "an interrupted training refuses to start over it).",
        ),
        launcher: str = typer.Option("local", "--launcher", help=LAUNCHER_HELP),
        ray_address: str | None = typer.Option(
            None, "--ray-address", help="Ray cluster (default: start one here)."
        ),
        workers: int | None = typer.Option(
            None,
            "--workers",
            help="local-gpus: GPUs to use, or CPU worker processes on a machine without GPUs; "
            "ray: CPUs of the local instance.",
        ),
        cpus_per_cell: float = typer.Option(1, "--cpus-per-cell", help="ray: CPUs each cell asks for."),
        tracking_uri: str | None = typer.Option(
            None,
            "--tracking-uri",
            envvar="MLFLOW_TRACKING_URI",
            help="MLflow store (default sqlite:///mlflow.db).",
        ),
        experiment: str = typer.Option("brainbench", "--experiment", help="MLflow experiment name."),
        log_model: bool = typer.Option(
            False, "--log-model",
            help="Log every cell's trained encoder as an MLflow model (as `log_model = true` in the spec's "
            "[defaults] does); load one with mlflow.pyfunc.load_model(\"runs:/RUN_ID/model\").",
        ),
    ) -> None:
        """Run every cell of SPEC under one MLflow parent run; print the comparison at the end.

        Every cell is checked first (plugin names, declared options, data): a mistake in any cell stops
        the matrix before an MLflow run exists.
        """
        from brainbench.cli.options import check_launcher
        from brainbench.cli.preflight import check_cli_settings, preflight
        from brainbench.matrix.spec import Cell, expand, load_spec

        check_cli_settings({}, {}, resume=resume, restart=restart, experiment=experiment,
                           launch={"workers": workers, "cpus_per_cell": cpus_per_cell})
        check_launcher(launcher)
        spec = load_spec(spec_path)
        cells = expand(spec)
        if log_model:  # not part of the cell key: the same cells (and matrix id), their models logged too
            cells = [Cell(cell.config.with_changes(log_model=True), cell.details) for cell in cells]
        preflight([cell.config for cell in cells], spec_source=spec.source)
        if dry_run:
            print_cells(spec.name, cells)
            return
        execute(
            spec,
            cells,
            tracking_uri,
            experiment,
            resume,
            launcher,
            ray_address,
            workers=workers,
            cpus_per_cell=cpus_per_cell,
            restart=restart,
        )

    app.add_typer(matrix_app, name="matrix")


def print_cells(name: str, cells: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from brainbench.matrix.spec import matrix_id

    table = Table(title=f"matrix {name!r}: {len(cells)} cells (id {matrix_id([c.config for c in cells])})")
    table.add_column("key", no_wrap=True)
    for column in ("encoder", "task", "dataset", "subject", "seed", "options", "overrides"):
        table.add_column(column)
    for cell in cells:
        c = cell.config
        table.add_row(
            c.key,
            c.encoder,
            c.task,
            c.dataset or "(task's)",
            str(c.subject),
            str(c.seed),
            _options_text(c),
            "; ".join(cell.details),
        )
    Console().print(table)


def _options_text(config: Any) -> str:
    parts = []
    for kind in ("encoder", "task", "dataset", "target"):
        values = getattr(config, f"{kind}_options")
        parts += [f"{kind}.{k}={v}" for k, v in values.items()]
    return " ".join(parts)


def run_configs(
    configs: list[Any],
    tracking_uri: str | None,
    experiment: str,
    resume: bool,
    launcher: str,
    ray_address: str | None,
    name: str | None = None,
    spec: Any | None = None,
    workers: int | None = None,
    restart: bool = False,
) -> Any:
    """Run a list of RunConfigs as a matrix (the one-liner form); the spec logged is generated from them."""
    from brainbench.matrix.spec import Cell, matrix_id, spec_from_configs

    unique = list({config.key: config for config in configs}.values())
    spec = spec or spec_from_configs(unique, name or f"matrix-{matrix_id(unique)[:8]}")
    return execute(
        spec,
        [Cell(config) for config in unique],
        tracking_uri,
        experiment,
        resume,
        launcher,
        ray_address,
        workers=workers,
        restart=restart,
    )


def execute(
    spec: Any,
    cells: list[Any],
    tracking_uri: str | None,
    experiment: str,
    resume: bool,
    launcher: str,
    ray_address: str | None,
    workers: int | None = None,
    cpus_per_cell: float = 1,
    restart: bool = False,
) -> Any:
    from rich.console import Console

    from brainbench.matrix.execute import LaunchOptions, run_matrix
    from brainbench.matrix.summary import cell_rows, directions, group_rows, rich_table
    from brainbench.records.query import children
    from brainbench.records.tracker import SafeTracker

    console = Console()
    options = LaunchOptions(
        launcher=launcher, ray_address=ray_address, workers=workers, cpus_per_cell=cpus_per_cell, restart=restart
    )
    report = run_matrix(
        spec,
        cells,
        tracking_uri,
        experiment,
        resume,
        options,
        echo=lambda line: console.print(line, highlight=False, markup=False),
    )
    tracker = SafeTracker(tracking_uri, experiment)
    runs = children(tracker, report.parent_run_id)
    rows = cell_rows(runs, tracker)  # with per-item outcomes: item intervals
    console.print(rich_table(group_rows(rows), directions(rows), f"matrix {spec.name!r}"))
    console.print(
        f"[bold]{report.counts()}[/bold] | parent run {report.parent_run_id} "
        f"(experiment {experiment!r}); compare again with: brainbench compare {report.parent_run_id}",
        highlight=False,
    )
    _print_models(console, runs)
    if report.failed:
        for outcome in report.outcomes:
            if outcome.status != "FINISHED":
                console.print(f"[red]failed[/red] {outcome.label}: {outcome.error}", highlight=False)
        raise typer.Exit(1)
    return report


def _print_models(console: Any, runs: list[Any]) -> None:
    """Where the cells' logged models are (--log-model / log_model = true) and how to load one."""
    from brainbench.records.model import MODEL_NAME, MODEL_URI_TAG

    logged = [run for run in runs if run.tags.get(MODEL_URI_TAG)]
    if not logged:
        return
    console.print(
        f"{len(logged)} MLflow model(s) logged, one per cell run; load one with "
        f'mlflow.pyfunc.load_model("runs:/{logged[0].run_id}/{MODEL_NAME}").predict(voxels) ({logged[0].name})',
        highlight=False, markup=False,
    )
