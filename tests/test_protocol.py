"""The evaluation protocol, pinned with recording plugins: which split is read, what each encoder is given
(the one data rule), and how test repeats are handled in both modes."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from brainbench.config import RunConfig
from brainbench.plugins import get_plugins, reset_plugins
from brainbench.runner import run_cell
from tests.conftest import write_dist
from tests.test_training import RecordingReporter

RECORDING_PLUGIN = '''
import numpy as np
from brainbench import hookimpl
from brainbench.interfaces import Dataset, Encoder, FittedEncoder, MetricSpec, Target, Task, Trials

LOG = {"splits": [], "fits": [], "predicted": [], "evaluated": [], "empty": set(), "nan_ids": set()}
N_VOXELS, DIM = 6, 4
# split -> (stimulus ids, repeats per stimulus); "imagery" is the task's split, "test" must never be read
SPLITS = {"train": (np.arange(100, 140), 2), "test": (np.arange(0, 10), 3), "imagery": (np.arange(50, 58), 3)}


class RecordingData(Dataset):
    name = "recording-data"
    synthetic = True
    default_target = "recording-target"

    def __init__(self, root=None, **options):
        pass

    def subjects(self):
        return [1]

    def n_voxels(self, subject):
        return N_VOXELS

    def splits(self):
        return list(SPLITS)

    def trials(self, subject, split):
        LOG["splits"].append(split)
        ids, repeats = SPLITS[split]
        stimulus = np.repeat(ids, 0 if split in LOG["empty"] else repeats)
        rng = np.random.default_rng(len(split))
        voxels = rng.normal(size=(len(stimulus), N_VOXELS)).astype(np.float32)
        voxels[:, 0] = np.arange(len(stimulus)) + 1000 * len(LOG["splits"])  # which trial a row is
        voxels[:, 1] = stimulus
        return Trials(voxels, stimulus)


class RecordingTarget(Target):
    name = "recording-target"
    shape = (DIM,)

    def embed(self, dataset, stimulus_ids):
        ids = np.asarray(stimulus_ids, dtype=np.float32)
        out = np.stack([ids, ids ** 0.5, np.sin(ids), np.cos(ids)], axis=1).astype(np.float32)
        out[np.isin(stimulus_ids, list(LOG["nan_ids"]))] = np.nan
        return out


class Fitted(FittedEncoder):
    history = []

    def predict(self, voxels, batch_size=256):
        LOG["predicted"].append(np.array(voxels))
        return np.asarray(voxels[:, :DIM], dtype=np.float32) * 2.0

    def save(self, path):
        path = path.with_suffix(".npy")
        np.save(path, np.zeros(1))
        return path


class RecordingEncoder(Encoder):
    name = "recording-encoder"

    def fit(self, data, settings, reporter):
        LOG["fits"].append(data)
        return Fitted()


class RecordingTask(Task):
    name = "recording-task"
    default_dataset = "recording-data"
    split = "imagery"
    metrics = (MetricSpec("n", True),)

    def evaluate(self, ctx):
        LOG["evaluated"].append(ctx)
        return [self.result("n", len(ctx.stimulus_ids))]


@hookimpl
def register_encoders(register):
    register("recording-encoder", RecordingEncoder)


@hookimpl
def register_datasets(register):
    register("recording-data", RecordingData)


@hookimpl
def register_targets(register):
    register("recording-target", lambda **o: RecordingTarget())


@hookimpl
def register_tasks(register):
    register("recording-task", RecordingTask)
'''


@pytest.fixture
def recording(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    write_dist(site, "bb-recording", "bb_recording", RECORDING_PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "bb_recording", raising=False)  # a fresh LOG per test
    reset_plugins()
    get_plugins()
    yield sys.modules["bb_recording"]
    reset_plugins()


def run(tmp_path, **settings):
    config = RunConfig(encoder="recording-encoder", task="recording-task", device="cpu", **settings)
    return run_cell(config, RecordingReporter(), tmp_path / "work")


def test_evaluation_reads_the_tasks_split_and_never_the_test_split(recording, tmp_path):
    run(tmp_path)
    assert recording.LOG["splits"] == ["train", "imagery"]
    evaluated = recording.LOG["evaluated"][0]
    assert evaluated.stimulus_ids.tolist() == list(range(50, 58))
    np.testing.assert_allclose(evaluated.targets, recording.RecordingTarget().embed(None, np.arange(50, 58)))


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.0])
def test_every_encoder_gets_all_training_rows_with_whole_validation_images_last(recording, tmp_path, fraction):
    run(tmp_path, val_fraction=fraction)
    data = recording.LOG["fits"][0]
    train_ids, repeats = recording.SPLITS["train"]
    assert data.n_rows == len(train_ids) * repeats  # all training trials, the validation images' too
    assert sorted(data.voxels[:, 0].tolist()) == sorted(1000 + np.arange(data.n_rows))  # each trial once
    fit_ids, val_ids = set(data.fit_voxels[:, 1].tolist()), set(data.val_voxels[:, 1].tolist())
    assert len(val_ids) == round(len(train_ids) * fraction) and not fit_ids & val_ids  # whole images
    assert data.n_validation == len(val_ids) * repeats
    # targets pair with their rows: the target of each row is the embedding of that row's stimulus
    expected = recording.RecordingTarget().embed(None, data.voxels[:, 1])
    np.testing.assert_allclose(np.asarray(data.targets), expected)
    assert np.shares_memory(data.fit_voxels, data.voxels)  # views, not copies
    assert data.val_voxels.base is data.voxels or data.val_voxels.base is data.voxels.base


def test_average_voxels_averages_each_images_trials_before_the_model(recording, tmp_path):
    run(tmp_path, repeats="average-voxels")
    (seen,) = recording.LOG["predicted"]
    assert len(seen) == 8 and seen[:, 1].tolist() == list(range(50, 58))  # one averaged row per image
    first_three = 1000 * 2 + np.arange(3)  # the first image's 3 trials (the second trials() call)
    assert seen[0, 0] == pytest.approx(first_three.mean())


def test_average_predictions_averages_the_models_outputs_per_image(recording, tmp_path):
    run(tmp_path, repeats="average-predictions")
    (seen,) = recording.LOG["predicted"]
    assert len(seen) == 24  # every trial predicted
    evaluated = recording.LOG["evaluated"][0]
    per_trial = seen[:, :4] * 2.0
    expected = per_trial.reshape(8, 3, 4).mean(axis=1)  # trials of one image are adjacent here
    np.testing.assert_allclose(evaluated.predictions, expected, rtol=1e-6)


@pytest.mark.parametrize("split", ["train", "imagery"])
def test_an_empty_split_stops_the_run_with_the_reason(recording, tmp_path, split):
    from brainbench.errors import BrainbenchError

    recording.LOG["empty"].add(split)
    with pytest.raises(BrainbenchError, match=f"the '{split}' split has no trials.*brainbench data inspect"):
        run(tmp_path)
    assert not recording.LOG["fits"]  # nothing trained


@pytest.mark.parametrize("bad_id", [103, 52])  # a training image, a test image
def test_nan_target_embeddings_are_refused_naming_the_stimuli(recording, tmp_path, bad_id):
    from brainbench.errors import BrainbenchError

    recording.LOG["nan_ids"].add(bad_id)
    with pytest.raises(BrainbenchError, match=rf"NaN or infinite embeddings for 1 of \d+ stimuli \(ids {bad_id}\)"):
        run(tmp_path)
