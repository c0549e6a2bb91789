"""Contrastive losses shared by the neural encoders.

All compare predictions and CLIP targets as flattened, L2-normalised vectors, one row per sample:
- InfoNCE with a fixed or learned logit scale, in either direction or both (Lite-Mind);
- Lite-Mind's loss: InfoNCE plus an optional MSE term (the paper adds one; the reference code does not);
- MindEye's BiMixCo (mixup of voxels, soft targets) and SoftCLIP (targets from CLIP-CLIP similarities),
  with SoftCLIP's temperature cosine-annealed over the rest of training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DIRECTIONS = ("symmetric", "image_to_fmri", "fmri_to_image")


def flat_normalized(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B, D) rows of unit L2 norm, in at least fp32 (float64 stays float64)."""
    return F.normalize(x.flatten(1).to(torch.promote_types(x.dtype, torch.float32)), dim=-1)


def info_nce(
    preds: torch.Tensor,
    targets: torch.Tensor,
    logit_scale: torch.Tensor | float,
    direction: str = "symmetric",
) -> torch.Tensor:
    """Cross-entropy over the batch of scale * cos(pred_i, target_j), the diagonal being the positives.

    "fmri_to_image": each prediction picks its image among the batch's targets; "image_to_fmri": each
    image picks its prediction (the Lite-Mind reference trains only this one); "symmetric": the mean of both.
    """
    return contrastive_cross_entropy(logit_scale * cosine_logits(preds, targets), direction)


