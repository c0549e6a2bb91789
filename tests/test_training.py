"""The shared trainer, schedules and model figures, with a tiny encoder of our own (2-layer MLP)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from brainbench.errors import DataError
from brainbench.interfaces import FitData, TrainSettings
from brainbench.model_info import flops_per_sample, model_figures, parameter_counts
from brainbench.schedules import LearningRateSchedule, build_schedule
from brainbench.staging import make_batch_source
from brainbench.torch_encoder import TorchEncoder, TrainingDefaults
from brainbench.training import parameter_groups, resolve_recipe, train_torch_encoder, validate

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------- test parts


class LearnedTemperatureInfoNCE(nn.Module):
    """Symmetric InfoNCE with a trainable logit scale (an objective with parameters of its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def forward(self, model: nn.Module, voxels: torch.Tensor, targets: torch.Tensor, progress: float):
        predicted = F.normalize(model(voxels).flatten(1), dim=1)
        truth = F.normalize(targets.flatten(1), dim=1)
        logits = self.log_scale.exp() * predicted @ truth.T
        labels = torch.arange(len(voxels), device=voxels.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def mse_objective(model: nn.Module, voxels: torch.Tensor, targets: torch.Tensor, progress: float):
    return F.mse_loss(model(voxels), targets)


class TinyEncoder(TorchEncoder):
    """Linear -> LayerNorm -> GELU -> Dropout -> Linear, reshaped to the target shape."""

    name = "tiny"
    defaults = TrainingDefaults(
        epochs=4, batch_size=16, lr=3e-3, weight_decay=0.05, schedule="cosine", warmup_epochs=1, min_lr=1e-4
    )

    def build(self, n_voxels: int, target_shape: tuple[int, ...]) -> nn.Module:
        hidden = int(self.options.get("hidden", 32))
        return nn.Sequential(
            nn.Linear(n_voxels, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(0.1),
            nn.Linear(hidden, int(np.prod(target_shape))),
            nn.Unflatten(1, tuple(target_shape)),
        )

    def objective(self, target_shape: tuple[int, ...]):
        self.last_objective = mse_objective if self.options.get("loss") == "mse" else LearnedTemperatureInfoNCE()
        return self.last_objective


def make_fit_data(n_train: int = 96, n_val: int = 32, n_voxels: int = 20, seed: int = 0,
                  target_shape: tuple[int, ...] = (3, 4), noise_targets: bool = False) -> FitData:
    """Voxels and targets that share a latent (learnable), or unrelated noise targets (only memorisable)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    latent = rng.normal(size=(n, 8))
    voxels = latent @ rng.normal(size=(8, n_voxels)) + 0.3 * rng.normal(size=(n, n_voxels))
    targets = rng.normal(size=(n, 8)) if noise_targets else latent
    targets = (targets @ rng.normal(size=(8, int(np.prod(target_shape))))).reshape(n, *target_shape)
    voxels, targets = voxels.astype(np.float32), targets.astype(np.float32)
    return FitData(voxels[:n_train], targets[:n_train], voxels[n_train:], targets[n_train:])


class RecordingBar:
    def __init__(self, reporter: RecordingReporter) -> None:
        self.reporter = reporter

    def __enter__(self) -> RecordingBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def advance(self, n: int = 1) -> None:
        self.reporter.advanced += n


class RecordingReporter:
    def __init__(self) -> None:
        self.epochs: list[tuple[int, dict[str, float]]] = []
        self.messages: list[str] = []
        self.advanced = 0
        self.total: int | None = None

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append((epoch, dict(metrics)))

    def progress(self, description: str, total: int | None) -> RecordingBar:
        self.total = total
        return RecordingBar(self)

    def info(self, message: str) -> None:
        self.messages.append(message)


def weights_of(fitted) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in fitted.model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ------------------------------------------------------------------------------------------ trainer


def test_training_learns_validates_and_reports():
    data = make_fit_data()
    reporter = RecordingReporter()
    fitted = train_torch_encoder(TinyEncoder(), data, TrainSettings(epochs=6, seed=1), reporter)

    assert [epoch for epoch, _ in reporter.epochs] == [1, 2, 3, 4, 5, 6]
    for _, metrics in reporter.epochs:
        assert set(metrics) == {"train_loss", "val_loss", "val_top1", "lr"}
    first, last = reporter.epochs[0][1], reporter.epochs[-1][1]
    assert last["train_loss"] < first["train_loss"]
    assert last["val_loss"] < first["val_loss"]
    assert last["val_top1"] >= 8 / len(data.val_voxels)  # chance is 1/32
    assert reporter.total == reporter.advanced == 6 * (96 // 16)
    assert [entry["epoch"] for entry in fitted.history] == [1, 2, 3, 4, 5, 6]

    predictions = fitted.predict(data.val_voxels, batch_size=5)
    assert predictions.shape == (32, 3, 4) and predictions.dtype == np.float32
    assert fitted.n_parameters == sum(p.numel() for p in fitted.model.parameters())
    with pytest.raises(DataError, match=r"expected \(n, 20\)"):
        fitted.predict(np.zeros((2, 19), dtype=np.float32))


def test_same_seed_same_weights_other_seed_differs():
    data = make_fit_data()
    settings = TrainSettings(epochs=2, seed=3)
    first = train_torch_encoder(TinyEncoder(), data, settings, RecordingReporter())
    second = train_torch_encoder(TinyEncoder(), data, settings, RecordingReporter())
    assert_same_weights(weights_of(first), weights_of(second))
    assert first.history == second.history
    other = train_torch_encoder(TinyEncoder(), data, replace(settings, seed=4), RecordingReporter())
    assert not torch.equal(weights_of(first)["0.weight"], weights_of(other)["0.weight"])


def test_validation_does_not_change_the_training_trajectory():
    data = make_fit_data()
    every_epoch = train_torch_encoder(TinyEncoder(), data, TrainSettings(epochs=3, val_every=1), RecordingReporter())
    reporter = RecordingReporter()
    last_only = train_torch_encoder(TinyEncoder(), data, TrainSettings(epochs=3, val_every=5), reporter)
    assert_same_weights(weights_of(every_epoch), weights_of(last_only))
    # without a validation epoch in between, only the last epoch reports validation metrics
    assert ["val_loss" in metrics for _, metrics in reporter.epochs] == [False, False, True]


def test_weight_decay_groups_and_objective_parameters_are_trained():
    encoder = TinyEncoder()
    model = encoder.build(20, (3, 4))
    objective = encoder.objective((3, 4))
    groups = parameter_groups(encoder, {"model": model, "objective": objective}, weight_decay=0.05)
    decayed, exempt = groups
    named = dict(model.named_parameters())
    assert {id(p) for p in decayed["params"]} == {id(named["0.weight"]), id(named["4.weight"])}
    assert decayed["weight_decay"] == 0.05 and exempt["weight_decay"] == 0.0
    assert id(objective.log_scale) in {id(p) for p in exempt["params"]}
    assert id(named["1.weight"]) in {id(p) for p in exempt["params"]}  # LayerNorm weight

    start = float(objective.log_scale.detach())
    train_torch_encoder(encoder, make_fit_data(), TrainSettings(epochs=2), RecordingReporter())
    assert encoder.last_objective is not objective
    assert float(encoder.last_objective.log_scale.detach()) != pytest.approx(start, abs=1e-4)


def test_mse_objective_and_plain_function_objectives_train():
    data = make_fit_data(target_shape=(5,))
    reporter = RecordingReporter()
    train_torch_encoder(TinyEncoder(loss="mse"), data, TrainSettings(epochs=4), reporter)
    assert reporter.epochs[-1][1]["val_loss"] < reporter.epochs[0][1]["val_loss"]


def test_early_stopping_restores_the_best_validation_weights():
    # noise targets can only be memorised, so validation loss soon rises while training loss falls
    data = make_fit_data(noise_targets=True)
    encoder = TinyEncoder(hidden=128)
    reporter = RecordingReporter()
    settings = TrainSettings(epochs=40, lr=3e-2, early_stopping=2)
    fitted = train_torch_encoder(encoder, data, settings, reporter)

    val_losses = [entry["val_loss"] for entry in fitted.history]
    best_epoch = int(np.argmin(val_losses)) + 1
    assert len(fitted.history) == best_epoch + 2 < 40
    assert any("early stopping" in message for message in reporter.messages)
    source = make_batch_source(data.val_voxels, data.val_targets, 16, torch.device("cpu"),
                               shuffle=False, drop_last=False)
    # model and learned temperature are both restored: the returned pair scores the best validation loss
    returned = validate(encoder, fitted.model, encoder.last_objective, source, None, 0.0)
    assert returned["val_loss"] == pytest.approx(min(val_losses), rel=1e-6)
    assert returned["val_top1"] == pytest.approx(fitted.history[best_epoch - 1]["val_top1"])


def test_fit_data_with_mismatched_shapes_is_refused():
    data = make_fit_data()
    bad = FitData(data.train_voxels, data.train_targets[:-1], data.val_voxels, data.val_targets)
    with pytest.raises(DataError, match="train_targets"):
        train_torch_encoder(TinyEncoder(), bad, TrainSettings(epochs=1), RecordingReporter())
    bad = FitData(data.train_voxels, data.train_targets, data.val_voxels[:, :5], data.val_targets)
    with pytest.raises(DataError, match=r"val_voxels has shape \(32, 5\); expected \(n, 20\)"):
        train_torch_encoder(TinyEncoder(), bad, TrainSettings(epochs=1), RecordingReporter())


# ----------------------------------------------------------------------------------------- schedules


def test_cosine_schedule_warms_up_linearly_then_decays_to_the_floor():
    defaults = TrainingDefaults(epochs=10, batch_size=8, lr=1e-3, weight_decay=0.0, schedule="cosine",
                                warmup_epochs=2, warmup_start_lr=1e-6, min_lr=1e-5)
    schedule = build_schedule(defaults, 1e-3, epochs=10, steps_per_epoch=5)
    assert schedule(0) == pytest.approx(1e-6)
    assert schedule(5) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 5 / 10)
    assert schedule(10) == pytest.approx(1e-3)
    assert schedule(30) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)  # half-way through the decay
    assert schedule(50) == pytest.approx(1e-5)
    rates = [schedule(step) for step in range(10, 51)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))


def test_onecycle_matches_torch_onecycle_lr():
    defaults = TrainingDefaults(epochs=10, batch_size=8, lr=3e-4, weight_decay=0.0, schedule="onecycle")
    schedule = build_schedule(defaults, 3e-4, epochs=10, steps_per_epoch=10)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=3e-4)
    reference = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-4, total_steps=100)
    for step in range(100):
        assert schedule(step) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9), step
        optimizer.step()
        reference.step()


def test_constant_schedule_and_lr_scaling_by_reference_batch():
    assert LearningRateSchedule("constant", 0.1, 100)(57) == 0.1

    class Scaled(TinyEncoder):
        defaults = replace(TinyEncoder.defaults, lr=1e-4, lr_reference_batch=512, batch_size=1000)

    recipe = resolve_recipe(Scaled(), TrainSettings())
    assert recipe.lr == pytest.approx(1e-4 * 1000 / 512)
    recipe = resolve_recipe(Scaled(), TrainSettings(batch_size=256, lr=2e-4, epochs=7))
    assert (recipe.lr, recipe.epochs, recipe.batch_size) == (pytest.approx(1e-4), 7, 256)


def test_reported_lr_follows_the_schedule():
    reporter = RecordingReporter()
    train_torch_encoder(TinyEncoder(), make_fit_data(), TrainSettings(epochs=3), reporter)
    schedule = build_schedule(TinyEncoder.defaults, 3e-3, epochs=3, steps_per_epoch=6)
    assert [m["lr"] for _, m in reporter.epochs] == pytest.approx([schedule(5), schedule(11), schedule(17)])


# ---------------------------------------------------------------------------------------- figures


class TwoBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 10))
        self.first = nn.Linear(10, 20)
        self.second = nn.Sequential(nn.Linear(20, 5), nn.Linear(5, 3))
        self.tied = self.first  # the same module twice must be counted once

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x + self.pos_embed))


def test_parameter_counts_total_and_per_module():
    total, per_module = parameter_counts(TwoBranch())
    assert per_module == {"pos_embed": 10, "first": 10 * 20 + 20, "second": 20 * 5 + 5 + 5 * 3 + 3}
    assert total == 10 + 220 + 123


def test_flops_per_sample_counts_matmuls_per_module():
    flops = flops_per_sample(TwoBranch(), 10)
    assert flops["by_module"] == {"first": 2 * 10 * 20, "second": 2 * (20 * 5 + 5 * 3)}
    assert flops["forward_flops"] == 2 * (10 * 20 + 20 * 5 + 5 * 3)
    assert flops["training_flops_estimate"] == 3 * flops["forward_flops"]


def test_model_figures_of_a_huge_model_use_the_meta_device():
    figures = model_figures(TinyEncoder(hidden=4096), 2_000_000, (257, 768))
    expected = (2_000_000 * 4096 + 4096) + 2 * 4096 + (4096 * 257 * 768 + 257 * 768)
    assert figures["parameters"] == expected  # ~9 GB of fp32 weights, never allocated
    assert figures["parameters_by_module"]["0"] == 2_000_000 * 4096 + 4096
    assert figures["forward_flops"] == 2 * (2_000_000 * 4096 + 4096 * 257 * 768)
    assert figures["target_shape"] == "257x768" and figures["training"]["train.lr"] == 3e-3


def test_checkpoint_dir_gets_checkpoint_and_model_file(tmp_path: Path):
    settings = TrainSettings(epochs=2, checkpoint_dir=tmp_path / "ck")
    train_torch_encoder(TinyEncoder(), make_fit_data(), settings, RecordingReporter())
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "last.pt", "model.safetensors", "model.safetensors.json"
    ]
