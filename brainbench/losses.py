"""Contrastive losses shared by the neural encoders.

All compare predictions and CLIP targets as flattened, L2-normalised vectors, one row per sample:
- InfoNCE with a fixed or learned logit scale, in either direction or both (Lite-Mind);
- Lite-Mind's loss: InfoNCE plus an optional MSE term (the paper adds one; the reference code does not);
- MindEye's BiMixCo (mixup of voxels, soft targets) and SoftCLIP (targets from CLIP-CLIP similarities),
  switched and annealed per epoch as the MedARC reference does (docs/mindeye.md).
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

#: How BiMixCo's soft targets treat a row the permutation maps to itself (docs/mindeye.md).
MIXCO_TARGETS = ("faithful", "corrected")


def mix_voxels(
    voxels: torch.Tensor, beta: float = 0.15, mix_fraction: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MixCo: blend each selected sample with a shuffled partner, weight lam ~ Beta(beta, beta).

    Draws in the reference's order (permutation, weights, selection), so on the CPU the same seed gives the
    same mix. Returns (mixed voxels, perm, lam); unselected samples keep lam = 1 (unmixed).
    """
    batch = voxels.shape[0]
    perm = torch.randperm(batch, device=voxels.device)
    concentration = torch.tensor(float(beta), device=voxels.device)
    lam = torch.distributions.Beta(concentration, concentration).sample((batch,))
    selected = torch.rand(batch, device=voxels.device) <= mix_fraction
    lam = torch.where(selected, lam, torch.ones_like(lam)).to(voxels.dtype)
    weight = lam.view(-1, *([1] * (voxels.ndim - 1)))
    return voxels * weight + voxels[perm] * (1 - weight), perm, lam


def mixco_targets(perm: torch.Tensor, lam: torch.Tensor, mode: str = "faithful") -> torch.Tensor:
    """Soft targets (B, B): lam on the sample's own image, 1 - lam on its mixing partner's.

    Where ``perm[i] == i`` (a sample mixed with itself, i.e. not mixed at all) the two entries meet:
    "faithful" writes the partner's 1 - lam over the own lam, as the reference does, so that row sums to
    1 - lam (0 for an unselected row, lam = 1); "corrected" adds them, so every row sums to 1.
    """
    if mode not in MIXCO_TARGETS:
        raise ValueError(f"mixco_targets must be one of {MIXCO_TARGETS}, got {mode!r}")
    batch = perm.shape[0]
    rows = torch.arange(batch, device=perm.device)
    probs = torch.zeros(batch, batch, device=perm.device, dtype=torch.float32)
    probs[rows, rows] = lam.float()
    if mode == "faithful":
        probs[rows, perm] = 1 - lam.float()
    else:
        probs[rows, perm] += 1 - lam.float()
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


def cosine_anneal(start: float, end: float, n: int, index: int) -> float:
    """Value ``index`` of n values going from ``start`` (index 0) to ``end`` (index n - 1) along a half cosine.

    Indices outside [0, n - 1] are clamped; a single value (n = 1) is ``start``.
    """
    if n <= 1:
        return start
    index = min(max(index, 0), n - 1)
    return end + (start - end) / 2 * (1 + math.cos(math.pi * index / (n - 1)))


class MindEyeLoss:
    """MindEye's objective, indexed by epoch as the reference's training script is.

    BiMixCo (temperature ``mix_temperature``) while ``epoch < int(mix_fraction * epochs)``, then SoftCLIP with
    one temperature per epoch, cosine-annealed from ``soft_temperature[0]`` at the first SoftCLIP epoch to
    ``soft_temperature[1]`` at the last. The model's forward returns (backbone, projector); both losses act
    on the projector output. The trainer says the run's epoch count (``set_epochs``); the epoch is then
    read from ``progress`` (steps done / total steps).
    """

    def __init__(
        self,
        epochs: int = 240,
        mix_fraction: float = 0.33,
        mix_beta: float = 0.15,
        mix_probability: float = 0.5,
        mix_temperature: float = 0.006,
        soft_temperature: tuple[float, float] = (0.004, 0.0075),
        targets: str = "faithful",
    ) -> None:
        if targets not in MIXCO_TARGETS:
            raise ValueError(f"mixco_targets must be one of {MIXCO_TARGETS}, got {targets!r}")
        self.mix_fraction = mix_fraction
        self.mix_beta = mix_beta
        self.mix_probability = mix_probability
        self.mix_temperature = mix_temperature
        self.soft_temperature = soft_temperature
        self.targets = targets
        self.set_epochs(epochs)

    def set_epochs(self, epochs: int) -> None:
        self.epochs = max(1, int(epochs))

    @property
    def mix_epochs(self) -> int:
        """Epochs of BiMixCo: the reference's ``int(0.33 * epochs)`` (79 of 240)."""
        return int(self.mix_fraction * self.epochs)

    def epoch(self, progress: float) -> int:
        """The 0-based epoch a step at ``progress`` belongs to (progress * epochs = steps / steps per epoch;
        the small slack absorbs the float rounding of that product at an epoch's first step)."""
        return min(max(int(math.floor(progress * self.epochs + 1e-9)), 0), self.epochs - 1)

    def mixing(self, epoch: int) -> bool:
        return epoch < self.mix_epochs

    def temperature(self, epoch: int) -> float:
        """SoftCLIP's temperature in ``epoch``: value epoch - mix_epochs of the anneal over the SoftCLIP epochs."""
        return cosine_anneal(*self.soft_temperature, self.epochs - self.mix_epochs, epoch - self.mix_epochs)

    def __call__(
        self, model: nn.Module, voxels: torch.Tensor, targets: torch.Tensor, progress: float
    ) -> torch.Tensor:
        epoch = self.epoch(progress)
        if self.mixing(epoch):
            mixed, perm, lam = mix_voxels(voxels, self.mix_beta, self.mix_probability)
            _, projected = model(mixed)
            probs = mixco_targets(perm, lam, self.targets).to(projected.device)
            return bimixco_loss(projected, targets, probs, self.mix_temperature)
        _, projected = model(voxels)
        return soft_clip_loss(projected, targets, self.temperature(epoch))
