"""Build, open and search FAISS gallery indexes over LAION-layout embedding shards.

Our layout (written by :func:`build_index`): ``manifest.json`` + ``index_XXXX.faiss`` files, each holding a
contiguous range of global row ids (its ``offset``), searched as one and merged by score. Vectors are
L2-normalised, so inner product is cosine similarity.

clip-retrieval / autofaiss layout (opened as is): ``image.index`` + ``metadata/*.parquet`` or
``image_metadata.parquet``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from brainbench.errors import DataError
from brainbench_laion.gallery import SearchResult, merge_topk, normalise
from brainbench_laion.shards import (
    EmbeddingShard,
    MetadataLookup,
    check_metadata_rows,
    find_shards,
    sample_rows,
    total_rows,
    unusable_rows,
)

MANIFEST = "manifest.json"
FORMAT = "brainbench-laion-index/1"
KINDS = ("auto", "flat", "ivfpq")
#: Up to this many vectors "auto" builds an exact index; above it IVF-PQ.
AUTO_FLAT_MAX = 200_000
#: Rows per index file: bounds build memory (flat: rows * d * 4 bytes; IVF-PQ: rows * (m + 8) bytes).
FLAT_FILE_ROWS = 250_000
IVFPQ_FILE_ROWS = 50_000_000
CHUNK_ROWS = 65_536
#: Exact re-ranking depth factor reported at build time (search k * REFINE approximate, keep k exact).
REFINE = 10


@dataclass
class BuildPlan:
    kind: str
    nlist: int = 0
    pq_m: int = 0
    pq_bits: int = 8
    nprobe: int = 0
    train_size: int = 0
    file_rows: int = FLAT_FILE_ROWS


def choose_kind(n: int, kind: str = "auto") -> str:
    if kind not in KINDS:
        raise ValueError(f"index kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind != "auto":
        return kind
    return "flat" if n <= AUTO_FLAT_MAX else "ivfpq"


def plan_build(
    n: int,
    dim: int,
    kind: str = "auto",
    nlist: int | None = None,
    pq_m: int = 64,
    nprobe: int | None = None,
    train_size: int | None = None,
    file_rows: int | None = None,
) -> BuildPlan:
    """Index parameters for ``n`` vectors: nlist ~ 4 sqrt(n), PQ with m sub-quantisers dividing ``dim``."""
    kind = choose_kind(n, kind)
    if kind == "flat":
        return BuildPlan("flat", file_rows=file_rows or FLAT_FILE_ROWS)
    nlist = nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
    pq_m = max(m for m in range(1, min(pq_m, dim) + 1) if dim % m == 0)
    # faiss suggests >= 39 points per centroid; 30 keeps k-means affordable on a laptop at ~1% recall cost.
    train_size = min(n, train_size or max(30 * nlist, 10_000))
    pq_bits = min(8, int(math.log2(max(train_size, 2))))
    nprobe = min(nlist, nprobe or max(16, nlist // 64))
    return BuildPlan("ivfpq", nlist, pq_m, pq_bits, nprobe, train_size, file_rows or IVFPQ_FILE_ROWS)


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def _random_rows(
    n: int, count: int, rng: np.random.Generator, exclude: np.ndarray | None = None
) -> np.ndarray:
    """``count`` distinct sorted row ids in [0, n) outside ``exclude``, without materialising all n ids
    (at LAION-5B scale ``arange(n)`` alone would be 47 GB)."""
    excluded = np.zeros(0, dtype=np.int64) if exclude is None else np.asarray(exclude, dtype=np.int64)
    count = min(count, n - len(excluded))
    drawn = rng.choice(n, size=min(n, count + len(excluded)), replace=False)
    return np.sort(drawn[~np.isin(drawn, excluded)][:count])


def exact_search(
    shards: list[EmbeddingShard], queries: np.ndarray, k: int, chunk_rows: int = CHUNK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k over the raw shards (streamed, normalised): the ground truth for recall."""
    queries = normalise(queries)
    best: list[tuple[np.ndarray, np.ndarray]] = []  # the running top-k as (scores, ids)
    for shard in shards:
        for first, block in shard.chunks(chunk_rows):
            faiss.normalize_L2(block)
            scores, ids = faiss.knn(queries, block, min(k, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
            top_ids, top_scores = merge_topk([*best, (scores, ids + first)], k)
            best = [(top_scores, top_ids)]
    return best[0][1], best[0][0]


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-k found in the approximate top-k."""
    hits = [len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits) / k)


def build_index(
    source: Path,
    out_dir: Path,
    kind: str = "auto",
    *,
    nlist: int | None = None,
    pq_m: int = 64,
    nprobe: int | None = None,
    train_size: int | None = None,
    file_rows: int | None = None,
    recall_queries: int = 1000,
    recall_k: int = 10,
    query_noise: float = 0.5,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Stream the shards of ``source`` into FAISS index files under ``out_dir``; return the manifest.

    For an approximate index, recall@k against exact search is measured on held-out queries: gallery rows
    outside the training sample plus Gaussian noise of relative norm ``query_noise`` (so a query is
    near, but not equal to, a gallery item, as a decoder's prediction is).
    """
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise DataError(f"{out_dir}: exists and is a file; the index is written into a folder (OUT): name a new one")
    shards = find_shards(Path(source))
    check_metadata_rows(shards)
    n, dim = total_rows(shards), shards[0].dim
    plan = plan_build(n, dim, kind, nlist, pq_m, nprobe, train_size, file_rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    train_rows = np.empty(0, dtype=np.int64)
    template: faiss.Index | None = None
    train_seconds = 0.0
    if plan.kind == "ivfpq":
        train_rows = _random_rows(n, plan.train_size, rng)
        sample = normalise(sample_rows(shards, train_rows))
        quantizer = faiss.IndexFlatIP(dim)
        template = faiss.IndexIVFPQ(
            quantizer, dim, plan.nlist, plan.pq_m, plan.pq_bits, faiss.METRIC_INNER_PRODUCT
        )
        # 10 k-means iterations are within noise of 25 for retrieval and 2.5x cheaper; PQ sub-quantisers
        # (tiny k-means in d/m dimensions, slow per point in faiss) train on a 40-per-centroid subsample.
        template.cp.niter = 10
        template.pq.cp.niter = 10
        template.pq.cp.max_points_per_centroid = 40
        t0 = time.perf_counter()
        template.train(sample)
        train_seconds = time.perf_counter() - t0
        del sample
    zero_rows: list[int] = []
    files = _add_all(shards, plan, dim, template, out_dir, progress, zero_rows)
    build_seconds = time.perf_counter() - started
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "kind": plan.kind,
        "dim": dim,
        "ntotal": n,
        "source": str(Path(source).resolve()),
        "index_files": files,
        "metadata_files": [
            {"offset": s.offset, "path": str(s.metadata.resolve()) if s.metadata else None} for s in shards
        ],
        "build_seconds": round(build_seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "vectors_per_second": round(n / max(build_seconds, 1e-9), 1),
        # all-zero vectors are indexed (ids stay aligned with the metadata) but match nothing
        "zero_rows": {"count": len(zero_rows), "first_ids": zero_rows[:20]},
    }
    if plan.kind == "ivfpq":
        manifest.update(
            nlist=plan.nlist,
            pq_m=plan.pq_m,
            pq_bits=plan.pq_bits,
            nprobe=plan.nprobe,
            train_size=int(len(train_rows)),
        )
    _write_manifest(out_dir, manifest)
    if plan.kind == "ivfpq" and recall_queries > 0:
        manifest["recall"] = measure_recall(
            out_dir, shards, recall_queries, recall_k, query_noise, train_rows, rng, plan.nprobe
        )
        _write_manifest(out_dir, manifest)
    return manifest


def _write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _add_all(
    shards: list[EmbeddingShard],
    plan: BuildPlan,
    dim: int,
    template: faiss.Index | None,
    out_dir: Path,
    progress: bool,
    zero_rows: list[int] | None = None,
) -> list[dict[str, Any]]:
    """Add every vector, starting a new index file each ``plan.file_rows`` rows (bounded memory).

    A NaN/infinite row stops the build, naming the shard and rows; all-zero rows are counted in
    ``zero_rows`` (global ids) and added as they are."""
    files: list[dict[str, Any]] = []
    current: faiss.Index | None = None
    current_offset = 0

    def flush() -> None:
        nonlocal current
        if current is not None and current.ntotal:
            name = f"index_{len(files):04d}.faiss"
            faiss.write_index(current, str(out_dir / name))
            files.append({"file": name, "offset": current_offset, "rows": int(current.ntotal)})
        current = None

    with _progress(progress) as bar:
        task = bar.add_task(f"adding to {plan.kind} index", total=total_rows(shards))
        for shard in shards:
            for first, block in shard.chunks(CHUNK_ROWS):
                broken, zero = unusable_rows(block)
                if broken.any():
                    bad = (np.flatnonzero(broken) + first - shard.offset)[:5].tolist()
                    raise DataError(
                        f"{shard.embeddings}: {int(broken.sum())} row(s) with NaN or infinite values in this block "
                        f"(rows {bad} of the shard); an index cannot rank them — fix or drop those rows"
                    )
                if zero_rows is not None and zero.any():
                    zero_rows.extend((np.flatnonzero(zero) + first).tolist())
                faiss.normalize_L2(block)
                while len(block):
                    if current is None:
                        current = faiss.IndexFlatIP(dim) if template is None else faiss.clone_index(template)
                        current_offset = first
                    room = plan.file_rows - current.ntotal
                    current.add(block[:room])
                    bar.advance(task, min(room, len(block)))
                    first += min(room, len(block))
                    block = block[room:]
                    if current.ntotal >= plan.file_rows:
                        flush()
        flush()
    return files


def measure_recall(
    index_dir: Path,
    shards: list[EmbeddingShard],
    n_queries: int,
    k: int,
    query_noise: float,
    exclude: np.ndarray,
    rng: np.random.Generator,
    nprobe: int,
) -> dict[str, Any]:
    """Recall@k of the approximate index against exact search, at the default and a few other nprobe."""
    n = total_rows(shards)
    rows = _random_rows(n, n_queries, rng, exclude if n - len(exclude) >= n_queries else None)
    base = normalise(sample_rows(shards, rows))
    noise = rng.normal(size=base.shape).astype(np.float32) * (query_noise / math.sqrt(base.shape[1]))
    queries = normalise(base + noise)
    truth, _ = exact_search(shards, queries, k)
    index = LocalIndex.open(index_dir)
    by_nprobe: dict[str, float] = {}
    nlist = index.describe().get("nlist", nprobe)
    for probe in sorted({max(1, nprobe // 4), nprobe, min(nlist, nprobe * 4)}):
        index.nprobe = probe
        by_nprobe[str(probe)] = round(
            recall_at_k(index.search(queries, k, with_metadata=False).ids, truth, k), 4
        )
    index.nprobe, index.refine = nprobe, REFINE
    refined = round(recall_at_k(index.search(queries, k, with_metadata=False).ids, truth, k), 4)
    index.refine = 1
    found = index.search(queries, k, with_metadata=False).ids
    nearest = round(float(np.mean([t[0] in f for f, t in zip(found, truth, strict=True)])), 4)
    return {
        "k": k,
        "queries": len(rows),
        "query_noise": query_noise,
        "nprobe": nprobe,
        f"recall@{k}": by_nprobe[str(nprobe)],
        "recall_by_nprobe": by_nprobe,
        f"recall@{k}_refine{REFINE}": refined,
        f"1-recall@{k}": nearest,  # how often the exact nearest item is among the approximate top k
        "query_sample": "gallery rows outside the training sample plus Gaussian noise",
    }


class LocalIndex:
    """One or more FAISS index files, memory-mapped, searched as one gallery (global ids, merged by score)."""

    def __init__(
        self,
        parts: list[tuple[faiss.Index, int]],
        metadata: MetadataLookup | None,
        info: dict[str, Any],
        name: str = "local",
        shards: list[EmbeddingShard] | None = None,
    ) -> None:
        if not parts:
            raise DataError(f"index {name}: no index files")
        self._parts = parts
        self._metadata = metadata
        self._info = info
        self._shards = shards
        self.name = name
        self.dim = int(parts[0][0].d)
        self.refine = 1
        if "nprobe" in info:
            self.nprobe = int(info["nprobe"])

    # ------------------------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: Path) -> LocalIndex:
        """Our index folder (manifest.json), a clip-retrieval folder (image.index), or one FAISS file."""
        path = Path(path)
        if (path / MANIFEST).exists():
            return cls._open_manifest(path)
        if (path / "image.index").exists():
            return cls._open_clip_retrieval(path)
        if path.is_file():
            index = _read(path)
            return cls([(index, 0)], None, {"kind": _kind_of(index), "ntotal": int(index.ntotal)}, path.name)
        raise DataError(
            f"{path}: not a gallery index (expected {MANIFEST} from `brainbench index build`, or a "
            "clip-retrieval folder with image.index, or a FAISS index file)"
        )

    @classmethod
    def _open_manifest(cls, folder: Path) -> LocalIndex:
        try:
            info = json.loads((folder / MANIFEST).read_text())
            files = info["index_files"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise DataError(f"{folder / MANIFEST}: malformed index manifest ({exc})") from exc
        parts = [(_read(folder / f["file"]), int(f["offset"])) for f in files]
        metadata = MetadataLookup(
            [
                (int(m["offset"]), Path(m["path"]) if m.get("path") else None)
                for m in info.get("metadata_files", [])
            ]
        )
        source = Path(info.get("source", ""))
        shards = find_shards(source) if info.get("source") and source.is_dir() else None
        if (
            shards is not None and (source / "gallery.json").exists()
        ):  # a simulated gallery says what it holds
            info["included_stimuli"] = json.loads((source / "gallery.json").read_text()).get(
                "included_stimuli", 0
            )
        return cls(parts, metadata, info, folder.name, shards)

    @classmethod
    def _open_clip_retrieval(cls, folder: Path) -> LocalIndex:
        index = _read(folder / "image.index")
        if (folder / "metadata").is_dir():
            paths = sorted((folder / "metadata").glob("*.parquet"))
        else:
            paths = [p for p in [folder / "image_metadata.parquet"] if p.exists()]
        metadata = MetadataLookup.for_parquet_files(paths) if paths else None
        info = {"kind": _kind_of(index), "ntotal": int(index.ntotal), "layout": "clip-retrieval"}
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            info.update(nlist=int(ivf.nlist), nprobe=int(ivf.nprobe))
        return cls([(index, 0)], metadata, info, folder.name)

    # ------------------------------------------------------------------------------------------ searching
    @property
    def nprobe(self) -> int | None:
        ivf = faiss.try_extract_index_ivf(self._parts[0][0])
        return int(ivf.nprobe) if ivf is not None else None

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        for index, _ in self._parts:
            ivf = faiss.try_extract_index_ivf(index)
            if ivf is not None:
                ivf.nprobe = int(value)

    @property
    def ntotal(self) -> int:
        return sum(int(index.ntotal) for index, _ in self._parts)

    def search(self, queries: np.ndarray, k: int, with_metadata: bool = True) -> SearchResult:
        """Top-k of every query; with ``refine`` > 1 (and the source shards at hand) the approximate
        top-(k * refine) are re-scored exactly from the full-precision vectors."""
        queries = np.atleast_2d(queries)
        broken = ~np.isfinite(queries).all(axis=1)
        if broken.any():
            raise DataError(
                f"index {self.name}: {int(broken.sum())} of {len(queries)} queries contain NaN or infinite values "
                f"(rows {np.flatnonzero(broken)[:5].tolist()}); the predictions that make them are broken"
            )
        queries = normalise(queries)
        if queries.shape[1] != self.dim:
            raise DataError(f"index {self.name}: queries have width {queries.shape[1]}, the index {self.dim}")
        exact = self._info.get("kind") == "flat"
        depth = k * self.refine if self.refine > 1 and self._shards is not None and not exact else k
        parts = []
        for index, offset in self._parts:
            scores, ids = index.search(queries, depth)
            parts.append((scores, np.where(ids >= 0, ids + offset, -1)))
        ids, scores = merge_topk(parts, depth)
        if depth > k:
            rescored = np.einsum("nkd,nd->nk", self.vectors(ids), queries)
            ids, scores = merge_topk([(rescored, ids)], k)
        metadata = (
            [self._metadata.get(row) for row in ids]
            if with_metadata and self._metadata
            else [[{"id": int(i)} for i in row] for row in ids]
        )
        return SearchResult(ids, scores, metadata)

    def vectors(self, ids: np.ndarray) -> np.ndarray | None:
        """Full-precision normalised gallery vectors (from the source shards), or None if unavailable."""
        if self._shards is None:
            return None
        flat = np.asarray(ids, dtype=np.int64).ravel()
        out = np.zeros((len(flat), self.dim), dtype=np.float32)
        valid = flat >= 0
        if valid.any():
            out[valid] = normalise(sample_rows(self._shards, flat[valid]))
        return out.reshape(*np.shape(ids), self.dim)

    def describe(self) -> dict[str, Any]:
        keys = (
            "kind",
            "ntotal",
            "dim",
            "nlist",
            "pq_m",
            "nprobe",
            "layout",
            "recall",
            "vectors_per_second",
            "included_stimuli",
        )
        out = {key: self._info[key] for key in keys if key in self._info}
        out.update(name=self.name, files=len(self._parts), ntotal=self.ntotal, dim=self.dim)
        if self.nprobe is not None:
            out["nprobe"] = self.nprobe
        return out


def _read(path: Path) -> faiss.Index:
    """Memory-mapped read: IVF lists and flat codes stay on disk, paged in by the OS as searched."""
    if not path.exists():
        raise DataError(f"{path}: index file missing")
    # Flat codes map in place only through the whole-file map (MMAP_IFC); IVF lists only through MMAP.
    error: RuntimeError | None = None
    for flags in (faiss.IO_FLAG_MMAP_IFC, faiss.IO_FLAG_MMAP):
        try:
            return faiss.read_index(str(path), flags | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError as exc:
            error = exc
    raise DataError(f"{path}: not a readable FAISS index ({str(error).splitlines()[0]})") from error


def _kind_of(index: faiss.Index) -> str:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return "flat" if isinstance(index, faiss.IndexFlat) else type(index).__name__
    return "ivfpq" if isinstance(ivf, faiss.IndexIVFPQ) else type(ivf).__name__
