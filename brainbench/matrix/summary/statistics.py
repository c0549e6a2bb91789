"""Cells read back from MLflow, grouped over seeds, with intervals over seeds and test items and paired tests.

Per group (encoder variant x task x dataset x subject) and metric: the mean over seeds of the logged value
and a 95% interval. Where the cells stored per-item outcomes (``per_item.json``), the interval is a
hierarchical bootstrap over seeds and test items (brainbench.stats; ``levels="items"`` gives the older
item-only interval, ``"both"`` keeps the item-only one beside it); otherwise a Student t interval over
seeds (clipped to [0, 1] for accuracies), and the table says which. Each row says how many of its seeds
actually differed. ``--baseline`` adds paired tests of each row against the baseline on the same test
items (seeds resampled too), Holm-corrected over every test in the table. How the groups are written out
is :mod:`brainbench.matrix.summary.formats`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from brainbench.records.query import RunView
from brainbench.stats import (
    Interval,
    PairedResult,
    align_items,
    bootstrap_interval,
    distinct_seeds,
    holm,
    paired_test,
    t_interval,
    with_adjusted_p,
)

GROUP_FIELDS = ("encoder", "task", "dataset", "subject")

# Params that do not make a cell a different variant: the seed (averaged over) and bookkeeping.
NOT_VARIANT = {"seed", "cell_key", "brainbench_version", "n_voxels", "synthetic", *GROUP_FIELDS}

NOT_VARIANT_PREFIXES = ("plugin.", "metric.", "recipe.")  # recipe.*: what a fit chose, per seed

DIRECTIONS_TAG = "brainbench.higher_is_better"

#: What intervals and paired tests resample: both levels, items only, or both views side by side.
INTERVAL_LEVELS = ("seeds+items", "items", "both")


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
    tags: dict[str, str] = field(default_factory=dict)
    per_item: dict[str, Any] | None = None  # the run's per_item.json, when loaded
    data: dict[str, float] = field(default_factory=dict)  # data.* metrics (noise ceiling), without "data."

    def field(self, name: str) -> str:
        return self.params.get(name, "")

    @property
    def label(self) -> str:
        encoder, task = self.field("encoder"), self.field("task")
        return f"{encoder}/{task}/sub{self.field('subject')}/seed{self.field('seed')}"


@dataclass
class Stat:
    mean: float
    low: float | None = None  # None: one seed and no per-item outcomes, so no interval
    high: float | None = None
    n: int = 1  # seeds
    method: str = ""
    item_low: float | None = None  # the item-only interval beside the hierarchical one (levels "both")
    item_high: float | None = None

    def text(self, digits: int = 3) -> str:
        if self.low is None or self.high is None:
            return f"{self.mean:.{digits}f}"
        text = f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"
        if self.item_low is not None and self.item_high is not None:
            text += f" items [{self.item_low:.{digits}f}, {self.item_high:.{digits}f}]"
        return text


def as_stat(interval: Interval) -> Stat:
    """A stats.Interval as a table cell's Stat (no interval for one seed without per-item outcomes)."""
    if interval.n_items == 0 and interval.n_seeds < 2:
        return Stat(interval.mean, n=interval.n_seeds, method=interval.method)
    return Stat(interval.mean, interval.low, interval.high, interval.n_seeds, interval.method)


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
    # metric -> (stimulus ids, (n_seeds, n_items) outcomes) where every seed stored them
    outcomes: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    tests: dict[str, PairedResult] = field(default_factory=dict)  # metric -> this row minus the baseline
    verdicts: dict[str, str] = field(default_factory=dict)  # metric -> better / worse / no difference / ...
    distinct_seeds: int | None = None  # seeds whose outcomes differ (identical outcome vectors count once)
    levels: str = "seeds+items"  # what the intervals resample (INTERVAL_LEVELS)
    noise_ceiling: float | None = None  # median over voxels, percent, of the data the row was tested on
    ncsnr: float | None = None

    @property
    def seed_count(self) -> str:
        """The n column: "3", or "2 (1 distinct)" when seeds gave identical outcomes."""
        n = len(self.seeds)
        if self.distinct_seeds is None or self.distinct_seeds == n:
            return str(n)
        return f"{n} ({self.distinct_seeds} distinct)"

    @property
    def label(self) -> str:
        """What tells this row apart, first: the encoder, then its differing settings."""
        return f"{self.encoder} {self.variant}".strip()


