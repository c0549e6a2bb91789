"""Reading rows of an array-like in any order: the one row reader every dataset, cache and trainer uses.

HDF5 (h5py) wants increasing, unique indices and reads contiguous slices far faster than point selections;
numpy takes any fancy index; a :class:`brainbench.arrays.RowIndexed` view maps rows to its distinct values.
:func:`read_rows` accepts all three and returns float32 rows in the order asked, repeats included.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from brainbench.arrays import RowIndexed

#: Rows one HDF5 slice may span: rows closer together than this are read in one contiguous slice.
BLOCK_ROWS = 1024


def read_rows(source: Any, rows: Any, block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """``source[rows]`` as float32 for any order of ``rows`` (repeats allowed), shape (len(rows), *row shape)."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if isinstance(source, np.ndarray):
        return np.asarray(source[rows], dtype=np.float32)
    if isinstance(source, RowIndexed):  # rows of the view are rows of its distinct values
        return read_rows(source.values, source.index[rows], block_rows)
    if len(rows) == 0:
        return np.empty((0, *source.shape[1:]), dtype=np.float32)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    out = np.empty((len(rows), *source.shape[1:]), dtype=np.float32)
    start = 0
    while start < len(sorted_rows):
        lo = int(sorted_rows[start])
        stop = int(np.searchsorted(sorted_rows, lo + block_rows, side="left"))
        hi = int(sorted_rows[stop - 1])
        block = np.asarray(source[lo : hi + 1], dtype=np.float32)
        out[order[start:stop]] = block[sorted_rows[start:stop] - lo]
        start = stop
    return out
