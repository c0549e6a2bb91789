"""MindEye against the MedARC reference as ../shared/reference/models.md states it (docs/mindeye.md).

The ``reference_*`` helpers below restate the reference's maths from models.md in plain numpy / Python,
independently of brainbench's code; the tests compare brainbench's model, loss, schedule, weight-decay
groups and MindEye1 data option with them, and check that the trainer really applies them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from brainbench.interfaces import FitData, TrainSettings, Trials
from brainbench.losses import MindEyeLoss, bimixco_loss, mix_voxels, mixco_targets, soft_clip_loss
from brainbench.schedules import build_schedule
from brainbench.training import parameter_groups, train_torch_encoder
from brainbench_mindeye.encoder import MindEyeEncoder
from tests.test_losses import _Recorder

SMALL = {"hidden": 32, "blocks": 2, "projector_hidden": 24}


@pytest.fixture(autouse=True)
def _seed():  # BRAINBENCH_HOME is isolated by conftest.py
    torch.manual_seed(0)
    torch.set_num_threads(2)


# ------------------------------------------------------------------ the reference, restated from models.md


def reference_mixco_targets(perm: list[int], betas: list[float], corrected: bool) -> np.ndarray:
    """models.md: soft targets beta (own image) / 1 - beta (partner), built with '=' where the permutation
    maps a row to itself, so such a row sums to 1 - beta (0 when unmixed); the correction sums to 1."""
    n = len(perm)
    probs = np.zeros((n, n))
    for i in range(n):
        probs[i, i] = betas[i]
    for i in range(n):
        probs[i, perm[i]] = probs[i, perm[i]] + (1 - betas[i]) if corrected else 1 - betas[i]
    return probs


def _unit_rows(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1).astype(np.float64)
    return flat / np.linalg.norm(flat, axis=1, keepdims=True)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def reference_bimixco(preds: np.ndarray, targets: np.ndarray, probs: np.ndarray, temperature: float) -> float:
    """Symmetric cross-entropy against the soft targets, both sides flattened and L2-normalised."""
    logits = _unit_rows(preds) @ _unit_rows(targets).T / temperature
    forward = -(_log_softmax(logits) * probs).sum(axis=1).mean()
    backward = -(_log_softmax(logits.T) * probs.T).sum(axis=1).mean()
    return float((forward + backward) / 2)


def reference_softclip(preds: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    """Targets softmax(CLIP . CLIP^T / tau), symmetric, both sides flattened and L2-normalised."""
    p, t = _unit_rows(preds), _unit_rows(targets)
    clip_clip = t @ t.T / temperature
    soft = np.exp(_log_softmax(clip_clip))
    logits = p @ t.T / temperature
    forward = -(_log_softmax(logits) * soft).sum(axis=1).mean()
    backward = -(_log_softmax(logits.T) * soft).sum(axis=1).mean()
    return float((forward + backward) / 2)


def reference_mix_epochs(epochs: int) -> int:
    """BiMixCo runs while epoch < int(0.33 * epochs)."""
    return int(0.33 * epochs)


def reference_softclip_temperature(epoch: int, epochs: int) -> float:
    """One value per SoftCLIP epoch: n = epochs - mix epochs values on a half cosine from 0.004 (the first
    SoftCLIP epoch) to 0.0075 (the last), i.e. a linspace-like cosine anneal over n epochs."""
    start, end = 0.004, 0.0075
    n = epochs - reference_mix_epochs(epochs)
    k = epoch - reference_mix_epochs(epochs)
    return end + (start - end) / 2 * (1 + math.cos(math.pi * k / (n - 1)))


def reference_onecycle(step: int, total: int, pct_start: float, max_lr: float = 3e-4) -> tuple[float, float]:
    """(lr, Adam beta1) of OneCycleLR(max_lr, total, pct_start, div_factor 25, final_div_factor 1000) with
    the default cycle_momentum (beta1 0.95 -> 0.85 -> 0.95) and cosine annealing: the rise's last step is
    pct_start * total - 1, the fall's is total - 1."""

    def cos_anneal(a: float, b: float, fraction: float) -> float:
        return b + (a - b) / 2.0 * (math.cos(math.pi * fraction) + 1)

    initial = max_lr / 25.0
    final = initial / 1000.0
    rise_end = float(pct_start * total) - 1
    if step <= rise_end:
        fraction = step / rise_end
        return cos_anneal(initial, max_lr, fraction), cos_anneal(0.95, 0.85, fraction)
    fraction = (step - rise_end) / (total - 1 - rise_end)
    return cos_anneal(max_lr, final, fraction), cos_anneal(0.85, 0.95, fraction)


