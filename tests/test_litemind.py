"""Lite-Mind: reference parameter counts, token counts, options, and fast == faithful (forward and grads)."""

from __future__ import annotations

import pytest
import torch

from brainbench_litemind.encoder import LiteMindEncoder
from brainbench_litemind.fast import FastFreMLP, FastSpectrumFilter, real_dft_matrices
from brainbench_litemind.model import FreMLP, LiteMindConfig, SpectrumFilter, build_litemind, drop_path_rates

SMALL = {"patch_size": 10, "widths": (12, 8, 6), "depths": (1, 2, 1, 1)}


@pytest.fixture(autouse=True)
def _seed():  # BRAINBENCH_HOME is isolated by conftest.py
    torch.manual_seed(0)
    torch.set_num_threads(2)


def test_subject_1_parameter_counts_equal_the_reference():
    encoder = LiteMindEncoder()
    for target_shape, expected in (((257, 768), 15_657_859), ((768,), 7_552_254)):
        with torch.device("meta"):
            model = encoder.build(15724, target_shape)
        assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize(("voxels", "tokens"), [(15724, 34), (14278, 31), (13039, 28), (12682, 28)])
def test_token_counts_per_subject(voxels, tokens):
    assert LiteMindConfig(voxels, (257, 768)).n_tokens == tokens
    assert LiteMindConfig(voxels, (257, 768), pad="zero").n_tokens == -(-voxels // 450)


def test_describe_reports_modules_flops_and_options():
    info = LiteMindEncoder(fremlp="dense").describe(14278, (257, 768))
    assert info["tokens"] == 31 and info["variant"] == "full"
    assert sum(info["parameters_per_module"].values()) == info["parameters"]
    assert info["parameters_per_module"]["pos_embed"] == 31 * 512
    assert info["flops_per_sample"] > 0
    assert info["options"]["fremlp"] == "dense" and info["options"]["pad"] == "drop"


def test_drop_path_rises_linearly_to_the_top_rate():
    rates = drop_path_rates(0.15, 18)
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.15) and len(rates) == 18
    model = build_litemind(200, (6, 12), **SMALL)
    assert model.stages[-1][-1].drop_path.p == pytest.approx(0.15)


@pytest.mark.parametrize("tokens", [31, 5])
def test_odd_token_counts_follow_the_reference_or_keep_n(tokens):
    x = torch.randn(2, tokens, 8)
    # the reference's filter (irfft with no length) returns N-1 tokens; FreMLP (n=N) restores N
    assert SpectrumFilter(tokens, 8, tokens - 1)(x).shape == (2, tokens - 1, 8)
    assert FreMLP(tokens, 8, "diagonal", tokens - 1)(x[:, :-1]).shape == x.shape
    assert SpectrumFilter(tokens, 8)(x).shape == x.shape
    for mode in ("reference", "keep"):
        model = build_litemind(tokens * 10 + 7, (6, 12), odd_tokens=mode, **SMALL).eval()
        assert model.cfg.filtered_tokens == (tokens - 1 if mode == "reference" else tokens)
        assert model(torch.randn(3, tokens * 10 + 7)).shape == (3, 6, 12)
    with pytest.raises(ValueError, match="odd_tokens"):
        build_litemind(400, (6, 12), odd_tokens="pad", **SMALL)


def test_cls_only_variant_follows_a_pooled_target():
    model = build_litemind(123, (16,), patch_size=10, widths=(12, 8, 6, 5), depths=(1, 1, 1, 1)).eval()
    assert model.cfg.cls_only
    assert model(torch.randn(2, 123)).shape == (2, 16)


def test_pad_drop_ignores_the_tail_and_pad_zero_uses_it():
    voxels = torch.randn(2, 125)
    changed = voxels.clone()
    changed[:, 120:] += 5.0
    for pad, tail_matters in (("drop", False), ("zero", True)):
        model = build_litemind(125, (6, 12), pad=pad, **SMALL).eval()
        same = torch.allclose(model(voxels), model(changed))
        assert same is not tail_matters, pad
    assert build_litemind(125, (6, 12), pad="zero", **SMALL).pos_embed.shape[1] == 13


