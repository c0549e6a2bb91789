"""The fast formulation of Lite-Mind's spectral operators: real DFT matmuls instead of complex FFTs.

Over ~34 tokens an FFT is a tiny dense transform; written as matmuls with precomputed cos/sin matrices,
the whole complex chain becomes real elementwise ops that torch.compile can fuse (inductor cannot fuse
complex tensors). Parameters are those of the faithful modules (these subclass them), and the DFT
matrices are non-persistent buffers, so state dicts are interchangeable between the two forms.
"""

from __future__ import annotations

import math

import torch

from brainbench_litemind.model import FreMLP, SpectrumFilter


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


class _RealDFT:
    """Mixin: forward/inverse transforms along the token axis of (B, N, C) tensors."""

    n_tokens: int
    dft_forward: torch.Tensor
    dft_inverse: torch.Tensor

    def _register_dft(self, in_tokens: int, out_tokens: int) -> None:
        # kept in float64 so a float64 model is exact; cast (a 36x34 copy) to the input's dtype per call.
        # Both lengths have the same K = n//2+1 bins (N and N-1 for odd N), as the reference's FFTs use.
        forward = real_dft_matrices(in_tokens)[0]
        inverse = real_dft_matrices(out_tokens)[1]
        if forward.shape[0] != inverse.shape[1]:
            raise ValueError(f"token counts {in_tokens} -> {out_tokens} do not share one spectrum")
        self.register_buffer("dft_forward", forward, persistent=False)  # type: ignore[attr-defined]
        self.register_buffer("dft_inverse", inverse, persistent=False)  # type: ignore[attr-defined]

    def spectrum(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bins = torch.matmul(self.dft_forward.to(x.dtype), x)  # (B, 2K, C)
        real, imag = bins.chunk(2, dim=1)
        return real, imag

    def tokens(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.dft_inverse.to(real.dtype), torch.cat([real, imag], dim=1))


class FastSpectrumFilter(_RealDFT, SpectrumFilter):
    def __init__(self, n_tokens: int, dim: int, out_tokens: int | None = None) -> None:
        super().__init__(n_tokens, dim, out_tokens)
        self._register_dft(self.n_tokens, self.out_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        real, imag = self.spectrum(x)
        sq_r, sq_i = real * real - imag * imag, 2 * real * imag
        cube_r, cube_i = real * sq_r - imag * sq_i, real * sq_i + imag * sq_r
        # sum_k c_k W_k X^3 == (sum_k c_k W_k) X^3: combine the weights first (one complex scale)
        w = sum(c * self.complex_weight[k] for k, c in enumerate(self.coefficients))
        w_r, w_i = w[..., 0].to(x.dtype), w[..., 1].to(x.dtype)
        return self.tokens(w_r * cube_r - w_i * cube_i, w_r * cube_i + w_i * cube_r)


class FastFreMLP(_RealDFT, FreMLP):
    def __init__(self, n_tokens: int, dim: int, mode: str, in_tokens: int | None = None) -> None:
        super().__init__(n_tokens, dim, mode, in_tokens)
        self._register_dft(self.in_tokens, self.n_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        real, imag = self.spectrum(x)
        out_r, out_i = self.project(real, imag)
        return self.tokens(out_r, out_i)

