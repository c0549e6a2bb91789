"""What every plugin must do, as plain functions (usable from pytest or any test runner)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from brainbench.interfaces import EvalContext, FitData, MetricResult, TrainSettings

#: Small options so the built-in neural encoders train in seconds on a CPU, and the simulator stays tiny.
SMALL_OPTIONS: dict[str, dict[str, Any]] = {
    "mindeye": {"hidden": 64, "blocks": 1},
    "synthetic-nsd": {"scale": "tiny", "tokens": True},
    "synthetic-god": {"scale": "tiny"},
}
#: Target shapes every encoder is checked on: pooled (CLIP's 768) and token-shaped (CLIP's 257x768, small).
POOLED_SHAPE: tuple[int, ...] = (768,)
TOKEN_SHAPE: tuple[int, ...] = (5, 16)
#: The dataset targets are checked on (the simulator, with its stored token embeddings too).
TARGET_DATASET = "synthetic-nsd"


class ContractSkip(Exception):
    """A check that cannot run here (e.g. a dataset that reads a user's files); the message says why."""


class ContractError(AssertionError):
    """A plugin breaks the contract; the message says which plugin, what was expected and what came back."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ContractError(message)


def _plugins(plugins: Any = None) -> Any:
    from brainbench.plugins import get_plugins

    return plugins or get_plugins()


def contract_names(kind: str, plugins: Any = None) -> list[str]:
    """Registered names of ``kind`` under test: those of the plugins named in ``BRAINBENCH_CONTRACT``
    (plugin or distribution names, comma-separated), or all when it is unset."""
    plugins = _plugins(plugins)
    wanted = {part.strip() for part in os.environ.get("BRAINBENCH_CONTRACT", "").split(",") if part.strip()}
    names = []
    for entry in plugins.registry(kind):
        info = plugins.plugins.get(entry.provider)
        if not wanted or entry.provider in wanted or (info is not None and info.distribution in wanted):
            names.append(entry.name)
    return names


def toy_fit_data(n_voxels: int = 900, shape: tuple[int, ...] = (768,), seed: int = 0) -> FitData:
    """80 trials of voxels linearly related to targets of ``shape``; the last 16 rows are validation."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((80, 16)).astype(np.float32)
    voxels = latent @ rng.standard_normal((16, n_voxels)).astype(np.float32)
    voxels += 0.5 * rng.standard_normal(voxels.shape).astype(np.float32)
    targets = (latent @ rng.standard_normal((16, int(np.prod(shape)))).astype(np.float32)).reshape(80, *shape)
    return FitData.from_splits(voxels[:64], targets[:64], voxels[64:], targets[64:])


def check_declared_options(kind: str, name: str, plugins: Any = None) -> None:
    """The declared options (if any) are well formed and their defaults build the plugin."""
    from brainbench.options import Options

    entry = _plugins(plugins).registry(kind).entry(name)
    declared = entry.declared_options()
    if declared is None:
        return  # undeclared options are allowed (passed through unchecked)
    _require(isinstance(declared, Options), f"{kind} {name!r}: declared_options must be brainbench.options.Options")
    if kind in ("encoder", "task"):
        given = {k: v for k, v in declared.defaults().items() if v is not None}
        try:
            entry.create(given)
        except Exception as exc:
            raise ContractError(
                f"{kind} {name!r}: its declared defaults {given} do not build it: {type(exc).__name__}: {exc}"
            ) from exc


def check_encoder(
    name: str, tmp_path: Path, options: dict[str, Any] | None = None, plugins: Any = None,
    target_shape: tuple[int, ...] = POOLED_SHAPE,
) -> None:
    """Build, fit one epoch on toy data with targets of ``target_shape``, predict, count parameters, then save,
    load back (``type(fitted).load``) and predict again: shapes, dtypes, the declared ``n_voxels`` /
    ``target_shape`` attributes, files and the round trip checked."""
    from brainbench.reporting import QuietReporter

    plugins = _plugins(plugins)
    encoder = plugins.encoders.create(name, **(options if options is not None else SMALL_OPTIONS.get(name, {})))
    params = encoder.params()
    _require(isinstance(params, dict), f"encoder {name!r}: params() must return a dict, got {type(params).__name__}")
    data = toy_fit_data(shape=tuple(target_shape))
    settings = TrainSettings(epochs=1, batch_size=16, device="cpu", seed=0, checkpoint_dir=Path(tmp_path) / "ckpt")
    fitted = encoder.fit(data, settings, QuietReporter())
    predictions = _checked_predictions(name, fitted.predict(data.val_voxels), tuple(data.val_targets.shape))
    n_parameters = getattr(fitted, "n_parameters", None)
    _require(
        isinstance(n_parameters, int) and n_parameters >= 0,
        f"encoder {name!r}: fitted.n_parameters must be a non-negative int, got {n_parameters!r}",
    )
    stated = (getattr(fitted, "n_voxels", None), tuple(getattr(fitted, "target_shape", None) or ()))
    _require(
        stated == (data.n_voxels, tuple(target_shape)),
        f"encoder {name!r}: the fitted model must state n_voxels and target_shape (FittedEncoder attributes: "
        f"--log-model records them); expected {(data.n_voxels, tuple(target_shape))}, got {stated}",
    )
    saved = fitted.save(Path(tmp_path) / "model")
    _require(
        saved is not None and Path(saved).exists() and Path(saved).stat().st_size > 0,
        f"encoder {name!r}: save() must write a non-empty file and return its path, got {saved!r}",
    )
    try:
        loaded = type(fitted).load(Path(saved), encoder=encoder, n_voxels=data.n_voxels,
                                   target_shape=tuple(target_shape), device="cpu")
    except NotImplementedError as exc:
        raise ContractError(f"encoder {name!r}: {exc} (FittedEncoder.load, one signature for every encoder)") from exc
    again = _checked_predictions(name, loaded.predict(data.val_voxels), tuple(data.val_targets.shape))
    _require(
        bool(np.allclose(again, predictions, rtol=1e-4, atol=1e-5)),
        f"encoder {name!r}: the model loaded back from {Path(saved).name} predicts differently from the one "
        f"saved (max difference {float(np.abs(again - predictions).max()):.3g})",
    )


def _checked_predictions(name: str, predictions: Any, expected: tuple[int, ...]) -> np.ndarray:
    _require(
        isinstance(predictions, np.ndarray),
        f"encoder {name!r}: predict() must return a numpy array, got {type(predictions).__name__}",
    )
    _require(
        tuple(predictions.shape) == expected,
        f"encoder {name!r}: predict() returned shape {tuple(predictions.shape)} for {expected[0]} "
        f"samples; expected {expected} (samples x target shape)",
    )
    _require(
        predictions.dtype == np.float32, f"encoder {name!r}: predict() returned {predictions.dtype}, expected float32"
    )
    _require(bool(np.isfinite(predictions).all()), f"encoder {name!r}: predict() returned NaN or infinite values")
    return predictions


def open_dataset(name: str, plugins: Any = None, options: dict[str, Any] | None = None) -> Any:
    """The dataset ``name`` with its small contract options; :class:`ContractSkip` when it needs files on disk."""
    from brainbench.errors import DataError

    plugins = _plugins(plugins)
    try:
        return plugins.datasets.create(name, **(options if options is not None else SMALL_OPTIONS.get(name, {})))
    except DataError as exc:
        raise ContractSkip(f"dataset {name!r} cannot be opened without its files ({exc}); the contract checks "
                           "datasets that open with no --data-path (simulators)") from exc


def check_dataset(name: str, options: dict[str, Any] | None = None, plugins: Any = None) -> None:
    """Subjects, voxel counts, every split's trials (shapes, dtypes, stimulus ids) and the description."""
    dataset = open_dataset(name, plugins, options)
    try:
        subjects = dataset.subjects()
        _require(bool(subjects) and all(isinstance(s, int | np.integer) for s in subjects),
                 f"dataset {name!r}: subjects() must be a non-empty list of ints, got {subjects!r}")
        described = dataset.describe()
        _require(isinstance(described, dict) and "name" in described,
                 f"dataset {name!r}: describe() must return a dict with a 'name', got {described!r}")
        splits = dataset.splits()
        _require({"train", "test"} <= set(splits), f"dataset {name!r}: splits() must include train and test, "
                                                  f"got {splits!r}")
        known = np.asarray(dataset.all_stimulus_ids())
        subject = int(subjects[0])
        n_voxels = dataset.n_voxels(subject)
        for split in ("train", "test"):
            trials = dataset.trials(subject, split)
            where = f"dataset {name!r}, subject {subject}, split {split!r}"
            _require(trials.n_trials > 0, f"{where}: no trials")
            _require(len(trials.voxels.shape) == 2 and trials.voxels.shape[1] == n_voxels,
                     f"{where}: voxels have shape {tuple(trials.voxels.shape)}; expected (n_trials, {n_voxels}) "
                     "as n_voxels(subject) says")
            _require(trials.stimulus_ids.dtype == np.int64 and trials.stimulus_ids.shape == (trials.n_trials,),
                     f"{where}: stimulus ids must be int64 of shape ({trials.n_trials},), got "
                     f"{trials.stimulus_ids.dtype} {trials.stimulus_ids.shape}")
            _require(bool(np.isin(trials.stimulus_ids, known).all()),
                     f"{where}: stimulus ids outside all_stimulus_ids()")
            rows = trials.load(np.arange(min(4, trials.n_trials)))
            _require(rows.dtype == np.float32 and rows.shape == (min(4, trials.n_trials), n_voxels),
                     f"{where}: load(rows) gave {rows.dtype} {rows.shape}; expected float32 (rows, {n_voxels})")
            _require(bool(np.isfinite(rows).all()), f"{where}: the first rows hold NaN or infinite values")
    finally:
        dataset.close()


def check_target(name: str, options: dict[str, Any] | None = None, plugins: Any = None,
                 dataset_name: str = TARGET_DATASET) -> None:
    """The target's shape, ``embed`` of a few stimuli of the simulated dataset (shape, float32, finite, same
    answer twice) and ``cache_path``; :class:`ContractSkip` when it is not ready there (e.g. weights absent)."""
    from brainbench.errors import BrainbenchError

    plugins = _plugins(plugins)
    target = plugins.targets.create(name, **(options or {}))
    shape = tuple(target.shape)
    _require(bool(shape) and all(isinstance(s, int | np.integer) and s > 0 for s in shape),
             f"target {name!r}: shape must be a tuple of positive ints, got {target.shape!r}")
    dataset = open_dataset(dataset_name, plugins)
    try:
        try:
            target.check_ready(dataset)
        except BrainbenchError as exc:
            raise ContractSkip(f"target {name!r} is not ready for {dataset_name!r} here: {exc}") from exc
        ids = np.asarray(dataset.all_stimulus_ids()[:6], dtype=np.int64)
        embedded = target.embed(dataset, ids)
        _require(isinstance(embedded, np.ndarray) and embedded.shape == (len(ids), *shape),
                 f"target {name!r}: embed() of {len(ids)} stimuli gave {getattr(embedded, 'shape', embedded)!r}; "
                 f"expected {(len(ids), *shape)}")
        _require(embedded.dtype == np.float32, f"target {name!r}: embed() gave {embedded.dtype}, expected float32")
        _require(bool(np.isfinite(embedded).all()), f"target {name!r}: embed() gave NaN or infinite values")
        _require(bool(np.array_equal(target.embed(dataset, ids[::-1]), embedded[::-1])),
                 f"target {name!r}: embed() must give each stimulus the same embedding, in the order asked")
        cached = target.cache_path(dataset)
        _require(cached is None or isinstance(cached, Path),
                 f"target {name!r}: cache_path() must be a Path or None, got {cached!r}")
    finally:
        dataset.close()


def check_task(name: str, tmp_path: Path, options: dict[str, Any] | None = None, plugins: Any = None) -> None:
    """Evaluate perfect and random predictions on the task's default (simulated) data: every metric
    declared, finite, inside its interval, with its declared direction; perfect beats noise somewhere."""
    from brainbench.repeats import group_mean

    plugins = _plugins(plugins)
    task = plugins.tasks.create(name, **(options or {}))
    declared = {spec.name: spec.higher_is_better for spec in task.metrics}
    _require(bool(declared), f"task {name!r} declares no metrics (metrics = (MetricSpec(...), ...))")
    dataset = plugins.datasets.create(task.default_dataset)
    target = plugins.targets.create(task.default_target or dataset.default_target)
    subject = dataset.subjects()[0]
    test = dataset.trials(subject, task.split)
    _, ids = group_mean(np.zeros((test.n_trials, 1), np.float32), test.stimulus_ids)
    truth = np.asarray(target.embed(dataset, ids), dtype=np.float32)
    rng = np.random.default_rng(0)

    def evaluate(predictions: np.ndarray) -> dict[str, MetricResult]:
        ctx = EvalContext(predictions, truth, ids, dataset, target, subject, 0, Path(tmp_path))
        results = task.evaluate(ctx)
        for r in results:
            _require(r.name in declared, f"task {name!r}: returned metric {r.name!r}, which it does not declare "
                                         f"(declared: {', '.join(declared)})")
            _require(r.higher_is_better == declared[r.name],
                     f"task {name!r}: metric {r.name!r} came back with a direction other than declared; "
                     "build results with self.result(...)")
            _require(math.isfinite(r.value), f"task {name!r}: metric {r.name!r} is {r.value}")
            if r.interval:
                _require(r.interval[0] <= r.value + 1e-9 <= r.interval[1] + 2e-9,
                         f"task {name!r}: metric {r.name!r} = {r.value} lies outside its interval {r.interval}")
        return {r.name: r for r in results}

    perfect = evaluate(truth)
    noise = evaluate(rng.standard_normal(truth.shape).astype(np.float32))
    _require(perfect.keys() == noise.keys(),
             f"task {name!r}: perfect and random predictions gave different metrics "
             f"({sorted(perfect)} vs {sorted(noise)})")
    better = [m for m in perfect if (perfect[m].value - noise[m].value) * (1 if declared[m] else -1) > 1e-6]
    _require(bool(better), f"task {name!r}: perfect predictions score no better than noise on any metric")
