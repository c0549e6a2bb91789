"""Array views that keep memory proportional to the distinct data, not to the number of rows."""

from __future__ import annotations

from typing import Any

import numpy as np


class RowIndexed:
    """``values[index]`` without building it: row i is ``values[index[i]]``.

    Training targets repeat per trial (NSD: ~2.8 trials per image); for 257x768 tokens the expanded float32
    array would be ~20 GB at NSD scale, so the runner hands the trainer this view instead. It supports what
    the trainer's staging and streaming read (``shape``, row indexing, slicing) and converts with
    ``np.asarray`` for encoders that need the whole array.
    """

    def __init__(self, values: np.ndarray, index: np.ndarray) -> None:
        self.values = values
        self.index = np.asarray(index, dtype=np.int64)
        if len(self.index) and (self.index.min() < 0 or self.index.max() >= len(values)):
            raise IndexError(f"row index out of range for {len(values)} values")
        # a view of every row in order (an array wrapped as is): reading it whole needs no copy
        self.identity = len(self.index) == len(values) and bool((self.index == np.arange(len(values))).all())

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.values.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):  # rows first, then any indexing within a row
            return self.values[self.index[key[0]]][(slice(None), *key[1:])]
        return self.values[self.index[key]]

    def row_range(self, start: int, stop: int) -> RowIndexed:
        """Rows [start, stop) as another view over the same distinct values (nothing expanded)."""
        return RowIndexed(self.values, self.index[start:stop])

    def astype(self, dtype: Any) -> np.ndarray:
        """The expanded array, as ``ndarray.astype`` would give it."""
        return self.values[self.index].astype(dtype)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        expanded = np.asarray(self.values) if self.identity else self.values[self.index]
        return expanded if dtype is None else expanded.astype(dtype, copy=False)
