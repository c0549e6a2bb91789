"""Training recipes as plain data: an encoder's defaults, the one-cycle knobs, the quick (demo-scale) recipes.

A leaf module (it imports nothing of brainbench), so the trainer, the schedules, the encoder base classes and
the plugins all read these definitions without importing each other. The old homes re-export them
(``brainbench.torch_encoder.TrainingDefaults``, ``brainbench.schedules.OneCycleDefaults``,
``brainbench.interfaces.QuickRecipe``, ``brainbench.priors.PriorQuickRecipe``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: One-cycle starts at max_lr / this (torch's OneCycleLR default).
ONECYCLE_DIV_FACTOR = 25.0
#: One-cycle ends at start_lr / this unless the encoder sets ``min_lr``.
ONECYCLE_FINAL_DIV_FACTOR = 1e4
#: Fraction of steps spent rising when the encoder sets no warm-up epochs (torch's OneCycleLR pct_start).
ONECYCLE_DEFAULT_PCT_START = 0.3
#: torch's OneCycleLR (cycle_momentum=True) swings Adam's beta1 between these: max at the ends, base at the peak.
ONECYCLE_BASE_MOMENTUM = 0.85
ONECYCLE_MAX_MOMENTUM = 0.95


@dataclass(frozen=True)
class TrainingDefaults:
    """An encoder's own training recipe; a run's TrainSettings override any of these."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    schedule: str = "cosine"  # cosine (step-wise, with warm-up) | timm-cosine (per epoch) | onecycle | constant
    warmup_epochs: int = 0
    warmup_start_lr: float = 1e-6
    min_lr: float = 0.0
    grad_clip: float | None = 1.0
    lr_reference_batch: int | None = None  # lr is scaled by batch_size / this (None: not scaled)
    drop_last: bool = True  # drop the last partial batch of each epoch
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch is always written)

    def as_params(self) -> dict[str, Any]:
        return {f"train.{k}": v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class OneCycleDefaults(TrainingDefaults):
    """An encoder's recipe when its reference trains with torch's OneCycleLR (MindEye): that scheduler's knobs.

    ``warmup_epochs`` > 0 sets pct_start = warmup_epochs / epochs (MindEye: 2 / epochs); 0 keeps torch's 0.3.
    ``min_lr`` > 0 overrides the floor max_lr / div_factor / final_div_factor.
    """

    div_factor: float = ONECYCLE_DIV_FACTOR
    final_div_factor: float = ONECYCLE_FINAL_DIV_FACTOR
    cycle_momentum: bool = True  # Adam's beta1 follows the cycle, as torch's default does
    base_momentum: float = ONECYCLE_BASE_MOMENTUM
    max_momentum: float = ONECYCLE_MAX_MOMENTUM


@dataclass(frozen=True)
class QuickRecipe:
    """How an encoder trains on demo-scale data (a laptop CPU, a few thousand trials) instead of its
    reference recipe; options and settings a run names explicitly still win."""

    options: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    note: str = ""


@dataclass(frozen=True)
class PriorQuickRecipe:
    """Options a prior trains with on demo-scale data (seconds on a laptop CPU); a run's own win."""

    options: dict[str, Any]
    note: str = ""