def cell_rows(runs: list[RunView], tracker: Any | None = None) -> list[CellRow]:
    """One row per cell key: the latest FINISHED run if any (a resumed matrix has KILLED ones too).

    With ``tracker``, each finished cell's per-item outcomes are read from its ``per_item.json`` artifact,
    so intervals are over test items and ``compare_to_baseline`` can pair encoders.
    """
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
                dict(run.tags),
                data={name[5:]: value for name, value in run.metrics.items() if name.startswith("data.")},
            )
        )
    if tracker is not None:
        from brainbench.records.query import per_item_outcomes

        for row in rows:
            if row.status == "FINISHED":
                row.per_item = per_item_outcomes(tracker, row.run_id)
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
    """Metric name -> higher is better: the run's tag, or (older runs) ``metric.<name>.higher_is_better``."""
    found: dict[str, bool] = {}
    for row in rows:
        for name, value in row.params.items():
            if name.startswith("metric.") and name.endswith(".higher_is_better"):
                found[name[len("metric.") : -len(".higher_is_better")]] = value.strip().lower() == "true"
        tagged = row.tags.get(DIRECTIONS_TAG)
        if tagged:
            try:
                found.update({k: bool(v) for k, v in json.loads(tagged).items()})
            except (ValueError, AttributeError):
                pass
        if row.per_item:
            found.update(row.per_item.get("higher_is_better", {}))
    return found


def _variant_params(row: CellRow) -> dict[str, str]:
    return {
        k: v for k, v in row.params.items() if k not in NOT_VARIANT and not k.startswith(NOT_VARIANT_PREFIXES)
    }


def _short_setting(name: str) -> str:
    return name.removeprefix("encoder.")


