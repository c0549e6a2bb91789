"""One cell, start to finish: dataset -> target -> encoder -> training -> task; a CellResult comes back.

What the run records is shaped by brainbench.cell_records, stage by stage, from what this module computes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brainbench import __version__
from brainbench.arrays import RowIndexed
from brainbench.cell_records import (  # re-exported: the metrics table lives with the records
    METRIC_COLUMNS,
    NO_RECORD,
    metric_cells,
    metrics_markdown,
    record_notes,
    record_recipe,
    record_result,
    record_start,
)
from brainbench.config import RunConfig
from brainbench.constants import PER_ITEM_FILE
from brainbench.errors import BrainbenchError
from brainbench.interfaces import (
    Dataset,
    EvalContext,
    FitData,
    FitStage,
    MetricResult,
    Reporter,
    Target,
    TrainSettings,
)
from brainbench.plugins import PluginSet, get_plugins
from brainbench.repeats import group_mean
from brainbench.rows import read_rows


@dataclass
class CellResult:
    config: RunConfig
    metrics: list[MetricResult]
    params: dict[str, Any]
    n_parameters: int
    train_seconds: float
    eval_seconds: float
    synthetic: bool
    run_id: str | None = None
    artifacts: list[Path] = field(default_factory=list)

    def metric_dict(self) -> dict[str, float]:
        return {m.name: m.value for m in self.metrics}

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "key": self.config.key,
            "run_id": self.run_id,
            "synthetic": self.synthetic,
            "n_parameters": self.n_parameters,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "metrics": [
                {
                    "name": m.name,
                    "value": m.value,
                    "higher_is_better": m.higher_is_better,
                    "interval": list(m.interval) if m.interval else None,
                    "chance": m.chance,
                }
                for m in self.metrics
            ],
        }


@dataclass
class ResolvedCell:
    """The plugin objects a config names, with defaults filled in from the task and dataset."""

    config: RunConfig
    task: Any
    dataset_name: str
    dataset: Dataset
    target_name: str
    target: Target
    encoder: Any
    quick: Any | None = None  # the QuickRecipe in force, if any


def resolve(config: RunConfig, plugins: PluginSet | None = None) -> ResolvedCell:
    plugins = plugins or get_plugins()
    task = plugins.tasks.create(config.task, **config.task_options)
    encoder = plugins.encoders.create(config.encoder, **config.encoder_options)
    dataset_name = config.dataset or task.default_dataset
    dataset = plugins.datasets.create(dataset_name, root=config.data_path, **config.dataset_options)
    quick = None
    if config.budget == "quick" or (config.budget == "auto" and dataset.demo_scale):
        quick = encoder.quick_recipe()
        if quick is not None and quick.options:
            # The run's own options win over the recipe's.
            encoder = plugins.encoders.create(config.encoder, **{**quick.options, **config.encoder_options})
    target_name = config.target or task.default_target or default_target_for(encoder, dataset)
    target = plugins.targets.create(target_name, **config.target_options)
    if config.subject not in dataset.subjects():
        raise BrainbenchError(
            f"dataset {dataset_name!r} has no subject {config.subject}; subjects: {dataset.subjects()}"
        )
    return ResolvedCell(config, task, dataset_name, dataset, target_name, target, encoder, quick)


def default_target_for(encoder: Any, dataset: Dataset) -> str:
    """The target of a run that names none (and whose task names none): the dataset's token target for an
    encoder whose reference trains on tokens (Lite-Mind, MindEye) on real-scale data, else its default.
    Demo-scale simulated data keep the pooled default, so a plain run there takes seconds, not hours."""
    tokens = getattr(dataset, "token_target", None)
    if tokens and not dataset.demo_scale and getattr(encoder, "reference_target", "pooled") == "tokens":
        return tokens
    return dataset.default_target


def split_train_validation(
    stimulus_ids: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Masks over training trials; whole stimuli go to validation so it holds unseen images."""
    unique = np.unique(stimulus_ids)
    n_val = int(round(len(unique) * fraction))
    if fraction > 0 and n_val == 0:
        n_val = 1
    rng = np.random.default_rng(seed)
    val_ids = rng.choice(unique, size=n_val, replace=False) if n_val else np.empty(0, dtype=unique.dtype)
    val_mask = np.isin(stimulus_ids, val_ids)
    return ~val_mask, val_mask


