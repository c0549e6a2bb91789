"""Prior ``diffusion`` (our code) against dalle2-pytorch's own DiffusionPriorNetwork + DiffusionPrior, the
library MindEye and Lite-Mind build their priors on: one state dict in both, the same seed, the same numbers.

Needs the library: ``pip install -e ".[dalle2]" && pip install --no-deps "dalle2-pytorch==1.15.6"`` (CI does).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip(
    "dalle2_pytorch",
    reason='dalle2-pytorch is not installed (pip install -e ".[dalle2]" && pip install --no-deps '
    '"dalle2-pytorch==1.15.6"); the check of our prior against it is skipped',
)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from dalle2_pytorch import DiffusionPrior, DiffusionPriorNetwork  # noqa: E402

from brainbench.interfaces import TrainSettings  # noqa: E402
from brainbench.plugins import get_plugins  # noqa: E402
from brainbench.reporting import QuietReporter  # noqa: E402
from brainbench_prior.backends import Architecture, Dalle2Backend, OursBackend  # noqa: E402
from brainbench_prior.prior import train  # noqa: E402

DIM, TIMESTEPS, BATCH = 48, 30, 6
TOLERANCE = 1e-5  # float32, different operation order: one pass differs by ~1e-6
LOOP_TOLERANCE = 1e-4  # a whole sampling loop (30 steps, guidance 2.5) accumulates ~1e-5 on values ~0.5


def architecture(null_tokens: int = 3) -> Architecture:
    return Architecture(dim=DIM, depth=3, dim_head=16, heads=3, ff_mult=2.0, null_tokens=null_tokens, causal=True,
                        timesteps=TIMESTEPS, cond_drop_prob=0.2)


def pair(null_tokens: int = 3) -> tuple[DiffusionPrior, torch.nn.Module]:
    """The library's prior with random weights, and ours loaded from its state dict (strict: every key)."""
    torch.manual_seed(0)
    arch = architecture(null_tokens)
    library = DiffusionPrior(
        DiffusionPriorNetwork(dim=DIM, depth=3, dim_head=16, heads=3, ff_mult=2.0, num_timesteps=TIMESTEPS,
                              max_text_len=null_tokens),
        image_embed_dim=DIM, timesteps=TIMESTEPS, cond_drop_prob=0.2, condition_on_text_encodings=False,
    )
    with torch.no_grad():  # the library's initial learned query and null tokens are all randn: vary the rest too
        for parameter in library.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    ours = OursBackend(arch).module
    ours.load_state_dict(library.state_dict(), strict=True)
    return library, ours


def inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    brain = F.normalize(torch.randn(BATCH, DIM, generator=g), dim=-1)
    image = F.normalize(torch.randn(BATCH, DIM, generator=g), dim=-1)
    noised = torch.randn(BATCH, DIM, generator=g) * 3
    times = torch.randint(0, TIMESTEPS, (BATCH,), generator=g)
    return brain, image, noised, times


def biggest(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach() - b.detach()).abs().max())


@pytest.mark.parametrize("null_tokens", [0, 3])
def test_one_denoising_pass_and_guidance_match(null_tokens):
    library, ours = pair(null_tokens)
    brain, _, noised, times = inputs()
    assert biggest(library.net(noised, times, text_embed=brain), ours.net(noised, times, brain)) < TOLERANCE
    guided = library.net.forward_with_cond_scale(noised, times, text_embed=brain, cond_scale=3.0)
    assert biggest(guided, ours.net.guided(noised, times, brain, 3.0)) < TOLERANCE
    # the null (fully dropped) pass is not the conditional one: guidance changes the answer
    assert biggest(guided, library.net(noised, times, text_embed=brain)) > 1e-2


def test_training_loss_and_gradients_match_with_the_same_seed():
    library, ours = pair()
    brain, image, _, _ = inputs()
    torch.manual_seed(7)
    expected = library(text_embed=brain, image_embed=image.clone())
    got = ours.loss(brain, image, torch.Generator().manual_seed(7))  # a generator seeded alike draws alike
    assert abs(expected.item() - got.item()) < TOLERANCE
    expected.backward()
    got.backward()
    theirs = dict(library.named_parameters())
    for name, parameter in ours.named_parameters():
        if parameter.grad is not None or theirs[name].grad is not None:
            assert biggest(parameter.grad, theirs[name].grad) < 1e-4, name


@pytest.mark.parametrize("steps", [TIMESTEPS, 8])  # all steps: ancestral sampling; fewer: DDIM
@pytest.mark.parametrize("cond_scale", [1.0, 2.5])
def test_full_sampling_loops_match(steps, cond_scale):
    library, ours = pair()
    brain = inputs()[0]
    torch.manual_seed(11)
    expected = library.p_sample_loop((BATCH, DIM), text_cond={"text_embed": brain}, cond_scale=cond_scale,
                                     timesteps=steps)
    got = ours.sample(brain, steps, cond_scale, torch.Generator().manual_seed(11))
    assert biggest(expected, got) < LOOP_TOLERANCE, biggest(expected, got)
    assert float(expected.abs().max()) > 0.05  # a real sample, not zeros


def test_training_through_the_library_matches_ours_step_for_step():
    """The shared training loop, run once through dalle2-pytorch's classes and once through ours, from the
    same weights and seed: the same losses every epoch and the same weights at the end."""
    arch = architecture()
    torch.manual_seed(0)
    library_backend = Dalle2Backend(arch)
    ours_backend = OursBackend(arch)
    ours_backend.module.load_state_dict(library_backend.module.state_dict())
    rng = np.random.default_rng(0)
    brain, images = (rng.normal(size=(40, DIM)).astype(np.float32) for _ in range(2))
    options = {"epochs": 3, "batch_size": 16, "lr": 1e-3, "weight_decay": 0.01, "warmup_epochs": 1,
               "warmup_lr": 1e-5, "min_lr": 1e-4}
    device = torch.device("cpu")
    torch.manual_seed(5)
    library_history = train(library_backend, brain, images, options, device, None, QuietReporter())
    ours_history = train(ours_backend, brain, images, options, device, torch.Generator().manual_seed(5),
                         QuietReporter())
    np.testing.assert_allclose(ours_history, library_history, rtol=1e-4)
    theirs = library_backend.module.state_dict()
    for name, value in ours_backend.module.state_dict().items():
        assert biggest(value, theirs[name]) < 1e-4, name


def test_a_file_from_prior_dalle2_samples_the_same_through_prior_diffusion(tmp_path):
    priors = get_plugins().priors
    options = {"depth": 1, "heads": 2, "dim_head": 16, "epochs": 2, "batch_size": 16, "timesteps": 20,
               "sample_timesteps": 5, "cond_scale": 1.5}
    rng = np.random.default_rng(1)
    brain, images = (rng.normal(size=(32, DIM)).astype(np.float32) for _ in range(2))
    fitted = priors.create("dalle2", **options).fit(brain, images, TrainSettings(device="cpu"), QuietReporter())
    path = fitted.save(tmp_path / "prior.safetensors")
    ours = priors.create("diffusion").load(path)
    assert ours.prior.options["causal"] is True  # read from the file
    np.testing.assert_allclose(ours.sample(brain, seed=3), fitted.sample(brain, seed=3), atol=LOOP_TOLERANCE)
