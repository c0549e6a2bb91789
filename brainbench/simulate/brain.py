"""A subject's voxel responses: nonlinear tuning to the world's features, laid out in 3-D, with NSD-like noise.

Signal. Three populations of feature-tuned units ("channels") read the visual world at three levels: low
(the appearance pathway's first layer: early visual areas), mid (the appearance pathway's second layer and
the semantic pathway's first: V4 and the mid streams) and high (semantic features, a little appearance:
ventral, lateral and parietal streams). Each channel's tuning is nonlinear: most are rectifying
(softplus of a feature projection, like contrast responses), a quarter are bell-shaped (a preferred
value). A voxel pools the channels of each level with weights that are smooth 3-D random fields (nearby
voxels sample similar sub-populations), mixed across levels by its place in the hierarchy (anatomy's
coordinate: early areas mostly low-level, higher areas mostly high-level). Each voxel's noise-free
response is standardised under the stimulus prior.

Noise and calibration. ``gain`` is the voxel's signal-to-noise ratio: a smooth log-normal field, higher in
early areas and lower in parietal ones, scaled so its median over the ROI is ``ncsnr_median`` (NSD's
nsdgeneral median, ~0.26). A session's betas are ``drift * gain * signal + noise + offset``, z-scored per
voxel within the session as NSD's are: noise is part white, part spatially smooth in 3-D (a fresh set of
smooth fields each session), ``drift`` a smooth per-session change of response amplitude and ``offset`` a
smooth per-session baseline. With z-scored betas, NSD's ncsnr of a voxel is close to its ``gain``.
"""

from __future__ import annotations

import numpy as np

from brainbench.simulate.anatomy import Anatomy
from brainbench.simulate.world import Features, Stimuli, VisualWorld, prior_stimuli, rng

LEVELS = ("low", "mid", "high")
LEVEL_CENTRES = (0.12, 0.42, 0.80)  # hierarchy position where each level dominates
LEVEL_WIDTH = 0.15
CHANNELS = 48  # tuned sub-populations per level
TUNING_SIGMA_MM = 3.0  # spatial scale of the channel mixture (columns, patches)
GAIN_SIGMA_MM = 5.0  # spatial scale of the signal-to-noise field
NOISE_SIGMA_MM = 2.5  # spatial scale of correlated noise
NOISE_FIELDS = 64  # smooth noise fields drawn per session
SMOOTH_NOISE_SHARE = 0.4
NCSNR_MEDIAN = 0.26  # NSD: median ncsnr in nsdgeneral
NCSNR_SPREAD = 0.55  # log-normal spread: a long right tail
PARIETAL_GAIN = 0.6  # parietal streams respond less to image content


def level_inputs(features: Features) -> dict[str, np.ndarray]:
    """What each level's channels are tuned to."""
    return {
        "low": features.low,
        "mid": np.hstack([features.appearance, features.mid_semantic]),
        "high": np.hstack([features.semantic, 0.3 * features.appearance]),
    }


def tuning(projection: np.ndarray) -> np.ndarray:
    """Nonlinear tuning: rectifying (softplus) for three quarters of the channels, bell-shaped for the rest."""
    split = projection.shape[1] * 3 // 4
    rectified = np.logaddexp(0.0, 2.0 * projection[:, :split]) / 2.0
    bell = np.exp(-(projection[:, split:] ** 2))
    return np.hstack([rectified, bell]).astype(np.float32)


def level_weights(hierarchy: np.ndarray) -> np.ndarray:
    """(3, V): each voxel's mix of low, mid and high levels, summing to 1."""
    weights = np.stack([np.exp(-((hierarchy - c) ** 2) / (2 * LEVEL_WIDTH**2)) for c in LEVEL_CENTRES])
    return (weights / weights.sum(axis=0, keepdims=True)).astype(np.float32)


