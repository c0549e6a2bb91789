"""A LAION-like gallery with no download: distractors drawn from the dataset's own semantic distribution.

Per category, the mean and the spread of the TRAINING stimuli's pooled CLIP embeddings are fitted;
distractors are drawn around those means (categories in proportion to the training set), normalised, and
written as LAION-layout shards (float16 ``img_emb`` + parquet ``metadata``). The test stimuli themselves
may be mixed in, so recall of the ground truth is measurable.

Within a category the distractors are structured like real CLIP galleries rather than one Gaussian crowd
(:class:`GalleryStructure`): clusters inside clusters (sub-topics of power-law sizes, then tight groups
of near-duplicates), every level's variation following a power-law spectrum over a shared rotated basis
(few dominant directions, as CLIP's spectrum), all around one common mean direction. The category's
fitted spread sets the total within-category variance. A flat crowd (the earlier sampler) makes every
neighbour of a query about equally far, which no compressed index can rank.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brainbench.constants import EMBEDDING_POOLED
from brainbench.errors import DataError
from brainbench.interfaces import Dataset

EMBEDDING_KEY = EMBEDDING_POOLED
SHARD_ROWS = 100_000
SAMPLE_CHUNK = 16_384


@dataclass(frozen=True)
class GalleryStructure:
    """How distractors spread within a category: sub-topic clusters, near-duplicate groups inside them, and
    the items themselves, sharing the category's variance as ``shares``; each level's variance falls off
    as rank^-``exponent`` over one random rotation (a power-law spectrum); cluster sizes follow a power law
    too (``size_exponent``). Near-duplicate groups vary in the top ``group_rank`` directions only."""

    subclusters: int = 64
    groups: int = 16  # near-duplicate groups per subcluster
    shares: tuple[float, float, float] = (0.45, 0.35, 0.20)
    exponent: float = 1.0
    size_exponent: float = 0.8
    group_rank: int = 128


@dataclass
class CategoryModel:
    """Per category in embedding space: a mean, a spread (total variance = sum of squares), a frequency."""

    means: np.ndarray  # (C, d) float32
    spreads: np.ndarray  # (C, d) float32 per-dimension standard deviations
    weights: np.ndarray  # (C,) sampling probabilities
    names: list[str]
    structure: GalleryStructure = field(default_factory=GalleryStructure)
    seed: int = 0  # the cluster layout's seed (the samples' own randomness comes from sample's rng)
    _layout: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @classmethod
    def random(
        cls, n_categories: int = 100, dim: int = 768, spread: float = 0.6, seed: int = 0
    ) -> CategoryModel:
        """Random category centres around a common mean direction: a stand-in when no dataset is at hand."""
        rng = np.random.default_rng(seed)
        common = rng.normal(size=dim)
        common /= np.linalg.norm(common)
        means = rng.normal(size=(n_categories, dim)) / np.sqrt(dim) + 0.9 * common  # pair cosines ~0.45
        means = means.astype(np.float32)
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        spreads = np.full((n_categories, dim), spread / np.sqrt(dim), dtype=np.float32)
        weights = np.full(n_categories, 1.0 / n_categories)
        return cls(means, spreads, weights, [f"category {c}" for c in range(n_categories)], seed=seed)

    def layout(self) -> dict[str, np.ndarray]:
        """The fixed cluster centres (drawn once from ``seed``): offsets of sub-topics and groups."""
        if self._layout is None:
            st, d = self.structure, self.dim
            gen = np.random.default_rng([self.seed, 7919])
            basis, _ = np.linalg.qr(gen.standard_normal((d, d)))  # a random rotation, shared by every level
            spectrum = (np.arange(1, d + 1) ** -st.exponent).astype(np.float64)
            spectrum /= spectrum.sum()  # unit total variance per level before scaling
            n_cat = len(self.weights)
            total = np.sqrt((self.spreads.astype(np.float64) ** 2).sum(axis=1))  # (C,) within-category std
            std = np.sqrt(spectrum)
            sub = gen.standard_normal((n_cat, st.subclusters, d)) * std
            sub *= (total * np.sqrt(st.shares[0]))[:, None, None]
            r = min(st.group_rank, d)
            top = np.sqrt(spectrum[:r] / spectrum[:r].sum())
            groups = gen.standard_normal((n_cat, st.subclusters, st.groups, r)) * top
            groups *= (total * np.sqrt(st.shares[1]))[:, None, None, None]

            def power_law(k: int) -> np.ndarray:
                w = gen.permutation(np.arange(1, k + 1) ** -st.size_exponent)
                return w / w.sum()

            self._layout = {
                "basis": basis.astype(np.float32),
                "item_std": (std * 1.0).astype(np.float32),
                "item_scale": (total * np.sqrt(st.shares[2])).astype(np.float32),
                "sub": (sub @ basis.T).astype(np.float32),  # (C, S, d) in embedding coordinates
                "groups": groups.astype(np.float32),  # (C, S, G, r) in the top-r rotated directions
                "sub_weights": np.stack([power_law(st.subclusters) for _ in range(n_cat)]),
                "group_weights": np.stack([power_law(st.groups) for _ in range(st.subclusters)]),
            }
        return self._layout

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(n, d) normalised float32 vectors and their (n,) category indices."""
        lay = self.layout()
        r = lay["groups"].shape[-1]
        cats = rng.choice(len(self.weights), size=n, p=self.weights)
        vectors = np.empty((n, self.dim), dtype=np.float32)
        for start in range(0, n, SAMPLE_CHUNK):  # chunked: temporaries stay a few MiB, not 3x the shard
            c = cats[start : start + SAMPLE_CHUNK]
            s = _draw_each(rng, lay["sub_weights"][c])
            g = _draw_each(rng, lay["group_weights"][s])
            coords = rng.standard_normal((len(c), self.dim), dtype=np.float32)  # item level, rotated basis
            coords *= lay["item_std"]
            coords *= lay["item_scale"][c][:, None]
            coords[:, :r] += lay["groups"][c, s, g]
            block = coords @ lay["basis"].T
            block += lay["sub"][c, s]
            block += self.means[c]
            block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
            vectors[start : start + len(c)] = block
        return vectors, cats


