"""On-disk cache of target embeddings: one HDF5 file per (dataset, model, weights hash, pooled|tokens).

Layout of a cache file:

    /stimulus_ids  (n,) int64, sorted: row i holds the embedding of stimulus_ids[i]
    /embeddings    (n, *shape) float16 (tokens) or float32 (pooled), contiguous, allocated at creation
    /done          (n,) bool: rows whose embedding is written
    attrs          format, dataset, model, weights, kind, shape, dtype, complete

The build writes rows chunk by chunk, flushes them, and only then marks them done and flushes again. The
datasets are allocated when the file is created, so later writes touch raw data only, never HDF5 metadata: a
build killed at any moment leaves a readable file whose done rows are valid, and a restart skips them.
Builds of one cache file take turns (``<name>.lock`` beside it), so two processes never write it at once.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np

from brainbench import paths
from brainbench.errors import DataError
from brainbench.interfaces import Dataset
from brainbench.rows import read_rows

FORMAT_VERSION = 1
READ_BLOCK_ROWS = 1024


class CacheableTarget(Protocol):
    """What the cache needs from a target (``OpenClipTarget`` provides it)."""

    name: str
    shape: tuple[int, ...]
    model_name: str
    batch_size: int

    @property
    def kind(self) -> str: ...

    @property
    def storage_dtype(self) -> str: ...

    def weights_id(self) -> str: ...

    def dataset_images(self, dataset: Dataset, stimulus_ids: np.ndarray) -> np.ndarray: ...

    def encode_images(self, images: np.ndarray) -> np.ndarray: ...


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def dataset_key(dataset: Dataset) -> str:
    """Folder name of a dataset's caches: its name, plus a hash of its root when it has one."""
    key = dataset.cache_key()
    if key is None:
        return _safe(dataset.name)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"{_safe(dataset.name)}-{digest}"


def default_root() -> Path:
    return paths.home() / "targets"


def cache_path(dataset: Dataset, target: CacheableTarget, root: str | Path | None = None) -> Path:
    base = Path(root) if root is not None else default_root()
    weights = _safe(target.weights_id())[:24]
    return base / dataset_key(dataset) / f"{_safe(target.model_name)}--{weights}--{target.kind}.h5"


def all_stimulus_ids(dataset: Dataset) -> np.ndarray:
    """Every stimulus any subject sees in any split, sorted and unique (``Dataset.all_stimulus_ids``)."""
    found = dataset.all_stimulus_ids()
    if len(found) == 0:
        raise DataError(f"dataset {dataset.name!r} has no subjects or splits, so no stimuli to embed")
    return np.asarray(found, dtype=np.int64)


def _expected_attrs(dataset: Dataset, target: CacheableTarget) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "dataset": dataset_key(dataset),
        "model": target.model_name,
        "weights": target.weights_id(),
        "kind": target.kind,
        "shape": "x".join(map(str, target.shape)),
        "dtype": target.storage_dtype,
    }


