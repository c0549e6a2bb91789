"""brainbench.rows.read_rows: the one row reader, on HDF5, numpy and RowIndexed, any order, repeats."""

import h5py
import numpy as np
import pytest

from brainbench.arrays import RowIndexed
from brainbench.rows import read_rows


@pytest.fixture
def data():
    return np.arange(5000 * 3, dtype=np.float32).reshape(5000, 3)


@pytest.mark.parametrize("rows", [[4999, 0, 17, 17, 2048, 3], [], [7], list(range(0, 5000, 997))])
def test_rows_in_the_order_asked_from_every_source(tmp_path, data, rows):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["x"] = data
    expected = data[np.asarray(rows, dtype=np.int64)]
    with h5py.File(tmp_path / "a.h5", "r") as f:
        got = read_rows(f["x"], rows, block_rows=256)
    assert got.dtype == np.float32 and got.shape == (len(rows), 3)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(read_rows(data, rows), expected)
    index = np.arange(5000)[::-1].copy()
    view = RowIndexed(data[::-1].copy(), index)  # row i of the view is data[i]
    np.testing.assert_array_equal(read_rows(view, rows), expected)
