"""LAION shards and queries that would silently give wrong answers are refused or reported, not indexed as
if nothing were wrong. Shards are written with numpy and pyarrow, as LAION publishes them."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from brainbench.errors import DataError
from brainbench_laion.index import LocalIndex, build_index
from tests.conftest import run_cli


def write_shard(folder, number: int, vectors: np.ndarray, metadata_rows: int | None = None) -> None:
    (folder / "img_emb").mkdir(parents=True, exist_ok=True)
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    np.save(folder / "img_emb" / f"img_emb_{number:04d}.npy", vectors.astype(np.float16))
    rows = len(vectors) if metadata_rows is None else metadata_rows
    table = pa.table({"url": [f"http://x/{i}.jpg" for i in range(rows)], "caption": [f"c{i}" for i in range(rows)]})
    pq.write_table(table, folder / "metadata" / f"metadata_{number:04d}.parquet")


def gallery(n: int = 300, dim: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def test_nan_rows_stop_the_build_naming_shard_and_rows(tmp_path):
    vectors = gallery()
    vectors[[7, 42]] = np.nan
    write_shard(tmp_path / "src", 0, gallery(seed=1))
    write_shard(tmp_path / "src", 1, vectors)
    with pytest.raises(DataError, match=r"img_emb_0001\.npy: 2 row\(s\) with NaN or infinite values.*rows \[7, 42\]"):
        build_index(tmp_path / "src", tmp_path / "idx", "flat", progress=False)


def test_short_metadata_is_refused_before_building(tmp_path):
    write_shard(tmp_path / "src", 0, gallery(), metadata_rows=250)
    with pytest.raises(DataError, match=r"metadata_0000\.parquet: 250 metadata rows for the 300 embeddings"):
        build_index(tmp_path / "src", tmp_path / "idx", "flat", progress=False)
    assert not (tmp_path / "idx").exists()


def test_zero_rows_are_indexed_and_reported(tmp_path):
    vectors = gallery()
    vectors[[3, 200]] = 0.0
    write_shard(tmp_path / "src", 0, vectors)
    built = run_cli("index", "build", str(tmp_path / "src"), str(tmp_path / "idx"), timeout=300)
    assert built.returncode == 0, built.stderr
    assert "warning: 2 all-zero embedding row(s) (first ids [3, 200])" in built.stderr
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["zero_rows"] == {"count": 2, "first_ids": [3, 200]} and manifest["ntotal"] == 300


def test_nan_queries_are_an_error_not_ids_of_minus_one(tmp_path):
    write_shard(tmp_path / "src", 0, gallery())
    build_index(tmp_path / "src", tmp_path / "idx", "flat", progress=False)
    index = LocalIndex.open(tmp_path / "idx")
    queries = gallery(4, seed=9)
    assert (index.search(queries, 3).ids >= 0).all()
    queries[2, 5] = np.nan
    with pytest.raises(DataError, match=r"1 of 4 queries contain NaN or infinite values \(rows \[2\]\)"):
        index.search(queries, 3)
