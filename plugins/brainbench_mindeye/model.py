"""MindEye's BrainNetwork: a residual MLP from voxels to CLIP tokens, plus its contrastive projector.

Built as models.md describes the reference (MedARC-AI/fMRI-reconstruction-NSD): the same layers, PyTorch's
default LayerNorm eps and init. ``hidden`` and ``blocks`` default to the reference's 4096 and 4 and may shrink
for CPU demos. docs/mindeye.md lists every difference from the reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class ResidualBlock(nn.Sequential):
    """Linear, LayerNorm (PyTorch's eps 1e-5, as the reference), GELU, Dropout, plus the block's input.

    A Sequential itself, so its parameters are named as a list of Sequential blocks names them
    (``mlp.0.0.weight``, ``mlp.0.1.bias``, ...), the naming of the reference's other layers.
    """

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__(nn.Linear(width, width), nn.LayerNorm(width), nn.GELU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


def projector(dim: int, hidden: int) -> nn.Sequential:
    """Applied to each dim-wide token: LN, GELU, Linear -> hidden, (LN, GELU, Linear) x2 back to dim."""
    return nn.Sequential(
        nn.LayerNorm(dim), nn.GELU(), nn.Linear(dim, hidden),
        nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, hidden),
        nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, dim),
    )  # fmt: skip


class BrainNetwork(nn.Module):
    """(B, V) -> (backbone (B, *target_shape), projector (B, *target_shape))."""

    def __init__(
        self,
        n_voxels: int,
        target_shape: Sequence[int],
        hidden: int = 4096,
        blocks: int = 4,
        projector_hidden: int = 2048,
        input_dropout: float = 0.5,
        block_dropout: float = 0.15,
    ) -> None:
        super().__init__()
        self.target_shape = tuple(int(s) for s in target_shape)
        if len(self.target_shape) not in (1, 2):
            raise ValueError(f"MindEye needs a (D,) or (tokens, D) target, got {self.target_shape}")
        self.lin0 = nn.Sequential(
            nn.Linear(n_voxels, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(input_dropout)
        )
        self.mlp = nn.Sequential(*(ResidualBlock(hidden, block_dropout) for _ in range(blocks)))
        self.lin1 = nn.Linear(hidden, math.prod(self.target_shape))
        self.projector = projector(self.target_shape[-1], projector_hidden)

    def forward(self, voxels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.lin1(self.mlp(self.lin0(voxels)))
        backbone = x.reshape(x.shape[0], *self.target_shape)
        return backbone, self.projector(backbone)
