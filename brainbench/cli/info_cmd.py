"""``brainbench info ENCODER``: parameter counts, FLOPs and options — the numbers papers compare."""

from __future__ import annotations

import json
from typing import Any

import typer

from brainbench.cli.options import parse_key_values, parse_shape


def register(app: typer.Typer) -> None:
    @app.command("info")
    def info(
        encoder: str = typer.Argument(..., help="Plugin name: an encoder, task, dataset or target."),
        subject: int | None = typer.Option(None, "--subject", "-s", help="NSD subject (sets the voxel count)."),
        voxels: int | None = typer.Option(None, "--voxels", help="Voxel count (instead of --subject)."),
        target_shape: str = typer.Option("257x768", "--target-shape", help="257x768 (tokens) or 768 (pooled)."),
        opt: list[str] = typer.Option([], "--opt", "-o", help="Encoder option KEY=VALUE (repeatable)."),
        task: str = typer.Option(
            "retrieval", "--task", "-t", help="Task of the plain run described (`brainbench run ENCODER --task`)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """The options a plugin declares; for an encoder also its parameter count (total and per module) and
        FLOPs per sample, and what a plain `brainbench run ENCODER --task TASK` would use: which dataset and
        target, quick or reference recipe (and why), epochs, batch and learning rate."""
        from brainbench.constants import NSD_VOXELS
        from brainbench.errors import BrainbenchError
        from brainbench.plugins import get_plugins

        plugins = get_plugins()
        kind = next((k for k in ("encoder", "task", "dataset", "target") if encoder in plugins.registry(k)), None)
        if kind != "encoder":
            entry = (plugins.registry(kind) if kind else plugins.encoders).entry(encoder)  # unknown: closest name
            print_options(entry, kind or "encoder", as_json)
            return

        if voxels is None:
            if subject is None:
                subject = 1
            if subject not in NSD_VOXELS:
                raise BrainbenchError(f"no NSD voxel count known for subject {subject}; pass --voxels")
            voxels = NSD_VOXELS[subject]
        shape = parse_shape(target_shape)
        entry = plugins.encoders.entry(encoder)
        enc = entry.create(parse_key_values(opt, "--opt"), "--opt ")
        details = enc.describe(voxels, shape)
        summary = {"encoder": encoder, "n_voxels": voxels, "target_shape": list(shape), **details}
        plain = plain_run(encoder, task, parse_key_values(opt, "--opt"), voxels, shape)
        if as_json:
            declared = entry.declared_options()
            summary["declared_options"] = declared.rows() if declared is not None else None
            summary["plain_run"] = plain
            typer.echo(json.dumps(summary, indent=2, default=str))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{encoder}: {voxels} voxels -> {'x'.join(map(str, shape))}")
        table.add_column("what", style="bold")
        table.add_column("value", justify="right")
        for key, value in summary.items():
            if isinstance(value, dict):
                for sub, sub_value in value.items():
                    shown = f"{sub_value:,}" if isinstance(sub_value, int) else str(sub_value)
                    table.add_row(f"{key}.{sub}", shown)
            else:
                table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
        Console().print(table)
        print_plain_run(plain)
        print_options(entry, "encoder", False)


def recipe_figures(encoder: Any) -> dict[str, Any] | None:
    """Epochs, batch and lr of a torch encoder's reference recipe; None for encoders without one (ridge)."""
    defaults = getattr(encoder, "training_defaults", None)
    if defaults is None:
        return None
    recipe = defaults()
    return {"epochs": recipe.epochs, "batch_size": recipe.batch_size, "lr": recipe.lr}


def plain_run(name: str, task: str, options: dict[str, Any], voxels: int, shape: tuple[int, ...]) -> dict[str, Any]:
    """What `brainbench run NAME --task TASK` resolves to, the way the run itself resolves it
    (brainbench.runner.resolve: the task's dataset and target, the budget rule)."""
    from brainbench.config import RunConfig
    from brainbench.runner import resolve, training_overrides

    cell = resolve(RunConfig(encoder=name, task=task, encoder_options=options))
    try:
        demo = bool(cell.dataset.demo_scale)
        synthetic = bool(cell.dataset.synthetic)
        where = f"{cell.dataset_name} ({'simulated' if synthetic else 'real'} data{', demo scale' if demo else ''})"
        reference = recipe_figures(cell.encoder if cell.quick is None else resolve(
            RunConfig(encoder=name, task=task, encoder_options=options, budget="reference")).encoder)
        plain: dict[str, Any] = {
            "command": f"brainbench run {name} --task {task}",
            "dataset": cell.dataset_name,
            "synthetic": synthetic,
            "demo_scale": demo,
            "target": cell.target_name,
            "target_shape": list(cell.target.shape),
            "budget": "quick" if cell.quick is not None else "reference",
            "reference_recipe": reference,
        }
        if cell.quick is not None:
            plain["why"] = (f"{where}: the quick recipe, so a laptop CPU finishes in minutes; `--budget reference`, "
                            "real data (--data-path) or --dataset-opt scale=nsd give the reference recipe")
            plain["quick_recipe"] = {"note": cell.quick.note, "options": dict(cell.quick.options),
                                     **{k: v for k, v in training_overrides(cell).items() if v is not None}}
            plain["quick_parameters"] = cell.encoder.describe(voxels, shape).get("parameters")
        elif reference is not None and demo:
            plain["why"] = f"{where}, but --budget reference or no quick recipe: the reference recipe"
        elif reference is not None:
            plain["why"] = f"{where}: the reference recipe (quick recipes are for demo-scale simulated data)"
        else:
            plain["why"] = f"{where}: {name} has no training recipe; it runs the same on every dataset"
        return plain
    finally:
        cell.dataset.close()


def print_plain_run(plain: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console()
    console.print(f"[bold]{plain['command']}[/bold] would use: dataset {plain['dataset']}, target {plain['target']} "
                  f"(shape {'x'.join(map(str, plain['target_shape']))}), budget [bold]{plain['budget']}[/bold]",
                  highlight=False)
    console.print(f"  why: {plain['why']}", highlight=False)
    quick = plain.get("quick_recipe")
    if quick:
        settings = ", ".join(f"{k} {quick[k]}" for k in ("epochs", "batch_size", "lr") if k in quick)
        console.print(f"  quick recipe: {quick['note']} ({settings}); options {quick['options']}", highlight=False)
        if plain.get("quick_parameters"):
            console.print(f"  quick variant: {plain['quick_parameters']:,} parameters at the table's voxels and "
                          "target shape", highlight=False)
    reference = plain.get("reference_recipe")
    if reference:
        console.print(f"  reference recipe: {reference['epochs']} epochs, batch {reference['batch_size']}, lr "
                      f"{reference['lr']:g}", highlight=False)
    console.print("  (the table above counts the reference variant at --subject/--voxels and --target-shape; "
                  "pass --target-shape to match the plain run's target)", highlight=False)


def print_options(entry: Any, kind: str, as_json: bool) -> None:
    """The options ``entry`` declares: name, type, default, accepted values, help."""
    declared = entry.declared_options()
    rows = declared.rows() if declared is not None else None
    if as_json:
        typer.echo(json.dumps({kind: entry.name, "plugin": entry.provider, "declared_options": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if rows is None:
        console.print(f"{kind} {entry.name!r} (plugin {entry.provider!r}) declares no options; any are passed on "
                      "unchecked", highlight=False)
        return
    table = Table(title=f"{kind} {entry.name!r} options (plugin {entry.provider!r})")
    for column in ("name", "type", "default", "accepted", "help"):
        table.add_column(column, style="bold" if column == "name" else None)
    for row in rows:
        table.add_row(*(row[c] for c in ("name", "type", "default", "accepted", "help")))
    console.print(table)
