"""The few array operations ridge's solver needs, on numpy/LAPACK (CPU) or on torch (a GPU, or CPU for tests).

Both backends keep the cross-product matrix (``X^T X`` or ``X X^T``) in float32, as BLAS builds it, and
factor ``gram + alpha I`` in float64 in one reusable workspace. The numpy backend works on one triangle
(``ssyrk``, ``dpotrf``) and writes every product into an existing buffer, so nothing V x V is allocated
twice; the torch backend uses full matrices (GPU memory is not the constraint there).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.linalg import blas, lapack

from brainbench.errors import BrainbenchError


class NumpyOps:
    """float32 BLAS products, float64 LAPACK factorisations, every large buffer written in place."""

    name = "numpy"
    device = "cpu"

    def __init__(self) -> None:
        self._work: np.ndarray | None = None  # float64 workspace for gram + alpha I (reused per penalty)
        self._scratch: np.ndarray | None = None

    # -- moving data
    def put(self, a: np.ndarray) -> np.ndarray:
        return a

    def numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def f32(self, a: Any) -> np.ndarray:
        return np.asarray(a).astype(np.float32, copy=False)

    def f64(self, a: Any) -> np.ndarray:
        return np.asarray(a).astype(np.float64, copy=False)

    def standardise(self, rows: np.ndarray, mean: np.ndarray, scale: np.ndarray, keep: bool = False) -> np.ndarray:
        """(rows - mean) / scale in float32, into a reused scratch buffer (or a new array when ``keep``)."""
        shape = rows.shape
        if keep:
            out = np.empty(shape, dtype=np.float32)
        else:
            size = shape[0] * shape[1]
            if self._scratch is None or self._scratch.size < size:
                self._scratch = np.empty(size, dtype=np.float32)
            out = self._scratch[:size].reshape(shape)
        np.subtract(rows, mean, out=out)
        out /= scale
        return out

    # -- products
    def zeros(self, rows: int, cols: int) -> np.ndarray:
        return np.zeros((rows, cols), dtype=np.float32, order="F")

    def zeros64(self, rows: int, cols: int) -> np.ndarray:
        return np.zeros((rows, cols), dtype=np.float64)

    def gram_add(self, gram: np.ndarray, block: np.ndarray, sign: float = 1.0) -> None:
        """gram += sign * block^T block (upper triangle), in place."""
        blas.ssyrk(sign, block.T, beta=1.0, c=gram, trans=0, lower=0, overwrite_c=1)

    def kernel_sym_add(self, kernel: np.ndarray, rows: np.ndarray) -> None:
        """kernel += rows rows^T (upper triangle), in place."""
        blas.ssyrk(1.0, rows.T, beta=1.0, c=kernel, trans=1, lower=0, overwrite_c=1)

    def kernel_add(self, kernel: np.ndarray, left: np.ndarray, right: np.ndarray) -> None:
        """kernel += left @ right^T, in place (full matrix)."""
        blas.sgemm(1.0, left.T, right.T, beta=1.0, c=kernel, trans_a=1, trans_b=0, overwrite_c=1)

    def cross_add(self, acc64: np.ndarray, block: np.ndarray, y: np.ndarray) -> None:
        acc64 += block.T @ y

    def matmul32(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=np.float32) @ np.asarray(b, dtype=np.float32)

    def col_sum64(self, block: np.ndarray) -> np.ndarray:
        return block.sum(axis=0, dtype=np.float64)

    # -- factorisations
    def _workspace(self, n: int) -> np.ndarray:
        if self._work is None or self._work.shape[0] != n:
            self._work = None  # drop the old one before allocating the new
            self._work = np.empty((n, n), dtype=np.float64, order="F")
        return self._work

    def shifted(
        self,
        gram: np.ndarray,
        alpha: float,
        scale: np.ndarray | None = None,
        rank_one: tuple[float, np.ndarray] | None = None,
    ) -> np.ndarray:
        """diag(scale) (gram + c u u^T) diag(scale) + alpha I in the float64 workspace (upper triangle)."""
        a = self._workspace(gram.shape[0])
        np.copyto(a, gram)
        if rank_one is not None:
            coef, u = rank_one
            blas.dsyr(coef, np.asarray(u, dtype=np.float64), a=a, lower=0, overwrite_a=1)
        if scale is not None:
            a *= scale[:, None]
            a *= scale[None, :]
        a[np.diag_indices(a.shape[0])] += alpha
        return a

    def solve_shifted(self, gram, alpha, rhs64, scale=None, rank_one=None) -> np.ndarray:
        """(shifted gram)^{-1} rhs by one Cholesky factorisation; the pseudo-inverse if it is singular."""
        a = self.shifted(gram, alpha, scale, rank_one)
        solution = cholesky_solve_in_place(a, np.asarray(rhs64, dtype=np.float64))
        if solution is not None:
            return solution
        # Singular (alpha = 0 on rank-deficient data): the eigendecomposition's pseudo-inverse, as before.
        lam, q = self.eigh(self.shifted(gram, 0.0, scale, rank_one))
        total = lam + alpha
        inverse = np.divide(1.0, total, out=np.zeros_like(total), where=total > 1e-12)
        return q @ (inverse[:, None] * (q.T @ rhs64))

    def eigh(self, a64: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Eigen-decomposition of the symmetric matrix whose upper triangle is ``a64`` (overwritten)."""
        from scipy.linalg import eigh

        lam, q = eigh(a64, lower=False, driver="evd", overwrite_a=True, check_finite=False)
        return np.maximum(lam, 0.0), q

    def release(self) -> None:
        self._work = None
        self._scratch = None


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # not installed: OpenBLAS_NUM_THREADS decides
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def cholesky_solve_in_place(a: np.ndarray, rhs: np.ndarray) -> np.ndarray | None:
    """Solve a x = rhs for symmetric positive definite ``a`` (F-order float64, upper triangle), factoring
    ``a`` in place (``dpotrf``/``dpotrs`` on its own buffer: no copy); None when ``a`` is not positive
    definite.

    Single-threaded: the bundled OpenBLAS's multithreaded ``dpotrf`` crashes (segmentation fault) at NSD's
    15,724 x 15,724 on this machine's CPUs; its single-threaded one does not (22 s there), and torch's
    (MKL) works on a temporary copy of the whole matrix (+2 GB at NSD scale).
    """
    with _one_blas_thread():
        factor, info = lapack.dpotrf(a, lower=0, overwrite_a=1, clean=0)
        if info != 0:
            return None
        solution, info = lapack.dpotrs(factor, rhs, lower=0)
    return solution if info == 0 else None


