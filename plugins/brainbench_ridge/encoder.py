"""Encoder ``ridge``: closed-form ridge regression from standardised voxels to the flattened target.

The penalty is chosen on the validation rows by mean squared error (option ``select_by="cosine"`` uses
mean cosine instead) with the model fitted on the fit rows, then the model is refitted on ALL rows with
that penalty. The maths (one streamed Gram or kernel, one Cholesky solve per penalty scored, primal or
dual by shape, numpy on the CPU and torch on a GPU) lives in :mod:`brainbench_ridge.solver`.
``ridge_basis`` below is the reference eigendecomposition path the solver is tested against.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from brainbench.errors import CheckpointCorruptError, CheckpointMismatchError, DataError
from brainbench.interfaces import Encoder, FitData, FittedEncoder, Reporter, Shape, TrainSettings
from brainbench.options import Option, Options
from brainbench_ridge.backends import make_ops
from brainbench_ridge.solver import SEARCHES, RidgeSolver, flat_targets, mean_row_cosine, resolve_search  # noqa: F401

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
    """One eigendecomposition of the smaller Gram of standardised ``x`` (n, V) against centred ``y`` (n, D).

    The reference path (every penalty from one decomposition); the encoder's solver reaches the same
    weights with Cholesky solves. Products in float32, the eigendecomposition in float64.
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
        recipe: dict[str, Any] | None = None,
    ) -> None:
        self.weights = np.asarray(weights, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        self.voxel_mean = np.asarray(voxel_mean, dtype=np.float32)
        self.voxel_scale = np.asarray(voxel_scale, dtype=np.float32)
        self.target_shape = tuple(int(s) for s in target_shape)
        self.alpha = float(alpha)
        self.history = list(history or [])
        self.recipe = dict(recipe or {})
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
    def load(
        cls, path: Path, *, encoder: Encoder | None = None, n_voxels: int | None = None,
        target_shape: Shape | None = None, device: str = "auto", precision: str = "auto",
    ) -> FittedRidge:
        """Read a checkpoint; refuse one that does not fit ``n_voxels`` / ``target_shape`` when given (the
        arrays hold everything else: ``encoder``, ``device`` and ``precision`` are not needed)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"ridge checkpoint {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as stored:
                missing = [key for key in CHECKPOINT_KEYS if key not in stored.files]
                if missing:
                    raise DataError(
                        f"ridge checkpoint {path} lacks {', '.join(missing)}; expected {CHECKPOINT_KEYS}"
                    )
                arrays = {key: stored[key] for key in CHECKPOINT_KEYS}
        except DataError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            # allow_pickle=False refuses object arrays (pickled code could run): name the file, never load it
            what = "holds object arrays (pickled Python objects), which are never loaded" if "allow_pickle" in str(
                exc) else f"cannot be read ({type(exc).__name__}: {exc})"
            raise CheckpointCorruptError(
                f"ridge checkpoint {path} {what}; expected an .npz of numeric arrays {', '.join(CHECKPOINT_KEYS)}"
            ) from None
        for key, array in arrays.items():
            if not np.issubdtype(array.dtype, np.number):
                raise CheckpointCorruptError(f"ridge checkpoint {path}: {key!r} holds {array.dtype} values; expected "
                                             "numbers")
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
        Option("select_by", str, "mse", "validation score the penalty is chosen by", choices=SELECTION_CRITERIA),
        Option("search", str, "auto", "penalty search: full (one eigendecomposition scores every penalty), "
               "walk (Cholesky solves from a proxy's minimum to the exact local minimum), auto (by size)",
               choices=SEARCHES),
    )

    @property
    def alphas(self) -> tuple[float, ...]:
        """The penalty grid searched: the option's, else DEFAULT_ALPHAS."""
        return self.options.alphas if self.options.alphas is not None else DEFAULT_ALPHAS

    def params(self) -> dict[str, Any]:
        return {**super().params(), "alphas": list(self.alphas)}  # the grid in force, not "none"

    def describe(self, n_voxels: int, target_shape: Shape) -> dict[str, Any]:
        outputs = int(np.prod(target_shape))
        return {
            "parameters": n_voxels * outputs + outputs,
            "solver": "one streamed Gram, a Cholesky solve per penalty scored (primal or dual by shape)",
        }

    def fit(self, data: FitData, settings: TrainSettings, reporter: Reporter) -> FittedEncoder:
        """Choose the penalty on the fit rows -> validation rows, then refit on ALL rows with it."""
        x = np.asarray(data.voxels, dtype=np.float32)  # no copy: the runner passes float32
        if x.ndim != 2:
            raise DataError(f"ridge: voxels must be an array (n, V), got shape {x.shape}")
        n, n_val = len(x), int(data.n_validation)
        y = flat_targets(data.targets, n)
        ops = make_ops(ridge_device(settings.device))
        alpha, history = self.options.alpha, []
        recipe: dict[str, Any] = {"fit_rows": n, "selection_rows": n - n_val, "validation_rows": n_val}
        if alpha is None and n_val > 0 and n_val == n:
            raise DataError("ridge: every row is a validation row; the penalty needs fit rows to be chosen on")
        searching = alpha is None and n_val > 0
        # the walk scores as many penalties as it needs (4-5 usually): its count is not known beforehand
        total = len(self.alphas) if resolve_search(self.options.search, n - n_val, x.shape[1]) == "full" else None
        with reporter.progress("ridge penalties scored", total if searching else 0) as bar:
            solver = RidgeSolver(x, y, n - n_val if alpha is None and n_val else n, ops, progress=bar.advance)
            if alpha is not None:
                reporter.info(f"ridge: fixed alpha={alpha:g}, no search")
                recipe["alpha_selection"] = "fixed"
            elif n_val == 0:
                alpha = self.alphas[len(self.alphas) // 2]
                reporter.info(f"ridge: no validation rows, using alpha={alpha:g} (middle of the grid)")
                recipe["alpha_selection"] = "grid middle (no validation rows)"
            else:
                alpha, history, info = solver.select(list(self.alphas), self.options.select_by, self.options.search)
                recipe.update(info, alpha_selection=f"validation {self.options.select_by}")
                self._report_choice(alpha, history, reporter)
            reporter.info(f"ridge: refitting on all {n} rows with alpha={alpha:g}")
            weights, bias = solver.refit(float(alpha))
            recipe.update(alpha=float(alpha), solver=solver.form(n), device=f"{ops.device} ({ops.name})")
            moments = solver.moments
            solver.release()
        return FittedRidge(weights, bias, moments.mean, moments.scale, data.target_shape, float(alpha), history,
                           recipe)

    def _report_choice(self, chosen: float, history: list[dict[str, float]], reporter: Reporter) -> None:
        best = next(h for h in history if h["alpha"] == chosen)
        if chosen in (min(self.alphas), max(self.alphas)) and len(self.alphas) > 1:
            reporter.info(
                f"ridge: chosen alpha={chosen:g} is at the edge of the grid; consider widening `alphas`"
            )
        reporter.info(
            f"ridge: alpha={chosen:g} by validation {self.options.select_by} "
            f"(mse {best['val_mse']:.4g}, cosine {best['val_cosine']:.4f}; {len(history)} penalties scored)"
        )


def ridge_device(device: str) -> str:
    """numpy/LAPACK on the CPU; torch on a GPU when the run asks for one (or "auto" finds one)."""
    if device == "cpu":
        return "cpu"
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
