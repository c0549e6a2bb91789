"""brainbench.stats: item and hierarchical (seeds x items) bootstraps, t and Wilson intervals against scipy,
the paired tests' error rates with and without seed-to-seed variation, distinct seeds, Holm."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from brainbench.stats import (
    align_items,
    bootstrap_interval,
    distinct_seeds,
    hierarchical_replicates,
    holm,
    paired_test,
    t_interval,
    wilson_interval,
)


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


def test_t_interval_matches_scipy_for_every_degree_of_freedom_and_is_clipped_to_unit_range():
    rng = np.random.default_rng(7)
    for n in (2, 3, 12, 31, 200):  # the old tables were rounded to 3 dp (df <= 30) and approximated beyond
        values = rng.random(n)
        low, high = scipy.stats.t.interval(0.95, n - 1, loc=values.mean(), scale=scipy.stats.sem(values))
        got = t_interval(values)
        assert (got.low, got.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    two = t_interval([0.05, 0.40], (0.0, 1.0))  # MindEye-like: n=2, t = 12.7, the raw interval goes below 0
    assert two.low == 0.0 and two.high <= 1.0 and two.n_seeds == 2 and "2 seeds" in two.method
    assert t_interval([0.3]).low == t_interval([0.3]).high == 0.3
    assert "2 seeds with identical outcomes" in t_interval([0.3, 0.3]).method


def test_wilson_interval_is_scipys_for_whole_counts_and_takes_fractional_ones():
    for k, n in ((0, 10), (3, 10), (10, 10), (17, 50), (49, 50)):
        ci = scipy.stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert wilson_interval(k, n) == (pytest.approx(ci.low, abs=1e-12), pytest.approx(ci.high, abs=1e-12))
    low, high = wilson_interval(17.5, 50)  # GOD's ties broken by expectation give fractional counts
    assert wilson_interval(17, 50)[0] < low < wilson_interval(18, 50)[0] and high < wilson_interval(18, 50)[1]
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_hierarchical_replicates_follow_the_two_level_resampling_exactly():
    rng = np.random.default_rng(11)
    # Constant rows: the items add nothing, a replicate is the mean of 2 seeds drawn from {0, 1}:
    # 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4.
    rows = np.stack([np.zeros(30), np.ones(30)])
    replicates = hierarchical_replicates([rows], [1.0], 20000, rng)
    values, counts = np.unique(replicates, return_counts=True)
    assert values.tolist() == [0.0, 0.5, 1.0]
    np.testing.assert_allclose(counts / 20000, [0.25, 0.5, 0.25], atol=0.015)
    # Identical seeds: only the items vary, so the variance is the item bootstrap's, var(x) / n.
    x = (rng.random(200) < 0.4).astype(float)
    same = hierarchical_replicates([np.stack([x, x, x])], [1.0], 20000, rng)
    assert same.mean() == pytest.approx(x.mean(), abs=0.002)
    assert same.var() == pytest.approx(x.var() / 200, rel=0.05)
    # Two sides: the difference of their resampled means; the same items are drawn for both (paired).
    paired = hierarchical_replicates([np.stack([x]), np.stack([x])], [1.0, -1.0], 500, rng)
    assert np.all(paired == 0.0)


def test_distinct_seeds_and_identical_seeds_collapse_to_the_item_bootstrap():
    rng = np.random.default_rng(12)
    x = hits(0.5, 300, rng)
    assert distinct_seeds(np.stack([x, x])) == 1 and distinct_seeds(np.stack([x, 1 - x, x])) == 2
    one, twice = bootstrap_interval(x, seed=3), bootstrap_interval(np.stack([x, x]), seed=3)
    assert (twice.low, twice.high) == (one.low, one.high) and twice.n_distinct == 1
    assert twice.method == "bootstrap over 300 items (2 seeds with identical outcomes)"
    varied = np.stack([x, hits(0.5, 300, rng), hits(0.5, 300, rng)])
    assert bootstrap_interval(varied).method == "hierarchical bootstrap over 3 seeds and 300 items"
    items_only = bootstrap_interval(varied, levels="items")
    assert items_only.method == "bootstrap over 300 items of the mean over 3 seeds"


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
    # says "no difference" in ~95% of repetitions (binomial sd over 300 repetitions: 1.3 points). The
    # item-only test is that; the hierarchical one, resampling seeds and items crossed with them, counts the
    # per-trial noise more than once and is conservative here (never more false alarms than nominal).
    rng = np.random.default_rng(5)
    repetitions, n_items = 300, 300
    item_only, hierarchical = [], []
    for _ in range(repetitions):
        p = rng.random(n_items)
        a = np.stack([hits(p, n_items, rng) for _ in range(2)])  # 2 seeds each
        b = np.stack([hits(p, n_items, rng) for _ in range(2)])
        result = paired_test(a, b, n_perm=1000, n_boot=200, seed=rng)
        item_only.append(result.item_p_value >= 0.05)
        hierarchical.append(result.verdict() == "no difference")
    assert 0.91 <= float(np.mean(item_only)) <= 0.99, np.mean(item_only)
    assert float(np.mean(hierarchical)) >= 0.95, np.mean(hierarchical)
    literally_identical = paired_test(a[:1], a[:1], seed=0)
    assert literally_identical.p_value == 1.0 and literally_identical.difference == 0.0


def test_seed_to_seed_variation_enters_the_paired_verdict():
    # Two encoders of equal quality whose training seeds each shift every item's hit probability by a
    # common amount (sd 0.06): the mean over 3 seeds differs between them by chance, and an item-only test
    # mistakes that for a real difference. The hierarchical test resamples the seeds and says so far less.
    rng = np.random.default_rng(13)
    repetitions, n_items = 120, 400
    item_only, hierarchical = [], []
    for _ in range(repetitions):
        p = rng.random(n_items) * 0.6 + 0.2
        a = np.stack([hits(np.clip(p + rng.normal(0, 0.06), 0, 1), n_items, rng) for _ in range(3)])
        b = np.stack([hits(np.clip(p + rng.normal(0, 0.06), 0, 1), n_items, rng) for _ in range(3)])
        result = paired_test(a, b, n_perm=400, n_boot=400, seed=rng)
        item_only.append(result.item_p_value < 0.05)
        hierarchical.append(result.p_value < 0.05)
        assert result.low <= result.item_low and result.item_high <= result.high  # wider: it adds the seeds
    assert np.mean(item_only) > 0.3, np.mean(item_only)  # seed noise read as a difference
    assert np.mean(hierarchical) < np.mean(item_only) / 2, (np.mean(hierarchical), np.mean(item_only))
    ridge_like = paired_test(np.stack([a[0], a[0]]), np.stack([b[0], b[0]]), seed=0)  # deterministic fits
    assert ridge_like.method.startswith("sign-flip") and ridge_like.p_value == ridge_like.item_p_value


def test_item_only_permutation_p_is_exact_for_few_items():
    diffs = np.array([1.0, 1.0, 1.0, 1.0, 1.0])  # all 2^5 = 32 flips enumerated: only +-all reach |mean| 1
    result = paired_test(diffs, np.zeros(5), seed=0, levels="items")
    assert result.p_value == pytest.approx(2 / 32)


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
