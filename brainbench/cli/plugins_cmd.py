"""``brainbench plugins`` and ``brainbench list``."""

from __future__ import annotations

import json
from enum import StrEnum

import typer

from brainbench.plugins import get_plugins


class Kind(StrEnum):
    encoders = "encoders"
    tasks = "tasks"
    targets = "targets"
    datasets = "datasets"


def register(app: typer.Typer) -> None:
    @app.command("plugins")
    def plugins(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
        """List installed plugins: version, hooks, and what each provides."""
        infos = list(get_plugins().plugins.values())
        if as_json:
            rows = [
                {
                    "name": p.name,
                    "distribution": p.distribution,
                    "version": p.version,
                    "builtin": p.builtin,
                    "hooks": p.hooks,
                    "provides": p.provides,
                    "error": p.error,
                }
                for p in infos
            ]
            typer.echo(json.dumps(rows, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title="brainbench plugins")
        for column in ("plugin", "distribution", "version", "hooks", "provides"):
            table.add_column(column)
        for p in infos:
            provides = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in p.provides.items())
            label = p.name + ("" if p.builtin else " [yellow](third-party)[/yellow]")
            table.add_row(label, p.distribution, p.version, ", ".join(p.hooks), provides or "-")
        Console().print(table)

    @app.command("list")
    def list_(kind: Kind = typer.Argument(..., help="What to list.")) -> None:
        """List the registered encoders, tasks, targets or datasets."""
        from rich.console import Console
        from rich.table import Table

        registry = get_plugins().registry(kind.value.rstrip("s"))
        table = Table(title=kind.value)
        table.add_column("name", style="bold")
        table.add_column("plugin")
        table.add_column("description")
        for entry in registry:
            table.add_row(entry.name, entry.provider, entry.description)
        Console().print(table)
