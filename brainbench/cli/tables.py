"""Rich tables for results."""

from __future__ import annotations

from typing import Any


def results_table(result: Any) -> Any:
    from rich.table import Table

    config = result.config
    title = f"{config.encoder} on {config.task} - subject {config.subject}, seed {config.seed}"
    table = Table(title=title + (" [yellow](synthetic)[/yellow]" if result.synthetic else ""))
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    table.add_column("95% interval", justify="right")
    table.add_column("chance", justify="right")
    table.add_column("better", justify="center")
    for m in result.metrics:
        interval = f"{m.interval[0]:.4f} - {m.interval[1]:.4f}" if m.interval else ""
        chance = f"{m.chance:.4f}" if m.chance is not None else ""
        table.add_row(m.name, f"{m.value:.4f}", interval, chance, "higher" if m.higher_is_better else "lower")
    return table
