"""The one-cell pipeline's own decisions: validation split, quick recipes, repeats."""

import numpy as np
import pytest

from brainbench.config import RunConfig
from brainbench.repeats import group_mean
from brainbench.runner import resolve, split_train_validation, training_overrides


def test_validation_holds_whole_unseen_stimuli():
    ids = np.repeat(np.arange(50), 3)
    fit, val = split_train_validation(ids, 0.2, seed=1)
    assert not (fit & val).any() and (fit | val).all()
    assert len(np.unique(ids[val])) == 10
    assert not set(ids[val]) & set(ids[fit])  # no image is in both
    again_fit, _ = split_train_validation(ids, 0.2, seed=1)
    assert (again_fit == fit).all()


def test_group_mean_averages_repeats_per_stimulus():
    values = np.array([[1.0], [3.0], [10.0]], dtype=np.float32)
    means, ids = group_mean(values, np.array([5, 5, 2]))
    assert ids.tolist() == [2, 5] and means[:, 0].tolist() == [10.0, 2.0]


@pytest.mark.parametrize("budget", ["auto", "reference"])
def test_quick_recipe_applies_only_on_demo_scale_and_never_over_explicit_settings(budget):
    config = RunConfig(encoder="mindeye", task="retrieval", budget=budget, encoder_options={"blocks": 2}, lr=1e-3)
    cell = resolve(config)
    assert cell.dataset.demo_scale  # the default simulator is demo-scale
    if budget == "auto":
        assert cell.quick is not None
        assert cell.encoder.params()["hidden"] == 512  # from the recipe
        assert cell.encoder.params()["blocks"] == 2  # the run's own option wins
        assert training_overrides(cell) == {"epochs": 10, "batch_size": None, "lr": 1e-3}
    else:
        assert cell.quick is None and cell.encoder.params()["hidden"] == 4096
        assert training_overrides(cell) == {"epochs": None, "batch_size": None, "lr": 1e-3}
