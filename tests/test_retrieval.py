"""Retrieval maths and the ``retrieval`` task on hand-built embeddings whose answers are known exactly."""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from brainbench.interfaces import EvalContext
from brainbench.plugins import get_plugins
from brainbench.retrieval_metrics import (
    cosine_similarity_matrix,
    n_way_accuracy,
    n_way_expected_hits,
    topk_accuracy,
    topk_hits,
    two_way_identification,
)


def unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def context(pred: np.ndarray, true: np.ndarray, tmp_path: Path, seed: int = 0) -> EvalContext:
    return EvalContext(
        predictions=pred, targets=true, stimulus_ids=np.arange(len(pred)), dataset=None,  # type: ignore[arg-type]
        target=None, subject=1, seed=seed, output_dir=tmp_path / "out",  # type: ignore[arg-type]
    )


def make_task(**options):
    return get_plugins().tasks.create("retrieval", **options)


def by_name(results):
    return {r.name: r for r in results}


# ----------------------------------------------------------------------------------------------- maths


def test_cosine_matrix_matches_direct_formula_in_chunks_and_handles_zero_rows():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((11, 4, 5)), rng.standard_normal((7, 4, 5))
    a[3] = 0.0
    fa, fb = a.reshape(11, -1), b.reshape(7, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = (fa @ fb.T) / np.linalg.norm(fa, axis=1)[:, None] / np.linalg.norm(fb, axis=1)[None]
    expected[3] = 0.0
    got = cosine_similarity_matrix(a, b, chunk=3)
    assert got.dtype == np.float32 and got.shape == (11, 7)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    corr = cosine_similarity_matrix(fa[4:9] + 3.0, fb + 1.0, chunk=2, center=True)
    np.testing.assert_allclose(corr, np.corrcoef(fa[4:9], fb)[:5, 5:], atol=1e-5)


def test_cosine_matrix_memory_stays_near_the_output_size():
    a = np.random.default_rng(0).standard_normal((96, 60_000)).astype(np.float32)  # 23 MB each
    b = a[::-1].copy()
    tracemalloc.start()
    cosine_similarity_matrix(a, b, chunk=8)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # One float64 chunk (8 x 60k x 8 B = 3.8 MB) plus its float32 copy; never a copy of a or b (23 MB).
    assert peak < 8e6, f"peak {peak / 1e6:.1f} MB"


def test_topk_accuracy_with_swapped_pairs_is_exact():
    n, k_pairs = 40, 6
    true = unit_rows(n, 32)
    perm = np.arange(n)
    for i in range(k_pairs):
        perm[[2 * i, 2 * i + 1]] = perm[[2 * i + 1, 2 * i]]
    sim = cosine_similarity_matrix(true[perm], true)
    assert topk_accuracy(sim, 1) == pytest.approx((n - 2 * k_pairs) / n, abs=1e-12)
    assert topk_accuracy(sim.T, 1) == pytest.approx((n - 2 * k_pairs) / n, abs=1e-12)
    assert topk_accuracy(sim, n) == pytest.approx(1.0)


def test_ties_score_their_expectation():
    sim = np.ones((8, 8))
    assert topk_accuracy(sim, 1) == pytest.approx(1 / 8)
    assert topk_accuracy(sim, 3) == pytest.approx(3 / 8)


@pytest.mark.parametrize("scheme", ["shared", "per-query"])
def test_n_way_expected_accuracy_with_known_impostors(scheme):
    # Query i is beaten only by its impostor column (i + 1) for i in the first m rows; it loses exactly when
    # the impostor is among its way-1 distractors, which happens with probability (way-1)/(n-1).
    n, m, way, draws = 60, 30, 20, 400
    sim = np.eye(n)
    sim[np.arange(m), np.arange(m) + 1] = 2.0
    acc = n_way_accuracy(sim, way, draws, scheme, np.random.default_rng(3))
    expected = 1 - (m / n) * (way - 1) / (n - 1)
    standard_error = acc.std(ddof=1) / math.sqrt(draws)
    assert abs(acc.mean() - expected) < 5 * standard_error + 1e-9
    again = n_way_accuracy(sim, way, draws, scheme, np.random.default_rng(3))
    np.testing.assert_array_equal(acc, again)


@pytest.mark.parametrize("scheme", ["shared", "per-query"])
def test_n_way_identity_is_perfect_so_no_query_meets_itself_as_distractor(scheme):
    sim = cosine_similarity_matrix(unit_rows(50, 16), unit_rows(50, 16))
    np.fill_diagonal(sim, 10.0)
    assert np.all(n_way_accuracy(sim, 49, 5, scheme, np.random.default_rng(0)) == 1.0)


def test_n_way_rejects_bad_arguments():
    sim = np.eye(10)
    with pytest.raises(ValueError, match="way"):
        n_way_accuracy(sim, 11, 3, "shared")
    with pytest.raises(ValueError, match="scheme"):
        n_way_accuracy(sim, 5, 3, "batch")


def test_two_way_identification_exact_cases():
    true = unit_rows(30, 20, seed=4)
    assert two_way_identification(true * 2.0 + 0.5, true) == pytest.approx(1.0)
    assert two_way_identification(-true, true) == pytest.approx(0.0)
    assert two_way_identification(np.ones_like(true), true) == pytest.approx(0.5)
    per_item = two_way_identification(true, true, per_item=True)
    assert isinstance(per_item, np.ndarray) and per_item.shape == (30,)


def test_task_identity_is_perfect_and_declares_directions(tmp_path):
    true = unit_rows(350, 24)
    task = make_task()
    results = by_name(task.evaluate(context(true.reshape(350, 4, 6) * 3.0, true.reshape(350, 4, 6), tmp_path)))
    assert set(results) == {s.name for s in task.metrics}
    for result in results.values():
        assert result.value == pytest.approx(1.0) and result.higher_is_better
    assert results["fmri_to_image_top1_300way"].chance == pytest.approx(1 / 300)
    assert results["fmri_to_image_top1_full"].chance == pytest.approx(1 / 350)
    assert task.params()["scheme"] == "shared"
    record = json.loads((tmp_path / "out" / "retrieval_draws.json").read_text())
    assert len(record["accuracy_per_draw"]["image_to_fmri"]) == 30


@pytest.mark.parametrize("scheme", ["shared", "per-query"])
def test_task_swapped_pairs_and_constant_predictions(tmp_path, scheme):
    n, k_pairs = 120, 10
    true = unit_rows(n, 16, seed=2)
    perm = np.arange(n)
    for i in range(k_pairs):
        perm[[2 * i, 2 * i + 1]] = perm[[2 * i + 1, 2 * i]]
    task = make_task(way=40, draws=12, scheme=scheme)
    results = by_name(task.evaluate(context(true[perm], true, tmp_path)))
    assert results["fmri_to_image_top1_full"].value == pytest.approx((n - 2 * k_pairs) / n)
    assert results["image_to_fmri_top1_full"].value == pytest.approx((n - 2 * k_pairs) / n)
    forty = results["fmri_to_image_top1_40way"]
    assert forty.interval is not None and forty.interval[0] <= forty.value <= forty.interval[1]
    assert (n - 2 * k_pairs) / n <= forty.value < 1.0

    constant = np.tile(true[:1] + true[1:2], (n, 1))
    results = by_name(task.evaluate(context(constant, true, tmp_path)))
    assert results["fmri_to_image_top1_full"].value == pytest.approx(1 / n)
    assert results["image_to_fmri_top1_full"].value == pytest.approx(1 / n)
    assert results["image_to_fmri_top1_40way"].value == pytest.approx(1 / 40)  # every candidate ties


def test_task_caps_way_at_n_with_a_note(tmp_path):
    true = unit_rows(50, 8)
    task = make_task(draws="per-query")
    ctx = context(true, true, tmp_path)
    results = by_name(task.evaluate(ctx))
    assert any("only 50 test items" in note for note in ctx.notes)
    # Named for what ran: 50 items give a 50-way metric, never one called 300way.
    assert set(results) == {f"{d}_top1_{w}" for d in ("fmri_to_image", "image_to_fmri") for w in ("full", "50way")}
    assert results["fmri_to_image_top1_50way"].chance == pytest.approx(1 / 50)
    assert task.params()["scheme"] == "per-query" and task.params()["draws"] == 30
    assert task.notes and "50-way" in task.notes[0]


def test_task_seed_changes_draws_but_repeats_exactly(tmp_path):
    rng = np.random.default_rng(7)
    true = unit_rows(200, 16)
    noisy = true + 0.3 * rng.standard_normal(true.shape).astype(np.float32)
    task = make_task(way=50, draws=10)
    first = by_name(task.evaluate(context(noisy, true, tmp_path, seed=1)))["fmri_to_image_top1_50way"]
    again = by_name(task.evaluate(context(noisy, true, tmp_path, seed=1)))["fmri_to_image_top1_50way"]
    other = by_name(task.evaluate(context(noisy, true, tmp_path, seed=2)))["fmri_to_image_top1_50way"]
    assert first == again and first.value != other.value


def test_task_rejects_unknown_scheme():
    with pytest.raises(ValueError, match="scheme"):
        make_task(scheme="batches")


def test_expected_n_way_hits_match_many_random_draws_and_handle_ties():
    rng = np.random.default_rng(6)
    true = unit_rows(90, 12, seed=5)
    noisy = true + 0.6 * rng.standard_normal(true.shape).astype(np.float32)
    sim = cosine_similarity_matrix(noisy, true)
    expected = n_way_expected_hits(sim, 30)
    assert expected.shape == (90,) and ((0 <= expected) & (expected <= 1)).all()
    draws = n_way_accuracy(sim, 30, 3000, "per-query", np.random.default_rng(0))
    assert expected.mean() == pytest.approx(draws.mean(), abs=0.005)  # MC error ~ 0.001
    assert n_way_expected_hits(sim, 90) == pytest.approx(topk_hits(sim, np.arange(90), 1))  # full way
    # All candidates tied: 1/way each; a true item with g others strictly above it never wins all-way.
    assert n_way_expected_hits(np.zeros((20, 20)), 5) == pytest.approx(np.full(20, 0.2))


def test_task_stores_per_item_outcomes_and_item_bootstrap_intervals(tmp_path):
    rng = np.random.default_rng(11)
    true = unit_rows(400, 16, seed=3)
    noisy = true + 0.3 * rng.standard_normal(true.shape).astype(np.float32)  # about half the queries hit
    ctx = context(noisy, true, tmp_path)
    results = by_name(make_task().evaluate(ctx))
    assert set(ctx.per_item) == set(results)
    for name, result in results.items():
        outcomes = ctx.per_item[name]
        assert outcomes.shape == (400,) and ((0 <= outcomes) & (outcomes <= 1)).all()
        low, high = result.interval
        assert 0.0 <= low <= result.value <= high <= 1.0
        assert high - low > 0.02  # 400 items: a real interval, not the draws' few-thousandths spread
    assert ctx.per_item["fmri_to_image_top1_full"].mean() == pytest.approx(results["fmri_to_image_top1_full"].value)
    # 300-way with 400 items is easier than 400-way (full)
    assert results["fmri_to_image_top1_300way"].value > results["fmri_to_image_top1_full"].value
    record = json.loads((tmp_path / "out" / "retrieval_draws.json").read_text())
    spread = record["draws"]["fmri_to_image"]["draws_sd"]
    low, high = results["fmri_to_image_top1_300way"].interval
    assert 0 < spread < high - low
