"""Encoder ``ridge``: closed-form ridge regression from standardised voxels to the flattened target (CPU).

One eigendecomposition of the Gram matrix on the smaller side (X^T X when trials outnumber voxels, X X^T
otherwise) serves every penalty in the grid: W(alpha) = E diag(1 / (lambda + alpha)) B, with E = Q and
B = Q^T X^T Y in the primal form, E = X^T U and B = U^T Y in the dual form. The penalty is chosen on the
validation split by mean squared error (option ``select_by="cosine"`` uses mean cosine instead), then the
model is refitted on train + validation with that penalty.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from brainbench.errors import CheckpointMismatchError, DataError
from brainbench.interfaces import Encoder, FitData, FittedEncoder, Reporter, Shape, TrainSettings
from brainbench.options import Option, Options

DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-1, 7, 17))
SELECTION_CRITERIA = ("mse", "cosine")
CHECKPOINT_KEYS = ("weights", "bias", "voxel_mean", "voxel_scale", "target_shape", "alpha")


# ------------------------------------------------------------------------------------------ the maths


def standardisation(voxels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel mean and scale (std; 1 where a voxel is constant, so it contributes nothing), float32."""
    mean = voxels.mean(axis=0, dtype=np.float64)
    std = voxels.std(axis=0, dtype=np.float64)
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


@dataclass
class RidgeBasis:
    """Everything ridge needs for any penalty: W(alpha) = E diag(1 / (lam + alpha)) B."""

    eigenvalues: np.ndarray  # (r,) float64
    expand: np.ndarray  # E, (V, r) float32
    projected_targets: np.ndarray  # B, (r, D) float32

    def shrink(self, alpha: float) -> np.ndarray:
        """1 / (lam + alpha); 0 where both vanish (alpha = 0 on a rank-deficient X: the pseudo-inverse)."""
        total = self.eigenvalues + alpha
        return np.divide(1.0, total, out=np.zeros_like(total), where=total > 1e-12).astype(np.float32)

    def weights(self, alpha: float) -> np.ndarray:
        return (self.expand * self.shrink(alpha)[None, :]) @ self.projected_targets


def ridge_basis(x: np.ndarray, y: np.ndarray) -> RidgeBasis:
    """Decompose the smaller Gram matrix of standardised ``x`` (n, V) against centred ``y`` (n, D).

    Products run in float32 (BLAS speed, half the memory of float64); the eigendecomposition in float64.
    """
    n, v = x.shape
    if n >= v:  # primal: X^T X = Q diag(lam) Q^T, W = Q diag(1/(lam+a)) Q^T X^T Y
        lam, q = np.linalg.eigh((x.T @ x).astype(np.float64))
        q32 = q.astype(np.float32)
        return RidgeBasis(np.maximum(lam, 0.0), q32, q32.T @ (x.T @ y))
    # dual: X X^T = U diag(lam) U^T, W = X^T U diag(1/(lam+a)) U^T Y
    lam, u = np.linalg.eigh((x @ x.T).astype(np.float64))
    u32 = u.astype(np.float32)
    return RidgeBasis(np.maximum(lam, 0.0), x.T @ u32, u32.T @ y)


def standardised(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return ((x - mean) / scale).astype(np.float32)


def mean_row_cosine(pred: np.ndarray, true: np.ndarray) -> float:
    dots = np.einsum("ij,ij->i", pred, true)
    norms = np.linalg.norm(pred, axis=1) * np.linalg.norm(true, axis=1)
    return float(np.mean(np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)))


# -------------------------------------------------------------------------------------------- fitted


