"""The fast formulation of Lite-Mind's spectral operators: real DFT matmuls instead of complex FFTs.

Over ~34 tokens an FFT is a tiny dense transform; written as matmuls with precomputed cos/sin matrices,
the whole complex chain becomes real elementwise ops that torch.compile can fuse (inductor cannot fuse
complex tensors). Parameters are those of the faithful modules (these subclass them), and the DFT
matrices are non-persistent buffers, so state dicts are interchangeable between the two forms.

The spectrum is one (B, 2K, C) tensor (rows [0, K) real, [K, 2K) imaginary parts), so each DFT is one
batched matmul on the (B, N, C) activations as they lie, the token axis being the matmul's reduction axis:
no transpose or copy around it; the fused kernels write the chain's output as the one tensor the inverse DFT
reads (the plain ops concatenate, which torch.compile fuses away).

Two knobs (the model's config): ``spectral_precision`` "fp32" runs the transforms and the chain between
them in fp32 even under bf16 autocast (the filter cubes the spectrum and the next LayerNorm, eps 1e-6,
rescales its small output to unit variance, so bf16 rounding there is amplified block after block), or
"autocast" lets autocast pick (bf16 matmuls). ``spectral_kernel`` "auto" runs the elementwise chains as
fused Triton kernels (:mod:`brainbench_litemind.spectral_kernels`) on CUDA tensors when triton is
installed, "triton" insists (CPU tensors then need TRITON_INTERPRET=1), "torch" keeps the plain ops
(which torch.compile fuses itself).
"""

from __future__ import annotations

import contextlib
import math
from types import ModuleType

import torch

from brainbench_litemind.model import SOFTSHRINK, SPECTRAL_KERNELS, SPECTRAL_PRECISIONS, FreMLP, SpectrumFilter


