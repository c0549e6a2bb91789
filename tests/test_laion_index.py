"""Gallery indexes: LAION-layout shards, exact and IVF-PQ FAISS indexes, clip-retrieval folders, metadata."""

from __future__ import annotations

import json
import subprocess
import sys

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from brainbench.errors import DataError
from brainbench_laion.gallery import merge_topk
from brainbench_laion.index import LocalIndex, build_index, choose_kind, exact_search, plan_build
from brainbench_laion.shards import MetadataLookup, find_shards
from brainbench_laion.testing import clustered, write_gallery
from tests.conftest import run_cli


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return np.argsort(-(q @ vectors.T), axis=1)[:, :k]


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_find_shards_reads_both_layouts_and_offsets(tmp_path, flat, dtype):
    write_gallery(tmp_path, clustered(250, 16).astype(dtype), shard_rows=100, flat=flat)
    shards = find_shards(tmp_path)
    assert [s.rows for s in shards] == [100, 100, 50]
    assert [s.offset for s in shards] == [0, 100, 200]
    assert all(s.metadata is not None and s.dim == 16 for s in shards)


def test_find_shards_rejects_bad_input(tmp_path):
    with pytest.raises(DataError, match="no img_emb"):
        find_shards(tmp_path)
    np.save(tmp_path / "img_emb_0000.npy", np.zeros((3, 4, 5), dtype=np.float32))
    with pytest.raises(DataError, match=r"img_emb_0000.npy.*\(n, d\)"):
        find_shards(tmp_path)


def test_metadata_lookup_crosses_shard_boundaries(tmp_path):
    write_gallery(tmp_path, clustered(250, 8), shard_rows=100)
    lookup = MetadataLookup.for_shards(find_shards(tmp_path))
    got = lookup.get(np.array([0, 99, 100, 249, -1]))
    assert [g.get("url") for g in got[:4]] == [
        "http://x/0.jpg",
        "http://x/99.jpg",
        "http://x/100.jpg",
        "http://x/249.jpg",
    ]
    assert got[4] == {"id": -1}


def test_merge_topk_matches_a_full_sort():
    rng = np.random.default_rng(0)
    scores = rng.random((5, 12)).astype(np.float32)
    ids = np.arange(12)[None].repeat(5, 0)
    ids[:, 11] = -1  # a "no result" slot never wins
    parts = [(scores[:, :6], ids[:, :6]), (scores[:, 6:], ids[:, 6:])]
    got_ids, got_scores = merge_topk(parts, 4)
    masked = np.where(ids < 0, -np.inf, scores)
    want = np.argsort(-masked, axis=1)[:, :4]
    np.testing.assert_array_equal(got_ids, np.take_along_axis(ids, want, 1))
    assert np.all(np.diff(got_scores, axis=1) <= 0)


def test_flat_index_is_exact_across_several_files(tmp_path):
    vectors = clustered(1200, 24, seed=1)
    write_gallery(tmp_path / "src", vectors.astype(np.float16), shard_rows=500)
    manifest = build_index(tmp_path / "src", tmp_path / "idx", "flat", file_rows=400, progress=False)
    assert manifest["kind"] == "flat" and len(manifest["index_files"]) == 3
    index = LocalIndex.open(tmp_path / "idx")
    stored = np.concatenate([np.load(s.embeddings).astype(np.float32) for s in find_shards(tmp_path / "src")])
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    queries = clustered(30, 24, seed=2)
    result = index.search(queries, 5)
    np.testing.assert_array_equal(result.ids, brute_force(stored, queries, 5))
    assert result.metadata[0][0]["caption"] == f"row {result.ids[0, 0]}"
    truth_ids, truth_scores = exact_search(find_shards(tmp_path / "src"), queries, 5, chunk_rows=128)
    np.testing.assert_array_equal(truth_ids, result.ids)
    np.testing.assert_allclose(truth_scores, result.scores, atol=1e-5)


def test_ivfpq_index_reports_recall_and_loads_memory_mapped(tmp_path):
    vectors = clustered(4000, 32, n_clusters=40, seed=3)
    write_gallery(tmp_path / "src", vectors, shard_rows=1500)
    manifest = build_index(
        tmp_path / "src",
        tmp_path / "idx",
        "ivfpq",
        nlist=32,
        pq_m=8,
        file_rows=2500,
        recall_queries=200,
        progress=False,
    )
    assert manifest["kind"] == "ivfpq" and len(manifest["index_files"]) == 2
    on_disk = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    recall = on_disk["recall"]
    assert 0.0 < recall["recall@10"] <= 1.0
    by_probe = {int(p): r for p, r in recall["recall_by_nprobe"].items()}
    assert by_probe[max(by_probe)] >= by_probe[min(by_probe)]
    assert recall["recall@10_refine10"] >= recall["recall@10"]
    assert recall["1-recall@10"] > 0.8  # the exact nearest item is almost always among the approximate top 10
    index = LocalIndex.open(tmp_path / "idx")
    assert index.describe()["kind"] == "ivfpq" and index.ntotal == 4000
    index.nprobe = 32  # every list: only PQ error remains, so a gallery row finds itself first
    assert index.search(vectors[:20], 1).ids[:, 0].tolist() == list(range(20))


