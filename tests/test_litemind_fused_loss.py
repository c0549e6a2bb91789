"""The fast path's head-fused loss equals the plain prediction-then-InfoNCE loss (values and gradients)."""

from __future__ import annotations

import pytest
import torch

from brainbench.losses import DIRECTIONS, InfoNCELoss, PredictionObjective, cosine_logits
from brainbench_litemind.encoder import LiteMindEncoder
from brainbench_litemind.fused_loss import HeadFusedObjective, head_cosines
from brainbench_litemind.model import build_litemind

SMALL = {"patch_size": 10, "widths": (12, 8, 6), "depths": (1, 2, 1, 1)}
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tokens", [34, 31, 28])  # subjects 1, 2 and 5/7
def test_head_cosines_equal_cosines_of_the_built_prediction(tokens, dtype):
    batch, n_targets, width, dim = 5, 7, 9, 16
    features = torch.randn(batch, tokens, width, dtype=dtype)
    head = torch.nn.Linear(tokens, dim).to(dtype)
    targets = torch.randn(n_targets, width, dim, dtype=dtype)
    built = head(features.transpose(1, 2))  # what LiteMind.forward returns: (B, width, dim)
    expected = cosine_logits(built.double(), targets.double())
    got = head_cosines(features, head.weight, head.bias, targets)
    assert got.shape == (batch, n_targets)
    assert (got.double() - expected).abs().max().item() < TOLERANCE[dtype]


def _loss_and_grads(model, objective, voxels, targets):
    model.zero_grad()
    objective.zero_grad()
    loss = objective(model, voxels, targets, 0.0)
    loss.backward()
    params = {**dict(model.named_parameters()), **{f"objective.{n}": p for n, p in objective.named_parameters()}}
    return loss.item(), {name: p.grad.clone() for name, p in params.items() if p.grad is not None}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("tokens", "direction"), [(34, "image_to_fmri"), (31, "symmetric"), (28, "fmri_to_image")])
def test_fused_objective_gives_the_same_loss_and_gradients(tokens, direction, dtype):
    n_voxels = tokens * 10 + 3
    model = build_litemind(n_voxels, (6, 12), impl="fast", **SMALL).to(dtype).eval()
    plain = PredictionObjective(InfoNCELoss(log_scale=2.0, learn_scale=True, direction=direction)).to(dtype)
    fused = HeadFusedObjective(InfoNCELoss(log_scale=2.0, learn_scale=True, direction=direction)).to(dtype)
    fused.load_state_dict(plain.state_dict())  # same submodule names: checkpoints move between the two
    voxels, targets = torch.randn(8, n_voxels, dtype=dtype), torch.randn(8, 6, 12, dtype=dtype)

    loss_plain, grads_plain = _loss_and_grads(model, plain, voxels, targets)
    loss_fused, grads_fused = _loss_and_grads(model, fused, voxels, targets)

    assert loss_fused == pytest.approx(loss_plain, rel=TOLERANCE[dtype])
    assert grads_plain.keys() == grads_fused.keys() and "objective.loss.log_scale" in grads_plain
    for name, grad in grads_plain.items():
        scale = grad.abs().max().item()
        error = (grads_fused[name] - grad).abs().max().item()
        assert error <= 50 * TOLERANCE[dtype] * max(scale, 1e-8), f"{name}: {error:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize(
    ("target_shape", "mse_weight"), [((12,), 0.0), ((6, 12), 0.5)], ids=["cls-only", "mse-term"]
)
def test_fused_objective_falls_back_where_the_prediction_is_needed(target_shape, mse_weight):
    model = build_litemind(343, target_shape, impl="fast", **SMALL).eval()
    loss = InfoNCELoss(log_scale=1.0, direction="symmetric", mse_weight=mse_weight)
    fused = HeadFusedObjective(loss)
    assert not fused.fusable(model)
    voxels, targets = torch.randn(4, 343), torch.randn(4, *target_shape)
    assert fused(model, voxels, targets, 0.0).item() == PredictionObjective(loss)(model, voxels, targets, 0.0).item()


def test_the_fast_encoder_uses_the_fused_objective_and_the_faithful_one_does_not():
    fast, faithful = LiteMindEncoder(impl="fast"), LiteMindEncoder(impl="faithful")
    assert isinstance(fast.objective((257, 768)), HeadFusedObjective)
    assert type(faithful.objective((257, 768))) is PredictionObjective
    for direction in DIRECTIONS:
        assert LiteMindEncoder(impl="fast", direction=direction).objective((6, 12)).loss.direction == direction


def test_mismatched_targets_are_refused_with_their_shape():
    features, head = torch.randn(2, 5, 6), torch.nn.Linear(5, 8)
    with pytest.raises(ValueError, match=r"\(2, 7, 8\).*\(6, 8\)"):
        head_cosines(features, head.weight, head.bias, torch.randn(2, 7, 8))


def _training_losses(impl: str, steps: int = 6) -> list[float]:
    """Loss per step of a few AdamW steps in train mode (dropout and drop-path on), same seed and data."""
    torch.manual_seed(11)
    encoder = LiteMindEncoder(impl=impl, direction="symmetric", log_logit_scale=3.0, **SMALL)
    model = encoder.build(313, (6, 12)).train()
    objective = encoder.objective((6, 12))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    voxels, targets = torch.randn(16, 313), torch.randn(16, 6, 12)
    losses = []
    for _ in range(steps):
        loss = objective(model, voxels, targets, 0.0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_fast_and_faithful_paths_follow_the_same_training_trajectory():
    """Same seed: the same dropout masks, the same losses step after step (the formulations differ only in
    rounding), so whatever accuracy one path reaches the other reaches too."""
    faithful, fast = _training_losses("faithful"), _training_losses("fast")
    assert faithful[-1] < faithful[0]  # it does train
    for step, (a, b) in enumerate(zip(faithful, fast, strict=True)):
        assert b == pytest.approx(a, rel=1e-4), f"step {step}: {a} vs {b}"
