"""Lite-Mind against an independent re-statement of the reference's maths.

The function below is written from shared/reference/models.md (the reference code as published), not from
brainbench's model code: plain torch functions over a parameter dict, complex torch.fft, a filter whose
inverse FFT has no length argument (N-1 tokens for an odd N), LayerNorm eps 1e-6 everywhere, FreMLP using
the diagonal of its complex weights. brainbench's faithful and fast models, loaded with the same weights,
must compute the same function for the four NSD subjects' voxel counts and both target shapes.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from brainbench_litemind.model import LiteMind, LiteMindConfig

PATCH = 450
EPS = 1e-6
SUBJECT_VOXELS = {1: 15724, 2: 14278, 5: 13039, 7: 12682}
#: models.md: the reference's parameter counts as instantiated (subject 1)
REFERENCE_PARAMETERS = {(257, 768): 15_657_859, (768,): 7_552_254}
FULL = ((512, 256, 128, 257), (2, 10, 2, 4))
CLS_ONLY = ((512, 256, 128, 50), (2, 2, 2, 2))
#: fp32: the faithful path is the same complex FFT chain; the fast path's DFT matmuls round differently.
TOLERANCE = {"faithful": 1e-5, "fast": 1e-4}


def reference_forward(p: dict[str, torch.Tensor], voxels: torch.Tensor, cls_only: bool) -> torch.Tensor:
    widths, depths = CLS_ONLY if cls_only else FULL
    n = (voxels.shape[1] - PATCH) // PATCH + 1  # trailing voxels dropped, as the reference's conv does
    x = F.conv1d(voxels[:, None, : n * PATCH], p["patch_embed.weight"], p["patch_embed.bias"], stride=PATCH)
    x = x.transpose(1, 2) + p["pos_embed"]
    coefficients = [math.cos((2 * k + 1) * math.pi / 4) for k in range(2)]  # F = 2

    def ln(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(t, t.shape[-1:], p[f"{name}.weight"], p[f"{name}.bias"], eps=EPS)

    for s, depth in enumerate(depths):
        if s > 0:
            x = F.linear(x, p[f"transitions.{s - 1}.weight"], p[f"transitions.{s - 1}.bias"])
        for j in range(depth):
            b = f"stages.{s}.{j}"
            # spectrum compression: sum_k c_k W_k X X^2, inverse FFT WITHOUT a length (2 * (K - 1) tokens)
            spectrum = torch.fft.rfft(ln(x, f"{b}.norm1"), dim=1, norm="ortho")
            weight = torch.view_as_complex(p[f"{b}.filter.complex_weight"])
            y = torch.fft.irfft(
                sum(c * weight[k] * spectrum * spectrum**2 for k, c in enumerate(coefficients)), dim=1, norm="ortho"
            )
            y = ln(y, f"{b}.norm2")
            y = F.linear(F.gelu(F.linear(y, p[f"{b}.mlp.fc1.weight"], p[f"{b}.mlp.fc1.bias"])),
                         p[f"{b}.mlp.fc2.weight"], p[f"{b}.mlp.fc2.bias"])
            y = ln(y, f"{b}.norm3")
            # frequency projector: only the diagonals of r and i act; inverse FFT with n = N
            z = torch.fft.rfft(y, dim=1, norm="ortho")
            r, i = torch.diagonal(p[f"{b}.fremlp.r"]), torch.diagonal(p[f"{b}.fremlp.i"])
            real = F.softshrink(F.relu(z.real * r - z.imag * i + p[f"{b}.fremlp.rb"]), 0.01)
            imag = F.softshrink(F.relu(z.imag * r + z.real * i + p[f"{b}.fremlp.ib"]), 0.01)
            x = x + torch.fft.irfft(torch.complex(real, imag), n=n, dim=1, norm="ortho")
    x = ln(x, "norm")
    if cls_only:
        return F.linear(x.mean(dim=1), p["head.weight"], p["head.bias"])
    return F.linear(x.transpose(1, 2), p["head.weight"], p["head.bias"])  # (B, 257, N) -> (B, 257, 768)


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def build(n_voxels: int, shape: tuple[int, ...], **options: str) -> LiteMind:
    return LiteMind(LiteMindConfig(n_voxels=n_voxels, target_shape=shape, **options)).eval()


@pytest.mark.parametrize("shape", [(257, 768), (768,)], ids=["257x768", "768"])
def test_parameters_are_the_references(shape):
    with torch.device("meta"):
        model = build(SUBJECT_VOXELS[1], shape)
    assert sum(q.numel() for q in model.parameters()) == REFERENCE_PARAMETERS[shape]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    blocks = sum((CLS_ONLY if len(shape) == 1 else FULL)[1])
    assert len(norms) == 3 * blocks + 1 and all(m.eps == EPS for m in norms)


@pytest.mark.parametrize("shape", [(257, 768), (768,)], ids=["257x768", "768"])
@pytest.mark.parametrize("subject", sorted(SUBJECT_VOXELS))
def test_faithful_and_fast_compute_the_reference_function(subject, shape, capsys):
    torch.manual_seed(subject)
    n_voxels = SUBJECT_VOXELS[subject]
    faithful = build(n_voxels, shape)
    fast = build(n_voxels, shape, impl="fast")
    fast.load_state_dict(faithful.state_dict())  # strict: the same parameters
    voxels = torch.randn(3, n_voxels)
    with torch.no_grad():
        expected = reference_forward(dict(faithful.named_parameters()), voxels, cls_only=len(shape) == 1)
        results = {"faithful": faithful(voxels), "fast": fast(voxels)}
    line = [f"subject {subject} ({n_voxels} voxels, {faithful.cfg.n_tokens} tokens), target {shape}:"]
    for impl, output in results.items():
        assert output.shape == expected.shape
        difference = relative_difference(output, expected)
        line.append(f"{impl} {difference:.2e}")
        assert difference < TOLERANCE[impl], f"{impl}: max relative difference {difference:.3g}"
    with capsys.disabled():
        print("\n  " + "  ".join(line))


@pytest.mark.parametrize("subject", [1, 2])
def test_the_reference_check_catches_the_old_eps_and_kept_tokens(subject):
    """The check above can fail: PyTorch's default eps (all subjects) and N tokens kept for an odd N
    (subject 2) are measurably different functions."""
    torch.manual_seed(0)
    n_voxels = SUBJECT_VOXELS[subject]
    model = build(n_voxels, (257, 768))
    voxels = torch.randn(2, n_voxels)
    with torch.no_grad():
        expected = reference_forward(dict(model.named_parameters()), voxels, cls_only=False)
        for norm in (m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)):
            norm.eps = 1e-5
        assert relative_difference(model(voxels), expected) > 1e-3
    if model.cfg.n_tokens % 2:
        kept = build(n_voxels, (257, 768), odd_tokens="keep")
        kept.load_state_dict(model.state_dict())
        with torch.no_grad():
            assert relative_difference(kept(voxels), expected) > 1e-2
