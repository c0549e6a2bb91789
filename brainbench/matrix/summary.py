"""Cells read back from MLflow, grouped over seeds, with intervals over seeds and test items and paired tests.

Per group (encoder variant x task x dataset x subject) and metric: the mean over seeds of the logged value
and a 95% interval. Where the cells stored per-item outcomes (``per_item.json``), the interval is a
hierarchical bootstrap over seeds and test items (brainbench.stats; ``levels="items"`` gives the older
item-only interval, ``"both"`` keeps the item-only one beside it); otherwise a Student t interval over
seeds (clipped to [0, 1] for accuracies), and the table says which. Each row says how many of its seeds
actually differed. ``--baseline`` adds paired tests of each row against the baseline on the same test
items (seeds resampled too), Holm-corrected over every test in the table.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
from brainbench.tracking_query import RunView

GROUP_FIELDS = ("encoder", "task", "dataset", "subject")
# Params that do not make a cell a different variant: the seed (averaged over) and bookkeeping.
NOT_VARIANT = {"seed", "cell_key", "brainbench_version", "n_voxels", "synthetic", *GROUP_FIELDS}
NOT_VARIANT_PREFIXES = ("plugin.", "metric.", "recipe.")  # recipe.*: what a fit chose, per seed
DIRECTIONS_TAG = "brainbench.higher_is_better"
#: What intervals and paired tests resample: both levels, items only, or both views side by side.
INTERVAL_LEVELS = ("seeds+items", "items", "both")
VERDICT_MARKS = {"better": "▲", "worse": "▼", "no difference": "=", "baseline": "·", "untested": "?"}


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
        from brainbench.tracking_query import per_item_outcomes

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


def noise_ceiling_line(groups: list[GroupRow]) -> str | None:
    """Per subject, the test data's noise ceiling (one value when every row of the subject shares it)."""
    by_subject: dict[str, list[GroupRow]] = {}
    for g in groups:
        if g.noise_ceiling is not None:
            by_subject.setdefault(g.subject, []).append(g)
    if not by_subject:
        return None
    parts = []
    for subject, members in by_subject.items():
        shown = {f"{g.noise_ceiling:.1f}% (ncsnr {g.ncsnr:.3f})" for g in members}
        if len(shown) == 1:
            parts.append(f"subject {subject} {shown.pop()}")
        else:
            parts += [f"subject {subject} {g.label} {g.noise_ceiling:.1f}% (ncsnr {g.ncsnr:.3f})" for g in members]
    return "noise ceiling (NSD formula from the test repeats, median over voxels): " + "; ".join(parts)


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
    blocks: dict[tuple[str, str, str], list[GroupRow]] = {}
    for g in groups:
        blocks.setdefault((g.task, g.dataset, g.subject), []).append(g)
    for block in blocks.values():
        for name in metric_names(block):
            scored = [(g.metrics[name].mean, g) for g in block if name in g.metrics]
            if len(scored) < 2:
                continue
            pick = max if higher.get(name, True) else min
            best = pick(value for value, _ in scored)
            for value, group in scored:
                if value == best:
                    group.best.add(name)


def metric_names(groups: list[GroupRow]) -> list[str]:
    return sorted({name for g in groups for name in g.metrics})


# ------------------------------------------------------------------------------------------ paired tests


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
    blocks: dict[tuple[str, str, str], list[GroupRow]] = {}
    for g in groups:
        blocks.setdefault((g.task, g.dataset, g.subject), []).append(g)
    tested: list[tuple[GroupRow, str]] = []
    for block in blocks.values():
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


# --------------------------------------------------------------------------------------------- labels


_DIRECTION_SHORT = {"fmri_to_image": "f→i", "image_to_fmri": "i→f"}


def short_label(name: str) -> str:
    """A short column label: retrieval names become e.g. ``f→i 300w``; others stay if short."""
    for long, short in _DIRECTION_SHORT.items():
        if name.startswith(long + "_"):
            rest = name[len(long) + 1 :].removeprefix("top1_")
            return f"{short} {rest.replace('way', 'w')}"
    return name if len(name) <= 12 else name[:11] + "…"


def short_labels(names: list[str]) -> dict[str, str]:
    labels = {name: short_label(name) for name in names}
    if len(set(labels.values())) < len(labels):  # truncation collided: number them instead
        labels = {name: f"m{i + 1}" if len(name) > 12 else name for i, name in enumerate(names)}
    return labels


def interval_methods(groups: list[GroupRow]) -> list[str]:
    """How the intervals in the table were made, e.g. "hierarchical bootstrap over 2 seeds and 400 items"."""
    return sorted({stat.method for g in groups for stat in g.metrics.values() if stat.method})