def test_diagonal_fremlp_ignores_off_diagonal_weights_and_dense_uses_them():
    x = torch.randn(2, 9, 6)
    for mode, off_diagonal_matters in (("diagonal", False), ("dense", True)):
        layer = FreMLP(9, 6, mode)
        before = layer(x)
        with torch.no_grad():
            layer.r.add_(torch.ones(6, 6) - torch.eye(6))
        assert torch.allclose(before, layer(x)) is not off_diagonal_matters, mode


@pytest.mark.parametrize("n", [34, 31, 28, 5, 4, 1])
def test_real_dft_matrices_equal_torch_rfft_and_irfft(n):
    forward, inverse = real_dft_matrices(n)
    x = torch.randn(n, 3, dtype=torch.float64)
    spectrum = torch.fft.rfft(x, dim=0, norm="ortho")
    bins = forward @ x
    k = n // 2 + 1
    assert torch.allclose(bins[:k], spectrum.real, atol=1e-6)
    assert torch.allclose(bins[k:], spectrum.imag, atol=1e-6)
    z = torch.randn(k, 3, dtype=torch.complex128)
    back = torch.fft.irfft(z, n=n, dim=0, norm="ortho")
    assert torch.allclose(inverse @ torch.cat([z.real, z.imag]), back, atol=1e-6)


def _forward_and_grads(module, x):
    x = x.clone().requires_grad_(True)
    module.zero_grad()
    out = module(x)
    out.pow(2).sum().backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    grads["(input)"] = x.grad.clone()
    return out.detach(), grads


def _assert_same(a, b, rtol_out, rtol_grad):
    """|b - a| <= rtol * scale elementwise, the scale being each tensor's largest entry; gradients that
    are ~0 in exact arithmetic (dead ReLUs) are measured against 1e-3 of the largest gradient instead."""
    (out_a, grads_a), (out_b, grads_b) = a, b
    error = (out_b - out_a).abs().max().item()
    assert error <= rtol_out * out_a.abs().max().item(), f"output: max error {error:.3g}"
    assert grads_a.keys() == grads_b.keys()
    floor = 1e-3 * max(g.abs().max().item() for g in grads_a.values())
    for name, grad in grads_a.items():
        scale = max(grad.abs().max().item(), floor)
        error = (grads_b[name] - grad).abs().max().item()
        assert error <= rtol_grad * scale, f"gradient of {name}: max error {error:.3g} vs scale {scale:.3g}"


def _twins(build, strengthen, dtype):
    """A faithful module with strengthened spectral weights and a fast one loaded from its state dict."""
    faithful = build("faithful")
    with torch.no_grad():  # large enough weights that the cubic filter's output is not negligible
        for name, p in faithful.named_parameters():
            if name.split(".")[-1] in strengthen:
                p.normal_(0, strengthen[name.split(".")[-1]])
    fast = build("fast")
    fast.load_state_dict(faithful.state_dict())  # strict: same parameter names and shapes
    return faithful.to(dtype), fast.to(dtype)