def cosine_logits(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, B') cosine similarities of flattened predictions (rows) and targets (columns)."""
    return flat_normalized(preds) @ flat_normalized(targets).T


def contrastive_cross_entropy(logits: torch.Tensor, direction: str = "symmetric") -> torch.Tensor:
    """Cross-entropy over a square (B, B) logit matrix whose diagonal holds the positives."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    labels = torch.arange(logits.shape[0], device=logits.device)
    if direction == "fmri_to_image":
        return F.cross_entropy(logits, labels)
    if direction == "image_to_fmri":
        return F.cross_entropy(logits.T, labels)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


class InfoNCELoss(nn.Module):
    """InfoNCE on (preds, targets) with a fixed or learned log logit scale, plus an optional MSE term."""

    def __init__(
        self,
        log_scale: float = 8.0,
        learn_scale: bool = False,
        direction: str = "symmetric",
        mse_weight: float = 0.0,
        max_log_scale: float | None = None,
    ) -> None:
        super().__init__()
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        value = torch.tensor(float(log_scale))
        if learn_scale:
            self.log_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_scale", value)
        self.direction = direction
        self.mse_weight = mse_weight
        self.max_log_scale = max_log_scale

    def scale(self) -> torch.Tensor:
        log_scale = self.log_scale
        if self.max_log_scale is not None:
            log_scale = log_scale.clamp(max=self.max_log_scale)
        return log_scale.exp()

    def from_cosines(self, cosines: torch.Tensor) -> torch.Tensor:
        """The InfoNCE part from (B, B) prediction-target cosines computed elsewhere (no MSE term)."""
        return contrastive_cross_entropy(self.scale() * cosines, self.direction)

    def forward(self, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = self.from_cosines(cosine_logits(preds, targets))
        if self.mse_weight:
            loss = loss + self.mse_weight * F.mse_loss(preds.float(), targets.float())
        return loss


class PredictionObjective(nn.Module):
    """An Objective from a loss on (predictions, targets): runs the model's forward, then the loss.

    The loss is a submodule, so a learned temperature is trained with the model.
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(
        self, model: nn.Module, voxels: torch.Tensor, targets: torch.Tensor, progress: float
    ) -> torch.Tensor:
        return self.loss(model(voxels), targets)


# ---------------------------------------------------------------------------------------------- MindEye


def mix_voxels(
    voxels: torch.Tensor, beta: float = 0.15, mix_fraction: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MixCo: blend each selected sample with a shuffled partner, weight lam ~ Beta(beta, beta).

    Returns (mixed voxels, perm, lam); unselected samples keep lam = 1 (unmixed).
    """
    batch = voxels.shape[0]
    perm = torch.randperm(batch, device=voxels.device)
    concentration = torch.tensor(float(beta), device=voxels.device)
    lam = torch.distributions.Beta(concentration, concentration).sample((batch,))
    selected = torch.rand(batch, device=voxels.device) <= mix_fraction
    lam = torch.where(selected, lam, torch.ones_like(lam)).to(voxels.dtype)
    weight = lam.view(-1, *([1] * (voxels.ndim - 1)))
    return voxels * weight + voxels[perm] * (1 - weight), perm, lam


def mixco_targets(perm: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Soft targets (B, B): lam on the sample's own image, 1 - lam on its mixing partner's."""
    batch = perm.shape[0]
    rows = torch.arange(batch, device=perm.device)
    probs = torch.zeros(batch, batch, device=perm.device, dtype=torch.float32)
    probs[rows, rows] = lam.float()
    probs[rows, perm] += 1 - lam.float()  # += keeps lam + (1 - lam) = 1 when perm[i] == i
    return probs


def bimixco_loss(
    preds: torch.Tensor, targets: torch.Tensor, probs: torch.Tensor, temperature: float = 0.006
) -> torch.Tensor:
    """Symmetric cross-entropy of cos(pred_i, target_j) / temperature against soft targets ``probs``."""
    logits = flat_normalized(preds) @ flat_normalized(targets).T / temperature
    forward = -(logits.log_softmax(-1) * probs).sum(-1).mean()
    backward = -(logits.T.log_softmax(-1) * probs.T).sum(-1).mean()
    return (forward + backward) / 2


def soft_clip_loss(preds: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """SoftCLIP: both directions' cross-entropy against softmax(target-target similarities / temperature)."""
    p, t = flat_normalized(preds), flat_normalized(targets)
    soft = (t @ t.T / temperature).softmax(-1)
    logits = p @ t.T / temperature
    forward = -(logits.log_softmax(-1) * soft).sum(-1).mean()
    backward = -(logits.T.log_softmax(-1) * soft).sum(-1).mean()
    return (forward + backward) / 2


def cosine_anneal(start: float, end: float, progress: float) -> float:
    """start at progress 0 rising (or falling) along a half cosine to end at progress 1."""
    progress = min(max(progress, 0.0), 1.0)
    return end + (start - end) / 2 * (1 + math.cos(math.pi * progress))


class MindEyeLoss:
    """BiMixCo for the first ``mix_fraction`` of training, SoftCLIP with an annealed temperature after.

    The model's forward returns (backbone, projector); both losses act on the projector output.
    Progress (in [0, 1)) replaces the reference's epoch index, so the schedule is the same whatever the
    number of steps per epoch.
    """

    def __init__(
        self,
        mix_fraction: float = 1 / 3,
        mix_beta: float = 0.15,
        mix_probability: float = 0.5,
        mix_temperature: float = 0.006,
        soft_temperature: tuple[float, float] = (0.004, 0.0075),
    ) -> None:
        self.mix_fraction = mix_fraction
        self.mix_beta = mix_beta
        self.mix_probability = mix_probability
        self.mix_temperature = mix_temperature
        self.soft_temperature = soft_temperature

    def temperature(self, progress: float) -> float:
        """SoftCLIP's temperature at this point of training (its phase runs from mix_fraction to 1)."""
        phase = (progress - self.mix_fraction) / max(1.0 - self.mix_fraction, 1e-12)
        return cosine_anneal(*self.soft_temperature, phase)

    def __call__(
        self, model: nn.Module, voxels: torch.Tensor, targets: torch.Tensor, progress: float
    ) -> torch.Tensor:
        if progress < self.mix_fraction:
            mixed, perm, lam = mix_voxels(voxels, self.mix_beta, self.mix_probability)
            _, projected = model(mixed)
            return bimixco_loss(projected, targets, mixco_targets(perm, lam), self.mix_temperature)
        _, projected = model(voxels)
        return soft_clip_loss(projected, targets, self.temperature(progress))
