"""Ridge's maths: one streamed cross-product pass, one Cholesky solve per penalty scored, no copy of the voxels.

The rows of ``x`` are all training trials; the first ``n_fit`` choose the penalty (scored on the last
``n - n_fit``, the validation rows), then the model is refitted on all rows at the chosen penalty.

Primal form (rows >= voxels): the voxels are standardised block by block (all-row statistics) into a
scratch buffer and accumulated into one float32 Gram matrix ``G = X^T X`` -- first over the fit rows,
which gives the selection Gram (rescaled exactly to the fit rows' own mean and scale: a rank-one and a
diagonal correction), then over the validation rows, which completes the refit Gram. One pass, one V x V
float32 matrix plus one float64 workspace that each Cholesky factorisation overwrites.

Dual form (rows < voxels): the same with the kernel ``X X^T``, built over blocks of voxel columns.

Penalty search: with few rows or voxels one eigendecomposition of the selection Gram scores every penalty
exactly (``search="full"``); above that a Cholesky solve per penalty is far cheaper than the
eigendecomposition (15,724 voxels: about a minute against about fifteen), so the search walks the grid
from the minimum of a cheap proxy curve (the eigendecomposition of a subsample of the fit rows) to a
local minimum of the exact validation score -- the same penalty as the full search whenever the score is
unimodal over the grid, as ridge's validation error is in practice (``search="walk"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from brainbench.errors import DataError
from brainbench_ridge.backends import NumpyOps

SEARCHES = ("auto", "full", "walk")
#: Above this many rows or voxels on the smaller side, the walk replaces the full eigendecomposition.
FULL_SEARCH_MAX = 2048
#: Fit rows in the proxy that picks where the walk starts.
PROXY_ROWS = 1024
#: Rows (or voxel columns) per streamed block: ~64 MiB of float32 scratch.
BLOCK_BYTES = 64 << 20


@dataclass
class Moments:
    """Per-voxel mean and scale (std, 1 where constant), float32 as the model stores them."""

    mean: np.ndarray
    scale: np.ndarray
    fit_mean: np.ndarray
    fit_scale: np.ndarray


@dataclass
class RidgeSolution:
    weights: np.ndarray  # (V, D) float32
    bias: np.ndarray  # (D,) float32
    mean: np.ndarray
    scale: np.ndarray
    alpha: float
    history: list[dict[str, float]] = field(default_factory=list)
    recipe: dict[str, Any] = field(default_factory=dict)


def block_rows(n_cols: int) -> int:
    return max(64, BLOCK_BYTES // (4 * max(n_cols, 1)))


def row_blocks(start: int, stop: int, size: int):
    for r0 in range(start, stop, size):
        yield r0, min(r0 + size, stop)


def _scale(std: np.ndarray) -> np.ndarray:
    return np.where(std > 0, std, 1.0).astype(np.float32)


def voxel_moments(x: np.ndarray, n_fit: int) -> Moments:
    """Mean and std over all rows and over the fit rows, two streamed float64 passes (no copy of ``x``).

    Also refuses NaN/inf, block by block (a whole-array ``isfinite`` would allocate n x V booleans).
    """
    n, v = x.shape
    step = block_rows(v) // 2  # float64 temporaries
    sum_fit, sum_val = np.zeros(v), np.zeros(v)
    for r0, r1 in row_blocks(0, n, step):
        block = x[r0:r1]
        if not np.isfinite(block).all():
            raise DataError("ridge: voxels contain NaN or infinite values")
        cut = min(max(n_fit - r0, 0), r1 - r0)
        sum_fit += block[:cut].sum(axis=0, dtype=np.float64)
        sum_val += block[cut:].sum(axis=0, dtype=np.float64)
    mean = (sum_fit + sum_val) / n
    ssq_fit, ssq_val = np.zeros(v), np.zeros(v)
    for r0, r1 in row_blocks(0, n, step):
        diff = x[r0:r1].astype(np.float64)
        diff -= mean
        diff *= diff
        cut = min(max(n_fit - r0, 0), r1 - r0)
        ssq_fit += diff[:cut].sum(axis=0)
        ssq_val += diff[cut:].sum(axis=0)
    std = np.sqrt((ssq_fit + ssq_val) / n)
    fit_mean = sum_fit / max(n_fit, 1)
    fit_std = np.sqrt(np.maximum(ssq_fit / max(n_fit, 1) - (fit_mean - mean) ** 2, 0.0))
    return Moments(mean.astype(np.float32), _scale(std), fit_mean.astype(np.float32), _scale(fit_std))


def flat_targets(targets: Any, n: int) -> np.ndarray:
    """(n, D) float32 view of the targets (no copy when they already are float32 in memory)."""
    y = np.asarray(targets, dtype=np.float32)
    y = y.reshape(len(y), -1)
    if len(y) != n:
        raise DataError(f"ridge: {n} voxel rows but {len(y)} target rows; they must pair row by row")
    if not np.isfinite(y).all():
        raise DataError("ridge: targets contain NaN or infinite values")
    return y


def mean_row_cosine(pred: np.ndarray, true: np.ndarray) -> float:
    dots = np.einsum("ij,ij->i", pred, true)
    norms = np.linalg.norm(pred, axis=1) * np.linalg.norm(true, axis=1)
    return float(np.mean(np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)))


# ------------------------------------------------------------------------------- penalty scoring


@dataclass
class Scorer:
    """Scores one penalty on the validation rows: ``predict(alpha)`` gives their predictions."""

    predict: Callable[[float], np.ndarray]
    val_y: np.ndarray
    select_by: str

    def entry(self, alpha: float) -> dict[str, float]:
        pred = self.predict(alpha)
        return {
            "alpha": float(alpha),
            "val_mse": float(np.mean((pred - self.val_y) ** 2, dtype=np.float64)),
            "val_cosine": mean_row_cosine(pred, self.val_y),
        }

    def loss(self, entry: dict[str, float]) -> float:
        return entry["val_mse"] if self.select_by == "mse" else -entry["val_cosine"]


def spectral_predictor(lam, proj_val, proj_targets, offset) -> Callable[[float], np.ndarray]:
    """pred(alpha) = proj_val diag(1 / (lam + alpha)) proj_targets + offset, from one eigendecomposition."""
    lam = np.asarray(lam, dtype=np.float64)
    proj_val = np.asarray(proj_val, dtype=np.float32)
    proj_targets = np.asarray(proj_targets, dtype=np.float32)

    def predict(alpha: float) -> np.ndarray:
        total = lam + alpha
        shrink = np.divide(1.0, total, out=np.zeros_like(total), where=total > 1e-12).astype(np.float32)
        return (proj_val * shrink[None, :]) @ proj_targets + offset.astype(np.float32)

    return predict


def walk(grid: list[float], start: int, score: Callable[[int], float]) -> int:
    """From ``start``, step to the better neighbour until neither is better: a local minimum of ``score``."""
    best = start
    while True:
        moved = False
        for nb in (best - 1, best + 1):
            if 0 <= nb < len(grid) and score(nb) < score(best):
                best, moved = nb, True
                break
        if not moved:
            return best


# ------------------------------------------------------------------------------------ the solver


def resolve_search(search: str, n_fit: int, n_voxels: int) -> str:
    """``auto``: every penalty of the grid while its spectrum is cheap, else the walk from a proxy's choice."""
    if search == "auto":
        return "full" if min(n_fit, n_voxels) <= FULL_SEARCH_MAX else "walk"
    return search


