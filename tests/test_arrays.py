"""Row-indexed target views: the trainer sees the same data as with the expanded array."""

import numpy as np
import pytest

from brainbench.arrays import RowIndexed
from brainbench.interfaces import FitData, TrainSettings
from brainbench.training import train_torch_encoder
from tests.test_training import RecordingReporter, TinyEncoder, assert_same_weights, weights_of


def test_view_indexes_like_the_expanded_array():
    values = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)
    index = np.array([3, 0, 0, 2, 3, 1])
    view, expanded = RowIndexed(values, index), values[index]
    assert view.shape == expanded.shape and len(view) == 6
    np.testing.assert_array_equal(view[2:5], expanded[2:5])
    np.testing.assert_array_equal(view[np.array([5, 1])], expanded[[5, 1]])
    np.testing.assert_array_equal(view[4], expanded[4])
    np.testing.assert_array_equal(np.asarray(view), expanded)
    np.testing.assert_array_equal(np.asarray(view, dtype=np.float64), expanded.astype(np.float64))
    np.testing.assert_array_equal(view.astype(np.float64), expanded.astype(np.float64))
    with pytest.raises(IndexError):
        RowIndexed(values, np.array([4]))


@pytest.mark.parametrize("staging", ["device", "stream"])
def test_training_on_a_view_equals_training_on_the_expanded_array(staging, monkeypatch):
    monkeypatch.setenv("BRAINBENCH_STAGING", staging)
    rng = np.random.default_rng(0)
    unique = rng.normal(size=(30, 3, 4)).astype(np.float32)
    train_index, val_index = rng.integers(0, 30, 90), rng.integers(0, 30, 20)
    voxels = (unique.reshape(30, -1) @ rng.normal(size=(12, 20))).astype(np.float32)
    view = FitData.from_splits(voxels[train_index], RowIndexed(unique, train_index), voxels[val_index],
                   RowIndexed(unique, val_index))
    full = FitData.from_splits(voxels[train_index], unique[train_index], voxels[val_index], unique[val_index])
    settings = TrainSettings(epochs=2, seed=1, device="cpu")
    a = train_torch_encoder(TinyEncoder(), view, settings, RecordingReporter())
    b = train_torch_encoder(TinyEncoder(), full, settings, RecordingReporter())
    assert_same_weights(weights_of(a), weights_of(b))
    assert a.history == b.history


def test_runner_gives_encoders_targets_as_one_view_type():
    from brainbench import runner
    from brainbench.interfaces import FitData

    class Stored:
        name, shape = "stored", (2, 3)

        def embed(self, dataset, ids):
            return np.stack([np.full((2, 3), i, np.float32) for i in ids])

    ids = np.array([5, 1, 5, 5, 1])
    view = runner.embed_rows(Stored(), None, ids)
    assert isinstance(view, RowIndexed) and len(view.values) == 2  # each stimulus stored once
    assert view[:, 0, 0].tolist() == [5, 1, 5, 5, 1] and view.astype(np.float64).dtype == np.float64
    # an encoder gets the same type whether the runner or a caller with a plain array built its FitData
    plain = FitData(np.zeros((5, 4), np.float32), np.asarray(view), n_validation=2)
    assert isinstance(plain.targets, RowIndexed) and isinstance(plain.fit_targets, RowIndexed)
    np.testing.assert_array_equal(np.asarray(plain.targets), np.asarray(view))
    np.testing.assert_array_equal(np.asarray(plain.val_targets), np.asarray(view)[3:])
