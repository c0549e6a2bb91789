"""Statistics for comparing decoders: intervals over training seeds and test items, paired tests.

numpy for the two-level resampling, scipy.stats for everything a maintained library does (Student t
quantiles, the one-level bootstrap, the sign-flip permutation test, the normal quantile of the Wilson
interval). scipy is imported inside the functions: it costs ~1 s and the CLI's start-up path imports this.

Conventions:

- A cell's *per-item outcomes* are one number in [0, 1] per test item (image): 1/0 for a hit or miss, the
  expected hit rate for n-way retrieval. A cell's accuracy is their mean.
- Two sources of variation stand behind every number: the **test items** (another test set of the same
  size) and the **training seed** (another training run). Across seeds the outcomes of a variant are
  ``(n_seeds, n_items)``, every seed scored on the same items.
- ``levels="seeds+items"`` (the default) resamples both, hierarchically: per bootstrap replicate, seeds with
  replacement, then items with replacement (the same items for every chosen seed). Training variance is
  then part of every interval and every paired verdict.
- ``levels="items"`` is the older, item-only view: each item's outcomes are averaged over the seeds and only
  the items are resampled. It is kept for comparison; it is too narrow whenever seeds really differ.
- Seeds that gave *identical* per-item outcomes (a deterministic fit, e.g. ridge with a fixed penalty)
  are one training outcome, not several: :func:`distinct_seeds` counts the distinct outcome vectors and
  every interval says how many there were.
- Two encoders are compared **paired** on the same items, so the item difficulty shared by both cancels.
  Hierarchical: each side's seeds are resampled independently (different encoders' seeds are different
  runs), the items jointly; the interval is the percentile interval of the mean difference and the p-value
  its inversion (p < 0.05 exactly when the 95% interval excludes 0, so the two never disagree). Item-only:
  a sign-flip permutation test of the seed-averaged per-item differences (scipy.stats.permutation_test)
  and a bootstrap interval over items (scipy.stats.bootstrap).
- Many pairs at once: Holm's step-down correction keeps the family-wise error at 5%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

N_BOOT = 2000
N_PERM = 4000
ALPHA = 0.05
LEVELS = ("seeds+items", "items")
#: Elements of one resampling block (replicates x items): caps the memory of the hierarchical bootstrap.
BLOCK_ELEMENTS = 2_000_000


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


def _check_levels(levels: str) -> None:
    if levels not in LEVELS:
        raise ValueError(f"levels must be one of {', '.join(LEVELS)}, got {levels!r}")


def distinct_seeds(outcomes: np.ndarray) -> int:
    """How many seeds gave different per-item outcomes (identical rows count once)."""
    return int(np.unique(_as_matrix(outcomes), axis=0).shape[0])


def _seeds_phrase(n_seeds: int, n_distinct: int) -> str:
    if n_distinct == n_seeds:
        return f"{n_seeds} seeds"
    if n_distinct == 1:
        return f"{n_seeds} seeds with identical outcomes"
    return f"{n_seeds} seeds ({n_distinct} distinct)"


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% interval, and what the interval rests on."""

    mean: float
    low: float
    high: float
    n_items: int
    n_seeds: int
    method: str
    n_distinct: int | None = None  # seeds with different outcomes; None: not known (no per-item outcomes)

    def as_tuple(self) -> tuple[float, float]:
        return self.low, self.high