# ---------------------------------------------------------------------------------------------- model


def test_subject_1_parameter_counts_equal_the_reference():
    with torch.device("meta"):
        model = MindEyeEncoder().build(15724, (257, 768))
    total = sum(p.numel() for p in model.parameters())
    backbone = total - sum(p.numel() for p in model.projector.parameters())
    assert (backbone, total) == (940_225_280, 947_579_904)


def test_describe_counts_modules_and_flops_of_the_pooled_variant():
    info = MindEyeEncoder().describe(15724, (768,))
    assert info["parameters"] == sum(info["parameters_per_module"].values())
    assert 140e6 < info["parameters"] < 144e6  # "about 142M"
    assert info["flops_per_sample"] >= 2 * info["parameters_backbone"] * 0.99
    assert info["options"]["hidden"] == 4096 and info["options"]["embed"] == "projector"


def test_layers_norms_dropouts_and_names_are_the_reference_structure():
    with torch.device("meta"):
        model = MindEyeEncoder().build(15724, (257, 768))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 1 + 4 + 3 and all(m.eps == 1e-5 for m in norms)  # PyTorch's default eps
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.5, 0.15, 0.15, 0.15, 0.15]
    gelus = [m for m in model.modules() if isinstance(m, torch.nn.GELU)]
    assert len(gelus) == 8 and all(m.approximate == "none" for m in gelus)
    names = dict(model.named_parameters())
    # Linear(V -> 4096), LN; 4 x (Linear, LN) blocks; Linear(4096 -> 257*768); projector LN-GELU-Linear x3
    assert names["lin0.0.weight"].shape == (4096, 15724) and names["lin0.1.weight"].shape == (4096,)
    assert all(names[f"mlp.{k}.0.weight"].shape == (4096, 4096) for k in range(4))
    assert names["lin1.weight"].shape == (257 * 768, 4096)
    assert [names[f"projector.{i}.weight"].shape for i in (0, 2, 3, 5, 6, 8)] == [
        (768,), (2048, 768), (2048,), (2048, 2048), (2048,), (768, 2048)
    ]


@pytest.mark.parametrize("target_shape", [(5, 16), (16,)])
def test_forward_returns_backbone_and_projector_of_the_target_shape(target_shape):
    encoder = MindEyeEncoder(**SMALL)
    model = encoder.build(40, target_shape).eval()
    backbone, projected = model(torch.randn(3, 40))
    assert backbone.shape == projected.shape == (3, *target_shape)
    assert torch.equal(encoder.embed(model, torch.zeros(2, 40)), model(torch.zeros(2, 40))[1])
    backbone_encoder = MindEyeEncoder(**SMALL, embed="backbone")
    assert torch.equal(backbone_encoder.embed(model, torch.zeros(2, 40)), model(torch.zeros(2, 40))[0])


def test_forward_is_the_reference_residual_mlp():
    """x = lin0(v); x = block_k(x) + x for each block; lin1; projector on each 768-wide token (eval mode)."""
    model = MindEyeEncoder(**SMALL).build(40, (5, 16)).eval()
    voxels = torch.randn(3, 40)
    with torch.no_grad():
        x = model.lin0(voxels)
        for block in model.mlp:
            linear, norm = block[0], block[1]
            x = torch.nn.functional.gelu(norm(linear(x))) + x
        expected_backbone = model.lin1(x).reshape(3, 5, 16)
        backbone, projected = model(voxels)
    assert torch.equal(backbone, expected_backbone)  # the same operations in the same order: bitwise
    assert torch.equal(projected, model.projector(expected_backbone))


# ---------------------------------------------------------------------------------------------- losses


@pytest.mark.parametrize("corrected", [False, True])
def test_bimixco_targets_equal_the_restated_reference(corrected):
    perm = [2, 1, 0, 3, 5, 4]  # rows 1 and 3 map to themselves
    betas = [0.7, 0.4, 0.9, 1.0, 1.0, 0.25]  # row 3 unmixed (beta 1), row 1 mixed with itself
    mode = "corrected" if corrected else "faithful"
    ours = mixco_targets(torch.tensor(perm), torch.tensor(betas), mode).double().numpy()
    expected = reference_mixco_targets(perm, betas, corrected)
    assert np.allclose(ours, expected, atol=1e-7)
    sums = ours.sum(axis=1)
    if corrected:
        assert np.allclose(sums, 1.0)
    else:  # the reference's bug: 1 - beta on a fixed point, 0 for an unmixed fixed point
        assert sums[1] == pytest.approx(0.6) and sums[3] == 0.0 and np.allclose(sums[[0, 2, 4, 5]], 1.0)


