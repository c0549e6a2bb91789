"""The paper report of ``brainbench reproduce``: every table and figure of the paper in its order, ours beside
the published numbers, noise ceilings beside accuracies; HTML and Markdown from jinja2 templates
(``brainbench/papers/templates``).

Sections follow the spec's ``[[experiments]]`` (each a table of the paper), then the t-SNE figure (read from
the full model's subject-1 retrieval run) and the parameters and FLOPs of each model (counted here with
``brainbench.model_info`` at the paper's sizes, beside the counts of the models as trained).
"""

from __future__ import annotations

import base64
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainbench.matrix.experiments import variant_of
from brainbench.papers.published import PublishedNumbers

TEMPLATES = Path(__file__).resolve().parent / "templates"
NOISE_CEILING_METRIC = "data.noise_ceiling_median"
RETRIEVAL_ORDER = ("fmri_to_image_top1_{way}", "image_to_fmri_top1_{way}", "fmri_to_image_top1_full",
                   "image_to_fmri_top1_full")
WAY_METRIC = re.compile(r"^(fmri_to_image|image_to_fmri)_top1_(\d+)way$")
#: The paper's sizes for the parameters table: subject 1's nsdgeneral voxels.
PAPER_VOXELS = 15724


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    name: str
    png: bytes
    caption: str

    @property
    def base64(self) -> str:
        return base64.b64encode(self.png).decode()


@dataclass
class Section:
    number: int
    name: str
    title: str
    note: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class PaperReport:
    title: str
    paper: dict[str, Any]
    intro: list[str]
    sections: list[Section]
    missing: list[str]
    sources: list[str]
    rerun: list[str]

    @property
    def figures(self) -> list[Figure]:
        return [figure for section in self.sections for figure in section.figures]


# ----------------------------------------------------------------------------------------- formatting


