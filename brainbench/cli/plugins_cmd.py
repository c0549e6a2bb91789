"""``brainbench plugins`` and ``brainbench list``."""

from __future__ import annotations

import json
from enum import StrEnum

import typer

from brainbench.plugins import PluginInfo, get_plugins


def _status(plugin: PluginInfo) -> str:
    if plugin.refused_names:
        return f"loaded; refused {', '.join(plugin.refused_names)}: {plugin.error}"
    return "loaded" if plugin.error is None else f"loaded, with problems: {plugin.error}"


class Kind(StrEnum):
    encoders = "encoders"
    tasks = "tasks"
    targets = "targets"
    datasets = "datasets"
    priors = "priors"


def register(app: typer.Typer) -> None:
    @app.command("plugins")
    def plugins(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
        """List installed plugins: distribution, version, path, hooks, and what each provides.

        Plugins refused because their name was taken, and broken ones skipped (failed or hung at import, bad
        hooks), are listed too, with the reason; so are the names (commands, encoders...) a plugin was refused.
        """
        from brainbench.cli.plugin_commands import check_plugin_commands

        plugin_set = get_plugins()
        check_plugin_commands(plugin_set)
        rows = [(p, _status(p)) for p in plugin_set.plugins.values()]
        rows += [(p, f"refused: {p.error}") for p in plugin_set.refused]
        rows += [(p, f"skipped: {p.error}") for p in plugin_set.skipped]
        if as_json:
            payload = [
                {
                    "name": p.name,
                    "distribution": p.distribution,
                    "version": p.version,
                    "path": p.path,
                    "builtin": p.builtin,
                    "hooks": p.hooks,
                    "provides": p.provides,
                    "status": status.split()[0].strip(",;:"),  # loaded | refused | skipped
                    "refused_names": p.refused_names,
                    "error": p.error,
                }
                for p, status in rows
            ]
            typer.echo(json.dumps(payload, indent=2))
            return
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(title="brainbench plugins")
        for column in ("plugin", "distribution", "version", "path", "hooks", "provides", "status"):
            table.add_column(column, overflow="fold")
        for p, status in rows:
            provides = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in p.provides.items())
            label = escape(p.name) + ("" if p.builtin else " [yellow](third-party)[/yellow]")
            table.add_row(
                label, escape(p.distribution), escape(p.version), escape(p.path), ", ".join(p.hooks),
                escape(provides or "-"), escape(status) if p.error else status,
            )
        Console().print(table)

    @app.command("list")
    def list_(kind: Kind = typer.Argument(..., help="What to list.")) -> None:
        """List the registered encoders, tasks, targets, datasets or priors."""
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
