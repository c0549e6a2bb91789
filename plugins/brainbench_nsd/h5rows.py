"""Lazy, row-indexable views of HDF5 datasets and of id-indexed stores, with NaN/inf checks on read."""

from __future__ import annotations

from typing import Any

import numpy as np

from brainbench.errors import DataError
from brainbench.rows import read_rows

__all__ = ["RowView", "check_finite", "read_rows"]  # read_rows lives in the core (brainbench.rows)


def check_finite(block: np.ndarray, file: str, key: str, rows: np.ndarray) -> None:
    bad = ~np.isfinite(block).reshape(len(block), -1).all(axis=1)
    if bad.any():
        first = int(np.asarray(rows)[np.flatnonzero(bad)[0]])
        raise DataError(
            f"{file}: dataset {key!r} has NaN or infinite values in {int(bad.sum())} of the rows read "
            f"(first at row {first}); betas must be finite"
        )


class RowView:
    """The rows ``rows`` of an HDF5 dataset, read on demand; every read is checked for NaN/inf.

    ``columns`` (a 2-D dataset's column indices, e.g. an ROI's voxels) narrows every read to those columns:
    whole rows are read (h5py's column selection is slow) and the columns taken in memory.
    """

    def __init__(
        self, dataset: Any, rows: np.ndarray, file: str, key: str, check: bool = True,
        columns: np.ndarray | None = None,
    ) -> None:
        self.dataset = dataset
        self.rows = np.asarray(rows, dtype=np.int64)
        self.file, self.key, self.check = file, key, check
        self.columns = None if columns is None else np.asarray(columns, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        if self.columns is not None:
            return (len(self.rows), len(self.columns))
        return (len(self.rows), *self.dataset.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, index: Any) -> np.ndarray:
        columns: Any = slice(None)
        if isinstance(index, tuple):
            index, columns = index[0], index[1:]
        scalar = np.isscalar(index)
        wanted = self.rows[index] if not scalar else self.rows[[int(index)]]
        block = read_rows(self.dataset, np.atleast_1d(wanted))
        if self.columns is not None:
            block = block[:, self.columns]
        if self.check:
            check_finite(block, self.file, self.key, np.atleast_1d(wanted))
        if columns != slice(None):
            block = block[(slice(None), *columns)]
        return block[0] if scalar else block


class IdIndexed:
    """Rows of a store looked up by stimulus id: ``view[ids]`` -> store rows ``row_of[ids]``."""

    def __init__(self, store: Any, row_of: dict[int, int], n_ids: int, file: str, key: str) -> None:
        self.store, self.row_of, self.n_ids = store, row_of, n_ids
        self.file, self.key = file, key

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n_ids, *self.store.shape[1:])

    def __getitem__(self, index: Any) -> np.ndarray:
        ids = np.arange(self.n_ids)[index] if isinstance(index, slice) else np.asarray(index)
        scalar = ids.ndim == 0
        ids = np.atleast_1d(ids)
        try:
            rows = np.array([self.row_of[int(i)] for i in ids], dtype=np.int64)
        except KeyError as err:
            raise DataError(f"{self.file}: no {self.key!r} row for stimulus id {err.args[0]}") from None
        block = read_rows(self.store, rows)
        return block[0] if scalar else block
