"""Statistics for comparing decoders: bootstrap intervals over test items, intervals over seeds, paired tests.

Pure numpy, no heavy imports. Conventions:

- A cell's *per-item outcomes* are one number in [0, 1] per test item (image): 1/0 for a hit or miss, the
  expected hit rate for n-way retrieval. A cell's accuracy is their mean.
- The test items are the population the claim is about, so intervals resample **items** (a 30-draw
  Monte-Carlo spread of one fixed test set shrinks with more draws and says nothing about new data).
- Across seeds the item outcomes of a variant are ``(n_seeds, n_items)``. The interval resamples seeds and
  items together (a hierarchical bootstrap: seeds with replacement, then items with replacement, the same
  items for every chosen seed because all seeds are scored on the same test set). It covers both sources of
  variation and stays inside [0, 1]; with one or two seeds the seed part is necessarily crude, so every
  interval says how many seeds it rests on.
- Two encoders are compared **paired**: per item, the difference of their outcomes (averaged over the seeds
  each has), so the item difficulty shared by both cancels. The p-value comes from a sign-flip permutation
  test of those differences (exact under the null that the two encoders are exchangeable on each item),
  the interval from a bootstrap over items of the mean difference.
- Many pairs at once: Holm's step-down correction keeps the family-wise error at 5%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

N_BOOT = 2000
N_PERM = 4000
ALPHA = 0.05


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _as_matrix(outcomes: np.ndarray) -> np.ndarray:
    """(n_items,) or (n_seeds, n_items) -> (n_seeds, n_items) float64."""
    values = np.asarray(outcomes, dtype=np.float64)
    if values.ndim == 1:
        values = values[None, :]
    if values.ndim != 2 or values.shape[1] == 0 or values.shape[0] == 0:
        raise ValueError(f"per-item outcomes must be (n_items,) or (n_seeds, n_items), got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("per-item outcomes contain NaN or infinite values")
    return values


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% interval, and what the interval rests on."""

    mean: float
    low: float
    high: float
    n_items: int
    n_seeds: int
    method: str

    def as_tuple(self) -> tuple[float, float]:
        return self.low, self.high


