"""One cell, start to finish: dataset -> target -> encoder -> training -> task -> records."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brainbench import __version__
from brainbench.arrays import RowIndexed
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
from brainbench.plugins import PluginSet, get_plugins, used_plugin_tags
from brainbench.repeats import group_mean
from brainbench.rows import read_rows
from brainbench.text_tables import markdown_table


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
    target_name = config.target or task.default_target or dataset.default_target
    target = plugins.targets.create(target_name, **config.target_options)
    if config.subject not in dataset.subjects():
        raise BrainbenchError(
            f"dataset {dataset_name!r} has no subject {config.subject}; subjects: {dataset.subjects()}"
        )
    return ResolvedCell(config, task, dataset_name, dataset, target_name, target, encoder, quick)


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
        source = getattr(target, "cache_path", None) or dataset.describe().get("root") or dataset.name
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


def run_tags(cell: ResolvedCell) -> dict[str, str]:
    """Tags, not params (they do not make runs differ): the run name that starts with what differs, plugin
    versions, the code version. Metric directions are tagged after evaluation (brainbench.higher_is_better)."""
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
    import hashlib

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


def training_overrides(cell: ResolvedCell) -> dict[str, Any]:
    """Epochs, batch size and lr the run asks for: its own, else the quick recipe's, else None (defaults)."""
    config, quick = cell.config, cell.quick
    return {
        "epochs": config.epochs if config.epochs is not None else getattr(quick, "epochs", None),
        "batch_size": config.batch_size if config.batch_size is not None else getattr(quick, "batch_size", None),
        "lr": config.lr if config.lr is not None else getattr(quick, "lr", None),
    }


def run_cell(
    config: RunConfig,
    reporter: Reporter,
    work_dir: Path,
    record: Any | None = None,
) -> CellResult:
    """Train and evaluate one cell. ``record`` (a tracking.RunRecord) receives params, metrics, artifacts."""
    from brainbench.threads import apply_for_run

    cell = resolve(config)
    dataset, target, task = cell.dataset, cell.target, cell.task
    work_dir.mkdir(parents=True, exist_ok=True)
    # after the plugins are imported, so the BLAS that scipy loads is limited too (brainbench/threads.py)
    threads = apply_for_run()

    train = dataset.trials(config.subject, "train")
    test = dataset.trials(config.subject, task.split)
    check_trials(train, "train", config, cell.dataset_name)
    check_trials(test, task.split, config, cell.dataset_name)
    params = run_params(cell, train.n_voxels)
    if record is not None:
        record.log_params(params)
        record.set_tags({"brainbench.synthetic": str(dataset.synthetic).lower(), "brainbench.cell": config.label()})
        record.set_tags(run_tags(cell))
        log_inputs(record, cell, {"train": train, task.split: test})
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
    if record is not None:
        record.log_params({f"recipe.{k}": v for k, v in recipe.items()})

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
    if record is not None and context.notes:
        record.set_tags({"brainbench.notes": " | ".join(context.notes)[:5000]})

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
    if record is not None:
        _record_result(record, result, fitted, checkpoint, work_dir, example=test_voxels[:2], reporter=reporter)
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
    if record is not None:
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


def _record_result(
    record: Any, result: CellResult, fitted: Any, checkpoint: Path, work_dir: Path,
    example: np.ndarray | None = None, reporter: Reporter | None = None,
) -> None:
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


#: The columns a run's metrics are shown in: the terminal table and the run's metrics.md.
METRIC_COLUMNS = ("metric", "value", "95% interval", "chance", "better")


def metric_cells(m: MetricResult) -> list[str]:
    """One metric's row under METRIC_COLUMNS."""
    interval = f"{m.interval[0]:.4f} - {m.interval[1]:.4f}" if m.interval else ""
    chance = f"{m.chance:.4f}" if m.chance is not None else ""
    return [m.name, f"{m.value:.4f}", interval, chance, "higher" if m.higher_is_better else "lower"]


def metrics_markdown(metrics: list[MetricResult]) -> str:
    return "\n".join(markdown_table(list(METRIC_COLUMNS), [metric_cells(m) for m in metrics])) + "\n"
