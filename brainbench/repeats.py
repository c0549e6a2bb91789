"""Repeated presentations of a stimulus: average voxels before the model, or predictions after it."""

from __future__ import annotations

import numpy as np


def group_mean(values: np.ndarray, stimulus_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the rows sharing a stimulus id; returns (means (n_unique, ...), sorted unique ids)."""
    ids = np.asarray(stimulus_ids)
    if len(ids) != len(values):
        raise ValueError(f"{len(values)} rows but {len(ids)} stimulus ids")
    unique, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    flat = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    sums = np.zeros((len(unique), flat.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, flat)
    means = (sums / counts[:, None]).astype(np.float32)
    return means.reshape((len(unique), *np.shape(values)[1:])), unique