def _check_attrs(path: Path, handle: h5py.File, expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        stored = handle.attrs.get(key)
        stored = stored.decode() if isinstance(stored, bytes) else stored
        if stored is None or str(stored) != str(value):
            raise DataError(
                f"target cache {path}: attribute {key!r} is {stored!r}, expected {value!r}; "
                "rebuild it with `brainbench targets build ... --overwrite`"
            )
    for name in ("stimulus_ids", "embeddings", "done"):
        if name not in handle:
            raise DataError(f"target cache {path}: dataset /{name} is missing; rebuild with --overwrite")


def _open(path: Path, mode: str) -> h5py.File:
    try:
        # No HDF5 file lock on reads: a training job may read the done rows while a build is still running.
        return h5py.File(path, mode, locking=False) if mode == "r" else h5py.File(path, mode)
    except OSError as exc:
        raise DataError(
            f"target cache {path} cannot be opened ({exc}); delete it or rebuild with "
            "`brainbench targets build ... --overwrite`"
        ) from exc


def read_cached(
    dataset: Dataset, target: CacheableTarget, stimulus_ids: np.ndarray, root: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """(values (n, *shape) float32, missing (n,) bool) from the cache, or None when no cache file exists.

    Rows of stimuli the cache does not hold (or whose build was interrupted before them) are marked missing.
    """
    path = cache_path(dataset, target, root)
    if not path.is_file():
        return None
    ids = np.asarray(stimulus_ids, dtype=np.int64)
    with _open(path, "r") as handle:
        _check_attrs(path, handle, _expected_attrs(dataset, target))
        stored_ids = handle["stimulus_ids"][:]
        done = handle["done"][:]
        positions = np.searchsorted(stored_ids, ids)
        positions = np.minimum(positions, max(len(stored_ids) - 1, 0))
        held = (stored_ids[positions] == ids) if len(stored_ids) else np.zeros(len(ids), dtype=bool)
        held &= done[positions] if len(stored_ids) else held
        values = np.zeros((len(ids), *target.shape), dtype=np.float32)
        if held.any():
            values[held] = read_rows(handle["embeddings"], positions[held], READ_BLOCK_ROWS)
    return values, ~held


@dataclass
class BuildResult:
    path: Path
    n_stimuli: int
    n_encoded: int  # rows encoded by this call
    n_skipped: int  # rows already done by an earlier (possibly interrupted) build
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.n_encoded / self.seconds if self.seconds > 0 else float("nan")


def _create(path: Path, ids: np.ndarray, target: CacheableTarget, attrs: dict[str, Any]) -> None:
    """Write an empty cache under a temporary name, then rename: the final name always has full structure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.creating")  # this process's own
    with h5py.File(partial, "w") as handle:
        handle.create_dataset("stimulus_ids", data=ids)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)  # no metadata changes while rows are written
        handle.create_dataset("embeddings", shape=(len(ids), *target.shape), dtype=target.storage_dtype, dcpl=dcpl)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        handle.create_dataset("done", data=np.zeros(len(ids), dtype=bool), dcpl=dcpl)
        for key, value in attrs.items():
            handle.attrs[key] = value
        handle.attrs["complete"] = False
    partial.replace(path)


def _runs(rows: np.ndarray, size: int) -> list[np.ndarray]:
    """Chunks of at most ``size`` sorted rows, split where rows stop being consecutive."""
    chunks: list[np.ndarray] = []
    start = 0
    while start < len(rows):
        stop = min(start + size, len(rows))
        gaps = np.flatnonzero(np.diff(rows[start:stop]) != 1)
        if len(gaps):
            stop = start + int(gaps[0]) + 1
        chunks.append(rows[start:stop])
        start = stop
    return chunks


def build_cache(
    dataset: Dataset,
    target: CacheableTarget,
    *,
    root: str | Path | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    after_chunk: Callable[[int], None] | None = None,
) -> BuildResult:
    """Embed every stimulus of ``dataset`` once into the cache; resume where an earlier build stopped.

    ``progress(done_rows, total_rows)`` is called after every chunk; ``after_chunk(k)`` too (k counts the
    chunks written by this call), which tests use to interrupt a build.

    One build at a time per cache file: a second process waits for the first (a lock next to the file),
    then finds its rows done and encodes only what is left.
    """
    from brainbench.locks import hold

    path = cache_path(dataset, target, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with hold(path.with_suffix(".lock"), f"the target cache {path}", patience=5.0):
        return _build_cache(dataset, target, root, batch_size, overwrite, progress, after_chunk)


def _build_cache(
    dataset: Dataset,
    target: CacheableTarget,
    root: str | Path | None,
    batch_size: int | None,
    overwrite: bool,
    progress: Callable[[int, int], None] | None,
    after_chunk: Callable[[int], None] | None,
) -> BuildResult:
    began = time.perf_counter()
    ids = all_stimulus_ids(dataset)
    path = cache_path(dataset, target, root)
    attrs = _expected_attrs(dataset, target)
    size = int(batch_size or target.batch_size)
    if size < 1:
        raise DataError(f"batch size must be at least 1, got {size}")
    if overwrite and path.exists():
        path.unlink()
    first: tuple[np.ndarray, np.ndarray] | None = None
    if not path.exists():
        # Fetch the first chunk's images before making the file: a dataset without images leaves no file.
        first_rows = np.arange(min(size, len(ids)))
        first = (first_rows, target.dataset_images(dataset, ids[first_rows]))
        _create(path, ids, target, attrs)
    with _open(path, "r+") as handle:
        _check_attrs(path, handle, attrs)
        stored_ids = handle["stimulus_ids"][:]
        if not np.array_equal(stored_ids, ids):
            raise DataError(
                f"target cache {path} holds {len(stored_ids)} stimulus ids that differ from the "
                f"{len(ids)} of dataset {dataset.name!r}; rebuild it with --overwrite"
            )
        embeddings, done_mask = handle["embeddings"], handle["done"]
        done = done_mask[:]
        skipped = int(done.sum())
        todo = np.flatnonzero(~done)
        written = skipped
        if progress is not None:
            progress(written, len(ids))
        for count, rows in enumerate(_runs(todo, size), start=1):
            if first is not None and np.array_equal(first[0], rows):
                images, first = first[1], None
            else:
                images = target.dataset_images(dataset, ids[rows])
            values = target.encode_images(images)
            if values.shape != (len(rows), *target.shape):
                raise DataError(
                    f"target {target.name!r} returned embeddings of shape {values.shape} for {len(rows)} "
                    f"images; expected {(len(rows), *target.shape)} (cache {path})"
                )
            stored = values.astype(target.storage_dtype)
            if not np.isfinite(stored).all():  # e.g. a float16 overflow would otherwise be cached silently
                raise DataError(
                    f"target {target.name!r}: non-finite embeddings in {target.storage_dtype} for stimuli "
                    f"{ids[rows][:5].tolist()}...; not written to cache {path}"
                )
            block = slice(int(rows[0]), int(rows[-1]) + 1)
            embeddings[block] = stored
            handle.flush()  # rows reach the file before they are marked done
            done_mask[block] = True
            handle.flush()
            written += len(rows)
            if progress is not None:
                progress(written, len(ids))
            if after_chunk is not None:
                after_chunk(count)
        handle.attrs["complete"] = True
    return BuildResult(path, len(ids), len(ids) - skipped, skipped, time.perf_counter() - began)
