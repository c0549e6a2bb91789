"""NSD's noise ceiling from the test repeats: how much of each voxel's variance a perfect model could explain.

NSD's definition (Allen et al. 2022, and the NSD data manual), on betas z-scored per voxel per session:

- noise sd = sqrt(mean over images of the variance across that image's repeats), per voxel (the variance
  with ddof=1; images shown once carry no repeat variance and are left out of this mean);
- signal sd = sqrt(max(0, 1 - noise sd^2)): z-scored betas have unit total variance;
- ncsnr = signal sd / noise sd;
- for responses averaged over n trials, NC = 100 * ncsnr^2 / (ncsnr^2 + 1/n) percent. When the test images
  have different repeat counts, 1/n is the mean over the images of 1/n_image (the manual's
  (A/3 + B/2 + C/1) / (A + B + C)), since each image's average is scored.

Pure numpy, memory-bounded: voxels are processed in blocks. Reused by the simulator to check its noise level
(``noise_ceiling(betas, stimulus_ids)`` on its own test trials).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Voxels per block: images x this many float64 sums stay small for NSD's 15,724 voxels.
VOXEL_BLOCK = 4096


@dataclass(frozen=True)
class NoiseCeiling:
    ncsnr: np.ndarray  # (n_voxels,)
    noise_ceiling: np.ndarray  # (n_voxels,) percent, for the test set's averaging (see n_average)
    n_images: int  # images with two or more repeats (the noise estimate rests on them)
    n_average: float  # the effective number of trials averaged: 1 / mean over images of 1 / n_image

    @property
    def median_ncsnr(self) -> float:
        return float(np.median(self.ncsnr))

    @property
    def median(self) -> float:
        """Median over voxels of the noise ceiling, percent."""
        return float(np.median(self.noise_ceiling))


def ceiling_percent(ncsnr: np.ndarray, inverse_n: float) -> np.ndarray:
    """NC = 100 * ncsnr^2 / (ncsnr^2 + 1/n), with ``inverse_n`` = 1/n (or its mean over images)."""
    squared = np.asarray(ncsnr, dtype=np.float64) ** 2
    return 100.0 * squared / (squared + inverse_n)


def noise_ceiling(betas: Any, stimulus_ids: np.ndarray, n_average: float | None = None) -> NoiseCeiling:
    """ncsnr and noise ceiling per voxel from trials ``betas`` (n_trials, n_voxels) showing ``stimulus_ids``.

    ``betas`` must be z-scored per voxel per session (as NSD's and brainbench's prepared betas are).
    ``n_average``: trials averaged per image at test time; default: the test set's own repeat counts.
    """
    if not hasattr(betas, "shape"):
        betas = np.asarray(betas)  # an h5py dataset stays on disk: it is read a block of voxels at a time
    ids = np.asarray(stimulus_ids).reshape(-1)
    if len(betas.shape) != 2 or betas.shape[0] != len(ids):
        raise ValueError(f"betas must be (n_trials, n_voxels) with one stimulus id per trial; got betas "
                         f"{betas.shape} and {len(ids)} ids")
    order = np.argsort(ids, kind="stable")
    _, starts, counts = np.unique(ids[order], return_index=True, return_counts=True)
    repeated = counts >= 2
    if not repeated.any():
        raise ValueError("no image is shown twice or more: the noise ceiling needs repeated test trials")
    inverse_n = float(np.mean(1.0 / counts)) if n_average is None else 1.0 / float(n_average)
    noise_var = np.empty(betas.shape[1], dtype=np.float64)
    for start in range(0, betas.shape[1], VOXEL_BLOCK):
        block = np.asarray(betas[:, start : start + VOXEL_BLOCK], dtype=np.float64)[order]
        sums = np.add.reduceat(block, starts, axis=0)
        squares = np.add.reduceat(block * block, starts, axis=0)
        variance = (squares - sums**2 / counts[:, None]) / np.maximum(counts - 1, 1)[:, None]
        noise_var[start : start + VOXEL_BLOCK] = np.maximum(variance[repeated], 0.0).mean(axis=0)
    signal_sd = np.sqrt(np.maximum(0.0, 1.0 - noise_var))
    with np.errstate(divide="ignore"):
        ncsnr = np.where(noise_var > 0, signal_sd / np.sqrt(noise_var), np.inf)
    ncsnr = np.where(np.isinf(ncsnr) & (signal_sd == 0), 0.0, ncsnr)
    return NoiseCeiling(ncsnr, ceiling_percent(ncsnr, inverse_n), int(repeated.sum()), 1.0 / inverse_n)


def by_region(result: NoiseCeiling, voxel_labels: dict[str, Any] | None) -> dict[str, float]:
    """Median noise ceiling (percent) per labelled region: ``{"<atlas>.<label>": median}``.

    ``voxel_labels`` is a dataset's ``voxel_labels(subject)``: atlas -> object with ``values`` (n_voxels,) and
    ``labels`` {value: name}. Regions without voxels are left out.
    """
    medians: dict[str, float] = {}
    for atlas_name, atlas in (voxel_labels or {}).items():
        values = np.asarray(atlas.values)
        if len(values) != len(result.noise_ceiling):
            raise ValueError(f"atlas {atlas_name!r} labels {len(values)} voxels; the betas have "
                             f"{len(result.noise_ceiling)}")
        for value, name in sorted(atlas.labels.items()):
            inside = values == value
            if value > 0 and inside.any():
                medians[f"{atlas_name}.{name}"] = float(np.median(result.noise_ceiling[inside]))
    return medians


def ceiling_metrics(betas: Any, stimulus_ids: np.ndarray, voxel_labels: dict[str, Any] | None = None
                    ) -> dict[str, float]:
    """What a run logs about its data: ``data.ncsnr_median``, ``data.noise_ceiling_median`` (percent),
    ``data.noise_ceiling_n`` (trials averaged) and ``data.noise_ceiling.<atlas>.<label>`` per region; empty
    when no test image is repeated."""
    try:
        result = noise_ceiling(betas, stimulus_ids)
    except ValueError:
        return {}
    metrics = {"data.ncsnr_median": result.median_ncsnr, "data.noise_ceiling_median": result.median,
               "data.noise_ceiling_n": result.n_average}
    metrics.update({f"data.noise_ceiling.{region}": value for region, value in by_region(result, voxel_labels).items()})
    return metrics
