"""Cells read back from MLflow, grouped over seeds: mean and 95% t-interval per test metric, best marked."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

from brainbench.tracking_query import RunView

GROUP_FIELDS = ("encoder", "task", "dataset", "subject")
# Params that do not make a cell a different variant: the seed (averaged over) and bookkeeping.
NOT_VARIANT = {"seed", "cell_key", "brainbench_version", "n_voxels", "synthetic", *GROUP_FIELDS}
NOT_VARIANT_PREFIXES = ("plugin.", "metric.")


@dataclass
class CellRow:
    run_id: str
    key: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]  # test metrics, without the "test." prefix
    n_parameters: float | None
    train_seconds: float | None
    error: str | None = None

    def field(self, name: str) -> str:
        return self.params.get(name, "")

    @property
    def label(self) -> str:
        encoder, task = self.field("encoder"), self.field("task")
        return f"{encoder}/{task}/sub{self.field('subject')}/seed{self.field('seed')}"


@dataclass
class Stat:
    mean: float
    low: float | None = None  # t-interval over seeds; None for a single seed
    high: float | None = None
    n: int = 1

    def text(self, digits: int = 4) -> str:
        if self.low is None or self.high is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {(self.high - self.low) / 2:.{digits}f}"


@dataclass
class GroupRow:
    encoder: str
    task: str
    dataset: str
    subject: str
    variant: str
    seeds: list[str]
    metrics: dict[str, Stat]
    n_parameters: float | None
    train_seconds: Stat | None
    best: set[str] = field(default_factory=set)  # metric names where this row is the best


def cell_rows(runs: list[RunView]) -> list[CellRow]:
    """One row per cell key: the latest FINISHED run if any (a resumed matrix has KILLED ones too)."""
    chosen: dict[str, RunView] = {}
    for run in sorted(runs, key=lambda r: r.start_time):
        key = run.cell_key or run.run_id
        previous = chosen.get(key)
        if previous is None or run.status == "FINISHED" or previous.status != "FINISHED":
            chosen[key] = run
    rows = []
    for key, run in chosen.items():
        metrics = {
            name[5:]: value
            for name, value in run.metrics.items()
            if name.startswith("test.") and not name.endswith((".ci_low", ".ci_high"))
        }
        rows.append(
            CellRow(
                run.run_id,
                key,
                run.status,
                run.params,
                metrics,
                run.metrics.get("n_parameters"),
                run.metrics.get("train_seconds"),
                run.tags.get("brainbench.error"),
            )
        )
    return sorted(
        rows,
        key=lambda r: (
            r.field("encoder"),
            r.field("task"),
            r.field("dataset"),
            _number(r.field("subject")),
            r.label,
            _number(r.field("seed")),
        ),
    )


def _number(text: str) -> Any:
    try:
        return (0, float(text))
    except ValueError:
        return (1, text)


def directions(rows: list[CellRow]) -> dict[str, bool]:
    """Metric name -> higher is better, from the ``metric.<name>.higher_is_better`` params."""
    found: dict[str, bool] = {}
    for row in rows:
        for name, value in row.params.items():
            if name.startswith("metric.") and name.endswith(".higher_is_better"):
                found[name[len("metric.") : -len(".higher_is_better")]] = value.strip().lower() == "true"
    return found


def t_interval(values: list[float], confidence: float = 0.95) -> Stat:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return Stat(mean, n=n)
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Stat(mean, mean - half, mean + half, n)


def _variant_params(row: CellRow) -> dict[str, str]:
    return {
        k: v for k, v in row.params.items() if k not in NOT_VARIANT and not k.startswith(NOT_VARIANT_PREFIXES)
    }


def group_rows(rows: list[CellRow]) -> list[GroupRow]:
    """FINISHED cells grouped over seeds; the variant names the settings that tell apart rows of one base."""
    finished = [row for row in rows if row.status == "FINISHED"]
    by_base: dict[tuple[str, ...], list[CellRow]] = {}
    for row in finished:
        by_base.setdefault(tuple(row.field(f) for f in GROUP_FIELDS), []).append(row)
    groups: list[GroupRow] = []
    for base, members in by_base.items():
        variants = [_variant_params(row) for row in members]
        keys = sorted({k for v in variants for k in v})
        differing = [k for k in keys if len({v.get(k) for v in variants}) > 1]
        by_variant: dict[str, list[CellRow]] = {}
        for row, params in zip(members, variants, strict=True):
            label = ", ".join(f"{k}={params.get(k, '-')}" for k in differing)
            by_variant.setdefault(label, []).append(row)
        for label, cells in by_variant.items():
            names = sorted({m for cell in cells for m in cell.metrics})
            metrics = {
                name: t_interval([c.metrics[name] for c in cells if name in c.metrics]) for name in names
            }
            n_params = [c.n_parameters for c in cells if c.n_parameters is not None]
            times = [c.train_seconds for c in cells if c.train_seconds is not None]
            groups.append(
                GroupRow(
                    *base,
                    variant=label,
                    seeds=sorted((c.field("seed") for c in cells), key=_number),
                    metrics=metrics,
                    n_parameters=max(n_params) if n_params else None,
                    train_seconds=t_interval(times) if times else None,
                )
            )
    mark_best(groups, directions(finished))
    return groups


def mark_best(groups: list[GroupRow], higher: dict[str, bool]) -> None:
    for name in metric_names(groups):
        scored = [(g.metrics[name].mean, g) for g in groups if name in g.metrics]
        if len(scored) < 2:
            continue
        pick = max if higher.get(name, True) else min
        best = pick(value for value, _ in scored)
        for value, group in scored:
            if value == best:
                group.best.add(name)


def metric_names(groups: list[GroupRow]) -> list[str]:
    return sorted({name for g in groups for name in g.metrics})


# --------------------------------------------------------------------------------------------- formats


def to_records(groups: list[GroupRow]) -> list[dict[str, Any]]:
    records = []
    for g in groups:
        record: dict[str, Any] = {
            "encoder": g.encoder,
            "task": g.task,
            "dataset": g.dataset,
            "subject": g.subject,
            "variant": g.variant,
            "n_seeds": len(g.seeds),
        }
        for name in metric_names(groups):
            stat = g.metrics.get(name)
            record[f"{name}.mean"] = stat.mean if stat else None
            record[f"{name}.ci_low"] = stat.low if stat else None
            record[f"{name}.ci_high"] = stat.high if stat else None
        record["n_parameters"] = g.n_parameters
        record["train_seconds"] = g.train_seconds.mean if g.train_seconds else None
        record["best"] = sorted(g.best)
        records.append(record)
    return records


def to_csv(groups: list[GroupRow]) -> str:
    records = to_records(groups)
    buffer = io.StringIO()
    if records:
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]))
        writer.writeheader()
        for record in records:
            writer.writerow({**record, "best": ";".join(record["best"])})
    return buffer.getvalue()


def to_json(groups: list[GroupRow], higher: dict[str, bool]) -> str:
    return json.dumps({"higher_is_better": higher, "rows": to_records(groups)}, indent=2)


def _headers(groups: list[GroupRow], higher: dict[str, bool]) -> list[str]:
    arrows = {name: "↑" if higher.get(name, True) else "↓" for name in metric_names(groups)}
    return [
        "encoder",
        "task",
        "dataset",
        "subject",
        "variant",
        "seeds",
        *(f"{name} {arrows[name]}" for name in metric_names(groups)),
        "parameters",
        "train s",
    ]


def _cells(group: GroupRow, groups: list[GroupRow], best_mark: tuple[str, str]) -> list[str]:
    values = []
    for name in metric_names(groups):
        stat = group.metrics.get(name)
        text = stat.text() if stat else ""
        values.append(f"{best_mark[0]}{text}{best_mark[1]}" if name in group.best else text)
    params = f"{group.n_parameters:,.0f}" if group.n_parameters is not None else ""
    seconds = f"{group.train_seconds.mean:.2f}" if group.train_seconds else ""
    return [
        group.encoder,
        group.task,
        group.dataset,
        group.subject,
        group.variant,
        str(len(group.seeds)),
        *values,
        params,
        seconds,
    ]


def to_markdown(groups: list[GroupRow], higher: dict[str, bool]) -> str:
    headers = _headers(groups, higher)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cells(g, groups, ("**", "**"))) + " |" for g in groups]
    return (
        "\n".join(lines)
        + "\n\nmean ± half-width of the 95% t-interval over seeds; **bold**: best per column\n"
    )


def rich_table(groups: list[GroupRow], higher: dict[str, bool], title: str) -> Any:
    from rich.table import Table

    table = Table(
        title=title,
        caption="mean ± half-width of the 95% t-interval over seeds; "
        "[bold green]★[/bold green] best per column",
    )
    for index, header in enumerate(_headers(groups, higher)):
        table.add_column(header, justify="left" if index < 5 else "right", overflow="fold")
    for group in groups:
        table.add_row(*_cells(group, groups, ("[bold green]★ ", "[/bold green]")))
    return table


def cells_csv(rows: list[CellRow]) -> str:
    """Every cell (each seed, failed ones too), for the parent run's artifacts."""
    names = sorted({m for row in rows for m in row.metrics})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["key", "run_id", "status", *GROUP_FIELDS, "seed", *names, "n_parameters", "train_seconds", "error"]
    )
    for row in rows:
        writer.writerow(
            [
                row.key,
                row.run_id,
                row.status,
                *(row.field(f) for f in GROUP_FIELDS),
                row.field("seed"),
                *(row.metrics.get(n, "") for n in names),
                row.n_parameters or "",
                row.train_seconds or "",
                row.error or "",
            ]
        )
    return buffer.getvalue()