def repeat_groups(stimulus_ids: np.ndarray) -> np.ndarray:
    """(n_images, R) row numbers of each image's repeats in row order; an image with fewer than R repeats
    cycles through its own (so step s still takes one of its trials)."""
    unique, first, counts = np.unique(stimulus_ids, return_index=True, return_counts=True)
    by_image = np.argsort(stimulus_ids, kind="stable")  # rows grouped by image, each group in row order
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    width = int(counts.max()) if len(counts) else 0
    offsets = np.arange(width)[None, :] % counts[:, None]
    groups = by_image[starts[:, None] + offsets]
    return groups[np.argsort(first, kind="stable")]  # images in the order their first row appears


def embed_rows(target: Target, dataset: Dataset, stimulus_ids: np.ndarray) -> RowIndexed:
    """Target embeddings for each row's stimulus, each distinct stimulus embedded once."""
    unique, inverse = np.unique(stimulus_ids, return_inverse=True)
    embeddings = np.asarray(target.embed(dataset, unique), dtype=np.float32)
    expected = (len(unique), *target.shape)
    if embeddings.shape != expected:
        raise BrainbenchError(
            f"target {target.name!r} returned shape {embeddings.shape}, expected {expected}"
        )
    check_finite_embeddings(embeddings, unique, target, dataset)
    return RowIndexed(embeddings, inverse)  # one type for every encoder (see FitData.targets)


def check_finite_embeddings(embeddings: np.ndarray, stimulus_ids: np.ndarray, target: Target, dataset: Dataset) -> None:
    """NaN or infinite target embeddings train nothing and poison every metric: name where they came from."""
    bad = ~np.isfinite(embeddings.reshape(len(embeddings), -1)).all(axis=1)
    if bad.any():
        source = target.cache_path(dataset) or dataset.describe().get("root") or dataset.name
        shown = ", ".join(str(int(i)) for i in stimulus_ids[bad][:5])
        raise BrainbenchError(
            f"target {target.name!r} gave NaN or infinite embeddings for {int(bad.sum())} of {len(embeddings)} "
            f"stimuli (ids {shown}{', ...' if bad.sum() > 5 else ''}) from {source}; rebuild the target cache "
            "(brainbench targets build) or fix the stored embeddings"
        )


def check_trials(trials: Any, split: str, config: RunConfig, dataset_name: str) -> None:
    """An empty split, or voxels the model cannot use, stop the run before any work with the reason."""
    if trials.n_trials == 0:
        raise BrainbenchError(
            f"dataset {dataset_name!r}, subject {config.subject}: the {split!r} split has no trials; "
            "check the data with `brainbench data inspect`"
        )


def run_params(cell: ResolvedCell, n_voxels: int) -> dict[str, Any]:
    config = cell.config
    params: dict[str, Any] = {
        "encoder": config.encoder,
        "task": config.task,
        "dataset": cell.dataset_name,
        "target": cell.target_name,
        "subject": config.subject,
        "seed": config.seed,
        "repeats": config.repeats,
        "budget": "quick" if cell.quick is not None else "reference",
        "val_fraction": config.val_fraction,
        "precision": config.precision,
        "compile": config.compile,
        "optimizer": config.optimizer,
        "n_voxels": n_voxels,
        "synthetic": cell.dataset.synthetic,
        "cell_key": config.key,
        "brainbench_version": __version__,
    }
    for name, value in training_overrides(cell).items():
        if value is not None:
            params[name] = value
    params.update({f"encoder.{k}": v for k, v in cell.encoder.params().items()})
    params.update({f"task.{k}": v for k, v in cell.task.params().items()})
    params.update({f"dataset.{k}": v for k, v in config.dataset_options.items()})
    params.update({f"target.{k}": v for k, v in cell.target.params().items() if k != "target"})
    return params


def training_overrides(cell: ResolvedCell) -> dict[str, Any]:
    """Epochs, batch size and lr the run asks for: its own, else the quick recipe's, else None (defaults)."""
    config, quick = cell.config, cell.quick
    return {
        "epochs": config.epochs if config.epochs is not None else getattr(quick, "epochs", None),
        "batch_size": config.batch_size if config.batch_size is not None else getattr(quick, "batch_size", None),
        "lr": config.lr if config.lr is not None else getattr(quick, "lr", None),
    }


