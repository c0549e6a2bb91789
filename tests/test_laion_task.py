"""The simulated LAION-like gallery and task ``laion`` on a small categorised dataset."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from brainbench.interfaces import EvalContext
from brainbench.plugins import get_plugins
from brainbench_laion.index import build_index
from brainbench_laion.shards import find_shards
from brainbench_laion.simulate import fit_category_model, simulate_for_dataset
from brainbench_laion.task import LaionTask, default_gallery_dir
from brainbench_laion.testing import FakeDataset


def context(dataset, predictions, out_dir, seed=0):
    ids = dataset.trials(1, "test").stimulus_ids
    truth = dataset.embeddings[ids] if predictions.ndim == 2 else dataset.tokens[ids]
    return EvalContext(
        predictions.astype(np.float32),
        truth,
        ids,
        dataset,
        target=None,
        subject=1,
        seed=seed,
        output_dir=out_dir,
    )


def test_category_model_is_fitted_on_training_stimuli_only():
    dataset = FakeDataset()
    before = fit_category_model(dataset)
    dataset.embeddings[dataset.n_train :] += 100.0  # test stimuli must not move the model
    after = fit_category_model(dataset)
    np.testing.assert_allclose(before.means, after.means)
    train = dataset.embeddings[: dataset.n_train]
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    cats = dataset.cats[: dataset.n_train]
    np.testing.assert_allclose(before.means[2], train[cats == 2].mean(0), rtol=1e-5)
    assert before.names == dataset.category_names()


def test_simulated_gallery_is_laion_layout_with_test_stimuli(tmp_path):
    dataset = FakeDataset(dim=32)
    described = simulate_for_dataset(dataset, 1000, tmp_path, shard_rows=300, seed=1)
    shards = find_shards(tmp_path)
    n_test = len(dataset.trials(1, "test").stimulus_ids)
    assert described["rows"] == sum(s.rows for s in shards) == 1000 + n_test
    vectors = np.concatenate([np.load(s.embeddings) for s in shards])
    assert vectors.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1.0, atol=2e-3)
    meta = [pq.read_table(s.metadata).to_pydict() for s in shards]
    sids = np.concatenate([m["stimulus_id"] for m in meta])
    cats = np.concatenate([m["category"] for m in meta])
    urls = sum((m["url"] for m in meta), [])
    captions = sum((m["caption"] for m in meta), [])
    assert sorted(sids[sids >= 0]) == sorted(dataset.trials(1, "test").stimulus_ids)
    row = int(np.flatnonzero(sids >= 0)[0])
    assert urls[row] == f"synthetic://fake/stimulus/{sids[row]}"
    own = dataset.embeddings[sids[row]] / np.linalg.norm(dataset.embeddings[sids[row]])
    np.testing.assert_allclose(vectors[row].astype(np.float32), own, atol=2e-3)
    assert all(urls[i].startswith("synthetic://fake/distractor/") for i in np.flatnonzero(sids < 0)[:5])
    assert captions[0] == f"a photo of thing{cats[0]}"
    # Distractors follow their category: closer to their own centre than to any other.
    centres = dataset.centres / np.linalg.norm(dataset.centres, axis=1, keepdims=True)
    distractors = vectors[sids < 0].astype(np.float32)
    nearest = np.argmax(distractors @ centres.T, axis=1)
    assert np.mean(nearest == cats[sids < 0]) > 0.9


def test_perfect_predictions_find_the_ground_truth(tmp_path):
    dataset = FakeDataset(dim=32)
    simulate_for_dataset(dataset, 800, tmp_path / "gal", shard_rows=300)
    build_index(tmp_path / "gal", tmp_path / "idx", "flat", progress=False)
    ids = dataset.trials(1, "test").stimulus_ids
    ctx = context(dataset, dataset.embeddings[ids], tmp_path / "out")
    results = {r.name: r for r in LaionTask(index=str(tmp_path / "idx"), k=5).evaluate(ctx)}
    assert results["gt_top1"].value == 1.0 and results["gt_recall_at_k"].value == 1.0
    assert results["candidate_cosine"].value == pytest.approx(1.0, abs=1e-3)
    assert results["clip_2way"].value == 1.0 and results["clip_2way"].chance == 0.5
    assert results["category_agreement"].value == 1.0
    figure = tmp_path / "out" / "laion_retrieval.png"
    assert figure in ctx.artifacts and figure.read_bytes()[:4] == b"\x89PNG"
    record = json.loads((tmp_path / "out" / "laion_retrieval.json").read_text())
    assert len(record["queries"]) == len(ids) and len(record["queries"][0]["candidates"]) == 5


def test_noisy_predictions_score_lower_than_perfect_ones(tmp_path):
    dataset = FakeDataset(dim=32)
    simulate_for_dataset(dataset, 800, tmp_path / "gal", shard_rows=300)
    build_index(tmp_path / "gal", tmp_path / "idx", "flat", progress=False)
    ids = dataset.trials(1, "test").stimulus_ids
    rng = np.random.default_rng(0)
    noisy = dataset.embeddings[ids] + 3.0 * rng.normal(size=(len(ids), 32))
    results = {
        r.name: r.value
        for r in LaionTask(index=str(tmp_path / "idx")).evaluate(context(dataset, noisy, tmp_path / "out"))
    }
    assert results["gt_top1"] < 1.0
    assert results["candidate_cosine"] < 0.99
    assert 0.0 <= results["category_agreement"] <= 1.0


def test_token_predictions_use_cls_and_rerank_with_candidate_tokens(tmp_path, capsys):
    dataset = FakeDataset(dim=16, tokens=5)
    simulate_for_dataset(dataset, 0, tmp_path / "gal", shard_rows=100)  # a gallery of the test stimuli only
    build_index(tmp_path / "gal", tmp_path / "idx", "flat", progress=False)
    ids = dataset.trials(1, "test").stimulus_ids
    tokens = dataset.tokens[ids].copy()
    tokens[:, 0] = dataset.embeddings[ids[::-1]]  # a misleading CLS: pooled search alone picks the wrong item
    pooled = {
        r.name: r.value
        for r in LaionTask(index=str(tmp_path / "idx"), rerank="none", k=len(ids)).evaluate(
            context(dataset, tokens, tmp_path / "a")
        )
    }
    reranked = {
        r.name: r.value
        for r in LaionTask(index=str(tmp_path / "idx"), k=len(ids)).evaluate(
            context(dataset, tokens, tmp_path / "b")
        )
    }
    assert pooled["gt_top1"] < 0.2
    assert reranked["gt_top1"] == 1.0  # the full token prediction recovers every ground truth
    assert "token re-ranking applied to 20 of 20" in capsys.readouterr().err


def test_image_metrics_when_candidate_images_exist(tmp_path, capsys):
    dataset = FakeDataset(dim=16, with_images=True)
    simulate_for_dataset(dataset, 100, tmp_path / "gal", shard_rows=100)
    build_index(tmp_path / "gal", tmp_path / "idx", "flat", progress=False)
    ids = dataset.trials(1, "test").stimulus_ids
    results = {
        r.name: r.value
        for r in LaionTask(index=str(tmp_path / "idx")).evaluate(
            context(dataset, dataset.embeddings[ids], tmp_path / "out")
        )
    }
    assert results["pixcorr"] == pytest.approx(1.0) and results["ssim"] == pytest.approx(1.0)
    assert "feature image metrics" in capsys.readouterr().err


def test_default_gallery_is_built_once_under_home(tmp_path, isolated_home):
    dataset = FakeDataset(dim=16)
    ids = dataset.trials(1, "test").stimulus_ids
    task = LaionTask(gallery_size=300, include_test_images=True)
    first = {
        r.name: r.value for r in task.evaluate(context(dataset, dataset.embeddings[ids], tmp_path / "a"))
    }
    manifest = default_gallery_dir(dataset, 300, 0, include_test=True) / "index" / "manifest.json"
    assert manifest.is_relative_to(isolated_home) and manifest.exists()
    stamp = manifest.stat().st_mtime_ns
    second = {
        r.name: r.value for r in task.evaluate(context(dataset, dataset.embeddings[ids], tmp_path / "b"))
    }
    assert manifest.stat().st_mtime_ns == stamp and first == second
    assert first["gt_top1"] == 1.0


def test_registered_task_and_bad_options():
    task = get_plugins().tasks.create("laion", k=3)
    assert isinstance(task, LaionTask) and task.default_target == "synthetic-clip"
    with pytest.raises(ValueError, match="pooling"):
        LaionTask(pooling="max")
    with pytest.raises(ValueError, match="not both"):
        LaionTask(index="a", remote="http://127.0.0.1:1")
