"""``--log-model``: runs of the installed console script log their trained encoder as an MLflow model that
MLflow's own loader (``mlflow.pyfunc.load_model``) rebuilds and that predicts what the trained encoder did."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

RIDGE = ["ridge", "--opt", "alpha=1000"]  # a fixed penalty: no search, a quick fit
LITEMIND = ["litemind", "--epochs", "1", "--opt", "widths=16,8,4", "--opt", "depths=1,1,1,1"]
N_VOXELS = 1965  # the simulator's demo subject 1


def brainbench_script() -> str:
    script = Path(sys.executable).with_name("brainbench")
    return str(script) if script.exists() else shutil.which("brainbench") or "brainbench"


def run_cli(folder: Path, uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [brainbench_script(), "run", *args, "--task", "retrieval", "--device", "cpu", "--tracking-uri", uri],
        capture_output=True, text=True, cwd=folder, timeout=900,
        env={**os.environ, "BRAINBENCH_HOME": str(folder / "home"), "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logmodel")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    # the plain run first: a later run of the same cell (same key) replaces the earlier one's run folder
    outputs = {
        "ridge-plain": run_cli(folder, uri, *RIDGE),
        "ridge": run_cli(folder, uri, *RIDGE, "--log-model"),
        "litemind": run_cli(folder, uri, *LITEMIND, "--log-model"),
    }
    return uri, outputs


def runs_of(uri: str, encoder: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("brainbench")
    runs = client.search_runs([experiment.experiment_id], f"params.encoder = '{encoder}'", order_by=["start_time"])
    assert runs and all(run.info.status == "FINISHED" for run in runs)
    return runs


@contextlib.contextmanager
def tracking_store(uri: str):
    """``uri`` as mlflow's process-wide tracking store inside the block: ``runs:/`` and ``models:/`` URIs of
    logged models resolve through it (an explicit ``tracking_uri=`` does not reach logged models in MLflow
    3.17). The earlier setting is put back, so later tests are not sent to this store."""
    import mlflow

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def load_pyfunc(uri: str, model_uri: str):
    import mlflow

    with tracking_store(uri):
        return mlflow.pyfunc.load_model(model_uri)


def logged_example(uri: str, run_id: str, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The model's input example (two real test rows) and the trained encoder's own predictions for them
    (made in the run, before any reload), read from the model's files."""
    import mlflow
    from mlflow.models import Model

    with tracking_store(uri):
        local = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model", dst_path=str(tmp_path),
                                                         tracking_uri=uri))
    example = np.asarray(Model.load(str(local)).load_input_example(str(local)), dtype=np.float32)
    expected = np.load(local / "artifacts" / "example_predictions.npy", allow_pickle=False)
    return example, expected


def test_ridge_model_predicts_what_the_fitted_ridge_does(store, tmp_path):
    uri, outputs = store
    run = runs_of(uri, "ridge")[-1]
    run_id = run.info.run_id
    assert f'mlflow.pyfunc.load_model("runs:/{run_id}/model")' in outputs["ridge"].stderr.replace("\n", "")
    model = load_pyfunc(uri, f"runs:/{run_id}/model")
    voxels = np.random.default_rng(1).standard_normal((7, N_VOXELS)).astype(np.float32)
    predicted = model.predict(voxels)
    assert predicted.shape == (7, 768) and predicted.dtype == np.float32

    # independent of any brainbench loader: the ridge map computed from the run folder's plain arrays
    work_dir = Path(run.data.tags["brainbench.work_dir"])
    with np.load(work_dir / "model.npz", allow_pickle=False) as stored:
        by_hand = ((voxels - stored["voxel_mean"]) / stored["voxel_scale"]) @ stored["weights"] + stored["bias"]
    np.testing.assert_allclose(predicted, by_hand, atol=1e-6, rtol=0)
    from brainbench_ridge.encoder import FittedRidge

    np.testing.assert_allclose(predicted, FittedRidge.load(work_dir / "model.npz").predict(voxels), atol=1e-6, rtol=0)
    example, expected = logged_example(uri, run_id, tmp_path)
    assert example.shape == (2, N_VOXELS) and np.abs(example).sum() > 0
    np.testing.assert_allclose(model.predict(example), expected, atol=1e-6, rtol=0)

    # the models:/ URI the run is tagged with names the same model
    same = load_pyfunc(uri, run.data.tags["brainbench.model_uri"])
    np.testing.assert_array_equal(same.predict(voxels), predicted)


def test_model_is_the_runs_logged_model_with_signature_and_requirements(store, tmp_path):
    import mlflow

    uri, _ = store
    run = runs_of(uri, "ridge")[-1]
    client = mlflow.MlflowClient(tracking_uri=uri)
    (output,) = client.get_run(run.info.run_id).outputs.model_outputs  # the UI's Models column
    logged = client.get_logged_model(output.model_id)
    assert logged.name == "model" and logged.source_run_id == run.info.run_id
    assert logged.status.to_proto() == mlflow.entities.LoggedModelStatus.READY.to_proto()
    assert logged.params["encoder"] == "ridge"
    model = load_pyfunc(uri, f"models:/{output.model_id}")
    signature = model.metadata.signature
    assert signature.inputs.inputs[0].shape == (-1, N_VOXELS)
    assert signature.inputs.inputs[0].type == np.dtype(np.float32)
    assert signature.outputs.inputs[0].shape == (-1, 768)
    # models from code: the model's code is a file, not a pickled object
    flavor = model.metadata.flavors["python_function"]
    assert flavor.get("model_code_path", "").endswith("mlflow_pyfunc.py"), flavor
    with tracking_store(uri):
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{output.model_id}", dst_path=str(tmp_path),
                                                         tracking_uri=uri))
    assert not list(local.rglob("*.pkl")), sorted(p.name for p in local.rglob("*"))
    requirements = (local / "requirements.txt").read_text()
    assert "brainbench==" in requirements and "torch==" in requirements
    # a wrong voxel count is refused by MLflow's schema check, before the encoder sees it
    with pytest.raises(Exception, match="shape"):
        model.predict(np.zeros((2, N_VOXELS - 1), dtype=np.float32))


