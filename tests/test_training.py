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
    return FitData.from_splits(voxels[:n_train], targets[:n_train], voxels[n_train:], targets[n_train:])


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


def test_training_learns_and_reports():
    data = make_fit_data()
    reporter = RecordingReporter()
    fitted = train_torch_encoder(TinyEncoder(), data, TrainSettings(epochs=6, seed=1), reporter)

    assert [epoch for epoch, _ in reporter.epochs] == [1, 2, 3, 4, 5, 6]
    for _, metrics in reporter.epochs:  # no early stopping: nothing is validated (all rows are trained on)
        assert set(metrics) == {"train_loss", "lr"}
    assert reporter.epochs[-1][1]["train_loss"] < reporter.epochs[0][1]["train_loss"]
    assert reporter.total == reporter.advanced == 6 * (128 // 16)
    assert [entry["epoch"] for entry in fitted.history] == [1, 2, 3, 4, 5, 6]
    assert fitted.recipe["train_rows"] == 128 and fitted.recipe["epochs_trained"] == 6

    predictions = fitted.predict(data.val_voxels, batch_size=5)
    assert predictions.shape == (32, 3, 4) and predictions.dtype == np.float32
    assert fitted.n_parameters == sum(p.numel() for p in fitted.model.parameters())
    with pytest.raises(DataError, match=r"expected \(n, 20\)"):
        fitted.predict(np.zeros((2, 19), dtype=np.float32))


class RowRecordingObjective:
    """MSE, remembering which training rows (by their first voxel) each step saw."""

    def __init__(self) -> None:
        self.seen: set[float] = set()

    def __call__(self, model, voxels, targets, progress):
        self.seen.update(voxels[:, 0].tolist())
        return F.mse_loss(model(voxels), targets)


class RowRecordingEncoder(TinyEncoder):
    def objective(self, target_shape):
        self.last_objective = RowRecordingObjective()
        return self.last_objective


def test_every_training_row_is_trained_on_validation_rows_included():
    """The one data rule: without early stopping the model sees all rows, the validation images' too."""
    data = make_fit_data()
    encoder = RowRecordingEncoder()
    train_torch_encoder(encoder, data, TrainSettings(epochs=2, batch_size=16), RecordingReporter())
    assert encoder.last_objective.seen == set(data.voxels[:, 0].tolist())
    assert set(data.val_voxels[:, 0].tolist()) <= encoder.last_objective.seen


def test_recipe_records_what_training_used():
    encoder = TinyEncoder()
    fitted = train_torch_encoder(encoder, make_fit_data(), TrainSettings(epochs=2, batch_size=20), RecordingReporter())
    recipe = fitted.recipe
    assert (recipe["epochs"], recipe["batch_size"], recipe["lr"], recipe["schedule"]) == (2, 20, 3e-3, "cosine")
    assert (recipe["warmup_epochs"], recipe["weight_decay"], recipe["drop_last"]) == (1, 0.05, True)
    assert recipe["steps_per_epoch"] == 128 // 20 and recipe["device"] == "cpu" and recipe["precision"] == "fp32"
    kept = train_torch_encoder(
        KeepLastBatchEncoder(), make_fit_data(), TrainSettings(epochs=1, batch_size=20), RecordingReporter()
    )
    assert kept.recipe["drop_last"] is False and kept.recipe["steps_per_epoch"] == 7  # 128 = 6 x 20 + 8


class KeepLastBatchEncoder(TinyEncoder):
    defaults = replace(TinyEncoder.defaults, drop_last=False, checkpoint_every=3)


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
    from brainbench.training import _Run

    data = make_fit_data()
    every_epoch = _Run(TinyEncoder(), data, TrainSettings(epochs=3, val_every=1), RecordingReporter()).run()
    reporter = RecordingReporter()
    last_only = _Run(TinyEncoder(), data, TrainSettings(epochs=3, val_every=5), reporter).run()
    assert_same_weights(weights_of(every_epoch), weights_of(last_only))
    # without a validation epoch in between, only the last epoch reports validation metrics
    assert ["val_nce" in metrics for _, metrics in reporter.epochs] == [False, False, True]


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
    assert reporter.epochs[-1][1]["train_loss"] < reporter.epochs[0][1]["train_loss"]


def test_early_stopping_chooses_the_epochs_then_refits_on_all_rows():
    # noise targets can only be memorised, so the validation criterion soon worsens while training loss falls
    data = make_fit_data(noise_targets=True)
    reporter = RecordingReporter()
    settings = TrainSettings(epochs=40, lr=3e-2, early_stopping=2)
    fitted = train_torch_encoder(TinyEncoder(hidden=128), data, settings, reporter)

    selection = [entry for entry in fitted.history if entry["phase"] == 0.0]
    final = [entry for entry in fitted.history if entry["phase"] == 1.0]
    scores = [entry["val_nce"] for entry in selection]
    chosen = int(np.argmin(scores)) + 1
    assert len(selection) == chosen + 2 < 40
    assert fitted.recipe["selected_epochs"] == chosen == len(final) == fitted.recipe["epochs"]
    assert fitted.recipe["train_rows"] == data.n_rows and fitted.recipe["selection_rows"] == data.n_fit
    assert any("early stopping chose" in message for message in reporter.messages)
    assert {name for _, metrics in reporter.epochs for name in metrics} >= {"selection_val_nce", "train_loss"}
    # the returned model is exactly a plain run of the chosen length on all rows
    plain = train_torch_encoder(TinyEncoder(hidden=128), data, TrainSettings(epochs=chosen, lr=3e-2),
                                RecordingReporter())
    assert_same_weights(weights_of(fitted), weights_of(plain))


def test_early_stopping_criterion_is_fixed_whatever_the_objective():
    """val_nce is InfoNCE at a fixed temperature over the whole validation set: the same weights score the
    same whatever the objective's own temperature or progress."""
    data = make_fit_data()
    encoder = TinyEncoder()
    model = encoder.build(20, (3, 4)).eval()
    source = make_batch_source(data.val_voxels, data.val_targets, 8, torch.device("cpu"), shuffle=False,
                               drop_last=False)
    first = validate(encoder, model, LearnedTemperatureInfoNCE(), source, None, 0.0)
    hotter = LearnedTemperatureInfoNCE()
    with torch.no_grad():
        hotter.log_scale.fill_(5.0)
    second = validate(encoder, model, hotter, source, None, 0.9)
    assert first["val_nce"] == pytest.approx(second["val_nce"]) and first["val_loss"] != second["val_loss"]


def test_fit_data_with_mismatched_shapes_is_refused():
    data = make_fit_data()
    with pytest.raises(ValueError, match="128 voxel rows but 127 target rows"):
        FitData(data.voxels, data.targets[:-1])
    with pytest.raises(ValueError, match="n_validation"):
        FitData(data.voxels, data.targets, 200)
    with pytest.raises(DataError, match="at least one training row"):
        train_torch_encoder(TinyEncoder(), FitData(data.voxels, data.targets, 128), TrainSettings(epochs=1),
                            RecordingReporter())


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


@pytest.mark.parametrize("epochs,steps_per_epoch", [(10, 10), (7, 13), (3, 3)])
def test_onecycle_matches_torch_onecycle_lr(epochs, steps_per_epoch):
    """Also where 0.3 x the steps is not whole (91, 9): the rise ends at step 0.3 T - 1, as torch's does."""
    defaults = TrainingDefaults(epochs=epochs, batch_size=8, lr=3e-4, weight_decay=0.0, schedule="onecycle")
    schedule = build_schedule(defaults, 3e-4, epochs=epochs, steps_per_epoch=steps_per_epoch)
    total = epochs * steps_per_epoch
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=3e-4)
    reference = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-4, total_steps=total)
    for step in range(total):
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
    schedule = build_schedule(TinyEncoder.defaults, 3e-3, epochs=3, steps_per_epoch=8)
    assert [m["lr"] for _, m in reporter.epochs] == pytest.approx([schedule(7), schedule(15), schedule(23)])