class RidgeSolver:
    """Fits ridge on ``x`` (n, V) / ``y`` (n, D) with the first ``n_fit`` rows choosing the penalty."""

    def __init__(self, x: np.ndarray, y: np.ndarray, n_fit: int, ops, progress=None) -> None:
        self.x, self.y, self.n_fit, self.ops = x, y, int(n_fit), ops
        self.n, self.v = x.shape
        self.moments = voxel_moments(x, self.n_fit)
        self.progress = progress  # callable(advance: int) or None
        # Primal state shared by selection and refit: the Gram accumulated so far and its cross-product.
        self._gram = None
        self._gram_rows = 0
        self._cross = None
        self._col_sum = np.zeros(self.v)

    @property
    def n_val(self) -> int:
        return self.n - self.n_fit

    def form(self, rows: int) -> str:
        return "primal" if rows >= self.v else "dual"

    # -- primal: one Gram, filled in row order (fit rows first)
    def _gram_up_to(self, stop: int) -> None:
        ops, m = self.ops, self.moments
        if self._gram is None:
            self._gram = ops.zeros(self.v, self.v)
            self._cross = ops.zeros64(self.v, self.y.shape[1])
        for r0, r1 in row_blocks(self._gram_rows, stop, block_rows(self.v)):
            block = ops.standardise(self.x[r0:r1], m.mean, m.scale)
            ops.gram_add(self._gram, block)
            ops.cross_add(self._cross, block, self.y[r0:r1])
            self._col_sum += ops.col_sum64(block)
        self._gram_rows = max(self._gram_rows, stop)

    def _cross_np(self) -> np.ndarray:
        return self.ops.numpy(self._cross).astype(np.float64, copy=False)

    def _primal_selection(self):
        """The selection problem in the fit rows' own standardisation, from the Gram of the fit rows."""
        ops, m, nf = self.ops, self.moments, self.n_fit
        self._gram_up_to(nf)
        mu = self._col_sum / nf  # fit rows' mean in all-row standardised units
        y_fit_mean = self.y[:nf].mean(axis=0, dtype=np.float64)
        d = m.scale.astype(np.float64) / m.fit_scale.astype(np.float64)
        rhs = d[:, None] * (self._cross_np() - nf * mu[:, None] * y_fit_mean[None, :])
        rank_one = (-float(nf), mu)
        val_x = ops.standardise(self.x[nf:], m.fit_mean, m.fit_scale, keep=True)

        def solve(alpha: float):
            return ops.solve_shifted(self._gram, alpha, rhs, scale=d, rank_one=rank_one)

        def spectrum():
            lam, q = ops.eigh(ops.shifted(self._gram, 0.0, d, rank_one))
            proj_t = ops.numpy(q.T @ ops.f64(rhs))
            return ops.numpy(lam), ops.numpy(ops.matmul32(val_x, q)), proj_t

        return solve, spectrum, val_x, y_fit_mean

    # -- dual: kernels over blocks of voxel columns
    def _kernel(self, mean, scale):
        """K = S S^T (upper triangle) of all rows standardised by (mean, scale), over blocks of voxel columns."""
        ops = self.ops
        kernel = ops.zeros(self.n, self.n)
        for c0, c1 in row_blocks(0, self.v, block_rows(self.n)):
            ops.kernel_sym_add(kernel, ops.standardise(self.x[:, c0:c1], mean[c0:c1], scale[c0:c1]))
        return kernel

    def _dual_selection(self):
        ops, m, nf = self.ops, self.moments, self.n_fit
        # K_ff (upper triangle, syrk) and K_vf (gemm) in one pass over blocks of voxel columns.
        k_ff, k_vf = ops.zeros(nf, nf), ops.zeros(self.n_val, nf)
        for c0, c1 in row_blocks(0, self.v, block_rows(self.n)):
            s = ops.standardise(self.x[:, c0:c1], m.fit_mean[c0:c1], m.fit_scale[c0:c1])
            ops.kernel_sym_add(k_ff, s[:nf])
            ops.kernel_add(k_vf, s[nf:], s[:nf])
        y_fit_mean = self.y[:nf].mean(axis=0, dtype=np.float64)
        y_c = self.y[:nf] - y_fit_mean

        def solve(alpha: float):
            return ops.solve_shifted(k_ff, alpha, y_c)

        def spectrum():
            lam, u = ops.eigh(ops.shifted(k_ff, 0.0))
            return ops.numpy(lam), ops.numpy(ops.matmul32(k_vf, u)), ops.numpy(u.T @ ops.f64(y_c))

        return solve, spectrum, k_vf, y_fit_mean

    # -- selection
    def select(self, alphas: list[float], select_by: str, search: str) -> tuple[float, list[dict], dict]:
        grid = sorted(alphas)
        form = self.form(self.n_fit)
        if form == "primal":
            solve, spectrum, val_side, offset = self._primal_selection()
        else:
            solve, spectrum, val_side, offset = self._dual_selection()
        ops = self.ops
        val_y = self.y[self.n_fit :]

        def exact_predict(alpha: float) -> np.ndarray:
            coef = solve(alpha)
            return ops.numpy(ops.matmul32(val_side, coef)) + offset

        search = resolve_search(search, self.n_fit, self.v)
        info: dict[str, Any] = {"selection_solver": form, "alpha_search": search}
        if search == "full":
            lam, proj_val, proj_t = spectrum()
            scorer = Scorer(spectral_predictor(lam, proj_val, proj_t, offset), val_y, select_by)
            history = []
            for alpha in grid:
                history.append(scorer.entry(alpha))
                self._advance()
            best = min(history, key=scorer.loss)
            info["alphas_scored"] = len(history)
            return best["alpha"], history, info
        start, proxy_alpha = self._proxy_start(grid, select_by, val_y)
        scorer = Scorer(exact_predict, val_y, select_by)
        scored: dict[int, dict[str, float]] = {}

        def score(i: int) -> float:
            if i not in scored:
                scored[i] = scorer.entry(grid[i])
                self._advance()
            return scorer.loss(scored[i])

        best = walk(grid, start, score)
        history = [scored[i] for i in sorted(scored)]
        info.update(alphas_scored=len(history), proxy_alpha=proxy_alpha)
        return grid[best], history, info

    def _proxy_start(self, grid: list[float], select_by: str, val_y: np.ndarray) -> tuple[int, float]:
        """Grid index minimising the validation score of ridge fitted on a strided subsample of fit rows.

        Dual form on at most PROXY_ROWS rows (a view: every k-th fit row), centred on its own mean."""
        ops, m, nf = self.ops, self.moments, self.n_fit
        step = -(-nf // PROXY_ROWS)
        sub = self.x[0:nf:step]
        k_ss = ops.zeros(len(sub), len(sub))
        k_vs = ops.zeros(self.n_val, len(sub))
        for c0, c1 in row_blocks(0, self.v, block_rows(len(sub) + self.n_val)):
            s_val = ops.standardise(self.x[nf:, c0:c1], m.fit_mean[c0:c1], m.fit_scale[c0:c1], keep=True)
            s_sub = ops.standardise(sub[:, c0:c1], m.fit_mean[c0:c1], m.fit_scale[c0:c1])
            ops.kernel_add(k_ss, s_sub, s_sub)
            ops.kernel_add(k_vs, s_val, s_sub)
        k_ss, k_vs = ops.numpy(k_ss).astype(np.float64), ops.numpy(k_vs).astype(np.float64)
        row_mean = k_ss.mean(axis=1)
        total = row_mean.mean()
        k_ss += total - row_mean[:, None] - row_mean[None, :]
        k_vs += total - k_vs.mean(axis=1)[:, None] - row_mean[None, :]
        y_sub = self.y[0:nf:step]
        y_mean = y_sub.mean(axis=0, dtype=np.float64)
        lam, u = NumpyOps().eigh(np.asfortranarray(k_ss))
        predict = spectral_predictor(lam, k_vs @ u, u.T @ (y_sub - y_mean), y_mean)
        scorer = Scorer(predict, val_y, select_by)
        losses = [scorer.loss(scorer.entry(a)) for a in grid]
        best = int(np.argmin(losses))
        return best, grid[best]

    def _advance(self) -> None:
        if self.progress is not None:
            self.progress(1)

    # -- refit on all rows
    def refit(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        ops, m = self.ops, self.moments
        y_mean = self.y.mean(axis=0, dtype=np.float64)
        if self.form(self.n) == "primal":
            self._gram_up_to(self.n)
            rhs = self._cross_np() - self._col_sum[:, None] * y_mean[None, :]  # X^T (Y - mean), exactly
            weights = ops.numpy(ops.solve_shifted(self._gram, alpha, rhs))
        else:
            kernel = self._kernel(m.mean, m.scale)
            coef = ops.solve_shifted(kernel, alpha, self.y - y_mean)
            del kernel
            coef32 = ops.f32(coef)
            weights = np.empty((self.v, self.y.shape[1]), dtype=np.float32)
            for c0, c1 in row_blocks(0, self.v, block_rows(self.n)):
                s = ops.standardise(self.x[:, c0:c1], m.mean[c0:c1], m.scale[c0:c1])
                weights[c0:c1] = ops.numpy(ops.matmul32(s.T, coef32))
        return np.asarray(weights, dtype=np.float32), y_mean.astype(np.float32)

    def release(self) -> None:
        self._gram = None
        self._cross = None
        self.ops.release()