def test_bimixco_and_softclip_losses_equal_the_restated_reference():
    rng = np.random.default_rng(0)
    preds, targets = rng.normal(size=(8, 3, 4)), rng.normal(size=(8, 3, 4))
    perm, betas = [3, 1, 0, 2, 5, 4, 7, 6], [0.2, 0.5, 1.0, 0.9, 1.0, 0.05, 0.6, 1.0]
    for mode, corrected in (("faithful", False), ("corrected", True)):
        probs = mixco_targets(torch.tensor(perm), torch.tensor(betas, dtype=torch.float32), mode)
        ours = bimixco_loss(torch.tensor(preds, dtype=torch.float32), torch.tensor(targets, dtype=torch.float32),
                            probs, 0.006).item()
        expected = reference_bimixco(preds, targets, reference_mixco_targets(perm, betas, corrected), 0.006)
        assert ours == pytest.approx(expected, rel=1e-4)
    for temperature in (0.004, 0.0075):
        ours = soft_clip_loss(torch.tensor(preds, dtype=torch.float32), torch.tensor(targets, dtype=torch.float32),
                              temperature).item()
        assert ours == pytest.approx(reference_softclip(preds, targets, temperature), rel=1e-4)


def test_mixing_blends_half_the_batch_with_beta_015_weights():
    voxels = torch.randn(20_000, 3)
    mixed, perm, lam = mix_voxels(voxels, beta=0.15, mix_fraction=0.5)
    weight = lam[:, None]
    assert torch.allclose(mixed, voxels * weight + voxels[perm] * (1 - weight))
    mixed_rows = lam < 1
    assert 0.48 < mixed_rows.float().mean().item() < 0.52  # half the batch
    sample = lam[mixed_rows].double()
    assert sample.mean().item() == pytest.approx(0.5, abs=0.01)  # Beta(a, a): mean 1/2
    assert sample.var().item() == pytest.approx(1 / (4 * (2 * 0.15 + 1)), rel=0.03)  # variance 1/(4(2a+1))


@pytest.mark.parametrize("steps_per_epoch", [1, 7, 276])
def test_bimixco_runs_for_int_033_epochs_and_the_trainers_progress_finds_the_epoch(steps_per_epoch):
    loss = MindEyeLoss(epochs=240)
    assert loss.mix_epochs == reference_mix_epochs(240) == 79  # not 80
    total = 240 * steps_per_epoch
    for step in range(total):
        epoch = step // steps_per_epoch
        assert loss.epoch(step / total) == epoch  # the trainer passes progress = step / total steps
        assert loss.mixing(loss.epoch(step / total)) == (epoch < 79)
    loss.set_epochs(10)
    assert loss.mix_epochs == reference_mix_epochs(10) == 3


def test_softclip_temperature_per_epoch_equals_the_restated_anneal():
    loss = MindEyeLoss(epochs=240)
    for epoch in (79, 80, 120, 200, 239):
        assert loss.temperature(epoch) == pytest.approx(reference_softclip_temperature(epoch, 240), rel=1e-12)
    assert loss.temperature(79) == pytest.approx(0.004)  # the first SoftCLIP epoch
    assert loss.temperature(80) == pytest.approx(0.0075 - 0.00175 * (1 + math.cos(math.pi / 160)))
    assert loss.temperature(239) == pytest.approx(0.0075)  # reached at the last epoch


def test_the_objective_mixes_before_epoch_79_and_uses_the_epochs_temperature_after():
    voxels, targets = torch.randn(32, 6), torch.randn(32, 6)
    model, loss, steps = _Recorder(), MindEyeLoss(epochs=240), 10
    total = 240 * steps
    loss(model, voxels, targets, (79 * steps - 1) / total)  # the last step of epoch 78
    assert not torch.equal(model.seen, voxels)
    late = loss(model, voxels, targets, (80 * steps + 3) / total)  # inside epoch 80
    assert torch.equal(model.seen, voxels)
    expected = reference_softclip(voxels.numpy(), targets.numpy(), reference_softclip_temperature(80, 240))
    assert late.item() == pytest.approx(expected, rel=1e-4)