def run_cell(
    cell: RunConfig | ResolvedCell,
    reporter: Reporter,
    work_dir: Path,
    record: Any = None,
) -> CellResult:
    """Train and evaluate one cell: resolved already (preflight's, the plugin objects built once) or resolved
    here from its config. ``record`` (a brainbench.records.record.Record) receives what brainbench.cell_records
    shapes at each stage; None: nothing is recorded."""
    from brainbench.threads import apply_for_run

    record = NO_RECORD if record is None else record
    cell = cell if isinstance(cell, ResolvedCell) else resolve(cell)
    config = cell.config
    dataset, target, task = cell.dataset, cell.target, cell.task
    work_dir.mkdir(parents=True, exist_ok=True)
    # after the plugins are imported, so the BLAS that scipy loads is limited too (brainbench/threads.py)
    threads = apply_for_run()

    train = dataset.trials(config.subject, "train")
    test = dataset.trials(config.subject, task.split)
    check_trials(train, "train", config, cell.dataset_name)
    check_trials(test, task.split, config, cell.dataset_name)
    params = run_params(cell, train.n_voxels)
    record_start(record, cell, params, {"train": train, task.split: test})
    if cell.quick is not None:
        reporter.info(
            f"demo-scale data: {config.encoder} uses its quick recipe ({cell.quick.note}); "
            "pass --budget reference for the reference recipe"
        )
    reporter.info(f"CPU threads: {threads['threads']} ({threads['threads_choice']})")
    reporter.info(
        f"{config.label()}: {cell.dataset_name} ({'synthetic' if dataset.synthetic else 'real'}), "
        f"{train.n_trials} train / {test.n_trials} {task.split} trials, {train.n_voxels} voxels, "
        f"target {cell.target_name} {'x'.join(map(str, target.shape))}"
    )

    # One rule for every encoder (see FitData): all training rows, the validation images' rows last.
    fit_mask, val_mask = split_train_validation(train.stimulus_ids, config.val_fraction, config.seed)
    order = np.concatenate([np.flatnonzero(fit_mask), np.flatnonzero(val_mask)])
    fit_data = FitData(
        voxels=read_rows(train.voxels, order),
        targets=embed_rows(target, dataset, train.stimulus_ids[order]),
        n_validation=int(val_mask.sum()),
        repeat_groups=repeat_groups(train.stimulus_ids[order]) if train.one_repeat_per_step else None,
    )
    settings = TrainSettings(
        **training_overrides(cell),
        device=config.device,
        seed=config.seed,
        precision=config.precision,
        compile=config.compile,
        optimizer=config.optimizer,
        checkpoint_dir=work_dir / "checkpoints",
        checkpoint_every=config.checkpoint_every,
        early_stopping=config.early_stopping,
    )
    started = time.perf_counter()
    fitted = cell.encoder.fit(fit_data, settings, reporter)
    train_seconds = time.perf_counter() - started
    del fit_data
    recipe = {**resolved_recipe(cell, fitted), **threads}
    # a resumed fit reports its whole training time, the part before the interruption included
    train_seconds += float(recipe.get("train_seconds_before_resume") or 0.0)
    record_recipe(record, recipe)

    started = time.perf_counter()
    test_voxels = test.load()
    log_noise_ceiling(record, reporter, test_voxels, test.stimulus_ids, dataset, config.subject)
    if config.repeats == "average-voxels":
        test_voxels, test_ids = group_mean(test_voxels, test.stimulus_ids)
        predictions = fitted.predict(test_voxels)
    else:
        predictions, test_ids = group_mean(fitted.predict(test_voxels), test.stimulus_ids)
    test_targets = np.asarray(target.embed(dataset, test_ids), dtype=np.float32)
    check_finite_embeddings(test_targets, test_ids, target, dataset)
    context = EvalContext(
        predictions=np.asarray(predictions, dtype=np.float32),
        targets=test_targets,
        stimulus_ids=test_ids,
        dataset=dataset,
        target=target,
        subject=config.subject,
        seed=config.seed,
        output_dir=work_dir,
        training=FitStage(fitted, train, settings, reporter, budget=effective_budget(config, dataset)),
    )
    metrics = task.evaluate(context)
    eval_seconds = time.perf_counter() - started
    write_per_item(context, metrics, work_dir / PER_ITEM_FILE)
    for note in context.notes:
        reporter.info(f"[yellow]note:[/yellow] {note}")
    record_notes(record, context.notes)

    result = CellResult(
        config=config,
        metrics=metrics,
        params={**params, **{f"recipe.{k}": v for k, v in recipe.items()}},
        n_parameters=int(getattr(fitted, "n_parameters", 0)),
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        synthetic=dataset.synthetic,
        run_id=getattr(record, "run_id", None),
        artifacts=list(context.artifacts),
    )
    checkpoint = fitted.save(work_dir / "model")
    (work_dir / "config.json").write_text(json.dumps(resolved_config(cell, recipe), indent=2, default=str))
    record_result(record, result, fitted, checkpoint, work_dir, example=test_voxels[:2], reporter=reporter)
    return result


