"""Lite-Mind module ablation: each module removable by a declared option, the rest of the model unchanged.

For every option: the model's output differs from the full model's on the same weights, the removed
module's parameters are gone, a hand-written expectation of what is left holds, and the fast path computes
the same function as the faithful one in float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from brainbench.options import OptionError
from brainbench.plugins import get_plugins
from brainbench_litemind.encoder import LiteMindEncoder, ablated_modules
from brainbench_litemind.model import LAYER_NORM_EPS, build_litemind

SMALL = {"patch_size": 10, "widths": (12, 8, 6), "depths": (1, 2, 1, 1)}
ABLATIONS = [{"filter": "none"}, {"fremlp": "none"}, {"pos_embed": "none"}, {"tokenizer": "linear"},
             {"filter": "none", "fremlp": "none"}]
N_VOXELS, TARGET = 343, (6, 12)  # 34 tokens of 10 voxels, as subject 1 has 34 of 450


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    torch.set_num_threads(2)


def _shared_weights(full: torch.nn.Module, ablated: torch.nn.Module) -> None:
    """Copy every parameter the ablated model still has from the full model (same names, same shapes)."""
    state = full.state_dict()
    own = ablated.state_dict()
    ablated.load_state_dict({k: (state[k] if k in state and state[k].shape == v.shape else v) for k, v in own.items()})


@pytest.mark.parametrize("options", ABLATIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_each_ablation_changes_the_output_and_drops_its_parameters(options):
    full = build_litemind(N_VOXELS, TARGET, **SMALL).eval()
    ablated = build_litemind(N_VOXELS, TARGET, **SMALL, **options).eval()
    _shared_weights(full, ablated)
    x = torch.randn(4, N_VOXELS)
    assert ablated(x).shape == full(x).shape
    assert not torch.allclose(ablated(x), full(x), atol=1e-4)
    full_names = {n for n, _ in full.named_parameters()}
    ablated_names = {n for n, _ in ablated.named_parameters()}
    gone = full_names - ablated_names
    if options.get("filter") == "none":
        assert "stages.0.0.filter.complex_weight" in gone and "stages.0.0.norm1.weight" in gone
    if options.get("fremlp") == "none":
        assert "stages.0.0.fremlp.r" in gone and "stages.0.0.norm3.weight" in gone
    if options.get("pos_embed") == "none":
        assert gone == {"pos_embed"}
    if options.get("tokenizer") == "linear":
        assert ablated.patch_embed.weight.shape == (34 * 12, N_VOXELS)  # every token reads every voxel


def _ln(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, LAYER_NORM_EPS)


def test_without_the_filter_a_block_is_the_identity_on_that_path():
    model = build_litemind(N_VOXELS, TARGET, **SMALL, filter="none").eval()
    block = model.stages[0][0]
    x = torch.randn(3, 34, 12)
    mlp = block.mlp
    branch = mlp.fc2(F.gelu(mlp.fc1(_ln(x, block.norm2))))  # MLP(LN(x)): no filter, no norm before it
    spectrum = torch.fft.rfft(_ln(branch, block.norm3), dim=1, norm="ortho")
    wr, wi = torch.diagonal(block.fremlp.r), torch.diagonal(block.fremlp.i)
    real = F.softshrink(F.relu(spectrum.real * wr - spectrum.imag * wi + block.fremlp.rb), 0.01)
    imag = F.softshrink(F.relu(spectrum.imag * wr + spectrum.real * wi + block.fremlp.ib), 0.01)
    expected = x + torch.fft.irfft(torch.complex(real, imag), n=34, dim=1, norm="ortho")
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-6)


def test_without_fremlp_a_block_is_the_residual_mlp_over_the_filter():
    model = build_litemind(N_VOXELS, TARGET, **SMALL, fremlp="none").eval()
    block = model.stages[0][0]
    x = torch.randn(3, 34, 12)
    filtered = block.filter(_ln(x, block.norm1))
    expected = x + block.mlp.fc2(F.gelu(block.mlp.fc1(_ln(filtered, block.norm2))))
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-6)


def test_without_positional_embedding_tokens_are_the_patches_alone():
    model = build_litemind(N_VOXELS, TARGET, **SMALL, pos_embed="none").eval()
    x = torch.randn(2, N_VOXELS)
    patches = x[:, :340].reshape(2, 34, 10) @ model.patch_embed.weight[:, 0, :].T + model.patch_embed.bias
    torch.testing.assert_close(model.tokens(x), patches, rtol=1e-5, atol=1e-6)


def test_without_patch_compression_each_token_sees_every_voxel():
    patched = build_litemind(N_VOXELS, TARGET, **SMALL).eval()
    linear = build_litemind(N_VOXELS, TARGET, **SMALL, tokenizer="linear").eval()
    x = torch.randn(2, N_VOXELS)
    changed = x.clone()
    changed[:, 0] += 3.0  # a voxel of the first patch only
    moved = (patched.tokens(changed) - patched.tokens(x)).abs().sum(-1)[0]
    assert moved[0] > 0 and torch.all(moved[1:] == 0)  # a patch token reads its own 10 voxels
    moved = (linear.tokens(changed) - linear.tokens(x)).abs().sum(-1)[0]
    assert torch.all(moved > 0)
    tail = x.clone()
    tail[:, -1] += 3.0  # past the last whole patch: dropped by the patches, read by the linear map
    assert torch.equal(patched.tokens(tail), patched.tokens(x))
    assert not torch.allclose(linear.tokens(tail), linear.tokens(x))


FAST_CASES = [(options, tokens) for options in ABLATIONS for tokens in (34, 31)]


@pytest.mark.parametrize(("options", "tokens"), FAST_CASES,
                         ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else str(v))
def test_fast_path_is_the_same_function_in_float64(options, tokens):
    n_voxels = tokens * 10 + 3
    opts = {**SMALL, **options}
    if options.get("fremlp") == "none" and options.get("filter") != "none":
        opts["odd_tokens"] = "keep"  # the reference's N-1 tokens need FreMLP to restore N (refused otherwise)
    faithful = build_litemind(n_voxels, TARGET, impl="faithful", **opts).double().eval()
    fast = build_litemind(n_voxels, TARGET, impl="fast", **opts).double().eval()
    fast.load_state_dict(faithful.state_dict())
    x = torch.randn(3, n_voxels, dtype=torch.float64, requires_grad=True)
    out_faithful, out_fast = faithful(x), fast(x)
    torch.testing.assert_close(out_fast, out_faithful, rtol=1e-10, atol=1e-12)
    (grad_faithful,) = torch.autograd.grad(out_faithful.square().sum(), x)
    (grad_fast,) = torch.autograd.grad(out_fast.square().sum(), x)
    torch.testing.assert_close(grad_fast, grad_faithful, rtol=1e-9, atol=1e-11)


def test_fremlp_none_with_the_reference_odd_token_quirk_is_refused_clearly():
    with pytest.raises(ValueError, match="odd_tokens=keep"):
        build_litemind(313, TARGET, **SMALL, fremlp="none")  # 31 tokens: the filter returns 30
    assert build_litemind(313, TARGET, **SMALL, fremlp="none", odd_tokens="keep")(torch.randn(2, 313)).shape == (
        2, *TARGET)


def test_options_are_declared_and_checked_before_any_work():
    entry = get_plugins().encoders.entry("litemind")
    declared = {row["name"]: row for row in entry.declared_options().rows()}
    for name in ("filter", "pos_embed", "tokenizer", "fremlp"):
        assert name in declared
    assert entry.check_options({"fremlp": "none"}, "--opt ") == {"fremlp": "none"}
    with pytest.raises(OptionError, match="filter"):
        entry.check_options({"filter": "off"}, "--opt ")
    encoder = LiteMindEncoder(filter="none", fremlp="none", pos_embed="none", tokenizer="linear")
    info = encoder.describe(15724, (257, 768))
    assert "spectrum-compression filter" in info["ablated_modules"]
    assert info["parameters_per_module"]["patch_embed"] == 15724 * 34 * 512 + 34 * 512  # Linear(V -> N x 512)
    assert "pos_embed" not in info["parameters_per_module"]
    assert ablated_modules(LiteMindEncoder().options.as_dict()) == []
