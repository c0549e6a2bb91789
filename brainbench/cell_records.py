"""What a cell's run records, shaped from what the cell computed: params and tags when it starts, the recipe
once fitted, the noise ceiling and notes as they come, and the results at the end.

:func:`brainbench.runner.run_cell` computes; it hands each stage to a :class:`Record` (an MLflow run through
brainbench.records, or :data:`NO_RECORD`) through these functions, which decide names and formats. Params are
logged when the cell starts, not at the end, so a run that fails mid-training still says what it was.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brainbench.constants import PER_ITEM_FILE
from brainbench.text_tables import markdown_table

if TYPE_CHECKING:
    from brainbench.interfaces import FittedEncoder, MetricResult, Reporter, Trials

#: A cell as brainbench.runner resolves it (config, plugin objects, names) and the result it returns; named
#: by duck type here so this module does not import the runner that calls it.
ResolvedCell = Any
CellResult = Any


class NoRecord:
    """A cell run without tracking (tests, benchmarks): every record is dropped."""

    run_id = None
    recording = False

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("log_", "set_")):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


NO_RECORD: Any = NoRecord()


def is_recording(record: Any) -> bool:
    return getattr(record, "recording", True)


def record_start(record: Any, cell: ResolvedCell, params: dict[str, Any], splits: dict[str, Trials]) -> None:
    """The run's params, its tags (synthetic, cell label, plugin versions, run name) and its data inputs."""
    if not is_recording(record):
        return
    record.log_params(params)
    record.set_tags({"brainbench.synthetic": str(cell.dataset.synthetic).lower(),
                     "brainbench.cell": cell.config.label()})
    record.set_tags(run_tags(cell))
    log_inputs(record, cell, splits)


def run_tags(cell: ResolvedCell) -> dict[str, str]:
    """Tags, not params (they do not make runs differ): the run name that starts with what differs, plugin
    versions, the code version. Metric directions are tagged after evaluation (brainbench.higher_is_better)."""
    from brainbench.plugins import get_plugins, used_plugin_tags
    from brainbench.records.record import code_version, run_name

    config = cell.config
    tags = {f"brainbench.plugin.{info.name}.version": str(info.version) for info in get_plugins().plugins.values()}
    # Which distribution (name, version, path) provided each object this run used: same-named plugins differ.
    used = {"encoder": config.encoder, "task": config.task, "dataset": cell.dataset_name, "target": cell.target_name}
    tags.update(used_plugin_tags(get_plugins(), used))
    tags["mlflow.runName"] = run_name(config.encoder, config.subject, config.seed, config.task, config.encoder_options)
    commit = code_version()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def log_inputs(record: Any, cell: ResolvedCell, splits: dict[str, Any]) -> None:
    """Each split the run read as an MLflow dataset input (name, digest, subject, split) for the UI's Dataset
    column. The digest hashes the dataset's description and the split's stimulus ids."""
    described = cell.dataset.describe()
    for split, trials in splits.items():
        digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode())
        digest.update(f"{cell.config.subject}/{split}".encode())
        digest.update(np.ascontiguousarray(trials.stimulus_ids, dtype=np.int64).tobytes())
        record.log_dataset(
            f"{cell.dataset_name} s{cell.config.subject} {split}",
            digest.hexdigest()[:16],
            str(described.get("root") or cell.dataset_name),
            split,
            {"subject": cell.config.subject, "split": split, "n_trials": trials.n_trials,
             "n_images": int(len(np.unique(trials.stimulus_ids))), "n_voxels": trials.n_voxels,
             "synthetic": cell.dataset.synthetic},
        )


def record_recipe(record: Any, recipe: dict[str, Any]) -> None:
    """What the fit actually used, as ``recipe.*`` params."""
    record.log_params({f"recipe.{k}": v for k, v in recipe.items()})


def record_notes(record: Any, notes: list[str]) -> None:
    """The task's caveats, as one tag."""
    if notes:
        record.set_tags({"brainbench.notes": " | ".join(notes)[:5000]})


def record_result(
    record: Any, result: CellResult, fitted: FittedEncoder, checkpoint: Path, work_dir: Path,
    example: np.ndarray | None = None, reporter: Reporter | None = None,
) -> None:
    """The final metrics (intervals as ``.ci_low``/``.ci_high``), config, results, metrics table, checkpoint,
    figures, per-item outcomes, metric directions and, with ``log_model``, the fitted encoder as a model."""
    if not is_recording(record):
        return
    final = {f"test.{m.name}": m.value for m in result.metrics}
    for m in result.metrics:
        if m.interval:
            final[f"test.{m.name}.ci_low"], final[f"test.{m.name}.ci_high"] = m.interval
    final.update(
        {"n_parameters": result.n_parameters, "train_seconds": result.train_seconds,
         "eval_seconds": result.eval_seconds}
    )
    record.log_metrics(final)
    record.log_artifact(work_dir / "config.json")
    record.log_dict(result.to_dict(), "results.json")
    record.log_text(metrics_markdown(result.metrics), "metrics.md")
    record.log_artifact(checkpoint, "checkpoint")
    sidecar = Path(str(checkpoint) + ".json")
    if sidecar.exists():
        record.log_artifact(sidecar, "checkpoint")
    for path in result.artifacts:
        record.log_artifact(path, "figures")
    if (work_dir / PER_ITEM_FILE).exists():  # per-item outcomes, for paired comparisons across runs
        record.log_artifact(work_dir / PER_ITEM_FILE)
    record.set_tags({"brainbench.higher_is_better": json.dumps({m.name: m.higher_is_better for m in result.metrics})})
    if result.config.log_model:  # --log-model: the fitted encoder as an MLflow model (pyfunc)
        from brainbench.records.model import log_model_or_warn

        log_model_or_warn(record, fitted, checkpoint, work_dir, example, reporter)
    (work_dir / "results.json").write_text(json.dumps(result.to_dict(), indent=2))


#: The columns a run's metrics are shown in: the terminal table and the run's metrics.md.
METRIC_COLUMNS = ("metric", "value", "95% interval", "chance", "better")


def metric_cells(m: MetricResult) -> list[str]:
    """One metric's row under METRIC_COLUMNS."""
    interval = f"{m.interval[0]:.4f} - {m.interval[1]:.4f}" if m.interval else ""
    chance = f"{m.chance:.4f}" if m.chance is not None else ""
    return [m.name, f"{m.value:.4f}", interval, chance, "higher" if m.higher_is_better else "lower"]


def metrics_markdown(metrics: list[MetricResult]) -> str:
    return "\n".join(markdown_table(list(METRIC_COLUMNS), [metric_cells(m) for m in metrics])) + "\n"