def test_without_log_model_no_model_and_the_same_cell_key(store):
    import mlflow

    uri, _ = store
    plain, with_model = runs_of(uri, "ridge")
    assert with_model.data.params["cell_key"] == plain.data.params["cell_key"]
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert client.get_run(plain.info.run_id).outputs.model_outputs == []
    assert "brainbench.model_uri" not in plain.data.tags
    experiment = client.get_experiment_by_name("brainbench")
    sources = {m.source_run_id for m in client.search_logged_models([experiment.experiment_id])}
    assert plain.info.run_id not in sources and with_model.info.run_id in sources
    from brainbench.config import RunConfig

    assert RunConfig("ridge", "retrieval", log_model=True).key == RunConfig("ridge", "retrieval").key


def test_litemind_model_predicts_what_the_trained_litemind_does(store, tmp_path):
    uri, _ = store
    (run,) = runs_of(uri, "litemind")
    run_id = run.info.run_id
    model = load_pyfunc(uri, f"runs:/{run_id}/model")
    voxels = np.random.default_rng(2).standard_normal((9, N_VOXELS)).astype(np.float32)
    predicted = model.predict(voxels)
    assert predicted.shape == (9, 768)
    assert np.abs(predicted).sum() > 0 and np.std(predicted, axis=0).mean() > 0  # not a constant map

    # the trained network's own predictions (made in the run, before the checkpoint was reloaded)
    example, expected = logged_example(uri, run_id, tmp_path)
    difference = float(np.abs(model.predict(example) - expected).max())
    assert difference <= 1e-6, difference

    # the checkpoint in the run folder, rebuilt the way brainbench itself loads checkpoints
    from brainbench.plugins import get_plugins
    from brainbench.training import load_fitted_encoder

    work_dir = Path(run.data.tags["brainbench.work_dir"])
    options = json.loads((work_dir / "config.json").read_text())["config"]["encoder_options"]
    fitted = load_fitted_encoder(get_plugins().encoders.create("litemind", **options), work_dir / "model",
                                 device="cpu")
    np.testing.assert_allclose(predicted, fitted.predict(voxels), atol=1e-6, rtol=0)


MATRIX_SPEC = """
name = "ridge-models"
[defaults]
task = "retrieval"
device = "cpu"
[axes]
encoder = ["ridge"]
"encoder_options.alpha" = [1e3, 1e4]
[[overrides]]
match = { "encoder_options.alpha" = 1e3 }
set = { log_model = true }
"""


def test_matrix_logs_models_per_cell_from_the_spec_or_the_flag(tmp_path):
    import mlflow

    (tmp_path / "spec.toml").write_text(MATRIX_SPEC)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)

    def matrix(*flags: str) -> tuple[str, dict[str, bool]]:
        done = subprocess.run(
            [brainbench_script(), "matrix", "run", "spec.toml", "--tracking-uri", uri, *flags],
            capture_output=True, text=True, cwd=tmp_path, timeout=900,
            env={**os.environ, "BRAINBENCH_HOME": str(tmp_path / "home"), "COLUMNS": "200"},
        )
        assert done.returncode == 0, done.stdout + done.stderr
        experiment = client.get_experiment_by_name("brainbench")
        (parent,) = client.search_runs([experiment.experiment_id], "tags.`brainbench.kind` = 'matrix'",
                                       order_by=["start_time DESC"], max_results=1)
        cells = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        logged = {run.data.params["encoder.alpha"]: bool(client.get_run(run.info.run_id).outputs.model_outputs)
                  for run in cells}
        return done.stdout, logged

    out, logged = matrix()  # the spec's override: only the alpha=1000 cell logs its model
    assert logged == {"1000.0": True, "10000.0": False}
    assert "1 MLflow model(s) logged" in out and 'mlflow.pyfunc.load_model("runs:/' in out
    out, logged = matrix("--log-model")  # the flag: every cell
    assert logged == {"1000.0": True, "10000.0": True}
    assert "2 MLflow model(s) logged" in out


def test_a_third_party_encoder_logs_its_model_through_the_declared_capabilities(tmp_path):
    """The knn example (an installed third-party package) states n_voxels/target_shape and implements the one
    FittedEncoder.load: --log-model logs it, and MLflow's loader predicts what the run's model did."""
    from tests.conftest import REPO, pip_install_target

    site = tmp_path / "site"
    pip_install_target(REPO / "plugins" / "examples" / "brainbench-knn", site)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run(
        [brainbench_script(), "run", "knn", "--task", "mean-cosine", "--dataset-opt", "scale=tiny", "--log-model",
         "--tracking-uri", uri],
        capture_output=True, text=True, cwd=tmp_path, timeout=900,
        env={**os.environ, "BRAINBENCH_HOME": str(tmp_path / "home"), "COLUMNS": "200",
             "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "could not log the model" not in done.stderr, done.stderr
    sys.path.insert(0, str(site))  # MLflow's loader rebuilds the model with the installed package
    try:
        run = runs_of(uri, "knn")[-1]
        example, expected = logged_example(uri, run.info.run_id, tmp_path)
        predicted = load_pyfunc(uri, f"runs:/{run.info.run_id}/model").predict(example)
        assert predicted.shape == (2, 768)
        np.testing.assert_allclose(predicted, expected, atol=1e-6, rtol=0)
    finally:
        sys.path.remove(str(site))
