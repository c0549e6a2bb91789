"""Learning-rate schedules as pure functions of the optimizer step.

A schedule's whole state is the step number, so a resumed run recomputes the exact same rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from brainbench.errors import BrainbenchError
from brainbench.torch_encoder import TrainingDefaults

SCHEDULES = ("cosine", "onecycle", "constant")

#: One-cycle starts at max_lr / this (torch's OneCycleLR default).
ONECYCLE_DIV_FACTOR = 25.0
#: One-cycle ends at start_lr / this unless the encoder sets ``min_lr``.
ONECYCLE_FINAL_DIV_FACTOR = 1e4
#: Fraction of steps spent rising when the encoder sets no warm-up epochs.
ONECYCLE_DEFAULT_PCT_START = 0.3


def _cosine_between(start: float, end: float, fraction: float) -> float:
    """Half a cosine from ``start`` (fraction 0) to ``end`` (fraction 1)."""
    fraction = min(max(fraction, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * fraction))


@dataclass(frozen=True)
class LearningRateSchedule:
    kind: str
    lr: float  # peak (cosine, onecycle) or constant rate
    total_steps: int
    warmup_steps: int = 0
    warmup_start_lr: float = 0.0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise BrainbenchError(f"schedule {self.kind!r} is not one of {', '.join(SCHEDULES)}")

    def __call__(self, step: int) -> float:
        if self.kind == "constant":
            return self.lr
        if self.kind == "cosine":
            return self._cosine(step)
        return self._onecycle(step)

    def _cosine(self, step: int) -> float:
        """Linear warm-up from ``warmup_start_lr`` to ``lr``, then cosine down to ``min_lr``."""
        if step < self.warmup_steps:
            return self.warmup_start_lr + (self.lr - self.warmup_start_lr) * step / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        return _cosine_between(self.lr, self.min_lr, (step - self.warmup_steps) / decay_steps)

    def _onecycle(self, step: int) -> float:
        """Cosine rise from ``warmup_start_lr`` to ``lr`` over the warm-up, cosine fall to ``min_lr``.

        Phase ends follow torch's OneCycleLR (last step of each phase hits its end rate exactly).
        """
        rise_end = max(1.0, float(self.warmup_steps) - 1.0)
        fall_end = max(rise_end + 1.0, float(self.total_steps) - 1.0)
        if step <= rise_end:
            return _cosine_between(self.warmup_start_lr, self.lr, step / rise_end)
        return _cosine_between(self.lr, self.min_lr, (step - rise_end) / (fall_end - rise_end))


def scaled_lr(lr: float, batch_size: int, reference_batch: int | None) -> float:
    """Linear scaling rule: ``lr`` is the rate at ``reference_batch`` (Lite-Mind: 512)."""
    return lr * batch_size / reference_batch if reference_batch else lr


def build_schedule(
    defaults: TrainingDefaults, lr: float, epochs: int, steps_per_epoch: int
) -> LearningRateSchedule:
    """The encoder's schedule with its warm-up and floor, ``lr`` already scaled for the batch size.

    For "onecycle" the warm-up is ``warmup_epochs`` (else 30% of training); it starts at lr / 25 and ends
    at ``min_lr`` when the encoder sets one, else at start / 1e4, as torch's OneCycleLR does by default.
    """
    total_steps = max(1, epochs * steps_per_epoch)
    warmup_steps = min(defaults.warmup_epochs * steps_per_epoch, total_steps)
    if defaults.schedule == "onecycle":
        if warmup_steps == 0:
            warmup_steps = max(1, round(ONECYCLE_DEFAULT_PCT_START * total_steps))
        start = lr / ONECYCLE_DIV_FACTOR
        floor = defaults.min_lr if defaults.min_lr > 0 else start / ONECYCLE_FINAL_DIV_FACTOR
        return LearningRateSchedule("onecycle", lr, total_steps, warmup_steps, start, floor)
    return LearningRateSchedule(
        defaults.schedule, lr, total_steps, warmup_steps, defaults.warmup_start_lr, defaults.min_lr
    )
