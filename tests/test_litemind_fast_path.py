"""Lite-Mind's fast path beyond the formulation: spectral ops kept in fp32 under bf16 autocast, and the
"step" / "regions" compile scopes (forward + loss as one graph) computing the same loss and gradients."""

from __future__ import annotations

import pytest
import torch

from brainbench_litemind.encoder import LiteMindEncoder
from brainbench_litemind.fused_loss import COMPILED_LOSS_ATTR
from brainbench_litemind.model import build_litemind

OPTIONS = {"patch_size": 60, "widths": (64, 32, 16)}  # the speed benchmark's --small shapes: 33 tokens
SMALL = {"patch_size": 10, "widths": (12, 8, 6), "depths": (1, 2, 1, 1)}


def _relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.double() - reference.double()).abs().max() / reference.double().abs().max())


@pytest.mark.parametrize("seed", [0, 1])
def test_fp32_spectral_ops_cut_the_bf16_error(seed):
    torch.manual_seed(seed)
    faithful = build_litemind(2000, (17, 64), impl="faithful", **OPTIONS).eval()
    voxels = torch.randn(16, 2000)
    errors = {}
    with torch.no_grad():
        reference = faithful(voxels)
        for precision in ("autocast", "fp32"):
            fast = build_litemind(2000, (17, 64), impl="fast", spectral_precision=precision, **OPTIONS).eval()
            fast.load_state_dict(faithful.state_dict())
            assert torch.equal(fast(voxels), fast(voxels))  # deterministic, and fp32 without autocast:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                errors[precision] = _relative_error(fast(voxels).float(), reference)
    # bf16 rounding of the spectrum is cubed and rescaled by LayerNorm eps 1e-6; fp32 there removes that part
    assert errors["fp32"] < 0.8 * errors["autocast"], errors


def test_spectral_precision_changes_nothing_without_autocast():
    torch.manual_seed(0)
    models = [build_litemind(2000, (17, 64), impl="fast", spectral_precision=p, **OPTIONS).eval()
              for p in ("fp32", "autocast")]  # fmt: skip
    models[1].load_state_dict(models[0].state_dict())
    voxels = torch.randn(4, 2000)
    assert torch.equal(models[0](voxels), models[1](voxels))


def test_bad_spectral_settings_are_refused():
    with pytest.raises(ValueError, match="spectral_precision"):
        build_litemind(200, (6, 12), impl="fast", spectral_precision="fp8", **SMALL)
    with pytest.raises(ValueError, match="spectral_kernel"):
        build_litemind(200, (6, 12), impl="fast", spectral_kernel="cuda", **SMALL)


def _loss_and_grads(model, objective, voxels, targets):
    model.zero_grad()
    loss = objective(model, voxels, targets, 0.0)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("scope", ["step", "regions"])
def test_step_scope_compiles_forward_and_loss_as_one_graph_with_the_same_result(scope):
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    encoder = LiteMindEncoder(impl="fast", dropout=0.0, drop_path=0.0, **SMALL)
    torch.manual_seed(0)
    eager_model = encoder.build(313, (6, 12)).train()
    compiled_model = encoder.build(313, (6, 12)).train()
    compiled_model.load_state_dict(eager_model.state_dict())
    encoder.compile_model(compiled_model, scope=scope, backend="aot_eager")  # tracing without codegen
    objective = encoder.objective((6, 12))
    voxels, targets = torch.randn(8, 313), torch.randn(8, 6, 12)

    for _ in range(2):
        want, want_grads = _loss_and_grads(eager_model, objective, voxels, targets)
        got, got_grads = _loss_and_grads(compiled_model, objective, voxels, targets)
        assert torch.allclose(got, want, rtol=1e-5)
        for name, grad in want_grads.items():
            assert torch.allclose(got_grads[name], grad, rtol=1e-4, atol=1e-7), name
    compiled = getattr(compiled_model, COMPILED_LOSS_ATTR)
    assert compiled.compiled_steps == 2 and counters["stats"]["unique_graphs"] == 1  # one graph, reused

    # the last partial batch of an epoch runs eagerly instead of compiling a second graph
    _loss_and_grads(compiled_model, objective, voxels[:5], targets[:5])
    assert compiled.eager_steps == 1 and counters["stats"]["unique_graphs"] == 1
    # evaluation (eval mode, no grad) is eager too: no inference graph to compile
    compiled_model.eval()
    with torch.no_grad():
        objective(compiled_model, voxels, targets, 0.0)
    assert compiled.compiled_steps == 2 and counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()


def test_auto_scope_is_step_for_fast_and_blocks_for_faithful():
    fast, faithful = LiteMindEncoder(impl="fast", **SMALL), LiteMindEncoder(impl="faithful", **SMALL)
    model = fast.build(313, (6, 12))
    fast.compile_model(model, backend="aot_eager")
    assert hasattr(model, COMPILED_LOSS_ATTR)
    model = faithful.build(313, (6, 12))
    faithful.compile_model(model, backend="aot_eager")
    assert not hasattr(model, COMPILED_LOSS_ATTR)  # its blocks were compiled in place instead
    assert all(hasattr(block, "_compiled_call_impl") and block._compiled_call_impl is not None
               for stage in model.stages for block in stage)  # fmt: skip
    with pytest.raises(ValueError, match="impl=faithful"):
        faithful.compile_model(faithful.build(313, (6, 12)), scope="step")
    with pytest.raises(ValueError, match="compile scope"):
        fast.compile_model(fast.build(313, (6, 12)), scope="graph")
    torch._dynamo.reset()
