"""Learning-rate schedules as pure functions of the optimizer step, with the rates of the maintained schedulers.

The rates come from timm's ``CosineLRScheduler`` (cosine, timm-cosine) and torch's ``OneCycleLR`` (onecycle),
run once on a stand-in optimizer into a table of every step's rate (and one-cycle's Adam beta1). A schedule's
whole state is still the step number, so a resumed run looks up the exact same rates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from brainbench.errors import BrainbenchError
from brainbench.recipes import (
    ONECYCLE_BASE_MOMENTUM,
    ONECYCLE_DEFAULT_PCT_START,
    ONECYCLE_DIV_FACTOR,
    ONECYCLE_FINAL_DIV_FACTOR,
    ONECYCLE_MAX_MOMENTUM,
    OneCycleDefaults,
    TrainingDefaults,
)

SCHEDULES = ("cosine", "timm-cosine", "onecycle", "constant")


@dataclass(frozen=True)
class LearningRateSchedule:
    kind: str
    lr: float  # peak (cosine, onecycle) or constant rate
    total_steps: int
    warmup_steps: int = 0
    warmup_start_lr: float = 0.0
    min_lr: float = 0.0
    steps_per_epoch: int = 1  # timm-cosine: the rate changes once per epoch
    #: onecycle: torch's pct_start (None: warmup_steps / total_steps); the rise then ends at step
    #: pct_start * total_steps - 1, as torch computes it
    rise_fraction: float | None = None
    #: onecycle with cycled momentum: (base, max) of Adam's beta1; None leaves the optimizer's betas alone
    momentum_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise BrainbenchError(f"schedule {self.kind!r} is not one of {', '.join(SCHEDULES)}")

    def __call__(self, step: int) -> float:
        if self.kind == "constant":
            return self.lr
        if self.kind == "timm-cosine":
            return self.epoch_lr(step // max(1, self.steps_per_epoch))
        if self.kind == "onecycle" and step >= self.total_steps:  # past torch's last step: the floor
            return self.min_lr
        rates, _ = self._table
        return rates[min(max(step, 0), len(rates) - 1)]  # the table runs on to the floor

    def epoch_lr(self, epoch: int) -> float:
        """The rate epoch ``epoch`` (0-based) trains at, as timm's CosineLRScheduler gives it when it is
        stepped once at each epoch's end (``scheduler.step(epoch)``), as the Lite-Mind reference does.

        The scheduler starts at ``warmup_start_lr`` and the step at the end of epoch e sets the rate of
        epoch e + 1, so epochs 0 and 1 both run at ``warmup_start_lr``; the warm-up is inside the cosine's
        length (timm's ``warmup_prefix=False``); past the length the rate stays at ``min_lr``.
        """
        rates, _ = self._table
        return rates[min(max(epoch, 0), len(rates) - 1)]

    def momentum(self, step: int) -> float | None:
        """Adam's beta1 for ``step``, or None when this schedule leaves it alone.

        One-cycle with cycled momentum (torch's OneCycleLR default): a half cosine from max down to base
        while the rate rises, and back up to max while it falls.
        """
        if self.kind != "onecycle" or self.momentum_range is None:
            return None
        if step >= self.total_steps:  # past torch's last step: back at the top, as at the end
            return self.momentum_range[1]
        _, betas = self._table
        assert betas is not None
        return betas[max(step, 0)]

    @property
    def pct_start(self) -> float:
        """One-cycle's rising fraction of the steps (torch's pct_start)."""
        if self.rise_fraction is not None:
            return self.rise_fraction
        return min(1.0, self.warmup_steps / max(1, self.total_steps))

    def record(self) -> dict[str, str | float]:
        """What the rate and momentum do beyond lr, warm-up and floor, for the run's records (one-cycle)."""
        if self.kind != "onecycle":
            return {}
        if self.momentum_range is None:
            beta1 = "the optimizer's own (not cycled)"
        else:
            base, top = self.momentum_range
            beta1 = f"{top} -> {base} at the peak -> {top} (cycled with the rate)"
        return {"onecycle_pct_start": self.pct_start, "beta1": beta1}

    @cached_property
    def _table(self) -> tuple[list[float], list[float] | None]:
        """Every step's rate (timm-cosine: every epoch's) and one-cycle's beta1, from the library's scheduler."""
        if self.kind == "onecycle":
            return _onecycle_table(self)
        return _timm_cosine_table(self), None


def _stand_in_optimizer(lr: float) -> Any:
    """An AdamW over one unused parameter: the schedulers drive its param group, which is read back."""
    import torch

    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _timm_cosine_table(schedule: LearningRateSchedule) -> list[float]:
    """timm's CosineLRScheduler: "cosine" stepped at every update (``step_update``, warm-up before the cosine),
    "timm-cosine" at every epoch's end (``step(epoch)``, warm-up inside the cosine, Lite-Mind's use)."""
    from timm.scheduler import CosineLRScheduler

    optimizer = _stand_in_optimizer(schedule.lr)
    group = optimizer.param_groups[0]
    per_epoch = schedule.kind == "timm-cosine"
    steps_per_epoch = max(1, schedule.steps_per_epoch) if per_epoch else 1
    length = max(1, schedule.total_steps // steps_per_epoch)
    warmup = schedule.warmup_steps // steps_per_epoch
    timm_logger = logging.getLogger("timm.scheduler.cosine_lr")
    level = timm_logger.level
    timm_logger.setLevel(logging.ERROR)  # its "no effect" warning for a length of 1 is not so for us
    try:
        scheduler = CosineLRScheduler(
            optimizer,
            t_initial=length if per_epoch else max(1, length - warmup),
            lr_min=schedule.min_lr,
            warmup_t=warmup,
            warmup_lr_init=schedule.warmup_start_lr,
            warmup_prefix=not per_epoch,
            t_in_epochs=per_epoch,
        )
    finally:
        timm_logger.setLevel(level)
    if not per_epoch:
        rates = []
        for step in range(max(length, warmup + 1) + 2):  # through the floor: past the end it stays there
            scheduler.step_update(step)
            rates.append(float(group["lr"]))
        return rates
    rates = [float(group["lr"])]  # epoch 0 trains at the rate the scheduler starts with
    for epoch in range(length + 1):  # one past the length: the floor
        scheduler.step(epoch)
        rates.append(float(group["lr"]))
    return rates


def _onecycle_table(schedule: LearningRateSchedule) -> tuple[list[float], list[float] | None]:
    """torch's OneCycleLR(max_lr=lr, total_steps, pct_start, div_factor, final_div_factor), stepped per update;
    the factors are the ones that start at ``warmup_start_lr`` and end at ``min_lr``."""
    import torch

    cycled = schedule.momentum_range is not None
    base, top = schedule.momentum_range or (ONECYCLE_BASE_MOMENTUM, ONECYCLE_MAX_MOMENTUM)
    total = schedule.total_steps
    if total < 2:  # no cycle fits in one step (torch divides by zero): it trains at the start rate
        return [schedule.warmup_start_lr], [top] if cycled else None
    pct_start = schedule.pct_start
    if pct_start * total == 1:  # the rise would end at step 0, where torch divides by zero: it ends at step 1
        pct_start = 2 / total
    div_factor = schedule.lr / schedule.warmup_start_lr if schedule.warmup_start_lr > 0 else ONECYCLE_DIV_FACTOR
    initial = schedule.lr / div_factor
    final_div_factor = initial / schedule.min_lr if schedule.min_lr > 0 and initial > 0 else ONECYCLE_FINAL_DIV_FACTOR
    optimizer = _stand_in_optimizer(schedule.lr)
    group = optimizer.param_groups[0]
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=schedule.lr,
        total_steps=total,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        cycle_momentum=cycled,
        base_momentum=base,
        max_momentum=top,
    )
    optimizer.step()  # a no-op (no gradient): torch expects an optimizer step before each scheduler step
    rates, betas = [], []
    for step in range(total):
        if step:
            scheduler.step()
        rates.append(float(group["lr"]))
        betas.append(float(group["betas"][0]))
    return rates, betas if cycled else None


def scaled_lr(lr: float, batch_size: int, reference_batch: int | None) -> float:
    """Linear scaling rule: ``lr`` is the rate at ``reference_batch`` (Lite-Mind: 512)."""
    return lr * batch_size / reference_batch if reference_batch else lr


def build_schedule(
    defaults: TrainingDefaults, lr: float, epochs: int, steps_per_epoch: int
) -> LearningRateSchedule:
    """The encoder's schedule with its warm-up and floor, ``lr`` already scaled for the batch size.

    For "onecycle" the warm-up is ``warmup_epochs`` (else torch's pct_start 0.3); it starts at lr / 25 and
    ends at ``min_lr`` when the encoder sets one, else at start / 1e4, as torch's OneCycleLR does by default.
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
    """torch's OneCycleLR(max_lr=lr, total_steps, pct_start, div_factor, final_div_factor).

    Plain TrainingDefaults get torch's default factors and no momentum cycling; OneCycleDefaults say
    pct_start (warmup_epochs / epochs), the factors and whether beta1 cycles.
    """
    one_cycle = defaults if isinstance(defaults, OneCycleDefaults) else None
    div = one_cycle.div_factor if one_cycle else ONECYCLE_DIV_FACTOR
    final_div = one_cycle.final_div_factor if one_cycle else ONECYCLE_FINAL_DIV_FACTOR
    rise_fraction = None
    if warmup_steps == 0:
        rise_fraction = ONECYCLE_DEFAULT_PCT_START
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
