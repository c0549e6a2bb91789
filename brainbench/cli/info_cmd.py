"""``brainbench info ENCODER``: parameter counts, FLOPs and options — the numbers papers compare."""

from __future__ import annotations

import json

import typer

from brainbench.cli.options import parse_key_values, parse_shape


def register(app: typer.Typer) -> None:
    @app.command("info")
    def info(
        encoder: str = typer.Argument(..., help="Encoder name."),
        subject: int | None = typer.Option(None, "--subject", "-s", help="NSD subject (sets the voxel count)."),
        voxels: int | None = typer.Option(None, "--voxels", help="Voxel count (instead of --subject)."),
        target_shape: str = typer.Option("257x768", "--target-shape", help="257x768 (tokens) or 768 (pooled)."),
        opt: list[str] = typer.Option([], "--opt", "-o", help="Encoder option KEY=VALUE (repeatable)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Parameter count (total and per module), FLOPs per sample and the options in force."""
        from brainbench.constants import NSD_VOXELS
        from brainbench.errors import BrainbenchError
        from brainbench.plugins import get_plugins

        if voxels is None:
            if subject is None:
                subject = 1
            if subject not in NSD_VOXELS:
                raise BrainbenchError(f"no NSD voxel count known for subject {subject}; pass --voxels")
            voxels = NSD_VOXELS[subject]
        shape = parse_shape(target_shape)
        enc = get_plugins().encoders.create(encoder, **parse_key_values(opt, "--opt"))
        details = enc.describe(voxels, shape)
        summary = {"encoder": encoder, "n_voxels": voxels, "target_shape": list(shape), **details}
        if as_json:
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