def effective_budget(config: RunConfig, dataset: Dataset) -> str:
    """"quick" when the run asks for it or (auto) the data is demo-scale, else "reference"."""
    quick = config.budget == "quick" or (config.budget == "auto" and dataset.demo_scale)
    return "quick" if quick else "reference"


def log_noise_ceiling(
    record: Any, reporter: Reporter, voxels: np.ndarray, stimulus_ids: np.ndarray, dataset: Dataset, subject: int
) -> None:
    """NSD's noise ceiling of the test trials (brainbench.noise_ceiling), said and logged as ``data.*``
    metrics, per labelled region too; nothing when no test image is repeated."""
    from brainbench.noise_ceiling import ceiling_metrics

    metrics = ceiling_metrics(voxels, stimulus_ids, dataset.voxel_labels(subject))
    if not metrics:
        return
    reporter.info(
        f"noise ceiling of the test repeats (NSD formula, {metrics['data.noise_ceiling_n']:.3g} trials averaged): "
        f"median {metrics['data.noise_ceiling_median']:.1f}% over voxels, ncsnr {metrics['data.ncsnr_median']:.3f}"
    )
    record.log_metrics(metrics)


def resolved_recipe(cell: ResolvedCell, fitted: Any) -> dict[str, Any]:
    """What the fit actually used: the encoder's own record (epochs, lr schedule, ridge's penalty, ...)
    plus the budget it ran under."""
    recipe = {"budget": "quick" if cell.quick is not None else "reference"}
    recipe.update(dict(getattr(fitted, "recipe", {}) or {}))
    return recipe


def resolved_config(cell: ResolvedCell, recipe: dict[str, Any]) -> dict[str, Any]:
    """The run as it ran: defaults filled in (dataset, target, budget, quick-recipe options and settings,
    epochs, batch, lr), so ``RunConfig.from_dict(config["config"])`` repeats it exactly."""
    config = cell.config
    quick_options = cell.quick.options if cell.quick is not None else {}
    resolved = config.with_changes(
        dataset=cell.dataset_name,
        target=cell.target_name,
        budget=recipe["budget"],
        # after early stopping the recipe's epochs are the chosen count: keep the requested budget
        epochs=config.epochs if "selected_epochs" in recipe else recipe.get("epochs", config.epochs),
        batch_size=recipe.get("batch_size", config.batch_size),
        lr=recipe.get("base_lr", config.lr),
        encoder_options={**quick_options, **config.encoder_options},
    )
    return {"config": resolved.to_dict(), "requested": config.to_dict(), "cell_key": config.key,
            "recipe": recipe}


#: The run artifact with each test item's outcome per metric (see EvalContext.per_item).


def write_per_item(context: EvalContext, metrics: list[MetricResult], path: Path) -> None:
    """Each test item's outcome per metric, keyed by stimulus id, when the task gave any."""
    path.unlink(missing_ok=True)
    if not context.per_item:
        return
    directions = {m.name: m.higher_is_better for m in metrics}
    outcomes = {}
    for name, values in context.per_item.items():
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(values) != len(context.stimulus_ids):
            raise BrainbenchError(
                f"task gave {len(values)} per-item outcomes for {name!r}, expected one per test stimulus "
                f"({len(context.stimulus_ids)})"
            )
        outcomes[name] = [round(float(v), 6) for v in values]
    record = {
        "subject": context.subject,
        "seed": context.seed,
        "stimulus_ids": [int(i) for i in np.asarray(context.stimulus_ids).reshape(-1)],
        "higher_is_better": {name: directions.get(name, True) for name in outcomes},
        "outcomes": outcomes,
    }
    path.write_text(json.dumps(record))


__all__ = ["METRIC_COLUMNS", "CellResult", "ResolvedCell", "metric_cells", "metrics_markdown", "resolve", "run_cell"]
