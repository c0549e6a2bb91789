"""``brainbench reproduce PAPER``: a paper's experiments as one resumable matrix, then one report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

HELP = """Reproduce a paper: run its experiments (brainbench/papers/PAPER.toml) as one matrix and write one
report (HTML + Markdown) with every table and figure in the paper's order, the published numbers beside ours.

On the simulator by default; --data-path (NSD) and --god-path (GOD) for real data. Resumable: running the
same command again skips the cells that finished (--fresh starts over). --dry-run lists the cells and the
expected time."""


def register(app: typer.Typer) -> None:
    @app.command("reproduce", help=HELP)
    def reproduce(
        paper: str = typer.Argument(..., help="The paper: litemind."),
        budget: str = typer.Option(
            "quick", "--budget",
            help="quick: every encoder's quick recipe (minutes per cell on a CPU; the simulator at its demo "
            "scale) | reference: the papers' recipes (the simulator at real NSD sizes).",
        ),
        data_path: str | None = typer.Option(None, "--data-path", help="Real NSD folder (any layout `run` reads)."),
        god_path: str | None = typer.Option(None, "--god-path", help="Real GOD folder (bdpy Subject*.h5)."),
        scale: str | None = typer.Option(
            None, "--scale", help="Simulator scale: tiny | small | nsd (default: small for quick, nsd for reference)."
        ),
        only: list[str] = typer.Option(
            [], "--only", help="Experiments to keep (repeatable or comma-separated), e.g. retrieval,depth."
        ),
        subject: list[int] = typer.Option([], "--subject", "-s", help="Subjects to keep (repeatable)."),
        opt: list[str] = typer.Option(
            [], "--opt", "-o", help="Encoder option KEY=VALUE for every encoder that declares it (repeatable)."
        ),
        device: str | None = typer.Option(None, "--device", help="cpu | cuda | auto (default: each cell's)."),
        epochs: int | None = typer.Option(
            None, "--epochs", min=1, help="Epochs of every trained cell (a smoke run; default: each recipe's)."
        ),
        dry_run: bool = typer.Option(False, "--dry-run", help="List the cells and the expected time; run nothing."),
        fresh: bool = typer.Option(False, "--fresh", help="A new matrix run instead of resuming the last one."),
        report_only: bool = typer.Option(
            False, "--report-only",
            help="Train nothing: write the report from the latest run of each cell in the MLflow experiment "
            "(whichever matrix ran it), e.g. after editing the published numbers or stopping a run midway.",
        ),
        out: Path = typer.Option(Path("litemind-report"), "--out", help="Folder of report.md and report.html."),
        launcher: str = typer.Option("local", "--launcher", help="local | local-gpus | ray (as `matrix run`)."),
        workers: int | None = typer.Option(None, "--workers", help="Worker processes (as `matrix run`)."),
        tracking_uri: str | None = typer.Option(
            None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow store (default sqlite:///mlflow.db)."
        ),
        experiment: str = typer.Option("litemind-paper", "--experiment", help="MLflow experiment name."),
    ) -> None:
        from brainbench.cli.options import check_launcher, parse_key_values
        from brainbench.matrix.spec import load_spec
        from brainbench.papers import published_path, spec_path
        from brainbench.papers.plan import PlanOptions, make_plan

        check_launcher(launcher)
        if scale is not None and scale not in ("tiny", "small", "nsd"):
            raise typer.BadParameter(f"{scale!r}: choose tiny, small or nsd", param_hint="--scale")
        spec = load_spec(spec_path(paper))
        options = PlanOptions(
            budget=budget, data_path=data_path, god_path=god_path, scale=scale,
            only=[name.strip() for item in only for name in item.split(",") if name.strip()],
            subjects=list(subject), encoder_options=parse_key_values(opt, "--opt"), device=device, epochs=epochs,
        )
        plan = make_plan(spec, options)
        if not plan.cells:
            raise typer.BadParameter("no cell left to run (see --only / --subject)", param_hint="--only")
        from brainbench.cli.preflight import check_names, check_options

        check_names([cell.config for cell in plan.cells])
        check_options([cell.config for cell in plan.cells], spec.source)
        if dry_run:
            print_plan(plan)
            return
        if report_only:
            write_report_only(plan, published_path(paper), out, tracking_uri, experiment,
                              command_options(budget, data_path, god_path, scale, options))
            return
        from brainbench.cli.preflight import build_cells

        build_cells([cell.config for cell in plan.cells])
        run_and_report(plan, published_path(paper), out, tracking_uri, experiment, not fresh, launcher, workers,
                       command_options(budget, data_path, god_path, scale, options))


def command_options(budget: str, data_path: str | None, god_path: str | None, scale: str | None,
                    options: Any) -> str:
    parts = [f"--budget {budget}"]
    parts += [f"--data-path {data_path}"] if data_path else []
    parts += [f"--god-path {god_path}"] if god_path else []
    parts += [f"--scale {scale}"] if scale else []
    parts += [f"--only {','.join(options.only)}"] if options.only else []
    parts += [f"--subject {s}" for s in options.subjects]
    parts += [f"--opt {k}={v}" for k, v in options.encoder_options.items()]
    parts += [f"--epochs {options.epochs}"] if options.epochs else []
    return " ".join(parts)


def _settings(config: Any) -> str:
    hidden = (("task", "tsne"), ("dataset", "scale"))  # tsne in every retrieval cell; scale in the data column
    parts = [f"{k}={v}" for kind in ("encoder", "task", "dataset")
             for k, v in getattr(config, f"{kind}_options").items() if (kind, k) not in hidden]
    return " ".join(parts)


def print_plan(plan: Any) -> None:
    """The cells per experiment with their recipe and expected time, the skipped ones, and the total."""
    from rich.console import Console
    from rich.table import Table

    from brainbench.matrix.experiments import variant_of
    from brainbench.matrix.spec import matrix_id
    from brainbench.papers.estimate import OVERHEAD_SECONDS, estimate_cell, human, matmul_rate

    console = Console()
    devices = {cell.config.device for cell in plan.cells}
    device = "cuda" if devices & {"cuda", "auto"} and _has_cuda() else "cpu"
    rate = matmul_rate(device)
    cache: dict[Any, float] = {}
    seen: set[str] = set()
    total = 0.0
    cells = plan.cells
    identity = matrix_id([c.config for c in cells])
    table = Table(title=f"{plan.spec.name}: {len(cells)} cells to run (matrix id {identity}), "
                  f"budget {plan.options.budget}")
    for column in ("experiment", "key", "encoder", "task", "data", "subject", "variant / settings", "target",
                   "epochs", "steps", "expected"):
        table.add_column(column, overflow="fold")
    for planned in plan.experiments:
        for cell in planned.cells:
            c = cell.config
            shared = c.key in seen
            estimate = None if shared else estimate_cell(c, rate, cache)
            if estimate is not None and estimate.seconds is not None:
                total += estimate.seconds
            seen.add(c.key)
            data = c.dataset + (f" ({c.dataset_options['scale']})" if "scale" in c.dataset_options else "")
            table.add_row(
                planned.experiment.name, c.key, c.encoder, c.task, data, str(c.subject),
                " ".join(filter(None, [variant_of(cell) or "", _settings(c)])), c.target or "(task's)",
                "" if estimate is None or estimate.epochs is None else str(estimate.epochs),
                "" if estimate is None or estimate.steps is None else f"{estimate.steps:,}",
                "(shared, above)" if shared else human(estimate.seconds if estimate else None),
            )
    console.print(table)
    for name, cell, why in plan.skipped:
        console.print(f"skipped ({name}): {cell.config.label()} {variant_of(cell) or ''}: {why}", highlight=False)
    console.print(
        f"expected time: about {human(total)} for {len(cells)} cells on {device} (a rough lower bound: training "
        f"FLOPs per sample x trials x epochs from each cell's recipe, at the {rate / 1e9:.1f} GFLOP/s a float32 "
        f"matmul reaches here now, + {OVERHEAD_SECONDS:.0f} s per cell; real CPU runs take 2-5x longer; LAION "
        "prior training is not counted)", highlight=False,
    )


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _data_line(plan: Any) -> str:
    if any(cell.config.dataset.startswith("synthetic") for cell in plan.cells):
        return "SIMULATED (brainbench's simulator: numbers show the harness works, not the paper's accuracies)"
    return "real data"


def write_report_only(plan: Any, published_file: Path, out: Path, tracking_uri: str | None, experiment: str,
                      command: str) -> None:
    from rich.console import Console

    from brainbench.papers import report as paper_report
    from brainbench.papers.published import load_published
    from brainbench.records.tracker import SafeTracker

    tracker = SafeTracker(tracking_uri, experiment)
    runs = paper_report.latest_runs(tracker, {cell.config.key for cell in plan.cells})
    finished = sum(run.status == "FINISHED" for run in runs.values())
    header = {
        "data": _data_line(plan),
        "budget": plan.options.budget,
        "cells": f"{len(plan.cells)}: {finished} finished, {len(plan.cells) - finished} not (report only: the "
                 f"latest run of each cell in experiment {experiment!r}); {len(plan.skipped)} skipped",
        "MLflow": f"{tracker.uri}, experiment {experiment!r}",
        "command options": command,
    }
    report = paper_report.collect(plan, tracker, None, load_published(published_file), header, runs=runs)
    paths = paper_report.write(report, out)
    Console().print(f"report of {finished} finished cells of {len(plan.cells)}: {paths[1]} and {paths[0]}",
                    highlight=False)


def run_and_report(plan: Any, published_file: Path, out: Path, tracking_uri: str | None, experiment: str,
                   resume: bool, launcher: str, workers: int | None, command: str) -> None:
    from rich.console import Console

    from brainbench.matrix.execute import LaunchOptions, run_matrix
    from brainbench.papers import report as paper_report
    from brainbench.papers.published import load_published
    from brainbench.records.tracker import SafeTracker

    console = Console()
    published = load_published(published_file)  # a broken file stops the run before it starts
    tracker = SafeTracker(tracking_uri, experiment)
    keys = {cell.config.key for cell in plan.cells}
    # Resume by cell: a cell with a FINISHED run in the experiment (under any matrix: an earlier subset, or the
    # spec before an edit) is not trained again; the rest run as one matrix, itself resumed when interrupted.
    done = set() if not resume else {k for k, r in paper_report.latest_runs(tracker, keys).items()
                                     if r.status == "FINISHED"}
    to_run = [cell for cell in plan.cells if cell.config.key not in done]
    started = time.perf_counter()
    result = None
    if to_run:
        result = run_matrix(
            plan.spec, to_run, tracking_uri, experiment, resume, LaunchOptions(launcher=launcher, workers=workers),
            echo=lambda line: console.print(line, highlight=False, markup=False),
        )
    wall = time.perf_counter() - started
    counts = (f"ran {result.ran}, failed {result.failed}, " if result else "ran 0, ") + f"{len(done)} finished before"
    header = {
        "data": _data_line(plan),
        "budget": plan.options.budget,
        "cells": f"{len(plan.cells)} ({counts}); {len(plan.skipped)} skipped (reasons under each table)",
        "wall time of this command": f"{wall:.0f} s",
        "MLflow": (f"parent run {result.parent_run_id}, " if result else "")
        + f"{tracker.uri}, experiment {experiment!r}",
        "command options": command,
    }
    runs = paper_report.latest_runs(tracker, keys)
    report = paper_report.collect(plan, tracker, None, published, header, runs=runs)
    paths = paper_report.write(report, out)
    if result is not None:
        for path in paths:
            tracker.client.log_artifact(result.parent_run_id, str(path), "paper_report")
    where = f" (also logged to parent run {result.parent_run_id} under paper_report/)" if result else ""
    console.print(f"[bold]{counts}[/bold] in {wall:.0f} s; report: {paths[1]} and {paths[0]}{where}",
                  highlight=False)
    if result is not None and result.failed:
        raise typer.Exit(1)
