"""NSD's noise-ceiling statistics, computed from betas z-scored per session.

noise sd = sqrt(mean over images of the variance across that image's repeats), signal sd =
sqrt(max(0, 1 - noise sd^2)), ncsnr = signal sd / noise sd, and for n trials averaged
NC = 100 * ncsnr^2 / (ncsnr^2 + 1/n) percent (Allen et al. 2022). Images seen once carry no noise estimate
and are skipped; the repeat variance is the unbiased one (ddof=1), as with NSD's three repeats.
"""

from __future__ import annotations

import numpy as np


def ncsnr(betas: np.ndarray, image_ids: np.ndarray, block: int = 2048) -> np.ndarray:
    """Per-voxel noise-ceiling SNR from trials (n_trials, V) and the image each trial showed.

    ``betas`` may be an h5py dataset: voxels are read ``block`` columns at a time (NSD-sized files stay
    out of memory in float64)."""
    image_ids = np.asarray(image_ids)
    _, inverse, counts = np.unique(image_ids, return_inverse=True, return_counts=True)
    if (counts >= 2).sum() < 3:
        raise ValueError("ncsnr needs at least 3 images with two or more repeats")
    repeated = np.flatnonzero(counts[inverse] >= 2)
    groups = inverse[repeated]
    k = np.bincount(groups, minlength=len(counts)).astype(np.float64)
    present = k >= 2
    n_voxels = betas.shape[1]
    out = np.empty(n_voxels)
    for start in range(0, n_voxels, block):
        columns = slice(start, min(start + block, n_voxels))
        rows = np.asarray(betas[:, columns], dtype=np.float64)[repeated]
        sums = np.zeros((len(counts), rows.shape[1]))
        squares = np.zeros_like(sums)
        np.add.at(sums, groups, rows)
        np.add.at(squares, groups, rows**2)
        means = sums[present] / k[present, None]
        variance = (squares[present] - k[present, None] * means**2) / (k[present, None] - 1)
        noise_var = variance.mean(axis=0)
        signal_var = np.maximum(0.0, 1.0 - noise_var)
        out[columns] = np.sqrt(signal_var / np.maximum(noise_var, 1e-12))
    return out


def noise_ceiling(snr: np.ndarray | float, n_trials: int) -> np.ndarray:
    """NSD's noise ceiling in percent for responses averaged over ``n_trials`` trials."""
    snr2 = np.asarray(snr, dtype=np.float64) ** 2
    return 100.0 * snr2 / (snr2 + 1.0 / n_trials)
