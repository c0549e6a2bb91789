"""A subject's simulated anatomy: a 3-D voxel grid, a brain mask, an nsdgeneral-like ROI and NSD's atlases.

The brain is a bumpy ellipsoid in a volume of NSD's 1.8 mm grid size (coarser at demo scales); cortex is its
outer shell. The nsdgeneral-like ROI is the posterior cap of that shell holding exactly the subject's voxel
count (NIfTI axes are RAS: Y runs posterior to anterior). A hierarchy coordinate (0 at the occipital pole,
1 at the ROI's anterior edge) orders the areas: ``prf-visualrois`` bands V1, V2, V3 (each split ventral /
dorsal at the band's median height) then hV4 (ventral); ``streams`` labels the same voxels early, then
midventral / midlateral / midparietal, then ventral / lateral / parietal by height. Voxels outside the brain
are -1, brain voxels with no label 0, as in NSD's files.

Arrays are kept in h5py's order (Z, Y, X) -- NSD's session files show the NIfTI volume's axes reversed --
and the ROI's voxels are numbered in C order over that array (X fastest), as NSD's masked betas are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brainbench.simulate.world import rng

PRF_VISUALROIS = {0: "Unknown", 1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d", 7: "hV4"}
STREAMS = {
    0: "Unknown", 1: "early", 2: "midventral", 3: "midlateral", 4: "midparietal",
    5: "ventral", 6: "lateral", 7: "parietal",
}
NSDGENERAL = {0: "Unknown", 1: "nsdgeneral"}
ATLASES = {"nsdgeneral": NSDGENERAL, "prf-visualrois": PRF_VISUALROIS, "streams": STREAMS}
#: NSD's func1pt8mm volume of subject 1 is 81 x 104 x 83 (X, Y, Z); the others' sizes are close to it.
NSD_VOLUME = {1: (81, 104, 83), 2: (82, 106, 84), 5: (79, 97, 78), 7: (80, 99, 77)}
NSD_VOXEL_MM = 1.8
#: Hierarchy bands (fractions of the ROI's voxels from the pole): V1, V2, V3, then hV4 (ventral half).
PRF_BANDS = (0.09, 0.18, 0.27, 0.36)
EARLY_END, MID_END = 0.30, 0.50  # streams: early below, mid- between, high-level above
VENTRAL_SHARE, PARIETAL_SHARE = 0.40, 0.25  # lowest / highest voxels of a mid or high band, by height


def gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) row-normalised Gaussian smoothing along one axis (edges renormalised, no wrap-around)."""
    index = np.arange(n)
    kernel = np.exp(-((index[:, None] - index[None, :]) ** 2) / (2.0 * max(sigma, 1e-3) ** 2))
    return (kernel / kernel.sum(axis=1, keepdims=True)).astype(np.float32)


def smooth_volume(volume: np.ndarray, sigma: float) -> np.ndarray:
    """Separable 3-D Gaussian smoothing of the last three axes (..., Z, Y, X), by matrix products."""
    z, y, x = volume.shape[-3:]
    out = volume @ gaussian_matrix(x, sigma).T
    out = np.swapaxes(np.swapaxes(out, -1, -2) @ gaussian_matrix(y, sigma).T, -1, -2)
    out = np.moveaxis(np.moveaxis(out, -3, -1) @ gaussian_matrix(z, sigma).T, -1, -3)
    return out


@dataclass
class Anatomy:
    """One subject's grid and labels; per-voxel arrays are in voxel (betas column) order."""

    shape_zyx: tuple[int, int, int]
    voxel_mm: float
    brain: np.ndarray  # (Z, Y, X) bool
    zyx: np.ndarray  # (V, 3) int: each ROI voxel's index in the (Z, Y, X) array, C order
    hierarchy: np.ndarray  # (V,) float32 in [0, 1): position from the occipital pole
    labels: dict[str, np.ndarray]  # atlas name -> (V,) int16

    @property
    def n_voxels(self) -> int:
        return len(self.zyx)

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        return self.shape_zyx[::-1]

    @property
    def ijk(self) -> np.ndarray:
        """(V, 3) each voxel's NIfTI index (i, j, k) = (X, Y, Z)."""
        return self.zyx[:, ::-1].copy()

    def volume(self, atlas: str) -> np.ndarray:
        """The atlas as NSD publishes it, in nibabel's (X, Y, Z) order: -1 outside the brain, 0 no label."""
        out = np.where(self.brain, 0, -1).astype(np.int16)
        out[tuple(self.zyx.T)] = self.labels[atlas]
        return out.T.copy()

    def bounding_box(self, margin: int) -> tuple[slice, slice, slice]:
        low = np.maximum(self.zyx.min(axis=0) - margin, 0)
        high = np.minimum(self.zyx.max(axis=0) + margin + 1, self.shape_zyx)
        return tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))

    def smooth_fields(self, gen: np.random.Generator, n_fields: int, sigma_mm: float, chunk: int = 16) -> np.ndarray:
        """(n_fields, V) float32: independent white-noise volumes smoothed in 3-D with a Gaussian of
        ``sigma_mm``, read at the ROI's voxels, each standardised over the voxels."""
        margin = int(np.ceil(2 * sigma_mm / self.voxel_mm)) + 1
        box = self.bounding_box(margin)
        local = self.zyx - np.array([s.start for s in box])
        shape = tuple(s.stop - s.start for s in box)
        out = np.empty((n_fields, self.n_voxels), np.float32)
        for start in range(0, n_fields, chunk):
            count = min(chunk, n_fields - start)
            white = gen.standard_normal((count, *shape), dtype=np.float32)
            smooth = smooth_volume(white, sigma_mm / self.voxel_mm)
            values = smooth[:, local[:, 0], local[:, 1], local[:, 2]]
            values -= values.mean(axis=1, keepdims=True)
            values /= values.std(axis=1, keepdims=True) + 1e-8
            out[start : start + count] = values
        return out


