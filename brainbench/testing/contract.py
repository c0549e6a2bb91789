"""What every plugin must do, as plain functions (usable from pytest or any test runner)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from brainbench.interfaces import EvalContext, FitData, MetricResult, TrainSettings

#: Small options so the built-in neural encoders train in seconds on a CPU.
SMALL_OPTIONS: dict[str, dict[str, Any]] = {"mindeye": {"hidden": 64, "blocks": 1}}


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
            entry.factory(**entry.check_options(given))
        except Exception as exc:
            raise ContractError(
                f"{kind} {name!r}: its declared defaults {given} do not build it: {type(exc).__name__}: {exc}"
            ) from exc


def check_encoder(name: str, tmp_path: Path, options: dict[str, Any] | None = None, plugins: Any = None) -> None:
    """Build, fit one epoch on toy data, predict, count parameters and save: shapes, dtypes and files checked."""
    from brainbench.reporting import QuietReporter

    plugins = _plugins(plugins)
    encoder = plugins.encoders.create(name, **(options if options is not None else SMALL_OPTIONS.get(name, {})))
    params = encoder.params()
    _require(isinstance(params, dict), f"encoder {name!r}: params() must return a dict, got {type(params).__name__}")
    data = toy_fit_data()
    settings = TrainSettings(epochs=1, batch_size=16, device="cpu", seed=0, checkpoint_dir=Path(tmp_path) / "ckpt")
    fitted = encoder.fit(data, settings, QuietReporter())
    predictions = fitted.predict(data.val_voxels)
    expected = tuple(data.val_targets.shape)
    _require(
        isinstance(predictions, np.ndarray),
        f"encoder {name!r}: predict() must return a numpy array, got {type(predictions).__name__}",
    )
    _require(
        tuple(predictions.shape) == expected,
        f"encoder {name!r}: predict() returned shape {tuple(predictions.shape)} for {len(data.val_voxels)} "
        f"samples; expected {expected} (samples x target shape)",
    )
    _require(
        predictions.dtype == np.float32, f"encoder {name!r}: predict() returned {predictions.dtype}, expected float32"
    )
    _require(bool(np.isfinite(predictions).all()), f"encoder {name!r}: predict() returned NaN or infinite values")
    n_parameters = getattr(fitted, "n_parameters", None)
    _require(
        isinstance(n_parameters, int) and n_parameters >= 0,
        f"encoder {name!r}: fitted.n_parameters must be a non-negative int, got {n_parameters!r}",
    )
    saved = fitted.save(Path(tmp_path) / "model")
    _require(
        saved is not None and Path(saved).exists() and Path(saved).stat().st_size > 0,
        f"encoder {name!r}: save() must write a non-empty file and return its path, got {saved!r}",
    )


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