class FittedRidge(FittedEncoder):
    """A ridge map: target = ((voxels - mean) / scale) @ weights + bias, reshaped to ``target_shape``."""

    def __init__(
        self,
        weights: np.ndarray,
        bias: np.ndarray,
        voxel_mean: np.ndarray,
        voxel_scale: np.ndarray,
        target_shape: Shape,
        alpha: float,
        history: list[dict[str, float]] | None = None,
    ) -> None:
        self.weights = np.asarray(weights, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        self.voxel_mean = np.asarray(voxel_mean, dtype=np.float32)
        self.voxel_scale = np.asarray(voxel_scale, dtype=np.float32)
        self.target_shape = tuple(int(s) for s in target_shape)
        self.alpha = float(alpha)
        self.history = list(history or [])
        self.n_parameters = int(self.weights.size + self.bias.size)

    @property
    def n_voxels(self) -> int:
        return int(self.weights.shape[0])

    def predict(self, voxels: np.ndarray, batch_size: int = 256) -> np.ndarray:
        voxels = np.asarray(voxels)
        if voxels.ndim != 2 or voxels.shape[1] != self.n_voxels:
            raise DataError(f"ridge expects voxels of shape (n, {self.n_voxels}), got {voxels.shape}")
        out = np.empty((len(voxels), self.weights.shape[1]), dtype=np.float32)
        for start in range(0, len(voxels), max(1, batch_size)):
            block = np.asarray(voxels[start : start + batch_size], dtype=np.float32) - self.voxel_mean
            out[start : start + batch_size] = (block / self.voxel_scale) @ self.weights + self.bias
        return out.reshape(len(voxels), *self.target_shape)

    def save(self, path: Path) -> Path:
        """Write a ``.npz`` of plain arrays (loads with ``allow_pickle=False``); a folder gets ridge.npz."""
        path = Path(path)
        if path.is_dir():
            path = path / "ridge.npz"
        elif path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            weights=self.weights,
            bias=self.bias,
            voxel_mean=self.voxel_mean,
            voxel_scale=self.voxel_scale,
            target_shape=np.asarray(self.target_shape, dtype=np.int64),
            alpha=np.float64(self.alpha),
        )
        return path

    @classmethod
    def load(cls, path: Path, n_voxels: int | None = None, target_shape: Shape | None = None) -> FittedRidge:
        """Read a checkpoint; refuse one that does not fit ``n_voxels`` / ``target_shape`` when given."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"ridge checkpoint {path} does not exist")
        with np.load(path, allow_pickle=False) as stored:
            missing = [key for key in CHECKPOINT_KEYS if key not in stored.files]
            if missing:
                raise DataError(
                    f"ridge checkpoint {path} lacks {', '.join(missing)}; expected {CHECKPOINT_KEYS}"
                )
            arrays = {key: stored[key] for key in CHECKPOINT_KEYS}
        stored_shape = tuple(int(s) for s in arrays["target_shape"])
        stored_voxels = int(arrays["weights"].shape[0])
        if n_voxels is not None and n_voxels != stored_voxels:
            raise CheckpointMismatchError(
                f"ridge checkpoint {path} was fitted on {stored_voxels} voxels, but the data has {n_voxels}"
            )
        if target_shape is not None and tuple(target_shape) != stored_shape:
            raise CheckpointMismatchError(
                f"ridge checkpoint {path} predicts target shape {stored_shape}, but the target is "
                f"{tuple(target_shape)}"
            )
        if arrays["weights"].shape[1] != int(np.prod(stored_shape)):
            raise DataError(
                f"ridge checkpoint {path}: weights {arrays['weights'].shape} do not match {stored_shape}"
            )
        return cls(
            arrays["weights"],
            arrays["bias"],
            arrays["voxel_mean"],
            arrays["voxel_scale"],
            stored_shape,
            float(arrays["alpha"]),
        )


# ------------------------------------------------------------------------------------------- encoder


class RidgeEncoder(Encoder):
    """Closed-form ridge; options: ``alphas`` (grid), ``alpha`` (fixed, skips the search), ``select_by``."""

    name: ClassVar[str] = "ridge"
    declared_options: ClassVar[Options] = Options(
        Option("alphas", list, None, "penalty grid searched on the validation split (default 1e-1..1e7, 17 steps)",
               item=float, minimum=0, nullable=True),
        Option("alpha", float, None, "a fixed penalty: skips the search", minimum=0, nullable=True),
        Option("select_by", str, "mse", "validation score the penalty is chosen by", choices=("mse", "cosine")),
    )

    def __init__(
        self,
        alphas: tuple[float, ...] | list[float] | None = None,
        alpha: float | None = None,
        select_by: str = "mse",
        **options: Any,
    ) -> None:
        if options:  # a misspelled option must not pass silently
            raise ValueError(f"unknown ridge option(s) {sorted(options)}; known: alpha, alphas, select_by")
        grid = tuple(float(a) for a in (alphas if alphas is not None else DEFAULT_ALPHAS))
        if not grid or min(grid) < 0:
            raise ValueError(f"ridge alphas must be a non-empty list of non-negative numbers, got {alphas}")
        if select_by not in SELECTION_CRITERIA:
            raise ValueError(
                f"ridge select_by must be one of {', '.join(SELECTION_CRITERIA)}, got {select_by!r}"
            )
        super().__init__(alphas=list(grid), alpha=alpha, select_by=select_by)
        self.alphas, self.alpha, self.select_by = grid, alpha, select_by

    def describe(self, n_voxels: int, target_shape: Shape) -> dict[str, Any]:
        outputs = int(np.prod(target_shape))
        return {
            "parameters": n_voxels * outputs + outputs,
            "solver": "eigendecomposition of the smaller Gram",
        }

    def fit(self, data: FitData, settings: TrainSettings, reporter: Reporter) -> FittedEncoder:
        train_x, train_y = self._checked(data.train_voxels, data.train_targets, "training")
        history: list[dict[str, float]] = []
        alpha = self.alpha
        if alpha is None:
            if len(data.val_voxels) == 0:
                alpha = self.alphas[len(self.alphas) // 2]
                reporter.info(f"ridge: no validation split, using alpha={alpha:g} (middle of the grid)")
            else:
                val_x, val_y = self._checked(data.val_voxels, data.val_targets, "validation")
                alpha, history = self._select_alpha(train_x, train_y, val_x, val_y, reporter)
        else:
            reporter.info(f"ridge: fixed alpha={alpha:g}, no search")
        val_x, val_y = self._checked(data.val_voxels, data.val_targets, "validation")
        full_x, full_y = np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])
        reporter.info(f"ridge: refitting on {len(full_x)} train+validation samples with alpha={alpha:g}")
        fitted = self._fit_once(full_x, full_y, float(alpha), data.target_shape)
        fitted.history = history
        return fitted

    # -- internals

    @staticmethod
    def _checked(voxels: np.ndarray, targets: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(voxels, dtype=np.float32)
        y = np.asarray(targets, dtype=np.float32)
        y = y.reshape(len(y), int(np.prod(y.shape[1:])))
        if x.ndim != 2 or len(x) != len(y):
            raise DataError(
                f"ridge: {split} voxels {x.shape} and targets {y.shape} must pair row by row (n, V)"
            )
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise DataError(f"ridge: {split} voxels or targets contain NaN or infinite values")
        return x, y

    def _select_alpha(
        self, x: np.ndarray, y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, reporter: Reporter
    ) -> tuple[float, list[dict[str, float]]]:
        mean, scale = standardisation(x)
        y_mean = y.mean(axis=0)
        basis = ridge_basis(standardised(x, mean, scale), y - y_mean)
        val_proj = standardised(val_x, mean, scale) @ basis.expand  # (n_val, r): reused for every alpha
        history: list[dict[str, float]] = []
        with reporter.progress("ridge alphas", len(self.alphas)) as progress:
            for alpha in self.alphas:
                pred = (val_proj * basis.shrink(alpha)[None, :]) @ basis.projected_targets + y_mean
                history.append(
                    {
                        "alpha": alpha,
                        "val_mse": float(np.mean((pred - val_y) ** 2, dtype=np.float64)),
                        "val_cosine": mean_row_cosine(pred, val_y),
                    }
                )
                progress.advance()
        if self.select_by == "mse":
            best = min(history, key=lambda h: h["val_mse"])
        else:
            best = max(history, key=lambda h: h["val_cosine"])
        chosen = best["alpha"]
        if chosen in (min(self.alphas), max(self.alphas)) and len(self.alphas) > 1:
            reporter.info(
                f"ridge: chosen alpha={chosen:g} is at the edge of the grid; consider widening `alphas`"
            )
        reporter.info(
            f"ridge: alpha={chosen:g} by validation {self.select_by} "
            f"(mse {best['val_mse']:.4g}, cosine {best['val_cosine']:.4f})"
        )
        return chosen, history

    @staticmethod
    def _fit_once(x: np.ndarray, y: np.ndarray, alpha: float, target_shape: Shape) -> FittedRidge:
        mean, scale = standardisation(x)
        y_mean = y.mean(axis=0)
        basis = ridge_basis(standardised(x, mean, scale), y - y_mean)
        return FittedRidge(basis.weights(alpha), y_mean, mean, scale, target_shape, alpha)