# ---------------------------------------------------------------------------------------------- recipe


@pytest.mark.parametrize("epochs,steps_per_epoch", [(240, 5), (10, 13)])
def test_onecycle_lr_and_beta1_equal_torch_step_by_step(epochs, steps_per_epoch):
    schedule = build_schedule(MindEyeEncoder.defaults, 3e-4, epochs, steps_per_epoch)
    total = epochs * steps_per_epoch
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=3e-4)
    torch_schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-4, total_steps=total, pct_start=2 / epochs, final_div_factor=1000
    )
    for step in range(total):
        group = optimizer.param_groups[0]
        assert schedule(step) == pytest.approx(group["lr"], rel=1e-12, abs=1e-20), step
        assert schedule.momentum(step) == pytest.approx(group["betas"][0], rel=1e-12), step
        expected_lr, expected_beta1 = reference_onecycle(step, total, 2 / epochs)
        assert schedule(step) == pytest.approx(expected_lr, rel=1e-12) and schedule.momentum(step) == pytest.approx(
            expected_beta1, rel=1e-12
        )
        optimizer.step()
        torch_schedule.step()
    assert schedule.momentum(0) == schedule.momentum(total - 1) == pytest.approx(0.95)
    assert schedule.momentum(2 * steps_per_epoch - 1) == pytest.approx(0.85)  # at the peak, after 2 epochs
    assert schedule(2 * steps_per_epoch - 1) == pytest.approx(3e-4)
    assert schedule(total - 1) == pytest.approx(3e-4 / 25 / 1000)


def test_defaults_are_the_reference_recipe_and_bad_options_are_refused():
    d = MindEyeEncoder.defaults
    assert (d.epochs, d.batch_size, d.lr, d.weight_decay, d.schedule) == (240, 32, 3e-4, 1e-2, "onecycle")
    assert (d.warmup_epochs, d.div_factor, d.final_div_factor, d.grad_clip) == (2, 25.0, 1000.0, None)
    assert (d.cycle_momentum, d.base_momentum, d.max_momentum) == (True, 0.85, 0.95)
    assert d.checkpoint_every == 10 and d.drop_last  # the last partial batch dropped
    for bad in ({"hiden": 8}, {"embed": "both"}, {"mixco_targets": "fixed"}, {"norm_weight_decay": "none"}):
        with pytest.raises(ValueError, match="unknown mindeye option|not one of"):  # the declaration refuses
            MindEyeEncoder(**bad)


def reference_no_decay(name: str) -> bool:
    """models.md: exemptions matched as substrings of the names; "LayerNorm.weight" never matches this model."""
    return any(entry in name for entry in ("bias", "LayerNorm.bias", "LayerNorm.weight"))


@pytest.mark.parametrize("norm_weight_decay", ["decay", "exempt"])
def test_weight_decay_groups_follow_the_reference_rule_or_the_named_correction(norm_weight_decay):
    encoder = MindEyeEncoder(**SMALL, norm_weight_decay=norm_weight_decay)
    model = encoder.build(40, (5, 16))
    groups = parameter_groups(encoder, {"model": model}, 1e-2)
    decay_of = {id(p): group["weight_decay"] for group in groups for p in group["params"]}
    norm_weights = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    assert len(norm_weights) == 1 + 2 + 3
    for name, param in model.named_parameters():
        exempt = reference_no_decay(name) or (norm_weight_decay == "exempt" and name in norm_weights)
        assert decay_of[id(param)] == (0.0 if exempt else 1e-2), name
    if norm_weight_decay == "decay":  # the reference decays LayerNorm weights
        assert all(decay_of[id(dict(model.named_parameters())[n])] == 1e-2 for n in norm_weights)


# ----------------------------------------------------------------------------- the trainer applies them


class _SpyMindEye(MindEyeEncoder):
    def objective(self, target_shape):
        self.loss = super().objective(target_shape)
        return self.loss


class _Bar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def advance(self, n=1):
        return None


