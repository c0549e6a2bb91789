"""The fused Triton kernels of the fast path compute the same chains as the plain torch ops (values and
gradients, fp64 and fp32), checked on the CPU under Triton's interpreter.

Triton decides at import whether kernels are interpreted, so the checks run in a child pytest process
with TRITON_INTERPRET=1 (``test_kernels_under_the_interpreter``); in this process they are skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
needs_interpreter = pytest.mark.skipif(not INTERPRETED, reason="runs in the child process (TRITON_INTERPRET=1)")
TOLERANCE = {torch.float64: 1e-12, torch.float32: 2e-5}
MODEL_TOLERANCE = 1e-9
N_CHILD_TESTS = 10  # the child must run (not skip) every interpreted test below


def test_kernels_under_the_interpreter():
    pytest.importorskip("triton")
    if INTERPRETED:
        pytest.skip("this is the child process")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "interpreted", __file__],
        env=env, capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert f"{N_CHILD_TESTS} passed" in result.stdout, result.stdout[-2000:]


def _cube_reference(spec, w_re, w_im):
    k = spec.shape[1] // 2
    z = torch.complex(spec[:, :k], spec[:, k:])
    out = torch.complex(w_re, w_im) * z * (z * z)
    return torch.cat([out.real, out.imag], dim=1)


def _project_reference(spec, w_re, w_im, b_re, b_im, shrink):
    k = spec.shape[1] // 2
    re, im = spec[:, :k], spec[:, k:]
    a_re, a_im = re * w_re - im * w_im + b_re, im * w_re + re * w_im + b_im
    return torch.cat([F.softshrink(F.relu(a), shrink) for a in (a_re, a_im)], dim=1)


def _value_and_grads(fn, inputs, grad_out):
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*inputs)
    return out, torch.autograd.grad(out, inputs, grad_out)


def _assert_close(a, b, dtype, tolerance=None):
    scale = b.abs().max().clamp_min(1e-30)
    assert ((a - b).abs().max() / scale).item() < (tolerance or TOLERANCE[dtype])


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("rows", "bins", "channels"), [(37, 18, 7), (3, 5, 300)])  # ragged tiles and rows
def test_interpreted_filter_cube_equals_torch(rows, bins, channels, dtype):
    from brainbench_litemind.spectral_kernels import fused_cube

    torch.manual_seed(0)
    spec = torch.randn(rows, 2 * bins, channels, dtype=dtype)
    weights = [torch.randn(bins, channels, dtype=dtype) for _ in range(2)]
    grad_out = torch.randn_like(spec)
    got, got_grads = _value_and_grads(fused_cube, [spec, *weights], grad_out)
    want, want_grads = _value_and_grads(_cube_reference, [spec, *weights], grad_out)
    _assert_close(got, want, dtype)
    for a, b in zip(got_grads, want_grads, strict=True):
        _assert_close(a, b, dtype)


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("rows", "bins", "channels"), [(37, 18, 7), (3, 5, 300)])
def test_interpreted_fremlp_projection_equals_torch(rows, bins, channels, dtype):
    from brainbench_litemind.spectral_kernels import fused_project

    torch.manual_seed(1)
    spec = torch.randn(rows, 2 * bins, channels, dtype=dtype)
    params = [0.5 * torch.randn(channels, dtype=dtype) for _ in range(4)]
    grad_out = torch.randn_like(spec)
    got, got_grads = _value_and_grads(lambda *t: fused_project(*t, 0.01), [spec, *params], grad_out)
    want, want_grads = _value_and_grads(lambda *t: _project_reference(*t, 0.01), [spec, *params], grad_out)
    assert (got == 0).any() and (got > 0).any()  # both branches of relu + softshrink are exercised
    _assert_close(got, want, dtype)
    for a, b in zip(got_grads, want_grads, strict=True):
        _assert_close(a, b, dtype)


@needs_interpreter
def test_interpreted_model_with_kernels_equals_the_faithful_model():
    """The whole fast model with spectral_kernel="triton" against the faithful one, fp64, forward + grads."""
    from brainbench_litemind.model import build_litemind

    torch.manual_seed(2)
    options = {"patch_size": 10, "widths": (12, 8, 6), "depths": (1, 2, 1, 1)}
    faithful = build_litemind(313, (6, 12), impl="faithful", **options).double().eval()
    fast = build_litemind(313, (6, 12), impl="fast", spectral_kernel="triton", **options).double().eval()
    with torch.no_grad():  # strong spectral weights, so the cubic chain matters
        for name, param in faithful.named_parameters():
            if name.endswith(("complex_weight", ".r", ".i", ".rb", ".ib")):
                param.mul_(20)
    fast.load_state_dict(faithful.state_dict())
    voxels = torch.randn(4, 313, dtype=torch.float64)
    outputs = []
    for model in (faithful, fast):
        model.zero_grad()
        out = model(voxels)
        out.square().sum().backward()
        outputs.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (want, want_grads), (got, got_grads) = outputs
    # 18 cubic blocks deep: fp64 rounding accumulates to ~1e-12 (test_litemind's model tolerance is 1e-9)
    _assert_close(got, want, torch.float64, MODEL_TOLERANCE)
    assert want_grads.keys() == got_grads.keys()
    for name, grad in want_grads.items():
        if grad.abs().max() > 1e-10:  # some grads are ~1e-16 (rounding around zero): nothing to compare
            _assert_close(got_grads[name], grad, torch.float64, MODEL_TOLERANCE)


@needs_interpreter
def test_interpreted_kernels_inside_a_compiled_step_give_the_eager_loss_and_gradients():
    """Forward + loss compiled as one graph (aot_eager: traced, not code-generated) with the kernels as opaque
    ops: one graph, no graph break, the loss and gradients of the plain eager path."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from brainbench_litemind.encoder import LiteMindEncoder

    torch._dynamo.reset()
    counters.clear()
    options = {"patch_size": 10, "widths": (12, 8, 6), "depths": (1, 2, 1, 1), "dropout": 0.0, "drop_path": 0.0}
    plain = LiteMindEncoder(impl="fast", spectral_kernel="torch", **options)
    fused = LiteMindEncoder(impl="fast", spectral_kernel="triton", **options)
    torch.manual_seed(3)
    eager_model = plain.build(313, (6, 12)).train()
    compiled_model = fused.build(313, (6, 12)).train()
    compiled_model.load_state_dict(eager_model.state_dict())
    fused.compile_model(compiled_model, scope="step", backend="aot_eager")
    voxels, targets = torch.randn(8, 313), torch.randn(8, 6, 12)
    results = []
    for encoder, model in ((plain, eager_model), (fused, compiled_model)):
        loss = encoder.objective((6, 12))(model, voxels, targets, 0.0)
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (want, want_grads), (got, got_grads) = results
    _assert_close(got, want, torch.float32)
    for name, grad in want_grads.items():
        if grad.abs().max() > 1e-6:
            _assert_close(got_grads[name], grad, torch.float32, 1e-4)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    torch._dynamo.reset()
