"""The NSD reader over MindEye2-layout files written by the simulator, and its error messages."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from brainbench.errors import DataError
from brainbench.simulate.nsd import GENERATOR_VERSION, SCALES, generate_synthetic_nsd
from brainbench_nsd.dataset import open_nsd, open_synthetic_nsd
from brainbench_nsd.h5rows import RowView
from tests.nsd_fixtures import write_mindeye2_release


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINBENCH_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("nsd")
    generate_synthetic_nsd(root, "tiny", seed=0, subjects=(1, 2))
    return root


def _copy(written, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(written, root)
    return root


def test_synthetic_dataset_reads_lazily_through_the_real_reader(tmp_path):
    ds = open_synthetic_nsd(scale="tiny", seed=0)
    assert ds.name == "synthetic-nsd" and ds.synthetic and ds.subjects() == [1, 2, 5, 7]
    assert (tmp_path / "home" / "synthetic" / f"nsd-tiny-v{GENERATOR_VERSION}-seed0" / "clip_targets.hdf5").exists()
    assert not (tmp_path / "home" / "synthetic" / f"nsd-tiny-v{GENERATOR_VERSION}-seed0" / "trials_subj05.csv").exists()
    train, test = ds.trials(5, "train"), ds.trials(5, "test")  # subject 5 is generated now
    assert isinstance(train.voxels, RowView)  # lazy, not an array in memory
    scale = SCALES["tiny"]
    assert (train.n_trials, test.n_trials, train.n_voxels) == (scale.train_trials, scale.test_trials, scale.voxels[5])
    assert ds.n_voxels(5) == scale.voxels[5]
    rows = np.array([7, 2, 2, 40])
    np.testing.assert_array_equal(train.load(rows), train.load()[rows])
    assert train.sessions is not None and np.all(np.diff(train.sessions) >= 0)
    pooled = ds.stored_embeddings("clip-pooled")
    assert pooled.shape[1] == 768 and pooled.shape[0] > test.stimulus_ids.max()
    assert ds.categories(test.stimulus_ids).shape == test.stimulus_ids.shape
    assert len(ds.category_names()) == scale.n_categories
    assert ds.describe()["scale"] == "tiny" and ds.describe()["synthetic"] is True
    clone = pickle.loads(pickle.dumps(ds))  # e.g. for a worker process: handles reopen on use
    np.testing.assert_array_equal(clone.trials(5, "test").load(), test.load())


def test_open_nsd_detects_the_mindeye2_layout(written):
    ds = open_nsd(written)
    # simulated files read back through the real reader are still labelled synthetic (the simulator's marker)
    assert ds.subjects() == [1, 2] and ds.synthetic and ds.describe()["synthetic"] is True
    test = ds.trials(1, "test")
    with h5py.File(written / "betas_all_subj01_fp32_renorm.hdf5") as f:
        direct = f["betas"][:]
    trial_rows = ds._table(1)["trial_index"][ds._table(1)["split"] == "test"]
    np.testing.assert_array_equal(test.load(), direct[np.sort(trial_rows)])


def test_missing_file_and_key_are_named(written, tmp_path):
    with pytest.raises(DataError, match="no subject 5"):
        open_nsd(written).trials(5, "train")
    root = _copy(written, tmp_path)
    with h5py.File(root / "betas_all_subj01_fp32_renorm.hdf5", "a") as f:
        f.move("betas", "other")
    with pytest.raises(DataError, match=r"betas_all_subj01_fp32_renorm.hdf5: missing dataset 'betas'.*n_voxels"):
        open_nsd(root).n_voxels(1)
    (root / "trials_subj02.csv").unlink()
    assert open_nsd(root).subjects() == [1]
    with pytest.raises(DataError, match="no NSD layout"):
        open_nsd(tmp_path)
    with pytest.raises(DataError, match="--data-path"):
        open_nsd(None)


def test_nan_betas_are_reported(written, tmp_path):
    root = _copy(written, tmp_path)
    with h5py.File(root / "betas_all_subj01_fp32_renorm.hdf5", "a") as f:
        f["betas"][3, 5] = np.nan
    with pytest.raises(DataError, match=r"subj01.*'betas'.*NaN or infinite.*row 3"):
        open_nsd(root).trials(1, "train")


def test_nan_betas_in_a_large_file_are_caught_when_rows_are_read(written, tmp_path, monkeypatch):
    import brainbench_nsd.dataset as dataset_module

    monkeypatch.setattr(dataset_module, "FULL_CHECK_BYTES", 0)  # behave as for a file too big to scan at open
    root = _copy(written, tmp_path)
    train_rows = open_nsd(root).trials(1, "train").voxels.rows
    with h5py.File(root / "betas_all_subj01_fp32_renorm.hdf5", "a") as f:
        f["betas"][int(train_rows[4]), 0] = np.inf
    trials = open_nsd(root).trials(1, "train")  # opening does not scan the whole file...
    trials.load(np.arange(4))  # ...clean rows read fine...
    with pytest.raises(DataError, match=rf"NaN or infinite.*row {int(train_rows[4])}"):
        trials.load()  # ...and the bad row is reported when read


def test_trial_table_past_the_betas_and_wrong_dims(written, tmp_path):
    root = _copy(written, tmp_path)
    table = (root / "trials_subj01.csv").read_text().splitlines()
    table.append("0,999999,1,train")
    (root / "trials_subj01.csv").write_text("\n".join(table) + "\n")
    with pytest.raises(DataError, match=r"trials_subj01.csv: trial_index up to 999999 points past.*rows"):
        open_nsd(root).trials(1, "train")
    with h5py.File(root / "betas_all_subj02_fp32_renorm.hdf5", "a") as f:
        del f["betas"]
        f["betas"] = np.zeros((4, 3, 2), np.float32)
    with pytest.raises(DataError, match=r"shape \(4, 3, 2\); expected \(n_trials, n_voxels\)"):
        open_nsd(root).n_voxels(2)
    (root / "trials_subj01.csv").write_text("image_index,split\n1,train\n")
    with pytest.raises(DataError, match="trials_subj01.csv: trial table lacks column.*trial_index"):
        open_nsd(root).trials(1, "train")


def test_average_repeats_and_predictions():
    from brainbench.repeats import group_mean

    voxels = np.array([[1.0, 2.0], [3.0, 4.0], [10.0, 10.0], [5.0, 6.0]], dtype=np.float32)
    ids = np.array([7, 3, 9, 7])
    averaged, unique = group_mean(voxels, ids)
    np.testing.assert_array_equal(unique, [3, 7, 9])
    np.testing.assert_allclose(averaged, [[3, 4], [3, 4], [10, 10]])
    tokens = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)
    mean_tokens, unique = group_mean(tokens, ids)
    np.testing.assert_allclose(mean_tokens[1], (tokens[0] + tokens[3]) / 2)
    with pytest.raises(ValueError):
        group_mean(voxels, ids[:3])


# ------------------------------------------------------- the MindEye2 release through the installed CLI

TINY_CLIP = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def console_script(*args: str, env: dict[str, str], cwd) -> subprocess.CompletedProcess[str]:
    """The installed ``brainbench`` console script, as a user runs it."""
    script = Path(sys.executable).with_name("brainbench")
    return subprocess.run([str(script), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_release_folder_runs_ridge_retrieval_from_the_console_script(tmp_path):
    release = write_mindeye2_release(tmp_path / "release")
    config = tmp_path / "bb-tiny-release-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    env = {**os.environ, "BRAINBENCH_HOME": str(tmp_path / "home"), "COLUMNS": "250"}
    env.pop("BRAINBENCH_CLIP_WEIGHTS", None)
    run = ["run", "ridge", "--task", "retrieval", "--dataset", "nsd", "--data-path", str(release.root),
           "--device", "cpu", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]

    refused = console_script(*run, env=env, cwd=tmp_path)
    assert refused.returncode != 0
    said = " ".join(refused.stderr.split())
    assert "needs target 'clip-vit-l-14'" in said and "Traceback" not in refused.stderr
    assert f"brainbench targets build --dataset nsd --data-path {release.root}" in said
    assert "ridge: refitting" not in refused.stdout + refused.stderr  # refused before any work

    built = console_script("targets", "build", "--dataset", "nsd", "--data-path", str(release.root),
                           "--model", str(config), "--weights", "random", "--device", "cpu", env=env, cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    shown = [release.behav[1][folder][:, 0] for folder in ("train", "new_test")]
    n_images = len(np.unique(np.concatenate(shown)))
    assert f"{n_images} stimuli, {n_images} encoded now" in " ".join(built.stdout.split())

    tiny = ["--target-opt", f"model={config}", "--target-opt", "weights=random"]
    ran = console_script(*run, *tiny, env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    out = " ".join((ran.stdout + ran.stderr).split())
    n_train, n_test = len(release.behav[1]["train"]), len(release.behav[1]["new_test"])
    assert f"nsd (real), {n_train} train / {n_test} test trials, 40 voxels" in out
    assert "fmri_to_image_top1_full" in out and "10-way" in out
