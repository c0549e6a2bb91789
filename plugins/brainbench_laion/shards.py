"""LAION's published embedding layout: ``img_emb/img_emb_XXXX.npy`` + ``metadata/metadata_XXXX.parquet``.

Both the nested layout (img_emb/, metadata/) and a flat folder holding the same file names are accepted.
A global row id is the shard's offset (rows in all earlier shards) plus the row inside the shard.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainbench.errors import DataError

EMB_PATTERN = re.compile(r"img_emb_(\d+)\.npy$")
META_COLUMNS = ("url", "caption")


@dataclass(frozen=True)
class EmbeddingShard:
    """One ``img_emb_XXXX.npy`` file and the metadata parquet that pairs with it (if any)."""

    number: int
    embeddings: Path
    metadata: Path | None
    rows: int
    dim: int
    offset: int  # global id of its first row

    def load(self) -> np.ndarray:
        """The shard memory-mapped (float16 or float32, (rows, dim)): nothing is read until sliced."""
        return np.load(self.embeddings, mmap_mode="r")

    def chunks(self, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(global id of the first row, float32 block) pieces of at most ``chunk_rows`` rows.

        Each block is a private, writable copy: a float32 shard would otherwise hand out its read-only map.
        """
        array = self.load()
        for start in range(0, self.rows, chunk_rows):
            block = np.array(array[start : start + chunk_rows], dtype=np.float32, copy=True)
            yield self.offset + start, block


def _npy_shape(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the .npy header alone (no data read)."""
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npy embedding shard ({exc})") from exc
    return tuple(array.shape), array.dtype


def find_shards(folder: Path) -> list[EmbeddingShard]:
    """Embedding shards of ``folder`` in number order, with their metadata files and global offsets."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (expected img_emb/img_emb_XXXX.npy shards)")
    emb_dir = folder / "img_emb" if (folder / "img_emb").is_dir() else folder
    meta_dir = folder / "metadata" if (folder / "metadata").is_dir() else folder
    found = sorted(
        (int(m.group(1)), p) for p in emb_dir.iterdir() if (m := EMB_PATTERN.search(p.name)) is not None
    )
    if not found:
        raise DataError(f"{emb_dir}: no img_emb_XXXX.npy files (LAION layout: img_emb/ and metadata/)")
    shards: list[EmbeddingShard] = []
    offset = 0
    dim: int | None = None
    for number, path in found:
        shape, dtype = _npy_shape(path)
        if len(shape) != 2 or dtype not in (np.float16, np.float32):
            raise DataError(f"{path}: expected a (n, d) float16/float32 array, got {shape} {dtype}")
        if dim is not None and shape[1] != dim:
            raise DataError(f"{path}: embedding width {shape[1]} differs from earlier shards' {dim}")
        dim = shape[1]
        meta = meta_dir / path.name.replace("img_emb_", "metadata_").replace(".npy", ".parquet")
        shards.append(
            EmbeddingShard(number, path, meta if meta.exists() else None, shape[0], shape[1], offset)
        )
        offset += shape[0]
    return shards


def check_metadata_rows(shards: list[EmbeddingShard]) -> None:
    """Each metadata parquet must have one row per embedding row: a short one would give queries no url."""
    import pyarrow.parquet as pq

    for shard in shards:
        if shard.metadata is None:
            continue
        rows = pq.ParquetFile(shard.metadata).metadata.num_rows
        if rows != shard.rows:
            raise DataError(
                f"{shard.metadata}: {rows} metadata rows for the {shard.rows} embeddings of {shard.embeddings}; "
                "expected one row per embedding (a truncated or mismatched file)"
            )


def unusable_rows(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of rows with NaN/infinite values and of all-zero rows (no direction to search by)."""
    finite = np.isfinite(block).all(axis=1)
    zero = finite & ~block.any(axis=1)
    return ~finite, zero


def total_rows(shards: list[EmbeddingShard]) -> int:
    return sum(s.rows for s in shards)


def sample_rows(shards: list[EmbeddingShard], rows: np.ndarray) -> np.ndarray:
    """Float32 vectors at the given global ids (any order), read shard by shard from the memory maps."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), shards[0].dim), dtype=np.float32)
    offsets = np.array([s.offset for s in shards])
    owner = np.searchsorted(offsets, rows, side="right") - 1
    for shard_index in np.unique(owner):
        shard = shards[int(shard_index)]
        picked = np.flatnonzero(owner == shard_index)
        local = rows[picked] - shard.offset
        order = np.argsort(local)
        out[picked[order]] = np.asarray(shard.load()[local[order]], dtype=np.float32)
    return out


class MetadataLookup:
    """Global row id -> metadata row (url, caption and any extra columns) over parquet shards.

    Parquet files are opened lazily and kept as Arrow tables (columnar, compact), the most recently used
    ``cache_size`` of them, so a lookup over LAION-5B's thousands of shards stays within a bounded memory.
    """

    def __init__(self, files: list[tuple[int, Path | None]], cache_size: int = 8) -> None:
        """``files``: (global offset, parquet path or None) per shard, in offset order."""
        self._offsets = np.array([offset for offset, _ in files], dtype=np.int64)
        self._paths = [path for _, path in files]
        self._tables: OrderedDict[int, Any] = OrderedDict()
        self._cache_size = cache_size

    @classmethod
    def for_shards(cls, shards: list[EmbeddingShard]) -> MetadataLookup:
        return cls([(s.offset, s.metadata) for s in shards])

    @classmethod
    def for_parquet_files(cls, paths: list[Path]) -> MetadataLookup:
        """Consecutive parquet files (clip-retrieval's ``metadata/``): offsets from their row counts."""
        import pyarrow.parquet as pq

        files: list[tuple[int, Path | None]] = []
        offset = 0
        for path in paths:
            files.append((offset, path))
            offset += pq.ParquetFile(path).metadata.num_rows
        return cls(files)

    def _table(self, shard_index: int) -> Any:
        path = self._paths[shard_index]
        if path is None:
            return None
        if shard_index in self._tables:
            self._tables.move_to_end(shard_index)
            return self._tables[shard_index]
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several error types for a bad file
            raise DataError(f"{path}: unreadable metadata parquet ({exc})") from exc
        missing = [c for c in META_COLUMNS if c not in table.column_names]
        if missing:
            raise DataError(f"{path}: metadata lacks column(s) {missing}; expected url and caption")
        self._tables[shard_index] = table
        if len(self._tables) > self._cache_size:
            self._tables.popitem(last=False)
        return table

    def get(self, ids: np.ndarray) -> list[dict]:
        """One dict per id; ids < 0 (faiss's "no result") and ids without metadata give ``{"id": id}``."""
        out: list[dict] = []
        for raw in np.asarray(ids, dtype=np.int64).ravel():
            item: dict = {"id": int(raw)}
            if raw >= 0 and len(self._offsets):
                shard_index = int(np.searchsorted(self._offsets, raw, side="right") - 1)
                table = self._table(shard_index)
                row = int(raw - self._offsets[shard_index])
                if table is not None and row < table.num_rows:
                    item.update(table.slice(row, 1).to_pylist()[0])
            out.append(item)
        return out