# --------------------------------------------------------------------------------------------- formats


def to_records(groups: list[GroupRow]) -> list[dict[str, Any]]:
    records = []
    names = metric_names(groups)
    for g in groups:
        record: dict[str, Any] = {
            "encoder": g.encoder,
            "task": g.task,
            "dataset": g.dataset,
            "subject": g.subject,
            "variant": g.variant,
            "n_seeds": len(g.seeds),
            "n_distinct_seeds": g.distinct_seeds,
        }
        for name in names:
            stat = g.metrics.get(name)
            record[f"{name}.mean"] = stat.mean if stat else None
            record[f"{name}.ci_low"] = stat.low if stat else None
            record[f"{name}.ci_high"] = stat.high if stat else None
            record[f"{name}.interval"] = stat.method if stat else None
            if g.levels == "both":
                record[f"{name}.ci_low_items"] = stat.item_low if stat else None
                record[f"{name}.ci_high_items"] = stat.item_high if stat else None
            if g.verdicts:
                test = g.tests.get(name)
                record[f"{name}.vs_baseline"] = g.verdicts.get(name)
                record[f"{name}.diff"] = test.difference if test else None
                record[f"{name}.diff_low"] = test.low if test else None
                record[f"{name}.diff_high"] = test.high if test else None
                record[f"{name}.p"] = test.p_value if test else None
                record[f"{name}.p_holm"] = test.p_adjusted if test else None
                record[f"{name}.test"] = test.method if test else None
                if g.levels == "both":
                    record[f"{name}.diff_low_items"] = test.item_low if test else None
                    record[f"{name}.diff_high_items"] = test.item_high if test else None
                    record[f"{name}.p_items"] = test.item_p_value if test else None
        record["noise_ceiling"] = g.noise_ceiling
        record["ncsnr"] = g.ncsnr
        record["n_parameters"] = g.n_parameters
        record["train_seconds"] = g.train_seconds.mean if g.train_seconds else None
        record["best"] = sorted(g.best)
        records.append(record)
    return records


def to_csv(groups: list[GroupRow]) -> str:
    records = to_records(groups)
    buffer = io.StringIO()
    if records:
        fields = list(dict.fromkeys(k for record in records for k in record))
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        for record in records:
            writer.writerow({**record, "best": ";".join(record["best"])})
    return buffer.getvalue()


def to_json(groups: list[GroupRow], higher: dict[str, bool], baseline: str | None = None) -> str:
    return json.dumps(
        {
            "higher_is_better": higher,
            "intervals": interval_methods(groups),
            "baseline": baseline,
            "correction": "Holm over all paired tests" if baseline else None,
            "rows": to_records(groups),
        },
        indent=2,
    )


def blocks(groups: list[GroupRow]) -> list[tuple[str, str, list[GroupRow]]]:
    """Groups by (task, dataset): each block has its own metrics and is one table."""
    found: dict[tuple[str, str], list[GroupRow]] = {}
    for g in groups:
        found.setdefault((g.task, g.dataset), []).append(g)
    return [(task, dataset, members) for (task, dataset), members in found.items()]


def arrow(name: str, higher: dict[str, bool]) -> str:
    return "↑" if higher.get(name, True) else "↓"


def table_cells(
    groups: list[GroupRow], higher: dict[str, bool], best_mark: tuple[str, str] = ("", "*"), pad_marks: bool = False
) -> tuple[list[str], list[str], list[list[str]]]:
    """Headers (key columns, then value columns) and rows of text for one block."""
    names = metric_names(groups)
    labels = short_labels(names)
    keys = ["encoder", "sub", "n"]
    values = [f"{labels[name]} {arrow(name, higher)}" for name in names] + ["params", "train s"]
    rows = []
    for g in groups:
        cells = []
        for name in names:
            stat = g.metrics.get(name)
            text = stat.text() if stat else ""
            if text and name in g.best:
                text = f"{best_mark[0]}{text}{best_mark[1]}"
            elif text and pad_marks:  # a blank in the mark's place keeps the digits of a column aligned
                text += " " * len(best_mark[1])
            if text and g.verdicts:
                text += " " + VERDICT_MARKS.get(g.verdicts.get(name, "untested"), "?")
            cells.append(text)
        params = _count(g.n_parameters)
        seconds = f"{g.train_seconds.mean:.3g}" if g.train_seconds else ""
        rows.append([g.label, g.subject, g.seed_count, *cells, params, seconds])
    return keys, values, rows


def _count(n: float | None) -> str:
    if n is None:
        return ""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= limit:
            return f"{n / limit:.3g}{suffix}"
    return f"{n:.0f}"