def _percentile(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return float(low), float(high)


def hierarchical_replicates(
    sides: list[np.ndarray], signs: list[float], n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """(n_boot,) replicates of ``sum_k signs[k] * mean(sides[k])`` under two-level resampling.

    Each side is (n_seeds_k, n_items) on the same items. Per replicate: each side's seeds are drawn with
    replacement independently (as multinomial counts, so a replicate's seed mean is a weighted sum of the
    rows: ``weights @ side``), then one draw of items with replacement is shared by all sides (pairing).
    Vectorised over replicates in blocks of ``BLOCK_ELEMENTS`` elements.
    """
    n_items = sides[0].shape[1]
    out = np.empty(n_boot, dtype=np.float64)
    block = max(1, min(n_boot, BLOCK_ELEMENTS // n_items))
    item_p = np.full(n_items, 1.0 / n_items)
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        combined = np.zeros((size, n_items), dtype=np.float64)
        for sign, side in zip(signs, sides, strict=True):
            n_seeds = side.shape[0]
            weights = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=size) / n_seeds
            combined += sign * (weights @ side)
        counts = rng.multinomial(n_items, item_p, size=size)
        out[start : start + size] = np.einsum("bn,bn->b", combined, counts) / n_items
    return out


def _scipy_bootstrap(
    values: np.ndarray, n_boot: int, rng: np.random.Generator, confidence: float
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of one sample (scipy.stats.bootstrap)."""
    import scipy.stats

    result = scipy.stats.bootstrap(
        (values,), np.mean, n_resamples=n_boot, confidence_level=confidence, method="percentile",
        vectorized=True, batch=max(1, BLOCK_ELEMENTS // values.size), rng=rng,
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def bootstrap_interval(
    outcomes: np.ndarray,
    n_boot: int = N_BOOT,
    seed: int | np.random.Generator | None = 0,
    confidence: float = 0.95,
    bounds: tuple[float, float] = (0.0, 1.0),
    levels: str = "seeds+items",
) -> Interval:
    """Mean and percentile bootstrap interval of per-item outcomes, (n_items,) or (n_seeds, n_items).

    ``seeds+items``: a hierarchical bootstrap when more than one seed gave distinct outcomes; otherwise (one
    seed, or seeds that all agree) the item bootstrap, which is then the same thing. ``items``: the item
    bootstrap of the seed-averaged outcomes. The percentile interval of a mean of values in [0, 1] lies in
    [0, 1]; ``bounds`` clips rounding only.
    """
    _check_levels(levels)
    values = _as_matrix(outcomes)
    n_seeds, n_items = values.shape
    rng = _rng(seed)
    mean = float(values.mean())
    n_distinct = distinct_seeds(values)
    if n_items == 1:
        return Interval(mean, mean, mean, 1, n_seeds, "single item, no interval", n_distinct)
    if levels == "seeds+items" and n_distinct > 1:
        low, high = _percentile(hierarchical_replicates([values], [1.0], n_boot, rng), confidence)
        method = f"hierarchical bootstrap over {_seeds_phrase(n_seeds, n_distinct)} and {n_items} items"
    else:
        low, high = _scipy_bootstrap(values.mean(axis=0), n_boot, rng, confidence)
        method = f"bootstrap over {n_items} items"
        if n_seeds > 1:
            method += (f" ({_seeds_phrase(n_seeds, n_distinct)})" if n_distinct == 1
                       else f" of the mean over {_seeds_phrase(n_seeds, n_distinct)}")
    low, high = float(np.clip(low, *bounds)), float(np.clip(high, *bounds))
    return Interval(mean, min(low, mean), max(high, mean), n_items, n_seeds, method, n_distinct)


def t_interval(
    values: list[float] | np.ndarray, bounds: tuple[float, float] | None = None, confidence: float = 0.95
) -> Interval:
    """Mean and Student t interval of the mean (scipy.stats.t), clipped to ``bounds`` (None: unbounded).

    The one t interval of brainbench: over seeds when no per-item outcomes exist, over Monte-Carlo draws or
    benchmark repeats elsewhere. With n=2 the quantile is 12.7: honest and wide. One value has no interval.
    """
    import scipy.stats

    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(x.mean())
    n_distinct = int(np.unique(x).size)
    if x.size == 1:
        return Interval(mean, mean, mean, 0, 1, "one seed, no interval", 1)
    half = float(scipy.stats.t.ppf(0.5 + confidence / 2, x.size - 1)) * float(x.std(ddof=1)) / math.sqrt(x.size)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Interval(mean, low, high, 0, int(x.size), f"t interval over {_seeds_phrase(x.size, n_distinct)}",
                    n_distinct)


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``successes / n``.

    The closed form, with the normal quantile from scipy: scipy's own Wilson interval
    (``binomtest(k, n).proportion_ci(method="wilson")``) takes whole counts only, and a task that breaks
    ties by expectation (GOD zero-shot) has fractional ones. For whole counts the two agree to 1e-12
    (tests/test_stats.py checks it).
    """
    import scipy.stats

    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, {n}], got {successes}")
    z = float(scipy.stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class PairedResult:
    """Encoder A minus encoder B on the same items: difference, its 95% interval, two-sided p-value.

    ``low``/``high``/``p_value`` are the chosen level's (``method`` says which); ``item_low``/``item_high``/
    ``item_p_value`` are always the item-only test's, for comparison.
    """

    difference: float
    low: float
    high: float
    p_value: float
    n_items: int
    n_seeds_a: int
    n_seeds_b: int
    p_adjusted: float | None = None
    method: str = ""
    item_low: float | None = None
    item_high: float | None = None
    item_p_value: float | None = None
    n_distinct_a: int | None = None
    n_distinct_b: int | None = None

    @property
    def p(self) -> float:
        return self.p_adjusted if self.p_adjusted is not None else self.p_value

    def verdict(self, higher_is_better: bool = True, alpha: float = ALPHA) -> str:
        """"better" / "worse" (A against B, by the metric's direction) or "no difference" at ``alpha``."""
        if self.p >= alpha or self.difference == 0:
            return "no difference"
        return "better" if (self.difference > 0) == higher_is_better else "worse"


def _sign_flip_p(diffs: np.ndarray, n_perm: int, rng: np.random.Generator) -> float:
    """Two-sided p of the mean per-item difference under sign flips (scipy.stats.permutation_test).

    With one sample and ``permutation_type="samples"`` scipy flips the sign of each observation: exact
    (all 2^n flips) when 2^n <= n_perm, else ``n_perm`` random flips with the observed one counted, so the
    smallest p is 1/(n_perm + 1).
    """
    import scipy.stats

    result = scipy.stats.permutation_test(
        (diffs,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples", vectorized=True,
        n_resamples=n_perm, alternative="two-sided", batch=max(1, BLOCK_ELEMENTS // diffs.size), rng=rng,
    )
    return float(min(1.0, result.pvalue))


def _inverted_p(replicates: np.ndarray) -> float:
    """Two-sided p from a bootstrap distribution of the difference: twice the smaller tail beyond 0, the
    observed replicate counted (smallest p = 2 / (n + 1)). p < alpha exactly when the percentile interval
    at 1 - alpha excludes 0."""
    below, above = int((replicates <= 0).sum()), int((replicates >= 0).sum())
    return float(min(1.0, 2 * (min(below, above) + 1) / (replicates.size + 1)))


def paired_test(
    a: np.ndarray,
    b: np.ndarray,
    n_perm: int = N_PERM,
    n_boot: int = N_BOOT,
    seed: int | np.random.Generator | None = 0,
    confidence: float = 0.95,
    levels: str = "seeds+items",
) -> PairedResult:
    """Paired comparison of two encoders' per-item outcomes on the same items (columns aligned).

    ``a`` and ``b`` are (n_items,) or (n_seeds, n_items), seed counts may differ. ``seeds+items``: a
    hierarchical bootstrap of the mean difference (each side's seeds resampled, items jointly) gives the
    interval and, by inversion, the p-value, when either side has seeds with distinct outcomes; with one
    distinct training outcome per side there is no seed level and the item-only test is the test. The
    item-only test (sign-flip permutation p, item bootstrap interval, both of the seed-averaged
    differences) is always computed as well, for comparison.
    """
    _check_levels(levels)
    a, b = _as_matrix(a), _as_matrix(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired test needs the same items: {a.shape[1]} vs {b.shape[1]} per-item outcomes")
    rng = _rng(seed)
    diffs = a.mean(axis=0) - b.mean(axis=0)
    n = diffs.size
    observed = float(diffs.mean())
    counts = dict(n_items=n, n_seeds_a=a.shape[0], n_seeds_b=b.shape[0], n_distinct_a=distinct_seeds(a),
                  n_distinct_b=distinct_seeds(b))
    hierarchical = levels == "seeds+items" and max(counts["n_distinct_a"], counts["n_distinct_b"]) > 1
    if np.all(diffs == 0) and not hierarchical:
        return PairedResult(0.0, 0.0, 0.0, 1.0, method="identical outcomes on every item", item_low=0.0,
                            item_high=0.0, item_p_value=1.0, **counts)
    if np.all(diffs == 0) or n == 1:
        item_low = item_high = observed
        item_p = 1.0
    else:
        item_low, item_high = _scipy_bootstrap(diffs, n_boot, rng, confidence)
        item_p = _sign_flip_p(diffs, n_perm, rng)
    if hierarchical:
        replicates = hierarchical_replicates([a, b], [1.0, -1.0], n_boot, rng)
        low, high = _percentile(replicates, confidence)
        p_value = _inverted_p(replicates)
        method = (f"hierarchical bootstrap over seeds ({_seeds_phrase(a.shape[0], counts['n_distinct_a'])} vs "
                  f"{_seeds_phrase(b.shape[0], counts['n_distinct_b'])}) and {n} items")
    else:
        low, high, p_value = item_low, item_high, item_p
        method = f"sign-flip permutation test and bootstrap over {n} items"
    return PairedResult(observed, min(low, observed), max(high, observed), p_value, method=method,
                        item_low=min(item_low, observed), item_high=max(item_high, observed),
                        item_p_value=item_p, **counts)


def with_adjusted_p(result: PairedResult, p_adjusted: float) -> PairedResult:
    return replace(result, p_adjusted=float(p_adjusted))


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
