"""Small real inputs for tests and demos: LAION-layout shards of given vectors and a categorised in-memory
dataset (what the laion tests and a plugin author exercising the task need, with no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainbench.constants import EMBEDDING_POOLED, EMBEDDING_TOKENS
from brainbench.interfaces import Dataset, Trials
from brainbench_laion.simulate import write_shard


def write_gallery(folder: Path, vectors: np.ndarray, shard_rows: int, flat: bool = False) -> None:
    """LAION-layout shards of ``vectors`` (url/caption name the global row); ``flat``: one folder."""
    for number, start in enumerate(range(0, len(vectors), shard_rows)):
        block = vectors[start : start + shard_rows]
        rows = range(start, start + len(block))
        write_shard(
            folder,
            number,
            block,
            {"url": [f"http://x/{r}.jpg" for r in rows], "caption": [f"row {r}" for r in rows]},
        )
    if flat:
        for sub in ("img_emb", "metadata"):
            for path in (folder / sub).iterdir():
                path.rename(folder / path.name)
            (folder / sub).rmdir()


def clustered(n: int, dim: int, n_clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    x = centres[rng.integers(0, n_clusters, n)] + 0.5 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class FakeDataset(Dataset):
    """Categorised CLIP-like embeddings: stimuli 0..n_train-1 train, the rest test."""

    name = "fake"

    def __init__(
        self,
        n_categories: int = 5,
        per_category: int = 24,
        n_test: int = 20,
        dim: int = 32,
        tokens: int = 0,
        with_images: bool = False,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.centres = rng.normal(size=(n_categories, dim)).astype(np.float32) * 2.0
        n = n_categories * per_category
        self.cats = np.arange(n) % n_categories
        self.embeddings = (self.centres[self.cats] + rng.normal(size=(n, dim))).astype(np.float32)
        self.n_train = n - n_test
        self.tokens = None
        if tokens:
            self.tokens = 3.0 * rng.normal(size=(n, tokens, dim)).astype(np.float32)  # CLS-sized norms
            self.tokens[:, 0] = self.embeddings
        self._images = rng.random((n, 3, 16, 16)).astype(np.float32) if with_images else None

    def subjects(self) -> list[int]:
        return [1]

    def n_voxels(self, subject: int) -> int:
        return 4

    def trials(self, subject: int, split: str) -> Trials:
        ids = np.arange(self.n_train) if split == "train" else np.arange(self.n_train, len(self.cats))
        return Trials(np.zeros((len(ids), 4), dtype=np.float32), ids)

    def stored_embeddings(self, key: str):
        return {EMBEDDING_POOLED: self.embeddings, EMBEDDING_TOKENS: self.tokens}.get(key)

    def categories(self, stimulus_ids: np.ndarray) -> np.ndarray:
        return self.cats[np.asarray(stimulus_ids)]

    def category_names(self) -> list[str]:
        return [f"thing{c}" for c in range(len(self.centres))]

    def images(self, stimulus_ids: np.ndarray) -> np.ndarray | None:
        return None if self._images is None else self._images[np.asarray(stimulus_ids)]

    def describe(self) -> dict:
        return {"name": self.name, "n": len(self.cats)}