def percent(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{100 * value:.{digits}f}%"


def metric_text(name: str, value: float | None) -> str:
    if value is None:
        return ""
    if name in ("parameters", "forward_flops") or abs(value) >= 1000:
        return f"{value:,.0f}"
    if "cosine" in name or name in ("ssim", "pixcorr") or name.startswith(("eff", "swav")):
        return f"{value:.3f}"
    return percent(value)


def metric_title(name: str) -> str:
    match = WAY_METRIC.match(name)
    if match:
        query, _, candidate = match.group(1).replace("fmri", "fMRI").partition("_to_")
        return f"{query}→{candidate} {match.group(2)}-way"
    if name.endswith("_top1_full"):
        query, _, candidate = name[: -len("_top1_full")].replace("fmri", "fMRI").partition("_to_")
        return f"{query}→{candidate} full"
    return name


# ------------------------------------------------------------------------------------------- runs


def runs_by_key(runs: list[Any]) -> dict[str, Any]:
    """The run of each cell key: its latest FINISHED one, else its latest."""
    chosen: dict[str, Any] = {}
    for run in sorted(runs, key=lambda r: r.start_time):
        key = run.cell_key
        if key and (key not in chosen or run.status == "FINISHED" or chosen[key].status != "FINISHED"):
            chosen[key] = run
    return chosen


def test_metrics(run: Any) -> dict[str, float]:
    if run is None:
        return {}
    return {k[5:]: v for k, v in run.metrics.items() if k.startswith("test.") and not k.endswith(("ci_low", "ci_high"))}


def status_text(run: Any, skipped: str | None = None) -> str:
    if skipped:
        return "skipped"
    if run is None:
        return "not run"
    return "ok" if run.status == "FINISHED" else run.status.lower()


def _ordered_metrics(runs: list[Any], task: str) -> list[str]:
    names: list[str] = []
    for run in runs:
        names += [n for n in test_metrics(run) if n not in names]
    if task == "retrieval":
        ways = sorted({int(m.group(2)) for n in names if (m := WAY_METRIC.match(n))}, reverse=True)
        way = f"{ways[0]}way" if ways else "300way"
        return [pattern.format(way=way) for pattern in RETRIEVAL_ORDER]
    try:
        from brainbench.plugins import get_plugins

        declared = [spec.name for spec in get_plugins().tasks.create(task).metrics]
    except Exception:  # the task's plugin may be absent where the report is read
        declared = []
    ordered = [n for n in declared if n in names] + sorted(n for n in names if n not in declared)
    return ordered or declared[:4]


def _row_label(cell: Any, experiment: str) -> str:
    label = variant_of(cell)
    return label if label else cell.config.encoder


def _published_metric(published: PublishedNumbers, experiment: str, metric: str) -> str | None:
    """The published metric standing for ``metric`` (300-way numbers stand for an N-way run of fewer items)."""
    names = published.metrics(experiment)
    if metric in names:
        return metric
    match = WAY_METRIC.match(metric)
    if match:
        candidate = f"{match.group(1)}_top1_300way"
        if candidate in names:
            return candidate
    return None


def experiment_section(number: int, planned: Any, runs: dict[str, Any], published: PublishedNumbers) -> Section:
    experiment = planned.experiment
    section = Section(number, experiment.name, experiment.title, experiment.note)
    cells = list(planned.cells) + [cell for cell, _ in planned.skipped]
    why = {id(cell): reason for cell, reason in planned.skipped}
    task = cells[0].config.task if cells else ""
    chosen = [runs.get(cell.config.key) for cell in cells]
    metrics = _ordered_metrics([r for r in chosen if r is not None], task)
    subjects = len({cell.config.subject for cell in cells}) > 1
    headers = ["model" if not any(variant_of(c) for c in cells) else "variant"]
    headers += ["subject"] if subjects else []
    headers += ["status"]
    paper_columns = {m: _published_metric(published, experiment.name, m) for m in metrics}
    for metric in metrics:
        headers.append(metric_title(metric))
        if paper_columns[metric]:
            same = paper_columns[metric] == metric
            headers.append("paper" if same else f"paper ({metric_title(paper_columns[metric]).split()[-1]})")
    headers.append("noise ceiling")
    table = Table(headers, [])
    section.tables.append(table)
    ceilings = 0
    for cell, run in zip(cells, chosen, strict=True):
        label = _row_label(cell, experiment.name)
        row = [label] + ([str(cell.config.subject)] if subjects else [])
        row.append(status_text(run, why.get(id(cell))))
        values = test_metrics(run) if run is not None and run.status == "FINISHED" else {}
        for metric in metrics:
            row.append(metric_text(metric, values.get(metric)))
            if paper_columns[metric]:
                entry = published.lookup(experiment.name, label, paper_columns[metric], cell.config.subject)
                row.append("" if entry is None else (metric_text(metric, entry.value) if entry.value is not None
                                                     else "(to fill in)"))
        ceiling = run.metrics.get(NOISE_CEILING_METRIC) if run is not None else None
        ceilings += ceiling is not None
        row.append("" if ceiling is None else f"{ceiling:.1f}%")
        table.rows.append(row)
    if not cells:
        section.notes.append("no cells (filtered out by --only or --subject)")
    if not ceilings:
        section.notes.append(
            "noise ceiling: none logged by these runs (NSD's formula from the test repeats; it needs repeated test "
            "trials and a brainbench that logs data.noise_ceiling_median)")
    else:
        section.notes.append("noise ceiling: median over the voxels read of NSD's noise ceiling (percent of "
                             "variance), from the test repeats; an upper bound on voxel-wise prediction, shown "
                             "beside the accuracies as the data's reliability")
    for cell, reason in planned.skipped:
        section.notes.append(f"skipped {_row_label(cell, experiment.name)} (subject {cell.config.subject}): {reason}")
    for cell, run in zip(cells, chosen, strict=True):
        if run is not None and run.status != "FINISHED" and run.tags.get("brainbench.error"):
            section.notes.append(f"{_row_label(cell, experiment.name)}: {run.tags['brainbench.error'][:300]}")
    if any(cell.config.budget == "quick" for cell in planned.cells):
        details = sorted({d for cell in planned.cells for d in cell.details if d.startswith("quick #")})
        if details:
            section.notes.append("quick budget: " + "; ".join(details))
    return section


def _download(tracker: Any, run_id: str, path: str) -> bytes | None:
    try:
        with tempfile.TemporaryDirectory() as folder:
            return Path(tracker.client.download_artifacts(run_id, path, folder)).read_bytes()
    except Exception:  # absent artifact or store trouble: the report says so instead
        return None


def tsne_section(number: int, plan: Any, runs: dict[str, Any], tracker: Any) -> Section:
    section = Section(number, "tsne", "t-SNE of test-set brain embeddings against CLIP image embeddings",
                      "Lite-Mind (full model), subject 1, test set: each test image's brain embedding (prediction "
                      "from its averaged fMRI) and its CLIP image embedding, in one scikit-learn t-SNE map.")
    # the full model's retrieval run, subject 1 first; any Lite-Mind retrieval run of the plan otherwise
    candidates = [(planned.experiment.name, cell) for planned in plan.experiments for cell in planned.cells
                  if cell.config.encoder == "litemind" and cell.config.task == "retrieval"]
    candidates.sort(key=lambda pair: (pair[0] != "retrieval", "roi" in pair[1].config.dataset_options,
                                      bool(pair[1].config.encoder_options), pair[1].config.subject != 1))
    for experiment_name, cell in candidates:
        run = runs.get(cell.config.key)
        if run is None or run.status != "FINISHED":
            continue
        png = _download(tracker, run.run_id, "figures/tsne.png")
        data = _download(tracker, run.run_id, "figures/tsne.json")
        if png is None:
            continue
        info = json.loads(data) if data else {}
        variant = variant_of(cell)
        where = f"table {experiment_name}" + (f", {variant}" if variant else "")
        caption = (f"subject {cell.config.subject} ({where}): {info.get('n_items', '?')} test items, "
                   f"{info.get('n_points', '?')} points, {info.get('method', 't-SNE')}; run {run.run_id}")
        section.figures.append(Figure(f"tsne_subject{cell.config.subject}.png", png, caption))
        break
    if not section.figures:
        section.notes.append("no t-SNE figure: the Lite-Mind retrieval run was not run here, or did not finish")
    return section


def parameter_section(number: int, plan: Any, runs: dict[str, Any], published: PublishedNumbers) -> Section:
    """Each model at the paper's sizes (subject 1's 15,724 voxels), and as trained here."""
    from brainbench.plugins import get_plugins

    section = Section(number, "parameters", "Parameters and FLOPs of each model",
                      f"Counted with brainbench.model_info at the paper's sizes (subject 1, {PAPER_VOXELS:,} voxels), "
                      "reference options; FLOPs per sample of the forward pass (matmuls and convolutions; FFTs "
                      "not counted). 'as trained here' is the count of the model each run trained (quick "
                      "variants are narrower).")
    models = [("litemind", (257, 768), "Lite-Mind (full, 257x768)", "litemind"),
              ("litemind", (768,), "Lite-Mind (CLS-only, 768)", "litemind (CLS-only)"),
              ("mindeye", (257, 768), "MindEye (257x768)", "mindeye"),
              ("mindeye", (768,), "MindEye (768)", None),
              ("ridge", (768,), "ridge (768)", None)]
    rows = []
    counts: dict[str, float] = {}
    for encoder_name, shape, label, paper_row in models:
        figures = _model_figures(get_plugins(), encoder_name, shape)
        params, flops = figures.get("parameters"), figures.get("forward_flops")
        counts[label] = params or 0
        trained = sorted({int(r.metrics["n_parameters"]) for cell in plan.cells
                          if cell.config.encoder == encoder_name and (r := runs.get(cell.config.key)) is not None
                          and r.metrics.get("n_parameters") and _shape_of(r) == shape})
        entry = published.lookup("parameters", paper_row, "parameters", None) if paper_row else None
        rows.append([label, metric_text("parameters", params), metric_text("parameters", flops),
                     ", ".join(f"{n:,}" for n in trained) or "",
                     "" if entry is None or entry.value is None else f"{entry.value:,.0f}"])
    section.tables.append(Table(["model", "parameters", "FLOPs / sample", "as trained here", "published"], rows))
    ours = 1 - counts["Lite-Mind (full, 257x768)"] / max(counts["MindEye (257x768)"], 1)
    claim = published.lookup("parameters", "litemind", "parameters_reduction_vs_mindeye", None)
    line = f"Lite-Mind has {100 * ours:.1f}% fewer parameters than MindEye here"
    if claim is not None and claim.value is not None:
        line += f" (paper: {100 * claim.value:.1f}% fewer; {claim.source})"
    section.notes.append(line)
    for entry in published.known():
        if entry.experiment == "parameters" and entry.protocol:
            section.notes.append(f"published {entry.row}: {entry.protocol}")
    return section


def _shape_of(run: Any) -> tuple[int, ...] | None:
    target = run.params.get("target", "")
    if not target:
        return None
    return (257, 768) if target.endswith("tokens") else (768,)


def _model_figures(plugins: Any, encoder_name: str, shape: tuple[int, ...]) -> dict[str, Any]:
    encoder = plugins.encoders.create(encoder_name)
    if hasattr(encoder, "build"):
        from brainbench.model_info import model_figures

        return model_figures(encoder, PAPER_VOXELS, shape)
    out = 1
    for size in shape:
        out *= size
    # a linear read-out: a weight per voxel and output, and a bias per output
    return {"parameters": PAPER_VOXELS * out + out, "forward_flops": 2 * PAPER_VOXELS * out}


def latest_runs(tracker: Any, keys: set[str]) -> dict[str, Any]:
    """The latest run of each of ``keys`` in the tracker's experiment, whichever matrix ran it."""
    from brainbench.records.query import search

    return {key: run for key, run in runs_by_key(search(tracker, "")).items() if key in keys}


def collect(plan: Any, tracker: Any, parent_run_id: str | None, published: PublishedNumbers,
            header: dict[str, Any], runs: dict[str, Any] | None = None) -> PaperReport:
    from brainbench.records.query import children

    if runs is None:
        runs = runs_by_key(children(tracker, parent_run_id)) if parent_run_id else {}
    sections: list[Section] = []
    for planned in plan.experiments:
        sections.append(experiment_section(len(sections) + 1, planned, runs, published))
    sections.append(tsne_section(len(sections) + 1, plan, runs, tracker))
    sections.append(parameter_section(len(sections) + 1, plan, runs, published))
    paper = published.paper
    title = f"{paper.get('title', 'paper')} - reproduced with brainbench"
    intro = [f"Paper: {paper.get('authors', '')}, {paper.get('venue', '')}, arXiv {paper.get('arxiv', '')} "
             f"({paper.get('version', '')})."]
    intro += [f"{k}: {v}" for k, v in header.items()]
    missing = [f"{n.experiment}: {n.row}{'' if n.subject is None else f', subject {n.subject}'}, {n.metric} - "
               f"{n.source}" for n in published.missing()]
    sources = [f"{n.experiment}: {n.row}{'' if n.subject is None else f', subject {n.subject}'}, {n.metric} = "
               f"{metric_text(n.metric, n.value)} - {n.source}" for n in published.known()]
    rerun = [f"brainbench reproduce litemind {header.get('command options', '')}".strip()]
    if parent_run_id:
        rerun.append(f"brainbench compare {parent_run_id} --tracking-uri {tracker.uri}")
    return PaperReport(title, paper, intro, sections, missing, sources, rerun)


# --------------------------------------------------------------------------------------------- output


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=jinja2.select_autoescape(
        enabled_extensions=("html.j2",), default_for_string=False), trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["md_cell"] = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    return env


def render(report: PaperReport) -> tuple[str, str]:
    """(Markdown, HTML) of the report."""
    env = _environment()
    return env.get_template("report.md.j2").render(report=report), env.get_template("report.html.j2").render(
        report=report)


def write(report: PaperReport, folder: Path) -> list[Path]:
    """report.md (figures beside it in figures/) and a self-contained report.html in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "figures").mkdir(exist_ok=True)
    for figure in report.figures:
        (folder / "figures" / figure.name).write_bytes(figure.png)
    markdown, html = render(report)
    paths = [folder / "report.md", folder / "report.html"]
    paths[0].write_text(markdown)
    paths[1].write_text(html)
    return paths
