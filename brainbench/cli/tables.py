"""Rich tables for results."""

from __future__ import annotations

from typing import Any


def results_table(result: Any) -> Any:
    from rich.table import Table

    from brainbench.runner import METRIC_COLUMNS, metric_cells

    config = result.config
    title = f"{config.encoder} on {config.task} - subject {config.subject}, seed {config.seed}"
    table = Table(title=title + (" [yellow](synthetic)[/yellow]" if result.synthetic else ""))
    for name, style, justify in zip(METRIC_COLUMNS, ("bold", None, None, None, None),
                                    ("left", "right", "right", "right", "center"), strict=True):
        table.add_column(name, style=style, justify=justify)
    for m in result.metrics:
        table.add_row(*metric_cells(m))
    return table
