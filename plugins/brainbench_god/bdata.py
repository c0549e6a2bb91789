"""Reader of bdpy's BData HDF5 layout: a samples x columns matrix plus per-key column metadata.

``/dataset`` (legacy ``/dataSet``) holds voxels, labels and run numbers as columns; ``/metadata/key`` and
``/metadata/description`` (legacy ``/metaData``) name the keys, and ``/metadata/value`` (keys x columns) marks
with 1 the columns a key applies to (NaN elsewhere; some keys store per-column values such as voxel_x).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from brainbench.errors import DataError

DATASET_NAMES = ("dataset", "dataSet")
METADATA_NAMES = ("metadata", "metaData")


def _text(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()]


@dataclass
class BDataFile:
    """The metadata of one BData file, with column reads on demand (the matrix stays on disk)."""

    path: Path
    dataset_name: str
    keys: list[str]
    descriptions: list[str]
    values: np.ndarray  # (n_keys, n_columns) float
    shape: tuple[int, int]  # (n_samples, n_columns)

    @classmethod
    def open(cls, path: Path) -> BDataFile:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"BData file {path} does not exist")
        try:
            h5 = h5py.File(path, "r")
        except OSError as error:
            raise DataError(f"{path} is not a readable HDF5 file ({error})") from None
        with h5:
            dataset_name = next((name for name in DATASET_NAMES if name in h5), None)
            meta_name = next((name for name in METADATA_NAMES if name in h5), None)
            if dataset_name is None or meta_name is None:
                raise DataError(
                    f"{path} is not a BData file: it needs /dataset (or /dataSet), a 2-D samples x columns "
                    f"matrix, and /metadata (or /metaData); found {sorted(h5)}"
                )
            data = h5[dataset_name]
            if data.ndim != 2:
                raise DataError(f"{path}: /{dataset_name} has shape {data.shape}, expected (samples, columns)")
            meta = h5[meta_name]
            for part in ("key", "value"):
                if part not in meta:
                    raise DataError(f"{path}: /{meta_name}/{part} is missing")
            keys = _text(meta["key"][()])
            descriptions = _text(meta["description"][()]) if "description" in meta else [""] * len(keys)
            values = np.asarray(meta["value"][()], dtype=np.float64)
            shape = (int(data.shape[0]), int(data.shape[1]))
        if values.ndim == 1 and len(keys) == 1:
            values = values[None, :]
        if values.shape != (len(keys), shape[1]):
            raise DataError(
                f"{path}: /{meta_name}/value has shape {values.shape}, expected ({len(keys)} keys, {shape[1]} columns)"
            )
        return cls(path, dataset_name, keys, descriptions, values, shape)

    def has(self, key: str) -> bool:
        return key in self.keys

    def columns(self, key: str) -> np.ndarray:
        """Indices of the columns ``key`` marks with 1."""
        if key not in self.keys:
            raise DataError(f"{self.path}: metadata key {key!r} not found; keys: {', '.join(self.keys)}")
        return np.flatnonzero(self.values[self.keys.index(key)] == 1)

    def column(self, key: str) -> np.ndarray:
        """The single column of a per-sample label key such as ``DataType``, as float64 (n_samples,)."""
        cols = self.columns(key)
        if len(cols) != 1:
            raise DataError(f"{self.path}: key {key!r} should mark exactly 1 column, it marks {len(cols)}")
        with h5py.File(self.path, "r") as h5:
            return np.asarray(h5[self.dataset_name][:, int(cols[0])], dtype=np.float64)

    def read(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """The (rows x columns) block as float32; the whole matrix is read once, then sliced."""
        with h5py.File(self.path, "r") as h5:
            data = h5[self.dataset_name]
            matrix = data[()] if data.shape[0] * data.shape[1] <= 2**28 else None
            if matrix is None:  # very large file: read the rows only
                from brainbench.rows import read_rows

                return read_rows(data, rows)[:, columns]
        return np.asarray(matrix[np.ix_(rows, columns)], dtype=np.float32)

    def value_map(self, key: str) -> dict[float, str]:
        """bdpy's ``/vmap/<key>``: label value -> name (e.g. Label -> category name); empty if absent."""
        with h5py.File(self.path, "r") as h5:
            group = h5.get(f"vmap/{key}")
            if not isinstance(group, h5py.Group):
                return {}
            mapping = {}
            for name, item in group.items():
                try:
                    mapping[float(name)] = _text(item[()])[0]
                except ValueError:
                    continue  # a non-numeric value key: not a label map
            return mapping

    def roi_keys(self) -> list[str]:
        return [key for key in self.keys if key.startswith("ROI_")]
