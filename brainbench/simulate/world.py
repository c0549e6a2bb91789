"""The simulated visual world: stimuli with latent content, a feature hierarchy, and a CLIP-like target.

Each image has a category, a semantic latent (category centroid + within-category variation), an appearance
latent (colour, texture, layout: weakly tied to the category) and a nuisance latent only the target sees.
Two fixed random pathways turn them into features, as a vision network does with pixels:

- appearance: ``low = tanh(A1 a + b)`` (low-level features, what early visual cortex is tuned to), then a
  second layer ``appearance = tanh(A2 low)``;
- semantic: ``mid_semantic = tanh(S1 s + b)``, then ``semantic = tanh(S2 mid_semantic)`` (high-level).

The CLIP-like embedding is a *deep nonlinear* function of the latents: a weighted sum of both pathways, of a
multiplicative binding of them (``(U semantic) * (V appearance)``: the conjunctions a CLIP embedding encodes,
such as "a red car" beyond "red" + "car") and of the nuisance, plus a common mean direction, L2-normalised.
Cortex codes the pathways' features in separate areas (see ``brain.py``), so a linear read-out of voxels
can add the parts but cannot form their products; a nonlinear one can. Every random quantity comes from
``rng(seed, *tags)``: everything is deterministic from the seed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

EMBED_DIM = 768
N_TOKENS = 257  # CLS + 16 x 16 patches, as CLIP ViT-L/14 at 224 px
SEMANTIC_DIM = 16
APPEARANCE_DIM = 16
NUISANCE_DIM = 16
WIDTH = 128  # units per pathway layer
BINDING_RANK = 32
#: Variance shares of the target's parts before normalisation (semantic, appearance, binding, nuisance).
TARGET_SHARES = {"semantic": 0.55, "appearance": 0.25, "binding": 1.0, "nuisance": 0.15}
REFERENCE_SAMPLES = 4096  # stimuli drawn from the prior to fix each layer's standardisation


def rng(seed: int, *tags: object) -> np.random.Generator:
    """An independent, reproducible stream for one component (tags name it: "clip", subject number...)."""
    words = [int(seed)] + [zlib.crc32(str(tag).encode()) for tag in tags]
    return np.random.default_rng(np.random.SeedSequence(words))


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=axis, keepdims=True) + 1e-8)


def _dense(gen: np.random.Generator, n_in: int, n_out: int) -> np.ndarray:
    return (gen.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)


# ------------------------------------------------------------------------------------------- stimuli


@dataclass
class Stimuli:
    """One row per image: its category and latent content."""

    category: np.ndarray  # (n,) int64
    semantic: np.ndarray  # (n, SEMANTIC_DIM) float32
    appearance: np.ndarray  # (n, APPEARANCE_DIM) float32
    nuisance: np.ndarray  # (n, NUISANCE_DIM) float32: seen by the target only

    def __len__(self) -> int:
        return len(self.category)

    def take(self, rows: np.ndarray) -> Stimuli:
        return Stimuli(self.category[rows], self.semantic[rows], self.appearance[rows], self.nuisance[rows])

    @property
    def latent(self) -> np.ndarray:
        """What the brain can see: semantic and appearance latents side by side."""
        return np.hstack([self.semantic, self.appearance])


def category_centroids(seed: int, n_categories: int) -> tuple[np.ndarray, np.ndarray]:
    """Per category: a semantic centroid and a (weaker) typical appearance."""
    gen = rng(seed, "centroids")
    semantic = gen.standard_normal((n_categories, SEMANTIC_DIM)).astype(np.float32)
    appearance = gen.standard_normal((n_categories, APPEARANCE_DIM)).astype(np.float32)
    return semantic, appearance


def _semantic(centroid: np.ndarray, variation: np.ndarray, within: float) -> np.ndarray:
    return ((centroid + within * variation) / np.sqrt(1.0 + within**2)).astype(np.float32)


def _appearance(typical: np.ndarray, variation: np.ndarray, tie: float = 0.5) -> np.ndarray:
    return ((tie * typical + variation) / np.sqrt(1.0 + tie**2)).astype(np.float32)


def make_stimuli(seed: int, category: np.ndarray, within: float = 0.9, tag: object = "") -> Stimuli:
    """Latents for images of the given categories (``tag`` separates independent draws of one seed)."""
    category = np.asarray(category, dtype=np.int64)
    semantic_c, appearance_c = category_centroids(seed, int(category.max()) + 1)
    gen = rng(seed, "stimuli", len(category), tag)
    n = len(category)
    semantic = _semantic(semantic_c[category], gen.standard_normal((n, SEMANTIC_DIM)), within)
    appearance = _appearance(appearance_c[category], gen.standard_normal((n, APPEARANCE_DIM)))
    nuisance = gen.standard_normal((n, NUISANCE_DIM)).astype(np.float32)
    return Stimuli(category, semantic, appearance, nuisance)


def prior_stimuli(seed: int, n: int, n_categories: int = 80, tag: object = "prior") -> Stimuli:
    """``n`` fresh stimuli of random categories (reference statistics, oracle ceilings)."""
    category = rng(seed, "prior-categories", n, tag).integers(0, n_categories, size=n)
    category[0] = n_categories - 1  # every category exists, so the centroid table has its full size
    return make_stimuli(seed, category, tag=tag)


# -------------------------------------------------------------------------------------- the pathways


class _Standardise:
    """A fixed affine map to zero mean, unit variance per unit, fitted once on reference activity."""

    def __init__(self, reference: np.ndarray) -> None:
        self.mean = reference.mean(axis=0).astype(np.float32)
        self.scale = (reference.std(axis=0) + 1e-6).astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale).astype(np.float32)


@dataclass
class Features:
    """Feature maps of a batch of stimuli, each standardised: (n, WIDTH) float32."""

    low: np.ndarray  # appearance layer 1: low-level features
    appearance: np.ndarray  # appearance layer 2
    mid_semantic: np.ndarray  # semantic layer 1
    semantic: np.ndarray  # semantic layer 2: high-level features


class VisualWorld:
    """The fixed random network shared by every subject's cortex and by the CLIP-like target."""

    def __init__(self, seed: int) -> None:
        gen = rng(seed, "world")
        self.a1, self.a2 = _dense(gen, APPEARANCE_DIM, WIDTH), _dense(gen, WIDTH, WIDTH)
        self.s1, self.s2 = _dense(gen, SEMANTIC_DIM, WIDTH), _dense(gen, WIDTH, WIDTH)
        self.a_bias = (0.3 * gen.standard_normal(WIDTH)).astype(np.float32)
        self.s_bias = (0.3 * gen.standard_normal(WIDTH)).astype(np.float32)
        self.bind_s, self.bind_a = _dense(gen, WIDTH, BINDING_RANK), _dense(gen, WIDTH, BINDING_RANK)
        self.out = {
            "semantic": _dense(gen, WIDTH, EMBED_DIM),
            "appearance": _dense(gen, WIDTH, EMBED_DIM),
            "binding": _dense(gen, BINDING_RANK, EMBED_DIM),
            "nuisance": _dense(gen, NUISANCE_DIM, EMBED_DIM),
        }
        self.seed = seed
        self._norms: dict[str, _Standardise] = {}
        reference = prior_stimuli(seed, REFERENCE_SAMPLES, tag="world-reference")
        self._fit_norms(reference)

    # Each layer is standardised with statistics of reference stimuli, so a stimulus's features never
    # depend on the other stimuli of its batch.
    def _layer(self, name: str, pre: np.ndarray) -> np.ndarray:
        activity = np.tanh(pre)
        if name not in self._norms:
            self._norms[name] = _Standardise(activity)
        return self._norms[name](activity)

    def _fit_norms(self, reference: Stimuli) -> None:
        features = self.features(reference)
        self._binding(features)
        self.raw_target(reference)

    def features(self, stimuli: Stimuli) -> Features:
        low = self._layer("low", 1.5 * stimuli.appearance @ self.a1 + self.a_bias)
        appearance = self._layer("appearance", low @ self.a2)
        mid_semantic = self._layer("mid_semantic", 1.5 * stimuli.semantic @ self.s1 + self.s_bias)
        semantic = self._layer("semantic", mid_semantic @ self.s2)
        return Features(low, appearance, mid_semantic, semantic)

    def _binding(self, features: Features) -> np.ndarray:
        product = (features.semantic @ self.bind_s) * (features.appearance @ self.bind_a)
        if "binding" not in self._norms:
            self._norms["binding"] = _Standardise(product)
        return self._norms["binding"](product)

    def raw_target(self, stimuli: Stimuli, features: Features | None = None) -> np.ndarray:
        """The target before its mean offset and normalisation: (n, 768), E|row|^2 = 768 under the prior."""
        features = features if features is not None else self.features(stimuli)
        parts = {
            "semantic": features.semantic,
            "appearance": features.appearance,
            "binding": self._binding(features),
            "nuisance": stimuli.nuisance,
        }
        total = sum(TARGET_SHARES.values())
        raw = sum(np.sqrt(TARGET_SHARES[k] / total) * (parts[k] @ self.out[k]) for k in parts)
        if "target" not in self._norms:  # one scale for all dimensions keeps the embedding's geometry
            norm = _Standardise(raw)
            norm.mean[:] = 0.0
            norm.scale[:] = np.sqrt((raw**2).sum(axis=1).mean() / EMBED_DIM)
            self._norms["target"] = norm
        return self._norms["target"](raw)


