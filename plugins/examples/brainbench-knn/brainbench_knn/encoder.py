"""A k-nearest-neighbour decoder: no training beyond storing the (standardised) training set."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainbench.errors import CheckpointMismatchError
from brainbench.interfaces import Encoder, FitData, FittedEncoder, Reporter, TrainSettings
from brainbench.options import Option, Options


def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    z = (x - mean) / std
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-8)


class FittedKnn(FittedEncoder):
    def __init__(self, k: int, mean: np.ndarray, std: np.ndarray, bank: np.ndarray, targets: np.ndarray) -> None:
        self.k, self.mean, self.std, self.bank, self.targets = k, mean, std, bank, targets
        self.n_voxels, self.target_shape = int(mean.shape[0]), tuple(targets.shape[1:])  # what it maps
        self.n_parameters = 0
        self.history = []

    def predict(self, voxels: np.ndarray, batch_size: int = 256) -> np.ndarray:
        z = _standardise(np.asarray(voxels, dtype=np.float32), self.mean, self.std)
        out = np.empty((len(z), *self.targets.shape[1:]), dtype=np.float32)
        for start in range(0, len(z), batch_size):
            sims = z[start : start + batch_size] @ self.bank.T
            nearest = np.argpartition(-sims, self.k - 1, axis=1)[:, : self.k]
            out[start : start + batch_size] = self.targets[nearest].mean(axis=1)
        return out

    def save(self, path: Path) -> Path:
        file = Path(path).with_suffix(".npz")
        np.savez(file, k=self.k, mean=self.mean, std=self.std, bank=self.bank, targets=self.targets)
        return file

    @classmethod
    def load(
        cls, path: Path, *, encoder: Encoder | None = None, n_voxels: int | None = None,
        target_shape: tuple[int, ...] | None = None, device: str = "auto", precision: str = "auto",
    ) -> FittedKnn:
        """FittedEncoder's one load signature; the file holds everything (encoder, device, precision unused)."""
        with np.load(path, allow_pickle=False) as f:
            fitted = cls(int(f["k"]), f["mean"], f["std"], f["bank"], f["targets"])
        if n_voxels is not None and fitted.n_voxels != n_voxels:
            raise CheckpointMismatchError(f"{path}: checkpoint has {fitted.n_voxels} voxels, data {n_voxels}")
        if target_shape is not None and fitted.target_shape != tuple(target_shape):
            raise CheckpointMismatchError(f"{path}: checkpoint predicts {fitted.target_shape}, not {target_shape}")
        return fitted


class KnnEncoder(Encoder):
    # Declared once: validated (type, range, closest name) before any run exists, listed by `brainbench info
    # knn`, and read back typed as self.options.k (an int >= 1).
    declared_options = Options(Option("k", int, 10, "neighbours averaged per prediction", minimum=1))
    name = "knn"

    def fit(self, data: FitData, settings: TrainSettings, reporter: Reporter) -> FittedEncoder:
        # brainbench's data rule: the returned model uses every training row (k is fixed: nothing to choose)
        x = np.asarray(data.voxels, dtype=np.float32)
        y = np.asarray(data.targets, dtype=np.float32)
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
        k = min(self.options.k, len(x))
        reporter.info(f"knn: {len(x)} training trials, k={k}")
        return FittedKnn(k, mean, std, _standardise(x, mean, std), y)
