"""Two implementations of one diffusion prior, with one state-dict layout (a file from either loads into both).

``ours``: :mod:`brainbench_prior.network` + :mod:`brainbench_prior.diffusion` (torch only).
``dalle2``: dalle2-pytorch's own ``DiffusionPriorNetwork`` + ``DiffusionPrior``, the classes MindEye and
Lite-Mind build on (``pip install --no-deps dalle2-pytorch`` plus the ``dalle2`` extra; see docs/laion.md).
The library draws its random numbers from torch's global generator; ours from the generator it is given,
which draws the same sequence when seeded alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from brainbench.errors import BrainbenchError

DALLE2_INSTALL = (
    'pip install -e ".[dalle2]" && pip install --no-deps "dalle2-pytorch==1.15.6" (with its own pins pip '
    "would replace open_clip 3 by 2.x and pandas 3 by 2.x)"
)


@dataclass(frozen=True)
class Architecture:
    """What builds the module: the embedding width and the declared options that shape the network."""

    dim: int
    depth: int
    dim_head: int
    heads: int
    ff_mult: float
    null_tokens: int
    causal: bool
    timesteps: int
    cond_drop_prob: float

    @classmethod
    def from_options(cls, dim: int, options: Any) -> Architecture:
        """From a prior's typed options (brainbench.options: validated once, so no coercion here)."""
        o = options
        return cls(dim=int(dim), depth=o.depth, dim_head=o.dim_head, heads=o.heads, ff_mult=o.ff_mult,
                   null_tokens=o.null_tokens, causal=o.causal, timesteps=o.timesteps,
                   cond_drop_prob=o.cond_drop_prob)


class Backend(Protocol):
    module: torch.nn.Module  # its state_dict is what a prior file holds

    def loss(self, brain: torch.Tensor, image: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor: ...

    def sample(
        self, brain: torch.Tensor, steps: int, cond_scale: float, generator: torch.Generator | None
    ) -> torch.Tensor: ...


class OursBackend:
    def __init__(self, arch: Architecture) -> None:
        from brainbench_prior.diffusion import DiffusionPriorModel
        from brainbench_prior.network import PriorNetwork

        net = PriorNetwork(
            arch.dim, arch.timesteps, arch.depth, arch.dim_head, arch.heads, arch.ff_mult, arch.null_tokens,
            arch.causal,
        )
        self.module = DiffusionPriorModel(net, arch.timesteps, arch.cond_drop_prob)

    def loss(self, brain: torch.Tensor, image: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.module.loss(brain, image, generator)

    def sample(
        self, brain: torch.Tensor, steps: int, cond_scale: float, generator: torch.Generator | None
    ) -> torch.Tensor:
        return self.module.sample(brain, steps, cond_scale, generator)


def dalle2_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("dalle2_pytorch") is not None


class Dalle2Backend:
    """dalle2-pytorch's classes, called as the references call them: ``prior(text_embed=brain,
    image_embed=image)`` for the loss, ``p_sample_loop`` for samples."""

    def __init__(self, arch: Architecture) -> None:
        if not arch.causal:
            raise BrainbenchError(
                "prior 'dalle2': dalle2-pytorch's DiffusionPriorNetwork is always causal; use causal=true, or "
                "prior 'diffusion' for the non-causal transformer of Lite-Mind's prior"
            )
        try:
            from dalle2_pytorch import DiffusionPrior, DiffusionPriorNetwork
        except ImportError as exc:
            raise BrainbenchError(f"prior 'dalle2' needs dalle2-pytorch ({exc}); install: {DALLE2_INSTALL}") from None
        net = DiffusionPriorNetwork(
            dim=arch.dim, depth=arch.depth, dim_head=arch.dim_head, heads=arch.heads, ff_mult=arch.ff_mult,
            num_timesteps=arch.timesteps, max_text_len=arch.null_tokens,
        )
        self.module = DiffusionPrior(
            net, image_embed_dim=arch.dim, timesteps=arch.timesteps, cond_drop_prob=arch.cond_drop_prob,
            condition_on_text_encodings=False,
        )

    def loss(self, brain: torch.Tensor, image: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        # the library scales its image_embed argument in place: hand it a copy
        return self.module(text_embed=brain, image_embed=image.clone())

    def sample(
        self, brain: torch.Tensor, steps: int, cond_scale: float, generator: torch.Generator | None
    ) -> torch.Tensor:
        return self.module.p_sample_loop(
            (brain.shape[0], brain.shape[1]), text_cond={"text_embed": brain}, cond_scale=cond_scale,
            timesteps=steps,
        )


BACKENDS = {"ours": OursBackend, "dalle2": Dalle2Backend}