def real_dft_matrices(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal rfft and irfft (length n) as real matrices.

    forward (2K, n): rows [Re; Im] of the K = n//2+1 bins. inverse (n, 2K): maps [Re; Im] back to n samples,
    counting each interior bin twice (Hermitian symmetry) and ignoring the imaginary parts of the DC and,
    for even n, Nyquist bins, exactly as a C2R inverse FFT does.
    """
    k_bins = n // 2 + 1
    t = torch.arange(n, dtype=torch.float64)
    k = torch.arange(k_bins, dtype=torch.float64)
    angle = 2 * math.pi * torch.outer(k, t) / n  # (K, n)
    scale = 1 / math.sqrt(n)
    forward = torch.cat([torch.cos(angle), -torch.sin(angle)]) * scale
    multiplicity = torch.full((k_bins,), 2.0, dtype=torch.float64)
    multiplicity[0] = 1.0
    if n % 2 == 0:
        multiplicity[-1] = 1.0
    inverse = torch.cat([torch.cos(angle), -torch.sin(angle)]).T * (multiplicity.repeat(2) * scale)
    # sin is zero at DC (and at Nyquist for even n): those imaginary parts are ignored, as in irfft
    return forward, inverse  # float64; cast to the input's dtype where used


_KERNELS: dict[str, ModuleType | None] = {}


def _kernel_module() -> ModuleType | None:
    """The Triton kernels, or None when triton is not installed (CPU-only torch builds); imported once."""
    if "module" not in _KERNELS:
        try:
            from brainbench_litemind import spectral_kernels
        except ImportError:
            spectral_kernels = None  # type: ignore[assignment]
        _KERNELS["module"] = spectral_kernels
    return _KERNELS["module"]


class _RealDFT:
    """Mixin: forward/inverse transforms along the token axis of (B, N, C) tensors."""

    n_tokens: int
    dft_forward: torch.Tensor
    dft_inverse: torch.Tensor
    spectral_precision: str = "fp32"
    spectral_kernel: str = "auto"

    def configure(self, precision: str = "fp32", kernel: str = "auto") -> None:
        if precision not in SPECTRAL_PRECISIONS:
            raise ValueError(f"spectral_precision must be one of {SPECTRAL_PRECISIONS}, got {precision!r}")
        if kernel not in SPECTRAL_KERNELS:
            raise ValueError(f"spectral_kernel must be one of {SPECTRAL_KERNELS}, got {kernel!r}")
        self.spectral_precision, self.spectral_kernel = precision, kernel
        if kernel != "torch":
            module = _kernel_module()  # imported here, not inside a traced forward
            if kernel == "triton" and module is None:
                raise RuntimeError("spectral_kernel='triton' needs the triton package (pip install triton)")

    def kernels_for(self, tensor: torch.Tensor) -> ModuleType | None:
        """The kernel module when the setting and ``tensor`` allow it, else None (the plain torch ops)."""
        if self.spectral_kernel == "torch":
            return None
        module = _KERNELS.get("module")
        if module is None:
            return None
        if self.spectral_kernel == "triton" and not module.kernels_usable(tensor):
            raise RuntimeError("spectral_kernel='triton' on a CPU tensor needs TRITON_INTERPRET=1")
        return module if tensor.is_cuda or self.spectral_kernel == "triton" else None

    def precise(self, x: torch.Tensor) -> tuple[torch.Tensor, contextlib.AbstractContextManager]:
        """The input and the context the spectral op runs in (fp32 with autocast off, or as it comes)."""
        if self.spectral_precision == "autocast" or not torch.is_autocast_enabled(x.device.type):
            return x, contextlib.nullcontext()
        return x.to(torch.promote_types(x.dtype, torch.float32)), torch.autocast(x.device.type, enabled=False)

    def _register_dft(self, in_tokens: int, out_tokens: int) -> None:
        # kept in float64 so a float64 model is exact; cast (a 36x34 copy) to the input's dtype per call.
        # Both lengths have the same K = n//2+1 bins (N and N-1 for odd N), as the reference's FFTs use.
        forward = real_dft_matrices(in_tokens)[0]
        inverse = real_dft_matrices(out_tokens)[1]
        if forward.shape[0] != inverse.shape[1]:
            raise ValueError(f"token counts {in_tokens} -> {out_tokens} do not share one spectrum")
        self.register_buffer("dft_forward", forward, persistent=False)  # type: ignore[attr-defined]
        self.register_buffer("dft_inverse", inverse, persistent=False)  # type: ignore[attr-defined]

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, 2K, C): real parts in rows [0, K), imaginary parts in [K, 2K)."""
        return torch.matmul(self.dft_forward.to(x.dtype), x)

    def tokens(self, bins: torch.Tensor) -> torch.Tensor:
        """(B, 2K, C) -> (B, N', C)."""
        return torch.matmul(self.dft_inverse.to(bins.dtype), bins)


class FastSpectrumFilter(_RealDFT, SpectrumFilter):
    def __init__(self, n_tokens: int, dim: int, out_tokens: int | None = None) -> None:
        super().__init__(n_tokens, dim, out_tokens)
        self._register_dft(self.n_tokens, self.out_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x, context = self.precise(x)
        with context:
            bins = self.spectrum(x)
            # sum_k c_k W_k X^3 == (sum_k c_k W_k) X^3: combine the weights first (one complex scale)
            w = sum(c * self.complex_weight[k] for k, c in enumerate(self.coefficients))
            w_r, w_i = w[..., 0].to(bins.dtype), w[..., 1].to(bins.dtype)
            kernels = self.kernels_for(bins)
            if kernels is not None:
                out = kernels.fused_cube(bins, w_r, w_i)
            else:
                real, imag = bins.chunk(2, dim=1)
                sq_r, sq_i = real * real - imag * imag, 2 * real * imag
                cube_r, cube_i = real * sq_r - imag * sq_i, real * sq_i + imag * sq_r
                out = torch.cat([w_r * cube_r - w_i * cube_i, w_r * cube_i + w_i * cube_r], dim=1)
            return self.tokens(out).to(dtype)


class FastFreMLP(_RealDFT, FreMLP):
    def __init__(self, n_tokens: int, dim: int, mode: str, in_tokens: int | None = None) -> None:
        super().__init__(n_tokens, dim, mode, in_tokens)
        self._register_dft(self.in_tokens, self.n_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x, context = self.precise(x)
        with context:
            bins = self.spectrum(x)
            kernels = self.kernels_for(bins) if self.mode == "diagonal" else None
            if kernels is not None:  # the dense (C x C) map is a matmul: no elementwise kernel for it
                wr, wi = self.complex_weights()
                out = kernels.fused_project(bins, wr, wi, self.rb, self.ib, SOFTSHRINK)
            else:
                out = torch.cat(self.project(*bins.chunk(2, dim=1)), dim=1)
            return self.tokens(out).to(dtype)