class TorchOps:
    """The same operations in torch on ``device`` (float32 products, float64 Cholesky/eigh)."""

    name = "torch"

    def __init__(self, device: str = "cuda") -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BrainbenchError(f"ridge: device {device!r} was asked for but CUDA is not available")

    def put(self, a: np.ndarray):
        """A float32 copy on the device (always a copy: in-place ops on it must never touch the caller's)."""
        return self.torch.tensor(np.asarray(a, dtype=np.float32), device=self.device)

    def numpy(self, a: Any) -> np.ndarray:
        if isinstance(a, np.ndarray):
            return a
        return a.detach().cpu().numpy()

    def f32(self, a: Any):
        return a.float() if isinstance(a, self.torch.Tensor) else self.put(a)

    def f64(self, a: Any):
        if isinstance(a, self.torch.Tensor):
            return a.double()
        return self.torch.as_tensor(np.asarray(a, dtype=np.float64)).to(self.device)

    def _vec(self, v: np.ndarray, dtype):
        return self.torch.as_tensor(np.asarray(v)).to(self.device, dtype)

    def standardise(self, rows: np.ndarray, mean: np.ndarray, scale: np.ndarray, keep: bool = False):
        out = self.put(rows)
        out -= self._vec(mean, self.torch.float32)
        out /= self._vec(scale, self.torch.float32)
        return out

    def zeros(self, rows: int, cols: int):
        return self.torch.zeros((rows, cols), dtype=self.torch.float32, device=self.device)

    def zeros64(self, rows: int, cols: int):
        return self.torch.zeros((rows, cols), dtype=self.torch.float64, device=self.device)

    def gram_add(self, gram, block, sign: float = 1.0) -> None:
        gram.addmm_(block.T, block, alpha=sign)

    def kernel_sym_add(self, kernel, rows) -> None:
        kernel.addmm_(rows, rows.T)

    def kernel_add(self, kernel, left, right) -> None:
        kernel.addmm_(left, right.T)

    def cross_add(self, acc64, block, y) -> None:
        acc64 += (block.T @ self.put(y)).double()

    def matmul32(self, a, b):
        return self.f32(a) @ self.f32(b)

    def col_sum64(self, block) -> np.ndarray:
        return self.numpy(block.sum(dim=0, dtype=self.torch.float64))

    def shifted(self, gram, alpha, scale=None, rank_one=None):
        a = gram.double()
        if rank_one is not None:
            coef, u = rank_one
            u = self._vec(u, self.torch.float64)
            a.addr_(u, u, alpha=coef)
        if scale is not None:
            s = self._vec(scale, self.torch.float64)
            a *= s[:, None]
            a *= s[None, :]
        a.diagonal().add_(alpha)
        return a

    def solve_shifted(self, gram, alpha, rhs64, scale=None, rank_one=None):
        t = self.torch
        a = self.shifted(gram, alpha, scale, rank_one)
        rhs = self.f64(rhs64)
        factor, info = t.linalg.cholesky_ex(a)
        if int(info) == 0:
            return t.cholesky_solve(rhs, factor)
        lam, q = t.linalg.eigh(self.shifted(gram, 0.0, scale, rank_one))
        total = lam.clamp_min(0.0) + alpha
        inverse = t.where(total > 1e-12, 1.0 / total.clamp_min(1e-300), t.zeros_like(total))
        return q @ (inverse[:, None] * (q.T @ rhs))

    def eigh(self, a64):
        lam, q = self.torch.linalg.eigh(a64)
        return lam.clamp_min(0.0), q

    def release(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()


def make_ops(device: str = "cpu"):
    """numpy for the CPU (LAPACK beats torch's CPU eigh/Cholesky here); torch for anything else."""
    if device in ("cpu", "numpy"):
        return NumpyOps()
    if device == "torch-cpu":  # the torch maths on the CPU: how the tests check the GPU path
        return TorchOps("cpu")
    return TorchOps(device)
