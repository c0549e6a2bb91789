"""The shared generative model behind the synthetic datasets: stimuli, CLIP-like targets, voxel responses.

Stimuli belong to semantic categories: each has a latent = category centroid + within-category variation,
and a "nuisance" latent the brain never sees (so decoding is good but never perfect).
CLIP-like targets are a fixed random map of both latents plus a common mean offset, L2-normalised, so
cosine similarities are positive-ish as with real CLIP image embeddings.
A subject's voxels respond to the latent through a linear and a rectified-squared (non-linear) part, both
mapped to voxels by weights that are smooth along the voxel axis; each voxel's signal gain is drawn from
a heavy-tailed, spatially smooth field (most voxels weak, a few strong), and trial noise is partly smooth.
Every random quantity comes from ``rng(seed, *tags)``, so everything is deterministic from the seed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

EMBED_DIM = 768
N_TOKENS = 257  # CLS + 16 x 16 patches, as CLIP ViT-L/14 at 224 px
LATENT_DIM = 64
NUISANCE_DIM = 48


def rng(seed: int, *tags: object) -> np.random.Generator:
    """An independent, reproducible stream for one component (tags name it: "clip", subject number...)."""
    words = [int(seed)] + [zlib.crc32(str(tag).encode()) for tag in tags]
    return np.random.default_rng(np.random.SeedSequence(words))


def smooth_columns(values: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth along the last (voxel) axis and restore unit variance per row."""
    out = gaussian_filter1d(values, sigma=sigma, axis=-1, mode="wrap")
    out /= out.std(axis=-1, keepdims=True) + 1e-8
    return out


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=axis, keepdims=True) + 1e-8)


# ------------------------------------------------------------------------------------------- stimuli


@dataclass
class Stimuli:
    """One row per image: its category, the latent the brain sees, and a latent only the target sees."""

    category: np.ndarray  # (n,) int64
    latent: np.ndarray  # (n, LATENT_DIM) float32
    nuisance: np.ndarray  # (n, NUISANCE_DIM) float32

    def __len__(self) -> int:
        return len(self.category)

    def take(self, rows: np.ndarray) -> Stimuli:
        return Stimuli(self.category[rows], self.latent[rows], self.nuisance[rows])


def category_centroids(seed: int, n_categories: int) -> np.ndarray:
    return rng(seed, "centroids").standard_normal((n_categories, LATENT_DIM)).astype(np.float32)


def make_stimuli(seed: int, category: np.ndarray, within: float = 0.9) -> Stimuli:
    """Latents for images of the given categories (centroid + ``within`` x Gaussian variation)."""
    category = np.asarray(category, dtype=np.int64)
    centroids = category_centroids(seed, int(category.max()) + 1)
    gen = rng(seed, "stimuli", len(category))
    variation = gen.standard_normal((len(category), LATENT_DIM)).astype(np.float32)
    latent = (centroids[category] + within * variation) / np.sqrt(1.0 + within**2)
    nuisance = gen.standard_normal((len(category), NUISANCE_DIM)).astype(np.float32)
    return Stimuli(category, latent.astype(np.float32), nuisance)


# ---------------------------------------------------------------------------------------- CLIP space