def legend(groups: list[GroupRow], higher: dict[str, bool], baseline: str | None, best: str = "*") -> list[str]:
    names = metric_names(groups)
    labels = short_labels(names)
    lines = [f"{labels[n]} = {n} ({'higher' if higher.get(n, True) else 'lower'} is better)" for n in names]
    lines.append("sub: subject; n: seeds (distinct: how many gave different outcomes); params: trained "
                 "parameters; train s: mean training seconds")
    lines.append(f"value [95% interval]; {best} best in its subject")
    methods = interval_methods(groups)
    if methods:
        lines.append("intervals: " + "; ".join(methods))
    ceiling = noise_ceiling_line(groups)
    if ceiling:
        lines.append(ceiling)
    if baseline:
        resampled = "test images" if groups and groups[0].levels == "items" else "seeds and the same test images"
        lines.append(
            f"vs {baseline}: ▲ better, ▼ worse, = no difference (paired test resampling {resampled}, "
            "Holm-corrected, 5%); · the baseline; ? no per-item outcomes to test"
        )
        tests = sorted({test.method for g in groups for test in g.tests.values() if test.method})
        if tests:
            lines.append("paired tests: " + "; ".join(tests))
    return lines


def paired_rows(groups: list[GroupRow]) -> tuple[list[str], list[str], list[list[str]]]:
    """One row per paired test: difference [95% interval], p, Holm p, verdict; with levels "both" also the
    item-only interval and p beside them."""
    labels = short_labels(metric_names(groups))
    both = any(g.levels == "both" for g in groups)
    rows = []
    for g in groups:
        for name, test in sorted(g.tests.items()):
            extra = []
            if both:
                low, high = test.item_low, test.item_high
                extra = [f"[{_signed(low)}, {_signed(high)}]" if low is not None and high is not None else "",
                         f"{test.item_p_value:.3g}" if test.item_p_value is not None else ""]
            rows.append(
                [
                    g.label,
                    g.subject,
                    labels[name],
                    f"{_signed(test.difference)} [{_signed(test.low)}, {_signed(test.high)}]",
                    f"{test.p_value:.3g}",
                    f"{test.p_adjusted:.3g}" if test.p_adjusted is not None else "",
                    *extra,
                    g.verdicts.get(name, ""),
                ]
            )
    values = ["difference [95%]", "p", "p Holm", *(["items only [95%]", "p items"] if both else []), "verdict"]
    return ["encoder", "sub", "metric"], values, rows


def _signed(value: float) -> str:
    text = f"{value:+.3f}"
    return "0.000" if text in ("+0.000", "-0.000") else text