# ---------------------------------------------------------------------------------------- CLIP space


class ClipSpace:
    """CLIP-like pooled embeddings, 257x768 tokens and class-name text embeddings of the visual world."""

    def __init__(self, seed: int, mean_offset: float = 0.9) -> None:
        self.world = VisualWorld(seed)
        gen = rng(seed, "clip")
        # The offset is sized against the spread of the embeddings: 0.9 gives random-pair cosines ~0.45.
        self.mean = (l2_normalize(gen.standard_normal(EMBED_DIM)) * mean_offset * np.sqrt(EMBED_DIM)).astype(
            np.float32
        )
        # Patch tokens: the pooled embedding plus a low-rank, position-specific readout of low-level features.
        self.rank = 16
        self.patch_reduce = _dense(gen, WIDTH, self.rank)
        self.patch_basis = (
            gen.standard_normal((self.rank, (N_TOKENS - 1) * EMBED_DIM)) / np.sqrt(self.rank * EMBED_DIM)
        ).astype(np.float32)
        self.seed = seed

    def pooled(self, stimuli: Stimuli) -> np.ndarray:
        """(n, 768) float32, unit norm."""
        return l2_normalize(self.mean + self.world.raw_target(stimuli)).astype(np.float32)

    def tokens(self, stimuli: Stimuli, noise_key: int) -> np.ndarray:
        """(n, 257, 768) float32; token 0 (CLS) is the pooled embedding plus a little noise.

        ``noise_key`` seeds the token noise of this batch (the writer uses the batch's first image id).
        """
        features = self.world.features(stimuli)
        pooled = l2_normalize(self.mean + self.world.raw_target(stimuli, features)).astype(np.float32)
        n = len(stimuli)
        gen = rng(self.seed, "token-noise", int(noise_key))
        out = gen.standard_normal((n, N_TOKENS, EMBED_DIM), dtype=np.float32)
        out *= np.float32(0.3 / np.sqrt(EMBED_DIM))
        out[:, 0] *= np.float32(0.05 / 0.3)
        out[:, 0] += pooled
        spatial = (features.low @ self.patch_reduce) @ self.patch_basis
        out[:, 1:] += 0.5 * pooled[:, None, :] + spatial.reshape(n, N_TOKENS - 1, EMBED_DIM)
        return out

    def text(self, n_categories: int, n_templates: int, gap: float = 2.0) -> np.ndarray:
        """Text-like class embeddings (n_classes, n_templates, 768) with a modality gap.

        A class's text is the target of its prototype (semantic centroid, typical appearance, no nuisance)
        around its own mean, shifted orthogonally away from the image mean by ``gap`` x its norm, so
        image-text cosines are lower than image-image ones, as with CLIP.
        """
        gen = rng(self.seed, "text")
        shift = gen.standard_normal(EMBED_DIM)
        shift -= (shift @ self.mean) / (self.mean @ self.mean) * self.mean
        shift *= gap * np.linalg.norm(self.mean) / np.linalg.norm(shift)
        semantic_c, appearance_c = category_centroids(self.seed, n_categories)
        zeros = np.zeros((n_categories, 1), np.float32)
        prototypes = Stimuli(
            np.arange(n_categories),
            _semantic(semantic_c, zeros, 0.9),
            _appearance(appearance_c, zeros),
            np.zeros((n_categories, NUISANCE_DIM), np.float32),
        )
        direction = self.world.raw_target(prototypes)
        template_noise = 0.5 * gen.standard_normal((n_categories, n_templates, EMBED_DIM))
        text = self.mean + shift + direction[:, None, :] + template_noise
        return l2_normalize(text).astype(np.float32)


def images_from_stimuli(seed: int, stimuli: Stimuli, size: int) -> np.ndarray:
    """Small RGB images (n, 3, size, size) in [0, 1]: a category colour plus appearance-driven 4x4 blobs."""
    from brainbench.simulate.anatomy import gaussian_matrix

    gen = rng(seed, "images")
    colour = gen.standard_normal((int(stimuli.category.max()) + 1, 3)).astype(np.float32)
    layout = _dense(gen, SEMANTIC_DIM + APPEARANCE_DIM, 3 * 16)
    coarse = (stimuli.latent @ layout).reshape(-1, 3, 4, 4) + colour[stimuli.category][:, :, None, None]
    scale = max(size // 4, 1)
    fine = np.kron(coarse, np.ones((1, 1, scale, scale), dtype=np.float32))[:, :, :size, :size]
    blur = gaussian_matrix(fine.shape[-1], scale / 2)
    fine = blur @ fine @ blur.T
    return (1.0 / (1.0 + np.exp(-fine))).astype(np.float32)