def _draw_each(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One index per row of ``probabilities`` (n, k), each drawn from its own row."""
    cumulative = np.cumsum(probabilities, axis=1)
    u = rng.random(len(probabilities))[:, None] * cumulative[:, -1:]
    return np.minimum((u > cumulative).sum(axis=1), probabilities.shape[1] - 1)


def take_rows(array: Any, ids: np.ndarray) -> np.ndarray:
    """Rows of an array-like in the order of ``ids`` (:func:`brainbench.rows.read_rows`)."""
    from brainbench.rows import read_rows

    return read_rows(array, ids)


def stored_pooled(dataset: Dataset, ids: np.ndarray) -> np.ndarray:
    stored = dataset.stored_embeddings(EMBEDDING_KEY)
    if stored is None:
        raise DataError(
            f"dataset {dataset.name!r} stores no {EMBEDDING_KEY!r} embeddings; a simulated gallery needs them"
        )
    if len(stored.shape) != 2:
        raise DataError(
            f"dataset {dataset.name!r}: {EMBEDDING_KEY!r} has shape {stored.shape}, expected (n, d)"
        )
    return take_rows(stored, ids)


def split_stimuli(dataset: Dataset, split: str, subject: int | None = None) -> np.ndarray:
    subject = dataset.subjects()[0] if subject is None else subject
    return dataset.trials(subject, split).unique_stimuli()


def fit_category_model(dataset: Dataset, subject: int | None = None) -> CategoryModel:
    """Category means, spreads and frequencies of the dataset's TRAINING stimuli (test stays unseen)."""
    ids = split_stimuli(dataset, "train", subject)
    vectors = stored_pooled(dataset, ids)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cats = dataset.categories(ids)
    names = dataset.category_names()
    if cats is None:  # no labels: one cluster for the whole training set
        cats = np.zeros(len(ids), dtype=np.int64)
        names = ["image"]
    cats = np.asarray(cats, dtype=np.int64)
    n_categories = int(cats.max()) + 1
    names = list(names) if names is not None else [f"category {c}" for c in range(n_categories)]
    overall_spread = vectors.std(axis=0)
    means = np.zeros((n_categories, vectors.shape[1]), dtype=np.float32)
    spreads = np.tile(overall_spread, (n_categories, 1)).astype(np.float32)
    counts = np.bincount(cats, minlength=n_categories).astype(np.float64)
    for c in np.flatnonzero(counts):
        members = vectors[cats == c]
        means[c] = members.mean(axis=0)
        if len(members) > 1:  # a single member has no spread of its own: keep the overall one
            spreads[c] = members.std(axis=0)
    return CategoryModel(means, spreads, counts / counts.sum(), names)


def write_shard(folder: Path, number: int, embeddings: np.ndarray, columns: dict[str, list]) -> None:
    """One LAION-layout shard: ``img_emb/img_emb_XXXX.npy`` and ``metadata/metadata_XXXX.parquet``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "img_emb").mkdir(parents=True, exist_ok=True)
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    np.save(folder / "img_emb" / f"img_emb_{number:04d}.npy", embeddings)
    pq.write_table(pa.table(columns), folder / "metadata" / f"metadata_{number:04d}.parquet")


def simulate_gallery(
    model: CategoryModel,
    size: int,
    out_dir: Path,
    *,
    included: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    source_name: str = "synthetic",
    shard_rows: int = SHARD_ROWS,
    seed: int = 0,
    dtype: type = np.float16,
    progress: bool = False,
) -> dict[str, Any]:
    """Write ``size`` distractors (plus the ``included`` (ids, embeddings, categories) stimuli, placed at
    random rows) as LAION-layout shards; returns the description written to ``gallery.json``."""
    from rich.progress import Progress

    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    n_included = 0 if included is None else len(included[0])
    total = size + n_included
    included_rows = (
        np.sort(rng.choice(total, size=n_included, replace=False)) if n_included else np.empty(0, int)
    )
    with Progress(disable=not progress) as bar:
        task = bar.add_task("simulating gallery", total=total)
        for number, start in enumerate(range(0, total, shard_rows)):
            stop = min(start + shard_rows, total)
            vectors, cats = model.sample(stop - start, rng)
            stim = np.full(stop - start, -1, dtype=np.int64)
            urls = [f"synthetic://{source_name}/distractor/{row}" for row in range(start, stop)]
            lo, hi = np.searchsorted(included_rows, [start, stop])
            if hi > lo and included is not None:
                local = included_rows[lo:hi] - start
                ids, emb, inc_cats = (part[lo:hi] for part in included)
                vectors[local] = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
                cats[local], stim[local] = inc_cats, ids
                for row, sid in zip(local, ids, strict=True):
                    urls[row] = f"synthetic://{source_name}/stimulus/{int(sid)}"
            columns = {
                "url": urls,
                "caption": [f"a photo of {model.names[c]}" for c in cats],
                "category": cats.astype(np.int64),
                "category_name": [model.names[c] for c in cats],
                "stimulus_id": stim,
            }
            write_shard(out_dir, number, vectors.astype(dtype), columns)
            bar.advance(task, stop - start)
    info = {
        "source": source_name,
        "distractors": size,
        "included_stimuli": n_included,
        "rows": total,
        "categories": len(model.names),
        "dim": model.dim,
        "seed": seed,
    }
    (out_dir / "gallery.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def simulate_for_dataset(
    dataset: Dataset,
    size: int,
    out_dir: Path,
    *,
    include_test: bool = True,
    subject: int | None = None,
    seed: int = 0,
    shard_rows: int = SHARD_ROWS,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit the category model on the dataset's training stimuli and write a gallery for it."""
    model = fit_category_model(dataset, subject)
    included = None
    if include_test:
        ids = split_stimuli(dataset, "test", subject)
        cats = dataset.categories(ids)
        cats = np.zeros(len(ids), dtype=np.int64) if cats is None else np.asarray(cats, dtype=np.int64)
        included = (ids, stored_pooled(dataset, ids), cats)
    return simulate_gallery(
        model,
        size,
        out_dir,
        included=included,
        source_name=dataset.name,
        shard_rows=shard_rows,
        seed=seed,
        progress=progress,
    )
