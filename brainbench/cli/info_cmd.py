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
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """The options a plugin declares; for an encoder also its parameter count (total and per module) and
        FLOPs per sample."""
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
        enc = entry.factory(**entry.check_options(parse_key_values(opt, "--opt"), "--opt "))
        details = enc.describe(voxels, shape)
        summary = {"encoder": encoder, "n_voxels": voxels, "target_shape": list(shape), **details}
        if as_json:
            declared = entry.declared_options()
            summary["declared_options"] = declared.rows() if declared is not None else None
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
        print_options(entry, "encoder", False)


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
