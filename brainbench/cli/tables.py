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


def _render(headers: list[str], rows: list[list[str]], aligns: list[str]) -> list[str]:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, aligns, strict=True)]
        return "  ".join(parts).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def fit_table(keys: list[str], values: list[str], rows: list[list[str]], width: int) -> list[str]:
    """A plain-text table no wider than ``width``: cells are never wrapped or cut; when the value columns do
    not fit beside the key columns they are split over several tables, each repeating the key columns."""
    n_keys = len(keys)
    # Drop value columns that are empty in every row (e.g. parameters a plugin does not report).
    keep = [i for i in range(len(values)) if any(r[n_keys + i] for r in rows)] or list(range(len(values)))
    values = [values[i] for i in keep]
    rows = [r[:n_keys] + [r[n_keys + i] for i in keep] for r in rows]
    key_width = sum(max([len(k), *(len(r[i]) for r in rows)]) + 2 for i, k in enumerate(keys))
    value_widths = [max([len(v), *(len(r[n_keys + i]) for r in rows)]) + 2 for i, v in enumerate(values)]
    chunks: list[list[int]] = [[]]
    used = key_width
    for i, w in enumerate(value_widths):
        if chunks[-1] and used + w > width + 2:  # +2: no separator after the last column
            chunks.append([])
            used = key_width
        chunks[-1].append(i)
        used += w
    out: list[str] = []
    for index, chunk in enumerate(chunks):
        if index:
            out.append("")
        headers = keys + [values[i] for i in chunk]
        body = [r[:n_keys] + [r[n_keys + i] for i in chunk] for r in rows]
        out += _render(headers, body, ["l"] * n_keys + ["r"] * len(chunk))
    return out
