"""Shared contrastive losses: InfoNCE, Lite-Mind's variants, MindEye's BiMixCo and SoftCLIP."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from brainbench.losses import (
    InfoNCELoss,
    MindEyeLoss,
    PredictionObjective,
    bimixco_loss,
    cosine_anneal,
    info_nce,
    mix_voxels,
    mixco_targets,
    soft_clip_loss,
)


@pytest.fixture(autouse=True)
def _seed():  # BRAINBENCH_HOME is isolated by conftest.py
    torch.manual_seed(0)


def _hand_cross_entropy(logits: np.ndarray) -> float:
    """Mean over rows of -log softmax(row)[diagonal], one loop per row."""
    total = 0.0
    for i, row in enumerate(logits):
        total += -(row[i] - math.log(sum(math.exp(v) for v in row)))
    return total / len(logits)


def test_info_nce_matches_a_hand_computation():
    preds = torch.randn(4, 2, 3)
    targets = torch.randn(4, 2, 3)
    p = preds.reshape(4, -1).numpy().astype(np.float64)
    t = targets.reshape(4, -1).numpy().astype(np.float64)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    logits = 3.0 * p @ t.T
    fmri_to_image = _hand_cross_entropy(logits)
    image_to_fmri = _hand_cross_entropy(logits.T)
    assert info_nce(preds, targets, 3.0, "fmri_to_image").item() == pytest.approx(fmri_to_image, rel=1e-5)
    assert info_nce(preds, targets, 3.0, "image_to_fmri").item() == pytest.approx(image_to_fmri, rel=1e-5)
    symmetric = info_nce(preds, targets, 3.0, "symmetric").item()
    assert symmetric == pytest.approx((fmri_to_image + image_to_fmri) / 2, rel=1e-5)
    assert fmri_to_image != pytest.approx(image_to_fmri)  # the two directions really differ


def test_info_nce_is_invariant_to_scale_of_inputs_and_rejects_unknown_direction():
    preds, targets = torch.randn(5, 7), torch.randn(5, 7)
    assert info_nce(3 * preds, targets, 2.0).item() == pytest.approx(info_nce(preds, targets, 2.0).item())
    with pytest.raises(ValueError, match="direction"):
        info_nce(preds, targets, 1.0, "sideways")


def test_fixed_scale_is_a_buffer_and_learned_scale_gets_a_gradient():
    preds, targets = torch.randn(6, 8), torch.randn(6, 8)
    fixed = InfoNCELoss(log_scale=8.0)
    assert list(fixed.parameters()) == []
    assert fixed(preds, targets).item() == pytest.approx(info_nce(preds, targets, math.exp(8.0)).item())

    learned = InfoNCELoss(log_scale=2.0, learn_scale=True)
    (scale,) = list(learned.parameters())
    learned(preds, targets).backward()
    assert scale.grad is not None and scale.grad.abs().item() > 0


def test_mse_term_adds_weighted_mean_squared_error():
    preds, targets = torch.randn(6, 8), torch.randn(6, 8)
    plain = InfoNCELoss(log_scale=1.0, direction="image_to_fmri")(preds, targets)
    with_mse = InfoNCELoss(log_scale=1.0, direction="image_to_fmri", mse_weight=0.5)(preds, targets)
    assert (with_mse - plain).item() == pytest.approx(0.5 * ((preds - targets) ** 2).mean().item(), rel=1e-5)


def test_prediction_objective_trains_the_loss_parameters_too():
    objective = PredictionObjective(InfoNCELoss(learn_scale=True))
    model = torch.nn.Linear(4, 8)
    loss = objective(model, torch.randn(5, 4), torch.randn(5, 8), 0.0)
    loss.backward()
    assert model.weight.grad is not None and objective.loss.log_scale.grad is not None


def test_bimixco_without_mixing_is_symmetric_cross_entropy_with_hard_targets():
    preds, targets = torch.randn(6, 10), torch.randn(6, 10)
    perm = torch.tensor([1, 0, 3, 2, 5, 4])  # no fixed point: faithful and corrected targets agree
    probs = mixco_targets(perm, torch.ones(6))
    assert torch.equal(probs, torch.eye(6)) and torch.equal(mixco_targets(perm, torch.ones(6), "corrected"), probs)
    expected = info_nce(preds, targets, 1 / 0.006, "symmetric")
    assert bimixco_loss(preds, targets, probs, 0.006).item() == pytest.approx(expected.item(), rel=1e-5)


def test_mixco_soft_targets_split_lambda_between_self_and_partner():
    perm = torch.tensor([1, 0, 2, 3])
    lam = torch.tensor([0.7, 0.2, 0.4, 1.0])
    faithful, corrected = mixco_targets(perm, lam), mixco_targets(perm, lam, "corrected")
    for probs in (faithful, corrected):
        assert probs[0, 0] == pytest.approx(0.7) and probs[0, 1] == pytest.approx(0.3)
    # a row mixed with itself: the reference overwrites lam with 1 - lam (0 when unmixed); corrected adds them
    assert faithful[2, 2] == pytest.approx(0.6) and faithful[3, 3] == 0.0
    assert corrected[2, 2] == pytest.approx(1.0) and torch.allclose(corrected.sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="mixco_targets"):
        mixco_targets(perm, lam, "fixed")


def test_mix_voxels_blends_selected_rows_with_their_partners():
    voxels = torch.randn(64, 5)
    mixed, perm, lam = mix_voxels(voxels, beta=0.15, mix_fraction=0.5)
    expected = voxels * lam[:, None] + voxels[perm] * (1 - lam[:, None])
    assert torch.allclose(mixed, expected)
    assert 0 < int((lam < 1).sum()) < 64  # about half the batch is mixed
    unmixed, _, lam_none = mix_voxels(voxels, mix_fraction=0.0)
    assert torch.equal(lam_none, torch.ones(64)) and torch.allclose(unmixed, voxels)


def test_soft_clip_with_identical_orthonormal_targets_is_the_soft_targets_entropy():
    batch, temperature = 5, 0.5
    targets = torch.eye(batch, 8)
    a = 1 / temperature  # similarity of a row with itself; 0 with the others
    z = math.exp(a) + batch - 1
    p_self, p_other = math.exp(a) / z, 1 / z
    entropy = -p_self * math.log(p_self) - (batch - 1) * p_other * math.log(p_other)
    assert soft_clip_loss(targets.clone(), targets, temperature).item() == pytest.approx(entropy, rel=1e-5)


def test_softclip_temperature_anneals_from_start_to_end_over_the_softclip_epochs():
    loss = MindEyeLoss(epochs=240)  # BiMixCo for epochs 0-78, SoftCLIP for the 161 epochs 79-239
    assert loss.temperature(0) == pytest.approx(0.004)  # still at the start value during BiMixCo
    assert loss.temperature(79) == pytest.approx(0.004)
    assert loss.temperature(239) == pytest.approx(0.0075)
    assert loss.temperature(79 + 80) == pytest.approx((0.004 + 0.0075) / 2)  # the middle of 161 values
    assert [cosine_anneal(1.0, 3.0, 3, k) for k in range(3)] == pytest.approx([1.0, 2.0, 3.0])
    assert cosine_anneal(1.0, 3.0, 1, 0) == 1.0


class _Recorder(torch.nn.Module):
    """Returns (x, x) and remembers its last input."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: torch.Tensor | None = None

    def forward(self, x):
        self.seen = x
        return x, x


def test_mindeye_loss_mixes_inputs_only_in_the_first_33_percent_of_epochs():
    voxels, targets = torch.randn(16, 6), torch.randn(16, 6)
    model = _Recorder()
    loss = MindEyeLoss(epochs=240, mix_probability=1.0)
    early = loss(model, voxels, targets, 0.1)
    assert not torch.allclose(model.seen, voxels)
    late = loss(model, voxels, targets, 0.5)  # epoch 120
    assert torch.equal(model.seen, voxels)
    assert late.item() == pytest.approx(soft_clip_loss(voxels, targets, loss.temperature(120)).item())
    assert torch.isfinite(early)
