"""Figures for a matrix's parent run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

from brainbench.matrix.summary import CellRow, GroupRow


def primary_metric(task: str, available: list[str]) -> str | None:
    """The task's first declared metric that was logged; else the first logged one by name."""
    try:
        from brainbench.plugins import get_plugins

        declared = [spec.name for spec in get_plugins().tasks.create(task).metrics]
    except Exception:  # the task's plugin may be absent where the comparison is read
        declared = []
    for name in declared:
        if name in available:
            return name
    return sorted(available)[0] if available else None


def write_figures(groups: list[GroupRow], rows: list[CellRow], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for task in sorted({g.task for g in groups}):
        task_groups = [g for g in groups if g.task == task]
        metrics = sorted({m for g in task_groups for m in g.metrics})
        metric = primary_metric(task, metrics)
        if metric is None:
            continue
        for name in metrics:  # one figure per metric
            written.append(_accuracy_bars(plt, task_groups, task, name, folder))
        written.append(
            _parameters_scatter(plt, [r for r in rows if r.field("task") == task], task, metric, folder)
        )
    if rows:
        written.append(_train_times(plt, rows, folder))
    return written


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _title(ax, fig, text: str) -> None:
    """A title wrapped to the figure's width, so no word is cut off at the edge of the PNG."""
    import textwrap

    characters = max(20, int(fig.get_figwidth() * 11))  # ~11 characters per inch at 10 pt
    ax.set_title(textwrap.fill(text, characters, break_long_words=False), fontsize=10)


def _interval_words(groups: list[GroupRow], metric: str) -> str:
    methods = sorted({g.metrics[metric].method for g in groups if metric in g.metrics and g.metrics[metric].method})
    return "; ".join(methods) if methods else "no interval"


def _group_label(group: GroupRow) -> str:
    label = group.encoder if not group.variant else f"{group.encoder} ({group.variant})"
    return label if group.dataset in ("", "None") else f"{label} [{group.dataset}]"


def _accuracy_bars(plt, groups: list[GroupRow], task: str, metric: str, folder: Path) -> Path:
    labels = list(dict.fromkeys(_group_label(g) for g in groups))
    subjects = sorted({g.subject for g in groups}, key=lambda s: (len(s), s))
    width = 0.8 / max(1, len(subjects))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(labels) * max(1, len(subjects)) / 2 + 2), 4))
    for j, subject in enumerate(subjects):
        xs, means, errors = [], [], [[], []]
        for i, label in enumerate(labels):
            match = [
                g for g in groups if _group_label(g) == label and g.subject == subject and metric in g.metrics
            ]
            if not match:
                continue
            stat = match[0].metrics[metric]
            xs.append(i + (j - (len(subjects) - 1) / 2) * width)
            means.append(stat.mean)
            errors[0].append(stat.mean - stat.low if stat.low is not None else 0.0)
            errors[1].append(stat.high - stat.mean if stat.high is not None else 0.0)
        ax.bar(xs, means, width=width, yerr=errors, capsize=3, label=f"subject {subject}")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set_ylabel(metric)
    _title(ax, fig, f"{task}: {metric} per encoder and subject (95% interval: {_interval_words(groups, metric)})")
    ax.legend()
    return _save(plt, fig, folder / f"{task}_{metric}_by_encoder_subject.png")


def _parameters_scatter(plt, rows: list[CellRow], task: str, metric: str, folder: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for encoder in sorted({r.field("encoder") for r in rows}):
        points = [
            (r.n_parameters, r.metrics[metric])
            for r in rows
            if r.field("encoder") == encoder and metric in r.metrics and r.n_parameters
        ]
        if points:
            ax.scatter(*zip(*points, strict=True), label=encoder, alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("trained parameters")
    ax.set_ylabel(metric)
    _title(ax, fig, f"{task}: parameters vs {metric} (one point per cell)")
    ax.legend()
    return _save(plt, fig, folder / f"{task}_parameters_vs_{metric}.png")


def _train_times(plt, rows: list[CellRow], folder: Path) -> Path:
    timed = [r for r in rows if r.train_seconds is not None]
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.28 * len(timed) + 1)))
    ax.barh([r.label for r in timed], [r.train_seconds for r in timed])
    ax.invert_yaxis()
    ax.set_xlabel("training time (s)")
    _title(ax, fig, "training time per cell")
    return _save(plt, fig, folder / "train_seconds_per_cell.png")