def bootstrap_interval(
    outcomes: np.ndarray,
    n_boot: int = N_BOOT,
    seed: int | np.random.Generator | None = 0,
    confidence: float = 0.95,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Interval:
    """Mean and percentile bootstrap interval over items (and seeds, hierarchically, for a 2-d input).

    The percentile interval of a mean of values in [0, 1] lies in [0, 1]; ``bounds`` clips rounding only.
    """
    values = _as_matrix(outcomes)
    n_seeds, n_items = values.shape
    rng = _rng(seed)
    mean = float(values.mean())
    if n_items == 1 and n_seeds == 1:
        return Interval(mean, mean, mean, 1, 1, "single item")
    items = rng.integers(0, n_items, size=(n_boot, n_items))
    if n_seeds == 1:
        resampled = values[0][items].mean(axis=1)
        method = f"bootstrap over {n_items} items"
    else:
        seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
        # mean over chosen seeds of the mean over chosen items: per replicate, average the chosen seeds'
        # rows first (cheap), then take the chosen items.
        seed_means = values[seeds].mean(axis=1)  # (n_boot, n_items)
        resampled = np.take_along_axis(seed_means, items, axis=1).mean(axis=1)
        method = f"hierarchical bootstrap over {n_seeds} seeds and {n_items} items"
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(resampled, [tail, 1.0 - tail])
    low, high = float(np.clip(low, *bounds)), float(np.clip(high, *bounds))
    return Interval(mean, min(low, mean), max(high, mean), n_items, n_seeds, method)


# Two-sided 95% Student t quantiles for 1..10 degrees of freedom (beyond: normal approximation + correction).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def t_quantile_975(df: int) -> float:
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964  # Cornish-Fisher expansion; error < 1e-3 for df > 10
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def seed_interval(values: list[float] | np.ndarray, bounds: tuple[float, float] | None = (0.0, 1.0)) -> Interval:
    """Mean over seeds and the 95% Student t interval over them, clipped to ``bounds`` (None: unbounded).

    Used when no per-item outcomes exist. With n=2 seeds the t quantile is 12.7: the interval is honest and
    wide, and ``n_seeds`` travels with it so the table can say "n=2 seeds".
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("seed_interval needs at least one value")
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, mean, mean, 0, 1, "one seed, no interval")
    half = t_quantile_975(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Interval(mean, low, high, 0, int(x.size), f"t interval over {x.size} seeds")


@dataclass(frozen=True)
class PairedResult:
    """Encoder A minus encoder B on the same items: difference, its 95% interval, two-sided p-value."""

    difference: float
    low: float
    high: float
    p_value: float
    n_items: int
    n_seeds_a: int
    n_seeds_b: int
    p_adjusted: float | None = None

    @property
    def p(self) -> float:
        return self.p_adjusted if self.p_adjusted is not None else self.p_value

    def verdict(self, higher_is_better: bool = True, alpha: float = ALPHA) -> str:
        """"better" / "worse" (A against B, by the metric's direction) or "no difference" at ``alpha``."""
        if self.p >= alpha or self.difference == 0:
            return "no difference"
        return "better" if (self.difference > 0) == higher_is_better else "worse"


def paired_test(
    a: np.ndarray,
    b: np.ndarray,
    n_perm: int = N_PERM,
    n_boot: int = N_BOOT,
    seed: int | np.random.Generator | None = 0,
    confidence: float = 0.95,
) -> PairedResult:
    """Paired comparison of two encoders' per-item outcomes on the same items (columns aligned).

    ``a`` and ``b`` are (n_items,) or (n_seeds, n_items); each is averaged over its seeds per item, so the
    two may have different seed counts. p-value: sign-flip permutation of the per-item differences, with the
    observed assignment counted (never 0). Interval: percentile bootstrap over items of the mean difference.
    """
    a, b = _as_matrix(a), _as_matrix(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired test needs the same items: {a.shape[1]} vs {b.shape[1]} per-item outcomes")
    rng = _rng(seed)
    diffs = a.mean(axis=0) - b.mean(axis=0)
    n = diffs.size
    observed = float(diffs.mean())
    if np.all(diffs == 0):
        return PairedResult(0.0, 0.0, 0.0, 1.0, n, a.shape[0], b.shape[0])
    # Sign flips in blocks so memory stays at block x n.
    extreme, done, block = 0, 0, max(1, min(n_perm, 2_000_000 // max(n, 1)))
    tolerance = 1e-12 * max(1.0, abs(observed))
    while done < n_perm:
        size = min(block, n_perm - done)
        signs = rng.integers(0, 2, size=(size, n), dtype=np.int8) * 2 - 1
        flipped = np.abs(signs @ diffs) / n
        extreme += int((flipped >= abs(observed) - tolerance).sum())
        done += size
    p_value = (extreme + 1) / (n_perm + 1)
    items = rng.integers(0, n, size=(n_boot, n))
    resampled = diffs[items].mean(axis=1)
    tail = (1.0 - confidence) / 2
    low, high = (float(v) for v in np.quantile(resampled, [tail, 1.0 - tail]))
    return PairedResult(observed, min(low, observed), max(high, observed), p_value, n, a.shape[0], b.shape[0])


def holm(p_values: list[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control, any dependence between the tests)."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted_sorted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(adjusted_sorted, 1.0)
    return adjusted


def align_items(
    ids_a: np.ndarray, values_a: np.ndarray, ids_b: np.ndarray, values_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The common item ids and both sides' outcomes restricted to them, in the same column order."""
    ids_a, ids_b = np.asarray(ids_a), np.asarray(ids_b)
    common, in_a, in_b = np.intersect1d(ids_a, ids_b, return_indices=True)
    return common, _as_matrix(values_a)[:, in_a], _as_matrix(values_b)[:, in_b]
