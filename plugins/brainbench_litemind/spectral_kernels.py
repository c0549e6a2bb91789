"""Fused Triton kernels for the fast path's elementwise chains on the token spectrum.

Between the forward and the inverse real DFT (``brainbench_litemind.fast``) each block runs two chains of
elementwise ops on the spectrum, held as one (B, 2K, C) tensor: rows [0, K) the real parts, [K, 2K) the
imaginary parts of the K = N//2+1 bins.

- filter: out = w * z^3 with z the complex bin and w the combined complex weight (K, C): ~16 separate
  eager ops (complex square, cube, weight product), each a full pass over the spectrum;
- FreMLP (diagonal): out = softshrink(relu(w * z + b)), w and b complex per channel (C): ~10 eager ops.
  softshrink(relu(a), l) equals max(a - l, 0) for l >= 0, which is what the kernel computes.

Each chain here is one pass forward (read the spectrum, write the result) and one pass backward (read the
spectrum and the output gradient, write the input gradient and per-block partial sums of the weight
gradients, summed over blocks by torch: no atomics, so the result is deterministic). Arithmetic is fp32
(fp64 for fp64 inputs); results are stored in the input's dtype.

The ops are opaque ``torch.library.custom_op``s with fake (shape) implementations, so ``torch.compile``
keeps them as single calls inside a compiled graph (inductor does not trace into the kernels: nothing of
them depends on its version) and autograd uses the backward kernels. On CPU tensors the kernels run only under
Triton's interpreter (``TRITON_INTERPRET=1``, set before triton is imported), which is how the tests
check them without a GPU; :func:`kernels_usable` says whether a tensor can take them.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton
import triton.language as tl
from torch.library import custom_op

BLOCK = 256  # spectrum columns (K*C flattened) per program
ROWS = 32  # batch rows each backward program sums its weight-gradient partials over


def kernels_usable(tensor: torch.Tensor) -> bool:
    """CUDA tensors always; CPU tensors only under Triton's interpreter (the tests' way)."""
    return tensor.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _promote(x, BLOCK: tl.constexpr):
    """At least fp32 (adding an fp32 zero promotes bf16/fp16 and keeps fp64): the compute precision.

    Done by promotion rather than a dtype argument, so the kernels take only ints, floats and block sizes
    (what a compiled graph's kernel wrapper passes on most simply)."""
    return x + tl.zeros([BLOCK], dtype=tl.float32)


@triton.jit
def _load_pair(ptr, row, cols, mask, kc, BLOCK: tl.constexpr):
    base = ptr + row * 2 * kc
    re = tl.load(base + cols, mask=mask, other=0.0)
    im = tl.load(base + kc + cols, mask=mask, other=0.0)
    return _promote(re, BLOCK), _promote(im, BLOCK)


@triton.jit
def _load_vec(ptr, index, mask, BLOCK: tl.constexpr):
    return _promote(tl.load(ptr + index, mask=mask, other=0.0), BLOCK)


@triton.jit
def _cube_fwd(spec, w_re, w_im, out, kc, BLOCK: tl.constexpr):
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    row = tl.program_id(1).to(tl.int64)
    mask = cols < kc
    re, im = _load_pair(spec, row, cols, mask, kc, BLOCK)
    wr = _load_vec(w_re, cols, mask, BLOCK)
    wi = _load_vec(w_im, cols, mask, BLOCK)
    re2, im2 = re * re, im * im
    cube_re = re * (re2 - 3 * im2)
    cube_im = im * (3 * re2 - im2)
    base = out + row * 2 * kc
    tl.store(base + cols, wr * cube_re - wi * cube_im, mask=mask)
    tl.store(base + kc + cols, wr * cube_im + wi * cube_re, mask=mask)


@triton.jit
def _cube_bwd(
    spec, w_re, w_im, grad_out, grad_spec, part_re, part_im, rows_total, kc,
    BLOCK: tl.constexpr, ROWS: tl.constexpr,
):  # fmt: skip
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    chunk = tl.program_id(1)
    mask = cols < kc
    wr = _load_vec(w_re, cols, mask, BLOCK)
    wi = _load_vec(w_im, cols, mask, BLOCK)
    acc_re = wr * 0.0  # the compute dtype (fp32, or fp64 for fp64 inputs)
    acc_im = wr * 0.0
    for r in range(ROWS):
        row = (chunk * ROWS + r).to(tl.int64)
        live = mask & (row < rows_total)
        re, im = _load_pair(spec, row, cols, live, kc, BLOCK)
        g_re, g_im = _load_pair(grad_out, row, cols, live, kc, BLOCK)
        re2, im2 = re * re, im * im
        cube_re = re * (re2 - 3 * im2)
        cube_im = im * (3 * re2 - im2)
        # out = w * c: dL/dc = conj(w) * g;  dL/dw = conj(c) * g (as real pairs)
        gc_re = g_re * wr + g_im * wi
        gc_im = g_im * wr - g_re * wi
        acc_re += g_re * cube_re + g_im * cube_im
        acc_im += g_im * cube_re - g_re * cube_im
        # c = z^3: dL/dz = conj(3 z^2) * dL/dc
        d_re = 3 * (re2 - im2)
        d_im = 6 * re * im
        base = grad_spec + row * 2 * kc
        tl.store(base + cols, gc_re * d_re + gc_im * d_im, mask=live)
        tl.store(base + kc + cols, gc_im * d_re - gc_re * d_im, mask=live)
    tl.store(part_re + chunk * kc + cols, acc_re, mask=mask)
    tl.store(part_im + chunk * kc + cols, acc_im, mask=mask)


@triton.jit
def _project_fwd(spec, w_re, w_im, b_re, b_im, out, kc, channels, shrink, BLOCK: tl.constexpr):
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    row = tl.program_id(1).to(tl.int64)
    mask = cols < kc
    ch = cols % channels
    re, im = _load_pair(spec, row, cols, mask, kc, BLOCK)
    wr = _load_vec(w_re, ch, mask, BLOCK)
    wi = _load_vec(w_im, ch, mask, BLOCK)
    a_re = re * wr - im * wi + _load_vec(b_re, ch, mask, BLOCK)
    a_im = im * wr + re * wi + _load_vec(b_im, ch, mask, BLOCK)
    base = out + row * 2 * kc
    tl.store(base + cols, tl.maximum(a_re - shrink, 0.0), mask=mask)
    tl.store(base + kc + cols, tl.maximum(a_im - shrink, 0.0), mask=mask)


@triton.jit
def _project_bwd(
    spec, w_re, w_im, b_re, b_im, grad_out, grad_spec, part_wr, part_wi, part_br, part_bi, rows_total, kc,
    channels, shrink, BLOCK: tl.constexpr, ROWS: tl.constexpr,
):  # fmt: skip
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    chunk = tl.program_id(1)
    mask = cols < kc
    ch = cols % channels
    wr = _load_vec(w_re, ch, mask, BLOCK)
    wi = _load_vec(w_im, ch, mask, BLOCK)
    br = _load_vec(b_re, ch, mask, BLOCK)
    bi = _load_vec(b_im, ch, mask, BLOCK)
    acc_wr = wr * 0.0  # the compute dtype (fp32, or fp64 for fp64 inputs)
    acc_wi = wr * 0.0
    acc_br = wr * 0.0
    acc_bi = wr * 0.0
    for r in range(ROWS):
        row = (chunk * ROWS + r).to(tl.int64)
        live = mask & (row < rows_total)
        re, im = _load_pair(spec, row, cols, live, kc, BLOCK)
        g_re, g_im = _load_pair(grad_out, row, cols, live, kc, BLOCK)
        a_re = re * wr - im * wi + br
        a_im = im * wr + re * wi + bi
        # max(a - l, 0) passes the gradient where a > l (torch's relu/softshrink give 0 at the kink too)
        ga_re = tl.where(a_re > shrink, g_re, 0.0)
        ga_im = tl.where(a_im > shrink, g_im, 0.0)
        acc_wr += ga_re * re + ga_im * im
        acc_wi += ga_im * re - ga_re * im
        acc_br += ga_re
        acc_bi += ga_im
        base = grad_spec + row * 2 * kc
        tl.store(base + cols, ga_re * wr + ga_im * wi, mask=live)
        tl.store(base + kc + cols, ga_im * wr - ga_re * wi, mask=live)
    offset = chunk * kc + cols
    tl.store(part_wr + offset, acc_wr, mask=mask)
    tl.store(part_wi + offset, acc_wi, mask=mask)
    tl.store(part_br + offset, acc_br, mask=mask)
    tl.store(part_bi + offset, acc_bi, mask=mask)


# ------------------------------------------------------------------------------------------ ops


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _shape(spec: torch.Tensor) -> tuple[int, int, int]:
    rows, two_k, channels = spec.shape
    return rows, two_k // 2, channels


@custom_op("brainbench::spectral_cube", mutates_args=())
def spectral_cube(spec: torch.Tensor, w_re: torch.Tensor, w_im: torch.Tensor) -> torch.Tensor:
    """(B, 2K, C) spectrum -> w * z^3 per bin, w = w_re + i w_im of shape (K, C)."""
    rows, k, channels = _shape(spec)
    kc = k * channels
    out = torch.empty_like(spec)
    grid = (triton.cdiv(kc, BLOCK), rows)
    _cube_fwd[grid](spec, w_re, w_im, out, kc, BLOCK=BLOCK)
    return out


@custom_op("brainbench::spectral_cube_backward", mutates_args=())
def spectral_cube_backward(
    spec: torch.Tensor, w_re: torch.Tensor, w_im: torch.Tensor, grad_out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows, k, channels = _shape(spec)
    kc = k * channels
    chunks = triton.cdiv(rows, ROWS)
    grad_spec = torch.empty_like(spec)
    parts = [torch.empty(chunks, kc, device=spec.device, dtype=_acc_dtype(spec.dtype)) for _ in range(2)]
    grid = (triton.cdiv(kc, BLOCK), chunks)
    _cube_bwd[grid](
        spec, w_re, w_im, grad_out, grad_spec, *parts, rows, kc, BLOCK=BLOCK, ROWS=ROWS
    )
    grad_wr, grad_wi = (p.sum(0).view(k, channels).to(w_re.dtype) for p in parts)
    return grad_spec, grad_wr, grad_wi


@custom_op("brainbench::spectral_project", mutates_args=())
def spectral_project(
    spec: torch.Tensor, w_re: torch.Tensor, w_im: torch.Tensor, b_re: torch.Tensor, b_im: torch.Tensor,
    shrink: float,
) -> torch.Tensor:  # fmt: skip
    """(B, 2K, C) spectrum -> softshrink(relu(w * z + b), shrink) per bin, w and b complex of shape (C,)."""
    rows, k, channels = _shape(spec)
    kc = k * channels
    out = torch.empty_like(spec)
    grid = (triton.cdiv(kc, BLOCK), rows)
    _project_fwd[grid](
        spec, w_re, w_im, b_re, b_im, out, kc, channels, shrink, BLOCK=BLOCK
    )
    return out


@custom_op("brainbench::spectral_project_backward", mutates_args=())
def spectral_project_backward(
    spec: torch.Tensor, w_re: torch.Tensor, w_im: torch.Tensor, b_re: torch.Tensor, b_im: torch.Tensor,
    shrink: float, grad_out: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    rows, k, channels = _shape(spec)
    kc = k * channels
    chunks = triton.cdiv(rows, ROWS)
    grad_spec = torch.empty_like(spec)
    parts = [torch.empty(chunks, kc, device=spec.device, dtype=_acc_dtype(spec.dtype)) for _ in range(4)]
    grid = (triton.cdiv(kc, BLOCK), chunks)
    _project_bwd[grid](
        spec, w_re, w_im, b_re, b_im, grad_out, grad_spec, *parts, rows, kc, channels, shrink,
        BLOCK=BLOCK, ROWS=ROWS,
    )  # fmt: skip
    # per column (k, c) partials -> per channel: sum over row chunks and bins
    weights = (w_re, w_im, b_re, b_im)
    grads = [part.sum(0).view(k, channels).sum(0).to(w.dtype) for part, w in zip(parts, weights, strict=True)]
    return grad_spec, *grads


# ------------------------------------------------------------------------------------ fake (shapes only)


@spectral_cube.register_fake
def _(spec: torch.Tensor, w_re: torch.Tensor, w_im: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(spec)


@spectral_cube_backward.register_fake
def _(spec: torch.Tensor, w_re: torch.Tensor, w_im: torch.Tensor, grad_out: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.empty_like(spec), torch.empty_like(w_re), torch.empty_like(w_im)


@spectral_project.register_fake
def _(spec: torch.Tensor, w_re: torch.Tensor, w_im: torch.Tensor, b_re: torch.Tensor, b_im: torch.Tensor,
      shrink: float) -> torch.Tensor:  # fmt: skip
    return torch.empty_like(spec)


@spectral_project_backward.register_fake
def _(spec: torch.Tensor, w_re: torch.Tensor, w_im: torch.Tensor, b_re: torch.Tensor, b_im: torch.Tensor,
      shrink: float, grad_out: torch.Tensor) -> tuple[torch.Tensor, ...]:  # fmt: skip
    return (torch.empty_like(spec), *(torch.empty_like(t) for t in (w_re, w_im, b_re, b_im)))


# ------------------------------------------------------------------------------------ autograd


def _cube_setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _cube_grad(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
    spec, w_re, w_im = ctx.saved_tensors
    return spectral_cube_backward(spec, w_re, w_im, grad.contiguous())


def _project_setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    *tensors, shrink = inputs
    ctx.save_for_backward(*tensors)
    ctx.shrink = shrink


def _project_grad(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
    spec, w_re, w_im, b_re, b_im = ctx.saved_tensors
    return (*spectral_project_backward(spec, w_re, w_im, b_re, b_im, ctx.shrink, grad.contiguous()), None)


spectral_cube.register_autograd(_cube_grad, setup_context=_cube_setup)
spectral_project.register_autograd(_project_grad, setup_context=_project_setup)


def fused_cube(spec: torch.Tensor, w_re: torch.Tensor, w_im: torch.Tensor) -> torch.Tensor:
    """The filter's chain through the kernel; weights are cast to the spectrum's dtype, all made contiguous."""
    return spectral_cube(spec.contiguous(), w_re.to(spec.dtype).contiguous(), w_im.to(spec.dtype).contiguous())


def fused_project(
    spec: torch.Tensor, w_re: torch.Tensor, w_im: torch.Tensor, b_re: torch.Tensor, b_im: torch.Tensor, shrink: float
) -> torch.Tensor:
    """FreMLP's diagonal chain through the kernel."""
    cast = [t.to(spec.dtype).contiguous() for t in (w_re, w_im, b_re, b_im)]
    return spectral_project(spec.contiguous(), *cast, float(shrink))