class _CheckpointReader:
    """A reporter that reads the trainer's checkpoint after each epoch: the optimizer's lr and beta1."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, []

    def epoch_end(self, epoch, metrics):
        groups = torch.load(self.path, weights_only=True)["optimizer"]["param_groups"]
        self.seen.append([(g["lr"], g["betas"][0]) for g in groups])

    def progress(self, description, total):
        return _Bar()

    def info(self, message):
        return None


def test_training_sets_onecycle_beta1_per_step_and_tells_the_objective_the_epochs(tmp_path):
    rng = np.random.default_rng(0)
    voxels = rng.normal(size=(24, 40)).astype(np.float32)
    targets = rng.normal(size=(24, 5, 16)).astype(np.float32)
    encoder, epochs, batch = _SpyMindEye(**SMALL), 6, 8
    reporter = _CheckpointReader(tmp_path / "last.pt")
    settings = TrainSettings(epochs=epochs, batch_size=batch, device="cpu", precision="fp32", compile="off",
                             checkpoint_dir=tmp_path, checkpoint_every=1)
    fitted = train_torch_encoder(encoder, FitData(voxels, targets), settings, reporter)
    assert encoder.loss.epochs == epochs and encoder.loss.mix_epochs == 1  # int(0.33 * 6)
    recipe = fitted.recipe  # what the run logs as params recipe.*: the schedule actually followed
    assert (recipe["schedule"], recipe["onecycle_pct_start"]) == ("onecycle", pytest.approx(2 / epochs))
    assert recipe["warmup_start_lr"] == pytest.approx(3e-4 / 25) and recipe["min_lr"] == pytest.approx(3e-4 / 25e3)
    assert recipe["beta1"].startswith("0.95 -> 0.85")
    steps = 24 // batch
    for epoch, groups in enumerate(reporter.seen):
        last_step = (epoch + 1) * steps - 1  # the values the epoch's last optimizer step used
        lr, beta1 = reference_onecycle(last_step, epochs * steps, 2 / epochs)
        for group_lr, group_beta1 in groups:
            assert group_lr == pytest.approx(lr, rel=1e-12) and group_beta1 == pytest.approx(beta1, rel=1e-12)
    assert len(reporter.seen) == epochs and reporter.seen[1][0][1] == pytest.approx(0.85)  # AdamW's own: 0.9


# ---------------------------------------------------------------------------- the MindEye1 data layout


def _mindeye1_root(tmp_path: Path) -> tuple[Path, np.ndarray, dict[tuple[int, int], np.ndarray]]:
    """10 training images with 3 repeats (image 4 with 2), presented repeat by repeat; 3 test images."""
    from brainbench_nsd.mindeye1 import write_mindeye1_shards

    rng = np.random.default_rng(1)
    rows, ids, by_trial = [], [], {}
    for repeat in range(3):
        for image in range(10):
            if image == 4 and repeat == 2:
                continue
            rows.append(rng.normal(size=12).astype(np.float32))
            ids.append(100 + image)
            by_trial[(100 + image, repeat)] = rows[-1]
    train = Trials(np.stack(rows), np.array(ids))
    test = Trials(rng.normal(size=(9, 12)).astype(np.float32), np.repeat([500, 501, 502], 3))
    write_mindeye1_shards(tmp_path, 1, {"train": train, "test": test}, samples_per_shard=4)
    return tmp_path, np.array(ids), by_trial


def test_mindeye1_one_per_image_training_holds_one_fixed_repeat_of_each_image(tmp_path):
    from brainbench_nsd.mindeye1 import MindEye1Nsd

    root, ids, by_trial = _mindeye1_root(tmp_path)
    every = MindEye1Nsd(root).trials(1, "train")
    assert every.n_trials == len(ids) == 29
    one = MindEye1Nsd(root, train_repeats="one-per-image")
    trials = one.trials(1, "train")
    assert trials.n_trials == 10 and sorted(trials.stimulus_ids.tolist()) == list(range(100, 110))
    voxels = trials.load()
    for row, image in enumerate(trials.stimulus_ids.tolist()):
        sample = image - 100  # images were written in order of first presentation
        kept = 2 if image == 104 else 3
        assert np.array_equal(voxels[row], by_trial[(image, sample % kept)]), image
    assert one.trials(1, "test").n_trials == 9  # only the training split changes
    assert one.describe()["train_repeats"] == "one-per-image"


def test_mindeye1_train_repeats_refuses_bad_values_and_averaging(tmp_path):
    from brainbench.errors import DataError
    from brainbench_nsd.mindeye1 import MindEye1Nsd

    root, _, _ = _mindeye1_root(tmp_path)
    with pytest.raises(DataError, match="train_repeats must be one of all, one-per-image, one-per-step"):
        MindEye1Nsd(root, train_repeats="one-per-batch")
    with pytest.raises(DataError, match="average_repeats"):
        MindEye1Nsd(root, train_repeats="one-per-image", average_repeats=True)


# ------------------------------------------------------------------------------------- short training


def test_objective_switches_from_bimixco_to_softclip_and_a_short_fit_aligns_predictions():
    encoder = MindEyeEncoder(**SMALL, input_dropout=0.0, block_dropout=0.0)
    voxels = torch.randn(64, 40)
    targets = (voxels @ torch.randn(40, 4 * 8)).reshape(64, 4, 8)  # a linear brain
    model = encoder.build(40, (4, 8))
    objective = encoder.objective((4, 8))
    objective.set_epochs(60)  # one step per epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    steps = 60
    for step in range(steps):
        loss = objective(model, voxels, targets, step / steps)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        pred = encoder.embed(model, voxels).flatten(1)
    similarity = torch.nn.functional.normalize(pred, dim=1) @ torch.nn.functional.normalize(
        targets.flatten(1), dim=1
    ).T
    top1 = (similarity.argmax(1) == torch.arange(64)).float().mean().item()
    assert top1 > 0.5  # chance is 1/64


def _train_steps(make_optimizer, steps: int = 4, bf16: bool = False) -> dict[str, torch.Tensor]:
    """A few MindEye steps (both objective phases) with the optimizer given; same seed, same data."""
    torch.manual_seed(3)
    encoder = MindEyeEncoder(**SMALL)
    model = encoder.build(40, (4, 8))
    objective = encoder.objective((4, 8))
    objective.set_epochs(steps)
    optimizer = make_optimizer(model.parameters())
    voxels, targets = torch.randn(16, 40), torch.randn(16, 4, 8)
    for step in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # bf16 weights meet fp32 inputs
            loss = objective(model, voxels, targets, step / steps)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {name: p.detach().float().clone() for name, p in model.named_parameters()}


def test_fast_optimizers_compute_the_faithful_update():
    """The fast path's optimizers are the faithful AdamW: fused (CUDA's kernel, here on the CPU), and the
    bf16-master optimizer with fp32 weights (the formulation without the bf16 rounding)."""
    from brainbench.master_weights import MasterWeightAdamW

    faithful = _train_steps(lambda params: torch.optim.AdamW(params, lr=1e-3))
    fused = _train_steps(lambda params: torch.optim.AdamW(params, lr=1e-3, fused=True))
    master = _train_steps(lambda params: MasterWeightAdamW(params, lr=1e-3, param_dtype=torch.float32))
    for name, expected in faithful.items():
        # float32 rounding, plus 0.1% of one step's size (Adam's step is about lr, whatever the gradient, so
        # near-zero gradients turn rounding differences into differences of a fraction of lr)
        tolerance = 1e-5 * expected.abs().max().item() + 1e-3 * 1e-3
        assert (fused[name] - expected).abs().max().item() <= tolerance, name
        assert (master[name] - expected).abs().max().item() <= tolerance, name
    # in bf16 the MindEye step runs too (its masters are exact AdamW: tests/test_master_weights.py)
    bf16 = _train_steps(lambda params: MasterWeightAdamW(params, lr=1e-3), bf16=True)
    assert bf16.keys() == faithful.keys() and all(torch.isfinite(v).all() for v in bf16.values())


def test_mindeye1_one_per_step_marks_the_training_split_for_the_references_sampling(tmp_path):
    from brainbench.runner import repeat_groups
    from brainbench_nsd.mindeye1 import MindEye1Nsd

    root, ids, by_trial = _mindeye1_root(tmp_path)
    trials = MindEye1Nsd(root, train_repeats="one-per-step").trials(1, "train")
    assert trials.one_repeat_per_step and trials.n_trials == 29  # every repeat, sampled one per step
    assert not MindEye1Nsd(root).trials(1, "train").one_repeat_per_step
    assert not MindEye1Nsd(root, train_repeats="one-per-step").trials(1, "test").one_repeat_per_step
    groups = repeat_groups(trials.stimulus_ids)
    voxels = trials.load()
    for image, rows in zip(np.unique(trials.stimulus_ids).tolist(), groups[np.argsort(
            trials.stimulus_ids[groups[:, 0]])].tolist(), strict=True):
        kept = 2 if image == 104 else 3
        for repeat, row in enumerate(rows):  # column r of the group is repeat r (cycling when fewer)
            assert np.array_equal(voxels[row], by_trial[(image, repeat % kept)]), (image, repeat)
