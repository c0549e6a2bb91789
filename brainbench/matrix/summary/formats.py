"""The grouped comparison written out: records, CSV, JSON, Markdown, LaTeX, terminal text, MLflow summaries.

Every format reads the GroupRows of :mod:`brainbench.matrix.summary.statistics`; none computes a statistic.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from brainbench.matrix.summary.statistics import GROUP_FIELDS, CellRow, GroupRow, interval_methods, metric_names
from brainbench.text_tables import fit_table, markdown_table

VERDICT_MARKS = {"better": "▲", "worse": "▼", "no difference": "=", "baseline": "·", "untested": "?"}


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


#: (column suffix, attribute) of a Stat and of a paired test in the records; the item-only ones with levels "both"
STAT_FIELDS = (("mean", "mean"), ("ci_low", "low"), ("ci_high", "high"), ("interval", "method"))
STAT_ITEM_FIELDS = (("ci_low_items", "item_low"), ("ci_high_items", "item_high"))
TEST_FIELDS = (("diff", "difference"), ("diff_low", "low"), ("diff_high", "high"), ("p", "p_value"),
               ("p_holm", "p_adjusted"), ("test", "method"))
TEST_ITEM_FIELDS = (("diff_low_items", "item_low"), ("diff_high_items", "item_high"), ("p_items", "item_p_value"))


def _put(record: dict[str, Any], name: str, value: Any, fields: tuple[tuple[str, str], ...]) -> None:
    for suffix, attribute in fields:
        record[f"{name}.{suffix}"] = getattr(value, attribute) if value else None


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
            _put(record, name, g.metrics.get(name), STAT_FIELDS + (STAT_ITEM_FIELDS if g.levels == "both" else ()))
            if g.verdicts:
                record[f"{name}.vs_baseline"] = g.verdicts.get(name)
                _put(record, name, g.tests.get(name), TEST_FIELDS + (TEST_ITEM_FIELDS if g.levels == "both" else ()))
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


def to_markdown(groups: list[GroupRow], higher: dict[str, bool], baseline: str | None = None) -> str:
    out = []
    for task, dataset, members in blocks(groups):
        keys, values, rows = table_cells(members, higher, ("**", "**"))
        headers = keys + values
        out.append(f"**{task}** on {dataset}\n")
        out += markdown_table(headers, rows, "l" * len(keys) + "r" * len(values))
        out.append("")
        out += [f"- {line}" for line in legend(members, higher, baseline, "**bold**")]
        out.append("")
        if baseline:
            pk, pv, prow = paired_rows(members)
            if prow:
                out.append(f"Paired tests against {baseline}:\n")
                out += markdown_table(pk + pv, prow)
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
