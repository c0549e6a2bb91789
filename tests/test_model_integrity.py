"""A logged model runs code from its folder when MLflow loads it (``mlflow_pyfunc.py``, "models from code"):
brainbench's loader checks every file against the SHA-256 recorded in the store at log time first, and
refuses a changed model before anything in it runs.

The model is logged by the installed console script (``--log-model``) into a real SQLite store; the change is
made where MLflow keeps the model's files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from brainbench.records.model import (
    CODE_FILE,
    CODE_SHA256_TAG,
    FILES_SHA256_TAG,
    ModelIntegrityError,
    files_sha256,
    load_model,
)
from tests.test_log_model import RIDGE, logged_example, run_cli, runs_of, tracking_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A store with one ridge run that logged its model: (store URI, run id, the model's folder in the store)."""
    import mlflow

    folder = tmp_path_factory.mktemp("integrity")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    run_cli(folder, uri, *RIDGE, "--log-model")
    run = runs_of(uri, "ridge")[-1]
    model_id = run.data.tags["brainbench.model_uri"].removeprefix("models:/")
    model = mlflow.MlflowClient(tracking_uri=uri).get_logged_model(model_id)
    return uri, run.info.run_id, Path(model.artifact_location.removeprefix("file://")), model


def test_the_store_records_every_files_hash_and_an_unchanged_model_loads(logged, tmp_path):
    uri, run_id, files, model = logged
    recorded = json.loads(model.tags[FILES_SHA256_TAG])
    assert recorded == files_sha256(files)  # what is in the store's folder is what was hashed at log time
    assert model.tags[CODE_SHA256_TAG] == recorded[CODE_FILE]
    assert {CODE_FILE, "MLmodel", "artifacts/model.npz", "artifacts/brainbench_model.json"} <= recorded.keys()
    example, expected = logged_example(uri, run_id, tmp_path)
    for model_uri in (f"runs:/{run_id}/model", f"models:/{model.model_id}"):
        loaded = load_model(model_uri, tracking_uri=uri)
        np.testing.assert_allclose(loaded.predict(example), expected, rtol=1e-5, atol=1e-5)


def test_a_line_appended_to_the_models_code_is_refused_and_never_runs(logged, tmp_path):
    import mlflow

    uri, run_id, files, _ = logged
    code = files / CODE_FILE
    original = code.read_text()
    marker = tmp_path / "the appended line ran"
    code.write_text(original + f"\nopen({str(marker)!r}, 'w').write('ran')\n")
    try:
        with pytest.raises(ModelIntegrityError) as refused:
            load_model(f"runs:/{run_id}/model", tracking_uri=uri)
        message = str(refused.value)
        assert f"{CODE_FILE} was changed (sha256 " in message and "is not loaded" in message, message
        assert not marker.exists()  # checked before MLflow ran anything

        with tracking_store(uri):  # MLflow's own loader does run the line: the hazard is real
            mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
        assert marker.read_text() == "ran"
    finally:
        code.write_text(original)


def test_an_added_or_missing_file_is_refused(logged):
    uri, run_id, files, _ = logged
    added = files / "code" / "sitecustomize.py"
    added.parent.mkdir()
    added.write_text("print('hello')\n")
    try:
        with pytest.raises(ModelIntegrityError, match="code/sitecustomize.py was added"):
            load_model(f"runs:/{run_id}/model", tracking_uri=uri)
    finally:
        added.unlink()
        added.parent.rmdir()
    example = files / "input_example.json"
    kept = example.read_bytes()
    example.unlink()
    try:
        with pytest.raises(ModelIntegrityError, match="input_example.json is missing"):
            load_model(f"runs:/{run_id}/model", tracking_uri=uri)
    finally:
        example.write_bytes(kept)