def test_litemind_schedule_is_timms_cosine_stepped_at_each_epoch_end():
    """The reference: timm's CosineLRScheduler(t_initial=epochs, lr_min=1e-5, warmup_t=5, warmup_lr_init=1e-6),
    ``scheduler.step(epoch)`` after each epoch; our schedule gives every step the rate timm's optimizer holds."""
    timm_scheduler = pytest.importorskip("timm.scheduler")
    from brainbench_litemind.encoder import LiteMindEncoder

    defaults = LiteMindEncoder().training_defaults()
    epochs, steps = defaults.epochs, 25  # 24,980 trials in batches of 1000, the last partial batch kept
    schedule = build_schedule(defaults, defaults.lr, epochs=epochs, steps_per_epoch=steps)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=defaults.lr)
    reference = timm_scheduler.CosineLRScheduler(
        optimizer, t_initial=epochs, lr_min=1e-5, warmup_t=5, warmup_lr_init=1e-6
    )
    for epoch in range(epochs):
        held = optimizer.param_groups[0]["lr"]
        for step in (epoch * steps, epoch * steps + steps - 1):
            assert schedule(step) == pytest.approx(held, rel=1e-12, abs=1e-15), (epoch, step)
        reference.step(epoch)
    assert schedule(0) == schedule(steps) == pytest.approx(1e-6)  # epochs 0 and 1 both at the warm-up start


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
