"""Every run records the recipe it actually used: read back from a real MLflow store written by the installed
console script, for ridge, Lite-Mind and MindEye."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from brainbench.config import RunConfig

pytestmark = pytest.mark.slow

RUNS = {
    "ridge": [],
    "litemind": ["--epochs", "2", "--opt", "widths=16,8,4", "--opt", "depths=1,1,1,1"],
    "mindeye": ["--epochs", "1", "--opt", "hidden=64", "--opt", "blocks=1"],
}
TORCH_RECIPE = {
    "epochs", "batch_size", "lr", "base_lr", "schedule", "schedule_stepped", "warmup_epochs", "warmup_start_lr",
    "min_lr", "weight_decay", "precision", "device", "drop_last", "steps_per_epoch", "train_rows", "budget",
    "checkpoint_every", "lr_batch_scaling",
}


def brainbench_script() -> str:
    script = Path(sys.executable).with_name("brainbench")
    return str(script) if script.exists() else shutil.which("brainbench") or "brainbench"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("records")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = {"BRAINBENCH_HOME": str(folder / "home")}

    for encoder, extra in RUNS.items():
        done = subprocess.run(
            [brainbench_script(), "run", encoder, "--task", "retrieval", "--device", "cpu", "--tracking-uri", uri,
             *extra],
            capture_output=True, text=True, cwd=folder, env={**os.environ, **env}, timeout=900,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return uri


def finished_run(uri: str, encoder: str):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("brainbench")
    runs = client.search_runs([experiment.experiment_id], f"params.encoder = '{encoder}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    return client, runs[0]


def test_ridge_records_its_chosen_penalty_and_data(store):
    _, run = finished_run(store, "ridge")
    params = run.data.params
    assert float(params["recipe.alpha"]) > 0 and params["recipe.alpha_selection"].startswith("validation")
    # the one data rule: the penalty is chosen on the validation images, the model is fitted on all rows
    rows = {key: int(params[f"recipe.{key}"]) for key in ("fit_rows", "selection_rows", "validation_rows")}
    assert rows["fit_rows"] == rows["selection_rows"] + rows["validation_rows"]
    assert params["recipe.budget"] == "reference"


@pytest.mark.parametrize("encoder", ["litemind", "mindeye"])
def test_neural_encoders_record_the_resolved_recipe(store, encoder, tmp_path):
    client, run = finished_run(store, encoder)
    params = run.data.params
    recipe = {key.removeprefix("recipe."): value for key, value in params.items() if key.startswith("recipe.")}
    assert TORCH_RECIPE <= set(recipe), sorted(TORCH_RECIPE - set(recipe))
    assert recipe["budget"] == "quick" and recipe["device"] == "cpu" and recipe["precision"] == "fp32"
    assert int(recipe["epochs"]) == int(RUNS[encoder][1]) == int(recipe["epochs_trained"])
    if encoder == "litemind":  # the reference's schedule and batching, at the quick recipe's rate and batch
        assert (recipe["schedule"], recipe["schedule_stepped"], recipe["drop_last"]) == (
            "timm-cosine", "per epoch", "false")
        assert recipe["lr_batch_scaling"] == "none" and float(recipe["lr"]) == float(recipe["base_lr"])
    else:
        assert (recipe["schedule"], recipe["weight_decay"]) == ("onecycle", "0.01")
    # config.json is the resolved config: it names the dataset, target, budget and the epochs actually run
    path = client.download_artifacts(run.info.run_id, "config.json", str(tmp_path))
    resolved = json.loads(Path(path).read_text())
    config = RunConfig.from_dict(resolved["config"])
    assert config.dataset == params["dataset"] and config.target == params["target"]
    assert config.budget == "quick" and config.epochs == int(recipe["epochs"])
    assert config.batch_size == int(recipe["batch_size"]) and config.lr == float(recipe["base_lr"])
    assert resolved["cell_key"] == params["cell_key"] == RunConfig.from_dict(resolved["requested"]).key