class ClipSpace:
    """A fixed random map from stimulus latents to CLIP-like pooled embeddings and 257x768 tokens."""

    def __init__(self, seed: int, mean_offset: float = 0.9, nuisance_weight: float = 0.8) -> None:
        gen = rng(seed, "clip")
        # The offset is sized against the spread of the embeddings: 0.9 gives random-pair cosines ~0.45.
        spread = np.sqrt(EMBED_DIM * (1.0 + nuisance_weight**2))
        self.mean = (l2_normalize(gen.standard_normal(EMBED_DIM)) * mean_offset * spread).astype(np.float32)
        self.latent_map = (gen.standard_normal((LATENT_DIM, EMBED_DIM)) / np.sqrt(LATENT_DIM)).astype(np.float32)
        self.nuisance_map = (
            gen.standard_normal((NUISANCE_DIM, EMBED_DIM)) * nuisance_weight / np.sqrt(NUISANCE_DIM)
        ).astype(np.float32)
        # Patch tokens: a shared part plus a low-rank, position-specific readout of the latent.
        self.rank = 16
        self.patch_reduce = (gen.standard_normal((LATENT_DIM, self.rank)) / np.sqrt(LATENT_DIM)).astype(np.float32)
        # (rank, 256 patches x 768) so one matmul reads out every patch.
        self.patch_basis = (
            gen.standard_normal((self.rank, (N_TOKENS - 1) * EMBED_DIM)) / np.sqrt(self.rank * EMBED_DIM)
        ).astype(np.float32)
        self.seed = seed

    def unnormalized(self, stimuli: Stimuli) -> np.ndarray:
        return self.mean + stimuli.latent @ self.latent_map + stimuli.nuisance @ self.nuisance_map

    def pooled(self, stimuli: Stimuli) -> np.ndarray:
        """(n, 768) float32, unit norm."""
        return l2_normalize(self.unnormalized(stimuli)).astype(np.float32)

    def tokens(self, stimuli: Stimuli, noise_key: int) -> np.ndarray:
        """(n, 257, 768) float32; token 0 (CLS) is the pooled embedding plus a little noise.

        ``noise_key`` seeds the token noise of this batch (the writer uses the batch's first image id).
        """
        pooled = self.pooled(stimuli)
        n = len(stimuli)
        gen = rng(self.seed, "token-noise", int(noise_key))
        out = gen.standard_normal((n, N_TOKENS, EMBED_DIM), dtype=np.float32)
        out *= np.float32(0.3 / np.sqrt(EMBED_DIM))
        out[:, 0] *= np.float32(0.05 / 0.3)
        out[:, 0] += pooled
        # Patches: half the pooled embedding plus a position-specific readout of the latent.
        spatial = (stimuli.latent @ self.patch_reduce) @ self.patch_basis
        out[:, 1:] += 0.5 * pooled[:, None, :] + spatial.reshape(n, N_TOKENS - 1, EMBED_DIM)
        return out

    def text(self, seed: int, centroids: np.ndarray, n_templates: int, gap: float = 2.0) -> np.ndarray:
        """Text-like class embeddings (n_classes, n_templates, 768) with a modality gap.

        They share each category's direction (its centroid through the same map) but sit around their own
        mean, shifted orthogonally away from the image mean by ``gap`` x its norm, so image-text cosines
        (~0.3) are lower than image-image ones (~0.45), as with CLIP.
        """
        gen = rng(seed, "text")
        shift = gen.standard_normal(EMBED_DIM)
        shift -= (shift @ self.mean) / (self.mean @ self.mean) * self.mean
        shift *= gap * np.linalg.norm(self.mean) / np.linalg.norm(shift)
        direction = centroids @ self.latent_map
        template_noise = 0.5 * gen.standard_normal((len(centroids), n_templates, EMBED_DIM))
        text = self.mean + shift + direction[:, None, :] + template_noise
        return l2_normalize(text).astype(np.float32)


