"""brainbench.stats: item bootstrap bounded to [0, 1], seed intervals, the paired test's error rates, Holm."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from brainbench.stats import align_items, bootstrap_interval, holm, paired_test, seed_interval


def hits(p: float | np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return (rng.random(n) < p).astype(np.float64)


def test_bootstrap_interval_covers_the_mean_stays_in_unit_range_and_matches_the_binomial_width():
    rng = np.random.default_rng(0)
    outcomes = hits(0.3, 400, rng)
    interval = bootstrap_interval(outcomes, seed=1)
    assert interval.low < interval.mean < interval.high and interval.n_items == 400 and interval.n_seeds == 1
    # Binomial standard error sqrt(p(1-p)/n): the 95% bootstrap width is about 2 x 1.96 of it.
    se = np.sqrt(outcomes.mean() * (1 - outcomes.mean()) / 400)
    assert interval.high - interval.low == pytest.approx(2 * 1.96 * se, rel=0.15)
    for extreme in (np.ones(50), np.zeros(50), np.r_[np.ones(49), 0.0]):
        bounded = bootstrap_interval(extreme, seed=2)
        assert 0.0 <= bounded.low <= bounded.mean <= bounded.high <= 1.0


def test_hierarchical_bootstrap_widens_with_seed_to_seed_variation():
    rng = np.random.default_rng(3)
    same = np.stack([hits(0.5, 300, rng)] * 3)
    varied = np.stack([hits(p, 300, rng) for p in (0.3, 0.5, 0.7)])
    narrow, wide = bootstrap_interval(same, seed=0), bootstrap_interval(varied, seed=0)
    assert wide.n_seeds == 3 and "3 seeds" in wide.method
    assert wide.high - wide.low > 1.5 * (narrow.high - narrow.low)
    assert 0.0 <= wide.low <= wide.high <= 1.0


def test_seed_interval_matches_scipy_and_is_clipped_to_unit_range():
    values = [0.52, 0.61, 0.57, 0.49]
    low, high = scipy.stats.t.interval(0.95, 3, loc=np.mean(values), scale=scipy.stats.sem(values))
    got = seed_interval(values)
    assert (got.low, got.high) == (pytest.approx(low, abs=1e-3), pytest.approx(high, abs=1e-3))
    two = seed_interval([0.05, 0.40])  # MindEye-like: n=2, t = 12.7, the raw interval goes far below 0
    assert two.low == 0.0 and two.high <= 1.0 and two.n_seeds == 2 and "2 seeds" in two.method
    assert seed_interval([0.3]).low == seed_interval([0.3]).high == 0.3


def test_paired_test_detects_a_known_difference_with_the_right_sign_and_interval():
    rng = np.random.default_rng(4)
    difficulty = rng.random(500)  # shared item difficulty, which pairing cancels
    a = hits(np.clip(difficulty + 0.15, 0, 1), 500, rng)
    b = hits(difficulty, 500, rng)
    result = paired_test(a, b, seed=0)
    assert result.p_value < 0.01 and result.verdict(higher_is_better=True) == "better"
    assert result.low < 0.13 < result.high and result.low > 0  # 0.13: the clipped shift, on average
    assert paired_test(b, a, seed=0).verdict(higher_is_better=True) == "worse"
    assert result.verdict(higher_is_better=False) == "worse"  # e.g. an error metric: higher is worse


def test_paired_test_on_identical_encoders_finds_no_difference_in_about_95_percent_of_repetitions():
    # Two encoders with the same per-item hit probabilities: any difference is chance. A correct 5% test
    # says "no difference" in ~95% of repetitions (binomial sd over 300 repetitions: 1.3 points).
    rng = np.random.default_rng(5)
    repetitions, n_items = 300, 300
    verdicts = []
    for _ in range(repetitions):
        p = rng.random(n_items)
        a = np.stack([hits(p, n_items, rng) for _ in range(2)])  # 2 seeds each
        b = np.stack([hits(p, n_items, rng) for _ in range(2)])
        verdicts.append(paired_test(a, b, n_perm=1000, n_boot=200, seed=rng).verdict() == "no difference")
    rate = float(np.mean(verdicts))
    assert 0.91 <= rate <= 0.99, rate
    literally_identical = paired_test(a, a, seed=0)
    assert literally_identical.p_value == 1.0 and literally_identical.difference == 0.0


def test_paired_test_pairs_by_item_and_rejects_mismatched_items():
    ids_a, ids_b = np.array([5, 1, 9, 3]), np.array([3, 9, 7, 1])
    common, a, b = align_items(ids_a, np.array([1.0, 0.0, 1.0, 0.0]), ids_b, np.array([1.0, 1.0, 0.0, 1.0]))
    assert common.tolist() == [1, 3, 9] and a.tolist() == [[0.0, 0.0, 1.0]] and b.tolist() == [[1.0, 1.0, 1.0]]
    with pytest.raises(ValueError, match="same items"):
        paired_test(np.ones(4), np.ones(5))


def test_holm_matches_the_step_down_definition():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm(p).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]  # 2 x 0.5 capped at 1; monotone step-down
    assert holm([]).size == 0
