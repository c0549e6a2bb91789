"""The contract every encoder and task plugin must pass, parametrised over the registries.

A third-party plugin installed into the test environment is picked up and tested here too.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from brainbench.interfaces import EvalContext, FitData, MetricResult, TrainSettings
from brainbench.plugins import load_plugins
from brainbench.repeats import group_mean
from brainbench.reporting import QuietReporter

PLUGINS = load_plugins()
#: Small options so every encoder trains in seconds on a CPU; a plugin not listed runs with its defaults.
SMALL_OPTIONS: dict[str, dict] = {"mindeye": {"hidden": 64, "blocks": 1}}


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("contract-home")


@pytest.fixture
def home(shared_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Simulated datasets are written once for the whole module.
    monkeypatch.setenv("BRAINBENCH_HOME", str(shared_home))
    return shared_home


def toy_fit_data(n_voxels: int = 900, shape: tuple[int, ...] = (768,), seed: int = 0) -> FitData:
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((80, 16)).astype(np.float32)
    voxels = latent @ rng.standard_normal((16, n_voxels)).astype(np.float32)
    voxels += 0.5 * rng.standard_normal(voxels.shape).astype(np.float32)
    targets = (latent @ rng.standard_normal((16, int(np.prod(shape)))).astype(np.float32)).reshape(80, *shape)
    return FitData.from_splits(voxels[:64], targets[:64], voxels[64:], targets[64:])


@pytest.mark.parametrize("name", PLUGINS.encoders.names())
def test_encoder_contract(name: str, tmp_path: Path, home: Path) -> None:
    encoder = PLUGINS.encoders.create(name, **SMALL_OPTIONS.get(name, {}))
    params = encoder.params()
    assert isinstance(params, dict)
    data = toy_fit_data()
    settings = TrainSettings(epochs=1, batch_size=16, device="cpu", seed=0, checkpoint_dir=tmp_path / "ckpt")
    fitted = encoder.fit(data, settings, QuietReporter())
    predictions = fitted.predict(data.val_voxels)
    assert predictions.shape == data.val_targets.shape
    assert predictions.dtype == np.float32 and np.isfinite(predictions).all()
    assert isinstance(fitted.n_parameters, int) and fitted.n_parameters >= 0
    saved = fitted.save(tmp_path / "model")
    assert Path(saved).exists() and Path(saved).stat().st_size > 0


@pytest.mark.parametrize("name", PLUGINS.tasks.names())
def test_task_contract(name: str, tmp_path: Path, home: Path) -> None:
    task = PLUGINS.tasks.create(name)
    declared = {spec.name: spec.higher_is_better for spec in task.metrics}
    assert declared, f"task {name} declares no metrics"
    dataset = PLUGINS.datasets.create(task.default_dataset)
    target = PLUGINS.targets.create(task.default_target or dataset.default_target)
    subject = dataset.subjects()[0]
    test = dataset.trials(subject, task.split)
    _, ids = group_mean(np.zeros((test.n_trials, 1), np.float32), test.stimulus_ids)
    truth = np.asarray(target.embed(dataset, ids), dtype=np.float32)
    rng = np.random.default_rng(0)

    def evaluate(predictions: np.ndarray) -> dict[str, MetricResult]:
        ctx = EvalContext(predictions, truth, ids, dataset, target, subject, 0, tmp_path)
        results = task.evaluate(ctx)
        for r in results:
            assert r.name in declared, f"{name}: metric {r.name!r} is not declared"
            assert r.higher_is_better == declared[r.name]
            assert math.isfinite(r.value)
            if r.interval:
                assert r.interval[0] <= r.value + 1e-9 and r.value <= r.interval[1] + 1e-9
        return {r.name: r for r in results}

    perfect = evaluate(truth)
    noise = evaluate(rng.standard_normal(truth.shape).astype(np.float32))
    assert perfect.keys() == noise.keys()
    better = [m for m in perfect if (perfect[m].value - noise[m].value) * (1 if declared[m] else -1) > 1e-6]
    assert better, f"{name}: perfect predictions score no better than noise on any metric"