def images_from_stimuli(seed: int, stimuli: Stimuli, size: int) -> np.ndarray:
    """Small RGB images (n, 3, size, size) in [0, 1]: category colour plus latent-driven 4x4 blobs."""
    gen = rng(seed, "images")
    colour = gen.standard_normal((int(stimuli.category.max()) + 1, 3)).astype(np.float32)
    layout = (gen.standard_normal((LATENT_DIM, 3 * 16)) / np.sqrt(LATENT_DIM)).astype(np.float32)
    coarse = (stimuli.latent @ layout).reshape(-1, 3, 4, 4) + colour[stimuli.category][:, :, None, None]
    scale = max(size // 4, 1)
    fine = np.kron(coarse, np.ones((1, 1, scale, scale), dtype=np.float32))[:, :, :size, :size]
    fine = gaussian_filter1d(gaussian_filter1d(fine, scale / 2, axis=2), scale / 2, axis=3)
    return (1.0 / (1.0 + np.exp(-fine))).astype(np.float32)


# ------------------------------------------------------------------------------------------- subjects


class SubjectBrain:
    """One subject's voxel responses: own voxel count, own smooth mapping, own gains (from the subject seed)."""

    def __init__(
        self,
        seed: int,
        subject: int,
        n_voxels: int,
        gain_median: float = 0.09,
        gain_spread: float = 1.15,
        smoothness: float = 4.0,
        nonlinear_units: int = 32,
    ) -> None:
        gen = rng(seed, "subject", subject)
        self.n_voxels = n_voxels
        self.smoothness = smoothness
        self.linear = smooth_columns(gen.standard_normal((LATENT_DIM, n_voxels)), smoothness).astype(np.float32)
        self.linear /= np.sqrt(LATENT_DIM)
        self.hidden = (gen.standard_normal((LATENT_DIM, nonlinear_units)) / np.sqrt(LATENT_DIM)).astype(np.float32)
        self.nonlinear = smooth_columns(gen.standard_normal((nonlinear_units, n_voxels)), smoothness)
        self.nonlinear = (self.nonlinear / np.sqrt(nonlinear_units)).astype(np.float32)
        # Heavy-tailed, spatially clustered gains: a smooth log-normal field.
        log_gain = smooth_columns(gen.standard_normal((1, n_voxels)), 3 * smoothness)[0]
        self.gain = (gain_median * np.exp(gain_spread * log_gain)).astype(np.float32)
        # Normalise each voxel's raw response to zero mean, unit variance under the latent prior.
        reference = gen.standard_normal((2048, LATENT_DIM)).astype(np.float32)
        raw = self._raw(reference)
        self.offset = raw.mean(axis=0)
        self.scale = raw.std(axis=0) + 1e-6
        self.seed, self.subject = seed, subject

    def _raw(self, latent: np.ndarray) -> np.ndarray:
        rectified = np.maximum(latent @ self.hidden, 0.0) ** 2
        return latent @ self.linear + rectified @ self.nonlinear

    def signal(self, latent: np.ndarray) -> np.ndarray:
        """Noise-free response (n, V), unit variance per voxel before the gain."""
        return ((self._raw(latent) - self.offset) / self.scale).astype(np.float32)

    def session(self, signal: np.ndarray, session: int, smooth_noise: float = 0.3) -> np.ndarray:
        """One session's betas (n_trials, V) from the trials' ``signal(latent)`` rows:
        gain x signal + noise + a session offset, then z-scored per voxel as NSD's betas are."""
        gen = rng(self.seed, "session", self.subject, session)
        n, v = signal.shape[0], self.n_voxels
        white = gen.standard_normal((n, v), dtype=np.float32)
        smooth = smooth_columns(gen.standard_normal((n, v), dtype=np.float32), self.smoothness)
        noise = np.sqrt(1 - smooth_noise) * white + np.sqrt(smooth_noise) * smooth
        offset = 2.0 * smooth_columns(gen.standard_normal((1, v), dtype=np.float32), 8 * self.smoothness)
        drift = 1.0 + 0.2 * gen.standard_normal(dtype=np.float32)  # per-session scanner gain
        betas = drift * (self.gain * signal + noise) + offset
        return zscore_rows(betas)


def zscore_rows(betas: np.ndarray) -> np.ndarray:
    """Z-score each voxel over the trials of one session, as NSD's betas are."""
    mean = betas.mean(axis=0, keepdims=True)
    std = betas.std(axis=0, keepdims=True) + 1e-6
    return ((betas - mean) / std).astype(np.float32)


def split_half_reliability(voxels: np.ndarray, stimulus_ids: np.ndarray) -> np.ndarray:
    """Per-voxel correlation between the first and second repeat of every stimulus seen at least twice."""
    stimulus_ids = np.asarray(stimulus_ids)
    first: dict[int, int] = {}
    pairs = []
    for row, stim in enumerate(stimulus_ids.tolist()):
        if stim in first:
            if first[stim] >= 0:
                pairs.append((first[stim], row))
                first[stim] = -1
        else:
            first[stim] = row
    if len(pairs) < 3:
        raise ValueError("split-half reliability needs at least 3 stimuli with two repeats")
    a_rows, b_rows = np.array(pairs).T
    a = voxels[a_rows] - voxels[a_rows].mean(axis=0)
    b = voxels[b_rows] - voxels[b_rows].mean(axis=0)
    return (a * b).sum(axis=0) / (np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0)) + 1e-12)