def _cell_outcomes(cells: list[CellRow], name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids, (n_seeds, n_items)) on the items every seed scored, or None when any seed lacks them."""
    ids: np.ndarray | None = None
    found = []
    for cell in cells:
        record = cell.per_item or {}
        values = record.get("outcomes", {}).get(name)
        if values is None:
            return None
        cell_ids = np.asarray(record["stimulus_ids"])
        found.append((cell_ids, np.asarray(values, dtype=np.float64)))
        ids = cell_ids if ids is None else np.intersect1d(ids, cell_ids)
    if ids is None or len(ids) == 0:
        return None
    matrix = np.stack([_take(cell_ids, values, ids) for cell_ids, values in found])
    return ids, matrix


def _take(cell_ids: np.ndarray, values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    order = np.argsort(cell_ids)
    return values[order[np.searchsorted(cell_ids, ids, sorter=order)]]


def _metric_stat(cells: list[CellRow], name: str, higher: bool, outcomes: Any, seed: int, levels: str) -> Stat:
    values = [c.metrics[name] for c in cells if name in c.metrics]
    mean = float(np.mean(values))
    if outcomes is not None:
        primary = "items" if levels == "items" else "seeds+items"
        interval = bootstrap_interval(outcomes[1], seed=seed, levels=primary)
        stat = Stat(mean, min(interval.low, mean), max(interval.high, mean), len(values), interval.method)
        if levels == "both" and interval.method.startswith("hierarchical"):
            items = bootstrap_interval(outcomes[1], seed=seed, levels="items")
            stat.item_low, stat.item_high = min(items.low, mean), max(items.high, mean)
            stat.method += f"; items: {items.method}"
        return stat
    accuracy_like = higher and all(0.0 <= v <= 1.0 for v in values)
    return as_stat(t_interval(values, (0.0, 1.0) if accuracy_like else None))


def _distinct_cells(cells: list[CellRow], outcomes: dict[str, tuple[np.ndarray, np.ndarray]]) -> int:
    """Seeds that gave different results: distinct per-item outcome vectors (all metrics side by side) where
    stored, and distinct values of the other metrics."""
    plain = sorted({m for c in cells for m in c.metrics} - set(outcomes))
    scalars = np.array([[c.metrics.get(m, np.nan) for m in plain] for c in cells], dtype=np.float64)
    columns = [matrix for _, matrix in outcomes.values()] + [np.nan_to_num(scalars, nan=-np.inf)]
    return distinct_seeds(np.concatenate(columns, axis=1)) if columns[0].size else 1


def _data_mean(cells: list[CellRow], name: str) -> float | None:
    values = [c.data[name] for c in cells if name in c.data]
    return float(np.mean(values)) if values else None


def group_rows(rows: list[CellRow], levels: str = "seeds+items") -> list[GroupRow]:
    """FINISHED cells grouped over seeds; the variant names the settings that tell apart rows of one base.

    ``levels`` (INTERVAL_LEVELS): what the intervals over per-item outcomes resample."""
    if levels not in INTERVAL_LEVELS:
        raise ValueError(f"levels must be one of {', '.join(INTERVAL_LEVELS)}, got {levels!r}")
    finished = [row for row in rows if row.status == "FINISHED"]
    higher = directions(finished)
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
            label = " ".join(f"{_short_setting(k)}={params.get(k, '-')}" for k in differing)
            by_variant.setdefault(label, []).append(row)
        for label, cells in by_variant.items():
            names = sorted({m for cell in cells for m in cell.metrics})
            outcomes = {name: found for name in names if (found := _cell_outcomes(cells, name)) is not None}
            metrics = {
                name: _metric_stat(cells, name, higher.get(name, True), outcomes.get(name), index, levels)
                for index, name in enumerate(names)
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
                    train_seconds=as_stat(t_interval(times)) if times else None,
                    outcomes=outcomes,
                    distinct_seeds=_distinct_cells(cells, outcomes),
                    levels=levels,
                    noise_ceiling=_data_mean(cells, "noise_ceiling_median"),
                    ncsnr=_data_mean(cells, "ncsnr_median"),
                )
            )
    groups.sort(key=lambda g: (g.task, g.dataset, _number(g.subject), g.label))
    mark_best(groups, higher)
    return groups


def mark_best(groups: list[GroupRow], higher: dict[str, bool]) -> None:
    """Best mean per metric among rows of the same task, dataset and subject."""
    for block in subject_blocks(groups):
        for name in metric_names(block):
            scored = [(g.metrics[name].mean, g) for g in block if name in g.metrics]
            if len(scored) < 2:
                continue
            pick = max if higher.get(name, True) else min
            best = pick(value for value, _ in scored)
            for value, group in scored:
                if value == best:
                    group.best.add(name)


def subject_blocks(groups: list[GroupRow]) -> list[list[GroupRow]]:
    """The rows that compete: those of one task, dataset and subject (in their order)."""
    found: dict[tuple[str, str, str], list[GroupRow]] = {}
    for g in groups:
        found.setdefault((g.task, g.dataset, g.subject), []).append(g)
    return list(found.values())


def metric_names(groups: list[GroupRow]) -> list[str]:
    return sorted({name for g in groups for name in g.metrics})


class BaselineError(ValueError):
    pass


def compare_to_baseline(groups: list[GroupRow], baseline: str, higher: dict[str, bool], seed: int = 0) -> int:
    """Paired tests of every row against the baseline row of its task, dataset and subject.

    ``baseline`` names an encoder (or a row label such as ``ridge alpha=10``). Each metric of each row is
    tested on the test items both stored outcomes for, resampling seeds and items (or items only, as the
    rows' ``levels`` say); p-values are Holm-corrected over all tests made. Returns the number of tests.
    """
    names = {g.encoder for g in groups} | {g.label for g in groups}
    if baseline not in names:
        rows = ", ".join(sorted({g.label for g in groups}))
        raise BaselineError(f"no encoder or row {baseline!r} in this comparison; rows: {rows}")
    tested: list[tuple[GroupRow, str]] = []
    for block in subject_blocks(groups):
        bases = [g for g in block if g.label == baseline] or [g for g in block if g.encoder == baseline]
        if len(bases) > 1:
            raise BaselineError(
                f"{baseline!r} names {len(bases)} rows ({', '.join(g.label for g in bases)}); pass one of them"
            )
        if not bases:
            continue
        base = bases[0]
        for g in block:
            for name in g.metrics:
                if g is base:
                    g.verdicts[name] = "baseline"
                    continue
                if name not in g.outcomes or name not in base.outcomes:
                    g.verdicts[name] = "untested"
                    continue
                ids, mine, theirs = align_items(*g.outcomes[name], *base.outcomes[name])
                if len(ids) == 0:
                    g.verdicts[name] = "untested"
                    continue
                levels = "items" if g.levels == "items" else "seeds+items"
                g.tests[name] = paired_test(mine, theirs, seed=seed + len(tested), levels=levels)
                tested.append((g, name))
    adjusted = holm([g.tests[name].p_value for g, name in tested])
    for (g, name), p in zip(tested, adjusted, strict=True):
        g.tests[name] = with_adjusted_p(g.tests[name], p)
        g.verdicts[name] = g.tests[name].verdict(higher.get(name, True))
    return len(tested)


def interval_methods(groups: list[GroupRow]) -> list[str]:
    """How the intervals in the table were made, e.g. "hierarchical bootstrap over 2 seeds and 400 items"."""
    return sorted({stat.method for g in groups for stat in g.metrics.values() if stat.method})
