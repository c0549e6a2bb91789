"""Learning-rate schedules as pure functions of the optimizer step.

A schedule's whole state is the step number, so a resumed run recomputes the exact same rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from brainbench.errors import BrainbenchError
from brainbench.torch_encoder import TrainingDefaults

SCHEDULES = ("cosine", "timm-cosine", "onecycle", "constant")

#: One-cycle starts at max_lr / this (torch's OneCycleLR default).
ONECYCLE_DIV_FACTOR = 25.0
#: One-cycle ends at start_lr / this unless the encoder sets ``min_lr``.
ONECYCLE_FINAL_DIV_FACTOR = 1e4
#: Fraction of steps spent rising when the encoder sets no warm-up epochs.
ONECYCLE_DEFAULT_PCT_START = 0.3
#: torch's OneCycleLR (cycle_momentum=True) swings Adam's beta1 between these: max at the ends, base at the peak.
ONECYCLE_BASE_MOMENTUM = 0.85
ONECYCLE_MAX_MOMENTUM = 0.95


def _cosine_between(start: float, end: float, fraction: float) -> float:
    """Half a cosine from ``start`` (fraction 0) to ``end`` (fraction 1)."""
    fraction = min(max(fraction, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * fraction))


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
class LearningRateSchedule:
    kind: str
    lr: float  # peak (cosine, onecycle) or constant rate
    total_steps: int
    warmup_steps: int = 0
    warmup_start_lr: float = 0.0
    min_lr: float = 0.0
    steps_per_epoch: int = 1  # timm-cosine: the rate changes once per epoch
    #: onecycle: torch's pct_start; the rise then ends at step pct_start * total_steps - 1 exactly as torch
    #: computes it (None: at warmup_steps - 1)
    rise_fraction: float | None = None
    #: onecycle with cycled momentum: (base, max) of Adam's beta1; None leaves the optimizer's betas alone
    momentum_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise BrainbenchError(f"schedule {self.kind!r} is not one of {', '.join(SCHEDULES)}")

    def __call__(self, step: int) -> float:
        if self.kind == "constant":
            return self.lr
        if self.kind == "cosine":
            return self._cosine(step)
        if self.kind == "timm-cosine":
            return self.epoch_lr(step // max(1, self.steps_per_epoch))
        return self._onecycle(step)

    def _cosine(self, step: int) -> float:
        """Linear warm-up from ``warmup_start_lr`` to ``lr``, then cosine down to ``min_lr``."""
        if step < self.warmup_steps:
            return self.warmup_start_lr + (self.lr - self.warmup_start_lr) * step / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        return _cosine_between(self.lr, self.min_lr, (step - self.warmup_steps) / decay_steps)

    def epoch_lr(self, epoch: int) -> float:
        """The rate epoch ``epoch`` (0-based) trains at, as timm's CosineLRScheduler gives it when it is
        stepped once at each epoch's end (``scheduler.step(epoch)``), as the Lite-Mind reference does.

        The scheduler starts at ``warmup_start_lr`` and the step at the end of epoch e sets the rate of
        epoch e + 1 to t(e), so epochs 0 and 1 both run at ``warmup_start_lr``. t(e) rises linearly over
        the warm-up epochs, then follows one cosine over ALL epochs (the warm-up is inside its length, timm's
        ``warmup_prefix=False``) from ``lr`` to ``min_lr``.
        """
        epochs = max(1, self.total_steps // max(1, self.steps_per_epoch))
        warmup_epochs = self.warmup_steps // max(1, self.steps_per_epoch)
        t = max(epoch - 1, 0)
        if t < warmup_epochs:
            return self.warmup_start_lr + t * (self.lr - self.warmup_start_lr) / warmup_epochs
        if t >= epochs:  # timm's cycle limit: past the length the rate stays at the floor
            return self.min_lr
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * t / epochs))

    def _onecycle_phase(self, step: int) -> tuple[bool, float]:
        """(rising?, fraction of the phase done) with torch OneCycleLR's phase ends: the rise ends at step
        pct_start * total_steps - 1, the fall at total_steps - 1 (each phase's last step hits its end value)."""
        rise = self.rise_fraction * self.total_steps if self.rise_fraction is not None else self.warmup_steps
        rise_end = max(1.0, float(rise) - 1.0)
        fall_end = max(rise_end + 1.0, float(self.total_steps) - 1.0)
        if step <= rise_end:
            return True, step / rise_end
        return False, (step - rise_end) / (fall_end - rise_end)

    def _onecycle(self, step: int) -> float:
        """Cosine rise from ``warmup_start_lr`` to ``lr`` over the warm-up, cosine fall to ``min_lr``."""
        rising, fraction = self._onecycle_phase(step)
        if rising:
            return _cosine_between(self.warmup_start_lr, self.lr, fraction)
        return _cosine_between(self.lr, self.min_lr, fraction)

    def record(self) -> dict[str, str | float]:
        """What the rate and momentum do beyond lr, warm-up and floor, for the run's records (one-cycle)."""
        if self.kind != "onecycle":
            return {}
        rise = self.rise_fraction if self.rise_fraction is not None else self.warmup_steps / max(1, self.total_steps)
        if self.momentum_range is None:
            beta1 = "the optimizer's own (not cycled)"
        else:
            base, top = self.momentum_range
            beta1 = f"{top} -> {base} at the peak -> {top} (cycled with the rate)"
        return {"onecycle_pct_start": rise, "beta1": beta1}

    def momentum(self, step: int) -> float | None:
        """Adam's beta1 for ``step``, or None when this schedule leaves it alone.

        One-cycle with cycled momentum (torch's OneCycleLR default): a half cosine from max down to base
        while the rate rises, and back up to max while it falls.
        """
        if self.kind != "onecycle" or self.momentum_range is None:
            return None
        base, top = self.momentum_range
        rising, fraction = self._onecycle_phase(step)
        return _cosine_between(top, base, fraction) if rising else _cosine_between(base, top, fraction)


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
        return _onecycle_schedule(defaults, lr, epochs, total_steps, warmup_steps)
    return LearningRateSchedule(
        defaults.schedule, lr, total_steps, warmup_steps, defaults.warmup_start_lr, defaults.min_lr,
        steps_per_epoch=max(1, steps_per_epoch),
    )


def _onecycle_schedule(
    defaults: TrainingDefaults, lr: float, epochs: int, total_steps: int, warmup_steps: int
) -> LearningRateSchedule:
    """torch's OneCycleLR(max_lr=lr, total_steps, pct_start, div_factor, final_div_factor) as a function.

    Plain TrainingDefaults get torch's default factors and no momentum cycling; OneCycleDefaults say
    pct_start (warmup_epochs / epochs), the factors and whether beta1 cycles.
    """
    one_cycle = defaults if isinstance(defaults, OneCycleDefaults) else None
    div = one_cycle.div_factor if one_cycle else ONECYCLE_DIV_FACTOR
    final_div = one_cycle.final_div_factor if one_cycle else ONECYCLE_FINAL_DIV_FACTOR
    rise_fraction = None
    if warmup_steps == 0:
        warmup_steps = max(1, round(ONECYCLE_DEFAULT_PCT_START * total_steps))
    elif one_cycle:
        rise_fraction = min(1.0, defaults.warmup_epochs / max(1, epochs))
    start = lr / div
    floor = defaults.min_lr if defaults.min_lr > 0 else start / final_div
    momentum = (one_cycle.base_momentum, one_cycle.max_momentum) if one_cycle and one_cycle.cycle_momentum else None
    return LearningRateSchedule(
        "onecycle", lr, total_steps, warmup_steps, start, floor, rise_fraction=rise_fraction,
        momentum_range=momentum,
    )
