"""Lite-Mind's contrastive loss with the head folded into the similarities (the fast path's objective).

The full variant's head maps the last stage's (B, N, T) tokens to a (B, T, D) prediction (T = 257, D = 768),
and the loss only needs cosines between those 197,376-d predictions and the targets. With the head's bias
appended as an extra weight column (W' = [W | c], D x (N+1)) and a ones row appended to the tokens
(H' = [H; 1], (N+1) x T), the prediction of sample b is H'_b^T W'^T, so for every pair (b, b')

    <pred_b, t_b'> = <H'_b, (t_b' W')^T>           (t_b' W' is T x (N+1): one small matmul per target)
    |pred_b|^2     = sum_t H'_bt^T G H'_bt,  G = W'^T W'   ((N+1) x (N+1))

Nothing of size B x T x D is built in the forward or backward pass: at batch 1000 that removes the
1000 x 197,376 prediction, its normalised copy and their gradients (~3 GB in fp32) and ~90% of the loss's
matmul FLOPs, while the loss, and so every gradient, is the same function (fp32 agrees to rounding).
Evaluation still calls the model's forward and gets the full prediction.
"""

from __future__ import annotations

from typing import Any

import torch

from brainbench.losses import InfoNCELoss, PredictionObjective

#: Attribute a "step"-scope compile sets on the model (see :class:`CompiledTrainingLoss`).
COMPILED_LOSS_ATTR = "compiled_training_loss"

#: As in F.normalize: norms below eps are clamped, so an all-zero row does not divide by zero.
NORM_EPS = 1e-12


def head_cosines(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """(B, B') cosines between head(features) rows and flattened targets, never building head(features).

    features: (B, N, T) tokens after the final norm; weight: (D, N) and bias: (D,) of the head
    Linear(N -> D) applied along N; targets: (B', T, D).
    """
    batch, _, tokens = features.shape
    if targets.ndim != 3 or targets.shape[1] != tokens or targets.shape[2] != weight.shape[0]:
        raise ValueError(
            f"targets of shape {tuple(targets.shape)} do not match a head producing "
            f"({tokens}, {weight.shape[0]}) per sample"
        )
    augmented = torch.cat([features, features.new_ones(batch, 1, tokens)], dim=1)  # (B, N+1, T)
    head = torch.cat([weight, bias.unsqueeze(1)], dim=1)  # (D, N+1)
    if not torch.is_autocast_enabled(targets.device.type):
        head = head.to(targets.dtype)  # under autocast the matmul picks the dtype
        augmented = augmented.to(targets.dtype)
    projected = torch.matmul(targets, head)  # (B', T, N+1): one pass over the big targets (their norms: the other)
    dots = augmented.flatten(1) @ projected.transpose(1, 2).flatten(1).T  # (B, B')

    # The norms are quadratic forms: at least fp32 keeps them accurate whatever the autocast dtype.
    precise = torch.promote_types(weight.dtype, torch.float32)
    with torch.autocast(targets.device.type, enabled=False):
        tokens_p, head_p = augmented.to(precise), head.to(precise)
        gram = head_p.T @ head_p  # (N+1, N+1)
        squared = (torch.matmul(gram, tokens_p) * tokens_p).sum(dim=(1, 2))
        pred_norms = squared.clamp_min(NORM_EPS**2).sqrt()
        target_norms = torch.linalg.vector_norm(
            targets.flatten(1), dim=1, dtype=torch.promote_types(targets.dtype, precise)
        )
        return dots.to(precise) / pred_norms[:, None] / target_norms.clamp_min(NORM_EPS)[None, :]


class HeadFusedObjective(PredictionObjective):
    """Lite-Mind's InfoNCE computed through :func:`head_cosines` when the model allows it.

    Falls back to the plain prediction-then-loss path for the CLS-only variant (its head follows a mean
    over tokens) and when an MSE term needs the prediction itself. Same submodule names as
    :class:`PredictionObjective`, so checkpoints move between the two.
    """

    loss: InfoNCELoss

    def __init__(self, loss: InfoNCELoss) -> None:
        super().__init__(loss)

    def fusable(self, model: torch.nn.Module) -> bool:
        return hasattr(model, "features") and not model.cfg.cls_only and not self.loss.mse_weight

    def forward(
        self, model: torch.nn.Module, voxels: torch.Tensor, targets: torch.Tensor, progress: float
    ) -> torch.Tensor:
        compiled = getattr(model, COMPILED_LOSS_ATTR, None)
        if compiled is not None and model.training and torch.is_grad_enabled():
            return compiled(self, model, voxels, targets)
        return self.eager(model, voxels, targets)

    def eager(self, model: torch.nn.Module, voxels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss (Lite-Mind's ignores training progress), folded through the head when the model allows."""
        if not self.fusable(model):
            return self.loss(model(voxels), targets)
        cosines = head_cosines(model.features(voxels), model.head.weight, model.head.bias, targets)
        return self.loss.from_cosines(cosines)


def _training_loss(
    objective: HeadFusedObjective, model: torch.nn.Module, voxels: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    return objective.eager(model, voxels, targets)


class CompiledTrainingLoss:
    """Forward + loss compiled as ONE graph for training steps (the fast path's "step" compile scope).

    Inductor then fuses across block boundaries and into the loss, which per-block compilation cannot.
    Shapes are static: the graph is compiled for the first batch size seen, and any other (the last
    partial batch of an epoch, 980 of 24,980 trials at batch 1000) runs eagerly instead of paying a
    second whole-model compile for a dynamic-shape graph. Evaluation (no grad, eval mode) is eager too.
    """

    def __init__(self, mode: str = "default", backend: str = "inductor") -> None:
        # a mode is inductor's (the tests trace with backend "aot_eager": no code generation)
        options: dict[str, Any] = {"mode": mode} if backend == "inductor" else {}
        self.compiled = torch.compile(_training_loss, backend=backend, dynamic=False, **options)
        self.batch: int | None = None
        self.compiled_steps = 0
        self.eager_steps = 0

    def __call__(
        self, objective: HeadFusedObjective, model: torch.nn.Module, voxels: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        if self.batch is None:
            self.batch = voxels.shape[0]
        if voxels.shape[0] != self.batch:
            self.eager_steps += 1
            return objective.eager(model, voxels, targets)
        self.compiled_steps += 1
        return self.compiled(objective, model, voxels, targets)