def make_anatomy(
    seed: int, subject: int, n_voxels: int, shape_xyz: tuple[int, int, int], voxel_mm: float, tag: str = "nsd"
) -> Anatomy:
    """A brain in a (X, Y, Z) grid whose posterior cortical cap holds exactly ``n_voxels`` ROI voxels."""
    gen = rng(seed, "anatomy", tag, subject)
    shape_zyx = tuple(int(s) for s in shape_xyz[::-1])
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape_zyx), indexing="ij")
    centre = [(n - 1) / 2 for n in shape_zyx]
    radii = [0.42 * n for n in shape_zyx]
    uz, uy, ux = ((c - m) / r for c, m, r in zip((z, y, x), centre, radii, strict=True))
    fold = 6.0 / voxel_mm  # a bumpy outline and ROI edge on the scale of ~1 cm
    bumps = smooth_volume(gen.standard_normal(shape_zyx, dtype=np.float32), fold)
    bumps /= bumps.std() + 1e-8
    radius = np.sqrt(ux**2 + uy**2 + uz**2) + 0.04 * bumps
    brain = radius < 1.0
    cortex = brain & (radius > 0.68)
    jitter = smooth_volume(gen.standard_normal(shape_zyx, dtype=np.float32), 1.5 * fold)
    jitter /= jitter.std() + 1e-8
    posterior = -uy + 0.12 * jitter
    candidates = np.flatnonzero(cortex)
    if len(candidates) < n_voxels:
        raise ValueError(f"a {shape_xyz} grid has {len(candidates)} cortical voxels, fewer than {n_voxels}")
    # np.argsort is stable, so ties keep C order and the choice is deterministic
    chosen = candidates[np.argsort(-posterior.ravel()[candidates], kind="stable")[:n_voxels]]
    roi = np.zeros(shape_zyx, bool)
    roi.ravel()[chosen] = True
    flat = np.flatnonzero(roi)  # C order over (Z, Y, X): NSD's voxel order
    zyx = np.stack(np.unravel_index(flat, shape_zyx), axis=1)
    score = -posterior.ravel()[flat]
    hierarchy = (np.argsort(np.argsort(score, kind="stable"), kind="stable") / len(flat)).astype(np.float32)
    height = uz.ravel()[flat]
    labels = _label(hierarchy, height)
    return Anatomy(shape_zyx, float(voxel_mm), brain, zyx, hierarchy, labels)


def _height_rank(height: np.ndarray, band: np.ndarray) -> np.ndarray:
    """Each band voxel's height quantile in [0, 1) (ties broken by voxel order), for an exact split."""
    return np.argsort(np.argsort(height[band], kind="stable"), kind="stable") / max(int(band.sum()), 1)


def _split_by_height(hierarchy, height, low, high, codes) -> np.ndarray:
    """Codes (ventral, lateral, parietal) for voxels of one hierarchy band, by their height quantile."""
    band = (hierarchy >= low) & (hierarchy < high)
    out = np.zeros(len(hierarchy), np.int16)
    if not band.any():
        return out
    rank = _height_rank(height, band)
    out[band] = np.where(rank < VENTRAL_SHARE, codes[0], np.where(rank >= 1 - PARIETAL_SHARE, codes[2], codes[1]))
    return out


def _label(hierarchy: np.ndarray, height: np.ndarray) -> dict[str, np.ndarray]:
    prf = np.zeros(len(hierarchy), np.int16)
    edges = (0.0, *PRF_BANDS)
    for area in range(3):  # V1, V2, V3: ventral below the band's median height, dorsal above
        band = (hierarchy >= edges[area]) & (hierarchy < edges[area + 1])
        prf[band] = np.where(_height_rank(height, band) < 0.5, 2 * area + 1, 2 * area + 2)
    band = (hierarchy >= edges[3]) & (hierarchy < edges[4])
    prf[band] = np.where(_height_rank(height, band) < 0.5, 7, 0)  # hV4: the band's ventral half
    streams = np.where(hierarchy < EARLY_END, 1, 0).astype(np.int16)
    streams += _split_by_height(hierarchy, height, EARLY_END, MID_END, (2, 3, 4))
    streams += _split_by_height(hierarchy, height, MID_END, 1.01, (5, 6, 7))
    return {"nsdgeneral": np.ones(len(hierarchy), np.int16), "prf-visualrois": prf, "streams": streams}
