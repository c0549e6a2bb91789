"""MindEye: reference parameter counts, shapes of both variants, the objective's two phases, a short fit."""

from __future__ import annotations

import pytest
import torch

from brainbench_mindeye.encoder import MindEyeEncoder

SMALL = {"hidden": 32, "blocks": 2, "projector_hidden": 24}


@pytest.fixture(autouse=True)
def _seed():  # BRAINBENCH_HOME is isolated by conftest.py
    torch.manual_seed(0)
    torch.set_num_threads(2)


def test_subject_1_parameter_counts_equal_the_reference():
    with torch.device("meta"):
        model = MindEyeEncoder().build(15724, (257, 768))
    total = sum(p.numel() for p in model.parameters())
    backbone = total - sum(p.numel() for p in model.projector.parameters())
    assert (backbone, total) == (940_225_280, 947_579_904)


def test_describe_counts_modules_and_flops_of_the_pooled_variant():
    info = MindEyeEncoder().describe(15724, (768,))
    assert info["parameters"] == sum(info["parameters_per_module"].values())
    assert 140e6 < info["parameters"] < 144e6  # "about 142M"
    assert info["flops_per_sample"] >= 2 * info["parameters_backbone"] * 0.99
    assert info["options"]["hidden"] == 4096 and info["options"]["embed"] == "projector"


@pytest.mark.parametrize("target_shape", [(5, 16), (16,)])
def test_forward_returns_backbone_and_projector_of_the_target_shape(target_shape):
    encoder = MindEyeEncoder(**SMALL)
    model = encoder.build(40, target_shape).eval()
    backbone, projected = model(torch.randn(3, 40))
    assert backbone.shape == projected.shape == (3, *target_shape)
    assert torch.equal(encoder.embed(model, torch.zeros(2, 40)), model(torch.zeros(2, 40))[1])
    backbone_encoder = MindEyeEncoder(**SMALL, embed="backbone")
    assert torch.equal(backbone_encoder.embed(model, torch.zeros(2, 40)), model(torch.zeros(2, 40))[0])


def test_residual_blocks_add_their_input():
    model = MindEyeEncoder(**SMALL).build(40, (16,)).eval()
    block = model.mlp[0]
    with torch.no_grad():
        block.layers[0].weight.zero_()
        block.layers[0].bias.zero_()
    x = torch.randn(4, 32)
    assert torch.allclose(block(x), x)  # LN of zeros is zero (bias 0), GELU(0) = 0: only the residual


def test_objective_switches_from_bimixco_to_softclip_and_a_short_fit_aligns_predictions():
    encoder = MindEyeEncoder(**SMALL, input_dropout=0.0, block_dropout=0.0)
    voxels = torch.randn(64, 40)
    targets = (voxels @ torch.randn(40, 4 * 8)).reshape(64, 4, 8)  # a linear brain
    model = encoder.build(40, (4, 8))
    objective = encoder.objective((4, 8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    steps = 60
    for step in range(steps):
        loss = objective(model, voxels, targets, step / steps)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        pred = encoder.embed(model, voxels).flatten(1)
    similarity = torch.nn.functional.normalize(pred, dim=1) @ torch.nn.functional.normalize(
        targets.flatten(1), dim=1
    ).T
    top1 = (similarity.argmax(1) == torch.arange(64)).float().mean().item()
    assert top1 > 0.5  # chance is 1/64


def test_defaults_are_the_reference_recipe_and_bad_options_are_refused():
    d = MindEyeEncoder.defaults
    assert (d.epochs, d.batch_size, d.lr, d.weight_decay, d.schedule) == (240, 32, 3e-4, 1e-2, "onecycle")
    encoder = MindEyeEncoder()
    assert encoder.no_weight_decay("mlp.0.layers.1.weight", torch.nn.Parameter(torch.ones(4)))
    assert not encoder.no_weight_decay("lin0.0.weight", torch.nn.Parameter(torch.ones(4, 4)))
    with pytest.raises(ValueError, match="unknown mindeye option"):
        MindEyeEncoder(hiden=8)
    with pytest.raises(ValueError, match="embed"):
        MindEyeEncoder(embed="both")


def _train_steps(make_optimizer, steps: int = 4, bf16: bool = False) -> dict[str, torch.Tensor]:
    """A few MindEye steps (both objective phases) with the optimizer given; same seed, same data."""
    torch.manual_seed(3)
    encoder = MindEyeEncoder(**SMALL)
    model = encoder.build(40, (4, 8))
    objective = encoder.objective((4, 8))
    optimizer = make_optimizer(model.parameters())
    voxels, targets = torch.randn(16, 40), torch.randn(16, 4, 8)
    for step in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # bf16 weights meet fp32 inputs
            loss = objective(model, voxels, targets, step / steps)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {name: p.detach().float().clone() for name, p in model.named_parameters()}


def test_fast_optimizers_compute_the_faithful_update():
    """The fast path's optimizers are the faithful AdamW: fused (CUDA's kernel, here on the CPU), and the
    bf16-master optimizer with fp32 weights (the formulation without the bf16 rounding)."""
    from brainbench.master_weights import MasterWeightAdamW

    faithful = _train_steps(lambda params: torch.optim.AdamW(params, lr=1e-3))
    fused = _train_steps(lambda params: torch.optim.AdamW(params, lr=1e-3, fused=True))
    master = _train_steps(lambda params: MasterWeightAdamW(params, lr=1e-3, param_dtype=torch.float32))
    for name, expected in faithful.items():
        scale = expected.abs().max().item()
        assert (fused[name] - expected).abs().max().item() <= 1e-5 * scale, name
        assert (master[name] - expected).abs().max().item() <= 1e-5 * scale, name
    # in bf16 the MindEye step runs too (its masters are exact AdamW: tests/test_master_weights.py)
    bf16 = _train_steps(lambda params: MasterWeightAdamW(params, lr=1e-3), bf16=True)
    assert bf16.keys() == faithful.keys() and all(torch.isfinite(v).all() for v in bf16.values())
