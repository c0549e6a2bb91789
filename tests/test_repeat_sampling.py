"""MindEye1's training sampling: an epoch draws images, and step s takes repeat s % R of every image in its
batch (models.md: "one repeat per step, repeat index = step % 3")."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brainbench.interfaces import FitData, TrainSettings
from brainbench.runner import repeat_groups
from brainbench.staging import make_batch_source
from brainbench.training import train_torch_encoder
from tests.test_training import RecordingReporter, TinyEncoder

N_IMAGES, REPEATS = 12, 3


def three_repeats() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows in trial order: image i's repeat r is row r * N_IMAGES + i; voxel 0 = image, voxel 1 = repeat."""
    images = np.tile(np.arange(N_IMAGES), REPEATS)
    repeat = np.repeat(np.arange(REPEATS), N_IMAGES)
    voxels = np.zeros((len(images), 5), dtype=np.float32)
    voxels[:, 0], voxels[:, 1] = images, repeat
    voxels[:, 2:] = np.random.default_rng(0).normal(size=(len(images), 3))
    targets = np.random.default_rng(1).normal(size=(len(images), 4)).astype(np.float32)
    return voxels, targets, images


def test_repeat_groups_list_each_images_rows_in_repeat_order_and_cycle_short_ones():
    ids = np.array([7, 3, 7, 3, 7, 9])  # 7 three times, 3 twice, 9 once
    groups = repeat_groups(ids)
    assert groups.tolist() == [[0, 2, 4], [1, 3, 1], [5, 5, 5]]  # images in order of first appearance


@pytest.mark.parametrize("mode", ["device", "stream"])
def test_each_step_takes_one_repeat_of_every_image_in_its_batch(mode):
    voxels, targets, images = three_repeats()
    groups = repeat_groups(images)
    source = make_batch_source(voxels, targets, 4, torch.device("cpu"), seed=3, mode=mode, repeat_groups=groups)
    assert source.steps_per_epoch == N_IMAGES // 4  # an epoch draws images, not rows
    for epoch in range(2):
        seen = []
        for step, (batch, _) in enumerate(source.batches(epoch)):
            assert set(batch[:, 1].tolist()) == {step % REPEATS}  # the whole batch: repeat step % 3
            seen += batch[:, 0].tolist()
        assert sorted(seen) == list(range(N_IMAGES))  # every image once per epoch


def test_staged_and_streamed_batches_are_the_same():
    voxels, targets, images = three_repeats()
    groups = repeat_groups(images)
    batches = {
        mode: [b for b, _ in make_batch_source(voxels, targets, 5, torch.device("cpu"), seed=1, mode=mode,
                                               drop_last=False, repeat_groups=groups).batches(0)]
        for mode in ("device", "stream")
    }
    assert len(batches["device"]) == 3 and all(
        torch.equal(a, b) for a, b in zip(batches["device"], batches["stream"], strict=True)
    )


class RepeatRecordingObjective:
    def __init__(self) -> None:
        self.repeats_per_step: list[set[int]] = []

    def __call__(self, model, voxels, targets, progress):
        self.repeats_per_step.append(set(voxels[:, 1].int().tolist()))
        return F.mse_loss(model(voxels), targets)


class RepeatRecordingEncoder(TinyEncoder):
    def objective(self, target_shape):
        self.last_objective = RepeatRecordingObjective()
        return self.last_objective


def test_the_trainer_follows_the_repeat_groups_validation_images_apart():
    voxels, targets, images = three_repeats()
    # images 10 and 11 are validation: their rows go last, as the runner orders them
    order = np.concatenate([np.flatnonzero(images < 10), np.flatnonzero(images >= 10)])
    data = FitData(voxels[order], targets[order], n_validation=2 * REPEATS,
                   repeat_groups=repeat_groups(images[order]))
    assert len(data.fit_groups) == 10 and (data.fit_groups < data.n_fit).all()
    encoder = RepeatRecordingEncoder()
    fitted = train_torch_encoder(encoder, data, TrainSettings(epochs=2, batch_size=4), RecordingReporter())
    steps = fitted.recipe["steps_per_epoch"]
    assert steps == N_IMAGES // 4 and fitted.recipe["sampling"] == "one repeat per step"
    assert encoder.last_objective.repeats_per_step == [{s % REPEATS} for s in range(steps)] * 2
