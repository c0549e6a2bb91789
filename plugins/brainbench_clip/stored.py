"""Targets whose embeddings are stored with the dataset (the simulator's CLIP-like embeddings)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from brainbench.constants import EMBEDDING_POOLED, EMBEDDING_TOKENS
from brainbench.errors import DataError
from brainbench.interfaces import Dataset, Target
from brainbench.options import Option, Options


class StoredTarget(Target):
    """Reads ``dataset.stored_embeddings(EMBEDDING_POOLED | EMBEDDING_TOKENS)``; no model, no cache needed."""

    declared_options = Options(Option("normalize", bool, False, "L2-normalise each embedding"))
    name = "synthetic-clip"
    #: Pooled (768,) embeddings; :class:`StoredTokensTarget` reads the 257x768 tokens.
    tokens: bool = False

    def __init__(self, options: Any = None, *, tokens: bool | None = None, **values: Any) -> None:
        super().__init__(options, **values)
        self.tokens = type(self).tokens if tokens is None else bool(tokens)
        self.normalize = self.options.normalize
        self.name = "synthetic-clip-tokens" if self.tokens else "synthetic-clip"
        self.shape = (257, 768) if self.tokens else (768,)
        self.key = EMBEDDING_TOKENS if self.tokens else EMBEDDING_POOLED

    def check_ready(self, dataset: Dataset) -> None:
        """Before any run: the stored embeddings exist, have this target's shape and a sample of them is finite."""
        store = self._store(dataset)
        if store.shape[0] == 0:
            raise DataError(f"dataset {dataset.name!r}: stored {self.key!r} embeddings are empty")
        rows = np.unique(np.linspace(0, store.shape[0] - 1, min(store.shape[0], 64)).round().astype(np.int64))
        from brainbench.rows import read_rows

        sample = read_rows(store, rows)
        bad = ~np.isfinite(sample.reshape(len(rows), -1)).all(axis=1)
        if bad.any():
            raise DataError(f"dataset {dataset.name!r}: stored {self.key!r} embedding of stimulus "
                            f"{int(rows[np.flatnonzero(bad)[0]])} has NaN or infinite values")

    def _store(self, dataset: Dataset) -> Any:
        store = dataset.stored_embeddings(self.key)
        if store is None:
            raise DataError(
                f"target {self.name!r} reads embeddings stored with the data, but dataset {dataset.name!r} "
                f"has no {self.key!r}; use a model target such as clip-vit-l-14 instead"
            )
        if tuple(store.shape[1:]) != self.shape:
            raise DataError(
                f"dataset {dataset.name!r}: stored {self.key!r} has shape {tuple(store.shape)}, "
                f"expected (n_stimuli, {', '.join(map(str, self.shape))})"
            )
        return store

    def embed(self, dataset: Dataset, stimulus_ids: np.ndarray) -> np.ndarray:
        store = self._store(dataset)
        ids = np.asarray(stimulus_ids, dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= store.shape[0]):
            wrong = int(ids.min()) if ids.min() < 0 else int(ids.max())  # the id that is actually out of range
            raise DataError(
                f"dataset {dataset.name!r}: stimulus id {wrong} outside the {store.shape[0]} stored "
                f"{self.key!r} embeddings (ids 0..{store.shape[0] - 1})"
            )
        from brainbench.rows import read_rows

        out = read_rows(store, ids)
        if self.normalize:
            # Pooled: unit norm; tokens: divide by the CLS norm, as MindEye does.
            norm = np.linalg.norm(out if not self.tokens else out[:, :1], axis=-1, keepdims=True)
            out = out / np.maximum(norm, 1e-8)
        return out.astype(np.float32)

    def embed_text(self, texts: Sequence[str], dataset: Dataset | None = None) -> np.ndarray:
        stored = None if dataset is None else dataset.stored_text_embeddings(texts)
        if stored is None:
            where = "no dataset" if dataset is None else f"dataset {getattr(dataset, 'name', '?')!r}"
            raise DataError(f"target {self.name!r} has no text encoder and {where} stores no text embeddings")
        return np.asarray(stored, dtype=np.float32)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "target_normalize": self.normalize}


class StoredTokensTarget(StoredTarget):
    """The 257x768 token embeddings stored with the data."""

    name = "synthetic-clip-tokens"
    tokens = True