class SubjectBrain:
    """One subject's voxels: own anatomy, own tuning and mixing, own gains (from the subject's seed)."""

    def __init__(
        self,
        seed: int,
        subject: int,
        anatomy: Anatomy,
        world: VisualWorld,
        ncsnr_median: float = NCSNR_MEDIAN,
        tag: str = "nsd",
    ) -> None:
        gen = rng(seed, "subject", tag, subject)
        self.anatomy, self.world = anatomy, world
        self.n_voxels = anatomy.n_voxels
        self.seed, self.subject, self.tag = seed, subject, tag
        reference = level_inputs(world.features(prior_stimuli(world.seed, 2048, tag="brain-reference")))
        self.projection, self.bias, self.mixing, self.channel_norm = {}, {}, {}, {}
        for level in LEVELS:
            width = reference[level].shape[1]
            self.projection[level] = (gen.standard_normal((width, CHANNELS)) * 1.2 / np.sqrt(width)).astype(np.float32)
            self.bias[level] = (0.5 * gen.standard_normal(CHANNELS)).astype(np.float32)
            self.mixing[level] = anatomy.smooth_fields(gen, CHANNELS, TUNING_SIGMA_MM) / np.sqrt(CHANNELS)
            channels = self._channels(level, reference[level], normalise=False)
            self.channel_norm[level] = (channels.mean(axis=0), channels.std(axis=0) + 1e-6)
        self.level_weights = level_weights(anatomy.hierarchy)
        raw = self._raw(reference)
        self.offset, self.scale = raw.mean(axis=0), raw.std(axis=0) + 1e-6
        self.gain = self._gains(gen, ncsnr_median)

    def _channels(self, level: str, inputs: np.ndarray, normalise: bool = True) -> np.ndarray:
        out = tuning(inputs @ self.projection[level] + self.bias[level])
        if normalise:
            mean, std = self.channel_norm[level]
            out = (out - mean) / std
        return out

    def _raw(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        total = np.zeros((len(inputs["low"]), self.n_voxels), np.float32)
        for i, level in enumerate(LEVELS):
            total += self.level_weights[i] * (self._channels(level, inputs[level]) @ self.mixing[level])
        return total

    def _gains(self, gen: np.random.Generator, median: float) -> np.ndarray:
        field = self.anatomy.smooth_fields(gen, 1, GAIN_SIGMA_MM)[0]
        log_gain = 0.8 * (0.5 - self.anatomy.hierarchy) + NCSNR_SPREAD * field
        parietal = np.isin(self.anatomy.labels["streams"], (4, 7))
        gain = np.exp(log_gain) * np.where(parietal, PARIETAL_GAIN, 1.0)
        return (gain * median / np.median(gain)).astype(np.float32)

    def signal(self, stimuli: Stimuli) -> np.ndarray:
        """Noise-free responses (n, V), unit variance per voxel under the stimulus prior, before the gain."""
        inputs = level_inputs(self.world.features(stimuli))
        return ((self._raw(inputs) - self.offset) / self.scale).astype(np.float32)

    def session(self, signal: np.ndarray, session: int) -> np.ndarray:
        """One session's betas (n_trials, V) from its trials' ``signal`` rows, z-scored per voxel."""
        gen = rng(self.seed, "session", self.tag, self.subject, session)
        n = signal.shape[0]
        fields = self.anatomy.smooth_fields(gen, NOISE_FIELDS + 2, NOISE_SIGMA_MM)
        weights = gen.standard_normal((n, NOISE_FIELDS), dtype=np.float32) / np.float32(np.sqrt(NOISE_FIELDS))
        noise = np.sqrt(1 - SMOOTH_NOISE_SHARE) * gen.standard_normal((n, self.n_voxels), dtype=np.float32)
        noise += np.float32(np.sqrt(SMOOTH_NOISE_SHARE)) * (weights @ fields[:NOISE_FIELDS])
        drift = 1.0 + 0.15 * fields[NOISE_FIELDS]
        offset = 2.0 * fields[NOISE_FIELDS + 1]
        return zscore_rows(drift * self.gain * signal + noise + offset)


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