def _markdown_table(headers: list[str], rows: list[list[str]], rules: list[str]) -> list[str]:
    """Header, alignment rule and body lines of one Markdown table."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return [line(headers), "|" + "|".join(rules) + "|", *(line(row) for row in rows)]


def to_markdown(groups: list[GroupRow], higher: dict[str, bool], baseline: str | None = None) -> str:
    out = []
    for task, dataset, members in blocks(groups):
        keys, values, rows = table_cells(members, higher, ("**", "**"))
        headers = keys + values
        out.append(f"**{task}** on {dataset}\n")
        out += _markdown_table(headers, rows, ["---"] * len(keys) + ["--:"] * len(values))
        out.append("")
        out += [f"- {line}" for line in legend(members, higher, baseline, "**bold**")]
        out.append("")
        if baseline:
            pk, pv, prow = paired_rows(members)
            if prow:
                out.append(f"Paired tests against {baseline}:\n")
                out += _markdown_table(pk + pv, prow, ["---"] * len(pk + pv))
                out.append("")
    return "\n".join(out)


def _latex(text: str) -> str:
    for raw, escaped in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        text = text.replace(raw, escaped)
    return (
        text.replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$").replace("→", r"$\to$")
        .replace("▲", r"$\blacktriangle$").replace("▼", r"$\blacktriangledown$").replace("·", r"$\cdot$")
        .replace("…", r"\ldots{}")
    )


def to_latex(groups: list[GroupRow], higher: dict[str, bool], baseline: str | None = None) -> str:
    """booktabs tables, one per task and dataset (needs \\usepackage{booktabs} and amssymb)."""
    out = []
    for task, dataset, members in blocks(groups):
        keys, values, rows = table_cells(members, higher, ("\x00", "\x01"))
        headers = keys + values
        out.append(r"\begin{table}[t]")
        out.append(r"\centering")
        out.append(r"\begin{tabular}{" + "l" * len(keys) + "r" * len(values) + "}")
        out.append(r"\toprule")
        out.append(" & ".join(_latex(h) for h in headers) + r" \\")
        out.append(r"\midrule")
        for row in rows:
            cells = [_latex(c).replace("\x00", r"\textbf{").replace("\x01", "}") for c in row]
            out.append(" & ".join(cells) + r" \\")
        out.append(r"\bottomrule")
        out.append(r"\end{tabular}")
        caption = f"{task} on {dataset}. " + " ".join(
            line.rstrip(".") + "." for line in legend(members, higher, baseline, "bold")
        )
        out.append(r"\caption{" + _latex(caption) + "}")
        out.append(r"\end{table}")
        out.append("")
    return "\n".join(out)


def wrap(text: str, width: int, first: str = "", rest: str = "  ") -> list[str]:
    """Lines of at most ``width`` characters, broken between words only (a word longer stays whole)."""
    import textwrap

    return textwrap.wrap(
        text, width, initial_indent=first, subsequent_indent=rest, break_long_words=False, break_on_hyphens=False
    ) or [""]


def _lift_constant_keys(
    keys: list[str], rows: list[list[str]], liftable: dict[str, str]
) -> tuple[list[str], list[list[str]], list[str]]:
    """Key columns with one value in every row (one subject, one seed count) move into the heading, so the
    metric columns get the width."""
    drop = [i for i, k in enumerate(keys) if k in liftable and len({r[i] for r in rows}) == 1 and rows]
    shared = [liftable[keys[i]].format(rows[0][i]) for i in drop]
    keep = [i for i in range(len(rows[0]) if rows else len(keys)) if i not in drop]
    return [k for i, k in enumerate(keys) if i not in drop], [[r[i] for i in keep] for r in rows], shared


def rich_table(groups: list[GroupRow], higher: dict[str, bool], title: str, baseline: str | None = None) -> Any:
    """The comparison as text that fits the terminal (rich Text: no markup, no re-wrapping)."""
    import shutil

    from rich.text import Text

    from brainbench.cli.tables import fit_table

    width = shutil.get_terminal_size((80, 24)).columns
    out = wrap(title, width)
    if not groups:
        out.append("no finished cells")
    for task, dataset, members in blocks(groups):
        keys, values, rows = table_cells(members, higher, pad_marks=True)
        keys, rows, shared = _lift_constant_keys(keys, rows, {"sub": "subject {}", "n": "seeds: {}"})
        out.append("")
        out += wrap(", ".join([f"{task} on {dataset}", *shared]), width)
        out += fit_table(keys, values, rows, width)
        for line in legend(members, higher, baseline):
            out += wrap(line, width, "  ", "    ")
        if baseline:
            pk, pv, prow = paired_rows(members)
            pk, prow, _ = _lift_constant_keys(pk, prow, {"sub": "subject {}"})
            if prow:
                out.append("")
                out += wrap(f"paired tests against {baseline} (this row minus {baseline}):", width)
                out += fit_table(pk, pv, prow, width)
    return Text("\n".join(out), no_wrap=True, overflow="ignore")


def _metric_key(text: str) -> str:
    """MLflow metric names allow letters, digits, ``_ - . / :`` and spaces."""
    return "".join(c if c.isalnum() or c in "_-./: " else "_" for c in text)


def parent_metrics(groups: list[GroupRow]) -> dict[str, float]:
    """Summary metrics for the parent run, one per row and metric: ``<row label>/s<subject>/<metric>``, so the
    runs table and its compare view show the answer on the matrix's own run."""
    found: dict[str, float] = {}
    for g in groups:
        for name, stat in g.metrics.items():
            found[_metric_key(f"{g.label}/s{g.subject}/{name}")] = stat.mean
    return found


def comparison_table(groups: list[GroupRow]) -> dict[str, list[Any]]:
    """The comparison in long form (one row per encoder row x metric), for ``mlflow.log_table``."""
    columns: dict[str, list[Any]] = {
        k: []
        for k in ("encoder", "variant", "task", "dataset", "subject", "n_seeds", "metric", "mean", "ci_low",
                  "ci_high", "interval", "best", "vs_baseline", "diff", "p_holm")
    }
    for g in groups:
        for name, stat in sorted(g.metrics.items()):
            test = g.tests.get(name)
            values = (g.encoder, g.variant, g.task, g.dataset, g.subject, len(g.seeds), name, stat.mean, stat.low,
                      stat.high, stat.method, name in g.best, g.verdicts.get(name, ""),
                      test.difference if test else None, test.p_adjusted if test else None)
            for key, value in zip(columns, values, strict=True):
                columns[key].append(value)
    return columns


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