# fp32 tolerances: the faithful path itself differs from its float64 self by up to ~5e-4 of a gradient's
# scale here (deep cubic chains amplify rounding); float64 shows the two compute the same function exactly.
TOLERANCES = {torch.float64: (1e-9, 1e-8), torch.float32: (1e-4, 2e-3)}
STRENGTH = {"complex_weight": 0.5, "r": 0.3, "i": 0.3, "rb": 0.3, "ib": 0.3}  # single modules
# Whole models: float64 with strong spectral weights shows the two paths compute the same function; float32
# runs at the reference's init, since with strong weights float32 rounding (on either path) flips ReLU and
# softshrink branches deep in the chain and the comparison measures those flips, not the formulation.
MODEL_STRENGTH = {torch.float64: STRENGTH, torch.float32: {}}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tokens", [34, 31, 28, 5])
@pytest.mark.parametrize("mode", ["diagonal", "dense"])
def test_fast_spectral_modules_equal_faithful_ones(tokens, mode, dtype):
    dim = 16
    x = torch.randn(3, tokens, dim, dtype=dtype)
    for filtered in {tokens, 2 * (tokens // 2)}:  # kept length, and the reference's N-1 for an odd N
        filters = _twins(
            lambda impl, f=filtered: (FastSpectrumFilter if impl == "fast" else SpectrumFilter)(tokens, dim, f),
            STRENGTH, dtype,
        )
        _assert_same(*(_forward_and_grads(m, x) for m in filters), *TOLERANCES[dtype])
        fremlps = _twins(
            lambda impl, f=filtered: (FastFreMLP if impl == "fast" else FreMLP)(tokens, dim, mode, f),
            STRENGTH, dtype,
        )
        _assert_same(*(_forward_and_grads(m, x[:, :filtered]) for m in fremlps), *TOLERANCES[dtype])


MODEL_CASES = [
    (tokens, pad, fremlp, torch.float32, "reference")
    for tokens in (34, 31, 28)
    for pad, fremlp in (("drop", "diagonal"), ("zero", "dense"), ("drop", "dense"), ("zero", "diagonal"))
] + [
    (31, "drop", "diagonal", torch.float32, "keep"),
    (31, "drop", "diagonal", torch.float64, "reference"),
    (31, "drop", "diagonal", torch.float64, "keep"),
    (34, "zero", "dense", torch.float64, "reference"),
    (28, "zero", "diagonal", torch.float64, "reference"),
]


@pytest.mark.parametrize(("tokens", "pad", "fremlp", "dtype", "odd_tokens"), MODEL_CASES)
def test_fast_model_equals_faithful_model(tokens, pad, fremlp, dtype, odd_tokens):
    n_voxels = tokens * 10 + 3
    options = {**SMALL, "pad": pad, "fremlp": fremlp, "odd_tokens": odd_tokens}
    models = _twins(
        lambda impl: build_litemind(n_voxels, (6, 12), impl=impl, **options).eval(), MODEL_STRENGTH[dtype], dtype
    )
    x = torch.randn(4, n_voxels, dtype=dtype)
    _assert_same(*(_forward_and_grads(m, x) for m in models), *TOLERANCES[dtype])


def test_encoder_contract_trains_one_step():
    encoder = LiteMindEncoder(**SMALL, direction="symmetric", learn_temperature=True, mse_weight=0.1)
    model = encoder.build(123, (6, 12))
    objective = encoder.objective((6, 12))
    params = list(model.parameters()) + list(objective.parameters())
    assert len(list(objective.parameters())) == 1  # the learned temperature
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    voxels, targets = torch.randn(8, 123), torch.randn(8, 6, 12)
    loss = objective(model, voxels, targets, 0.0)
    loss.backward()
    optimizer.step()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert encoder.embed(model.eval(), voxels).shape == (8, 6, 12)
    assert encoder.no_weight_decay("pos_embed", model.pos_embed)
    assert not encoder.no_weight_decay("stages.0.0.mlp.fc1.weight", model.stages[0][0].mlp.fc1.weight)


def test_defaults_and_params_are_the_reference_recipe():
    encoder = LiteMindEncoder()
    params = encoder.params()
    assert params["pad"] == "drop" and params["fremlp"] == "diagonal" and params["impl"] == "faithful"
    assert params["direction"] == "image_to_fmri" and params["log_logit_scale"] == 8.0
    assert params["odd_tokens"] == "reference" and params["lr_scaling"] == "none"
    d = encoder.training_defaults()
    # models.md: lr 1e-4 x 600/512 whatever the batch, the last partial batch kept, timm cosine per epoch
    assert (d.epochs, d.batch_size, d.lr, d.weight_decay, d.lr_reference_batch) == (1500, 1000, 1e-4 * 600 / 512,
                                                                                   0.1, None)
    assert (d.warmup_epochs, d.warmup_start_lr, d.min_lr, d.schedule) == (5, 1e-6, 1e-5, "timm-cosine")
    assert d.drop_last is False and d.grad_clip is None
    scaled = LiteMindEncoder(lr_scaling="linear").training_defaults()
    assert (scaled.lr, scaled.lr_reference_batch) == (1e-4, 512)
    with pytest.raises(ValueError, match="lr_scaling"):
        LiteMindEncoder(lr_scaling="sqrt")


def test_bad_options_are_refused_early():
    with pytest.raises(ValueError, match="unknown litemind option"):
        LiteMindEncoder(fremlpp="dense")
    with pytest.raises(ValueError, match="fremlp"):
        LiteMindEncoder(fremlp="sparse")
    with pytest.raises(ValueError, match="patch"):
        LiteMindEncoder().build(100, (257, 768))