def test_auto_kind_follows_size():
    assert choose_kind(1000) == "flat" and choose_kind(10_000_000) == "ivfpq"
    plan = plan_build(1_000_000, 768)
    assert plan.kind == "ivfpq" and plan.nlist == 4000 and plan.pq_m == 64
    with pytest.raises(ValueError, match="flat, ivfpq"):
        choose_kind(10, "hnsw")


def test_opens_a_clip_retrieval_folder_without_rebuilding(tmp_path):
    vectors = clustered(300, 16, seed=4)
    index = faiss.IndexFlatIP(16)
    index.add(vectors)
    faiss.write_index(index, str(tmp_path / "image.index"))
    (tmp_path / "metadata").mkdir()
    for part, start in enumerate((0, 120)):
        stop = 120 if start == 0 else 300
        pq.write_table(
            pa.table(
                {
                    "url": [f"u{r}" for r in range(start, stop)],
                    "caption": [f"c{r}" for r in range(start, stop)],
                }
            ),
            tmp_path / "metadata" / f"{part:04d}.parquet",
        )
    gallery = LocalIndex.open(tmp_path)
    result = gallery.search(vectors[[5, 250]], 3)
    assert result.ids[:, 0].tolist() == [5, 250]
    assert [m[0]["caption"] for m in result.metadata] == ["c5", "c250"]
    assert gallery.describe()["layout"] == "clip-retrieval"


def test_not_an_index_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not a gallery index"):
        LocalIndex.open(tmp_path)
    (tmp_path / "broken.faiss").write_bytes(b"nonsense")
    with pytest.raises(DataError, match="broken.faiss"):
        LocalIndex.open(tmp_path / "broken.faiss")


def test_plugin_import_pulls_in_no_heavy_library():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import brainbench_laion"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.splitlines() if "|" in line}
    assert not imported & {"faiss", "numpy", "pyarrow", "torch"}


def test_cli_build_info_and_query(tmp_path):
    write_gallery(tmp_path / "src", clustered(600, 16, seed=5), shard_rows=250)
    built = run_cli("index", "build", str(tmp_path / "src"), str(tmp_path / "idx"), timeout=120)
    assert built.returncode == 0, built.stderr
    assert json.loads((tmp_path / "idx" / "manifest.json").read_text())["ntotal"] == 600
    shown = run_cli("index", "info", str(tmp_path / "idx"), timeout=120)
    assert shown.returncode == 0 and '"kind": "flat"' in shown.stdout
    found = run_cli("index", "query", str(tmp_path / "idx"), "--row", "321", "-k", "2", timeout=120)
    assert found.returncode == 0, found.stderr
    assert "http://x/321.jpg" in found.stdout


def test_simulated_gallery_is_structured_like_clip_not_a_flat_crowd():
    """Neighbours at several scales (rank 2 well above rank 100), a power-law spectrum, a common mean."""
    from brainbench_laion.simulate import CategoryModel

    model = CategoryModel.random(20, 128, seed=3)
    vectors, cats = model.sample(20_000, np.random.default_rng(0))
    assert vectors.shape == (20_000, 128) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    again, _ = CategoryModel.random(20, 128, seed=3).sample(20_000, np.random.default_rng(0))
    np.testing.assert_array_equal(vectors, again)  # the cluster layout is fixed by the model's seed

    sims = vectors[:200] @ vectors.T
    sims[np.arange(200), np.arange(200)] = -1.0  # drop each query itself
    ranked = -np.sort(-sims, axis=1)
    rank2, rank10, rank100 = ranked[:, 0].mean(), ranked[:, 9].mean(), ranked[:, 99].mean()
    # The old sampler (one diagonal Gaussian per category) gave ranks 2..100 within ~0.02 of each other.
    assert rank2 - rank100 > 0.1 and rank10 - rank100 > 0.05, (rank2, rank10, rank100)
    assert 0.2 < float((vectors[:500] @ vectors[500:1000].T).mean()) < 0.8  # a shared mean direction
    members = vectors[cats == 0]
    spectrum = np.linalg.svd(members - members.mean(axis=0), compute_uv=False) ** 2
    top = spectrum[:13].sum() / spectrum.sum()  # 10% of the dimensions, within one category
    assert top > 0.4, top  # isotropic within-category noise (the old sampler) leaves ~0.15 here
    assert len(np.unique(cats)) == 20
