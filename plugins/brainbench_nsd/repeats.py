"""Repeat handling: average trials of the same stimulus (voxels before the model, or predictions after)."""

from __future__ import annotations

import numpy as np


def average_by_stimulus(values: np.ndarray, stimulus_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the rows of ``values`` (n, ...) per stimulus; returns (averaged, sorted unique ids)."""
    values = np.asarray(values)
    stimulus_ids = np.asarray(stimulus_ids, dtype=np.int64)
    if len(values) != len(stimulus_ids):
        raise ValueError(f"{len(values)} rows but {len(stimulus_ids)} stimulus ids")
    order = np.argsort(stimulus_ids, kind="stable")
    unique_ids, starts, counts = np.unique(stimulus_ids[order], return_index=True, return_counts=True)
    sums = np.add.reduceat(values[order].astype(np.float64), starts, axis=0)
    counts = counts.reshape((-1,) + (1,) * (values.ndim - 1))
    return (sums / counts).astype(np.float32), unique_ids


def average_repeats(voxels: np.ndarray, stimulus_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average the voxels of repeated trials: (n_unique, V) and the sorted unique stimulus ids."""
    return average_by_stimulus(voxels, stimulus_ids)
