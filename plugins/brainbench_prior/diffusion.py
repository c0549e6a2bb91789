"""Gaussian diffusion over image embeddings, predicting x0 (DALL-E 2's prior objective).

Cosine beta schedule (Nichol & Dhariwal), mean-squared error between the denoiser's x0 and the clean
embedding, classifier-free guidance at sampling; full ancestral (DDPM) sampling, or DDIM (eta 1) on fewer
steps, as Lite-Mind samples (20 of 100). Embeddings are L2-normalised and scaled by sqrt(d) inside (unit
variance per feature, Katherine Crowson's suggestion the library follows); samples come back unscaled.

Buffer names and the order of random draws are dalle2-pytorch's ``DiffusionPrior``'s (NoiseScheduler,
p_losses, p_sample_loop), so with one state dict and one seed both give the same numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from brainbench_prior.network import PriorNetwork

COSINE_OFFSET = 0.008


def cosine_betas(timesteps: int) -> torch.Tensor:
    """Betas whose cumulative product of (1 - beta) follows cos^2 (float64, clipped to 0.999)."""
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    alphas_cumprod = torch.cos(((x / timesteps) + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    return torch.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, 0.999)


class NoiseSchedule(nn.Module):
    """The schedule's per-step constants as float32 buffers (computed in float64)."""

    def __init__(self, timesteps: int) -> None:
        super().__init__()
        betas = cosine_betas(timesteps)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        previous = F.pad(alphas_cumprod[:-1], (1, 0), value=1.0)
        self.num_timesteps = timesteps
        posterior_variance = betas * (1.0 - previous) / (1.0 - alphas_cumprod)
        buffers = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": previous,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            "log_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).log(),
            "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
            "posterior_mean_coef1": betas * previous.sqrt() / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - previous) * (1.0 - betas).sqrt() / (1.0 - alphas_cumprod),
            "p2_loss_weight": torch.ones_like(betas),  # no p2 reweighting; kept so state dicts match
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.to(torch.float32))

    def at(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """``name``'s value at each step of ``t`` (b,), as a (b, 1) column."""
        return getattr(self, name).gather(-1, t)[:, None]


class DiffusionPriorModel(nn.Module):
    """The denoiser (``net``) and its schedule (``noise_scheduler``): loss for training, sampling loops."""

    def __init__(self, net: PriorNetwork, timesteps: int, cond_drop_prob: float) -> None:
        super().__init__()
        self.net = net
        self.noise_scheduler = NoiseSchedule(timesteps)
        self.cond_drop_prob = cond_drop_prob
        self.image_embed_scale = net.dim**0.5

    def loss(
        self, brain: torch.Tensor, image: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """MSE of the predicted x0 at a random step; draws: steps, noise, the two condition-drop masks."""
        b, device, schedule = image.shape[0], image.device, self.noise_scheduler
        times = torch.randint(0, schedule.num_timesteps, (b,), device=device, generator=generator)
        start = image * self.image_embed_scale
        noise = torch.randn(start.shape, device=device, generator=generator, dtype=start.dtype)
        noised = schedule.at("sqrt_alphas_cumprod", times) * start + schedule.at(
            "sqrt_one_minus_alphas_cumprod", times
        ) * noise
        predicted = self.net(noised, times, brain, self.cond_drop_prob, self.cond_drop_prob, generator)
        return F.mse_loss(predicted, start)

    @torch.no_grad()
    def sample(
        self,
        brain: torch.Tensor,
        timesteps: int | None = None,
        cond_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(b, dim) brain embeddings -> (b, dim) sampled image embeddings (unscaled): ancestral sampling over
        every step, or DDIM over ``timesteps`` < the schedule's steps."""
        total = self.noise_scheduler.num_timesteps
        timesteps = total if timesteps is None else int(timesteps)
        if not 1 <= timesteps <= total:
            raise ValueError(f"prior sampling steps must be in 1..{total}, got {timesteps}")
        if cond_scale != 1 and self.cond_drop_prob <= 0:
            raise ValueError("classifier-free guidance (cond_scale != 1) needs a prior trained with cond_drop_prob > 0")
        shape = (brain.shape[0], self.net.dim)
        x = torch.randn(shape, device=brain.device, generator=generator, dtype=brain.dtype)
        if timesteps == total:
            x = self._ancestral(x, brain, cond_scale, generator)
        else:
            x = self._ddim(x, brain, timesteps, cond_scale, generator)
        return x / self.image_embed_scale

    def _ancestral(
        self, x: torch.Tensor, brain: torch.Tensor, cond_scale: float, generator: torch.Generator | None
    ) -> torch.Tensor:
        schedule = self.noise_scheduler
        for step in reversed(range(schedule.num_timesteps)):
            t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
            start = self.net.guided(x, t, brain, cond_scale)
            mean = schedule.at("posterior_mean_coef1", t) * start + schedule.at("posterior_mean_coef2", t) * x
            log_variance = schedule.at("posterior_log_variance_clipped", t)
            noise = torch.randn(x.shape, device=x.device, generator=generator, dtype=x.dtype)
            x = mean + float(step != 0) * (0.5 * log_variance).exp() * noise  # no noise at the last step
        return x

    def _ddim(
        self,
        x: torch.Tensor,
        brain: torch.Tensor,
        timesteps: int,
        cond_scale: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """DDIM with eta 1 on ``timesteps`` steps of the schedule, stepped as the library steps it (its rates
        are read from ``alphas_cumprod_prev``, one step behind the step's own: kept for equal outputs)."""
        schedule = self.noise_scheduler
        total, alphas = schedule.num_timesteps, schedule.alphas_cumprod_prev
        steps = list(reversed(torch.linspace(-1.0, total, steps=timesteps + 1)[:-1].int().tolist()))
        for step, following in zip(steps[:-1], steps[1:], strict=True):
            t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
            start = self.net.guided(x, t, brain, cond_scale)
            predicted_noise = (schedule.at("sqrt_recip_alphas_cumprod", t) * x - start) / schedule.at(
                "sqrt_recipm1_alphas_cumprod", t
            )
            if following < 0:
                x = start
                continue
            alpha, alpha_next = alphas[step], alphas[following]
            c1 = ((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha)).sqrt()
            c2 = ((1 - alpha_next) - c1**2).sqrt()
            noise = (
                torch.randn(x.shape, device=x.device, generator=generator, dtype=x.dtype) if following > 0 else 0.0
            )
            x = start * alpha_next.sqrt() + c1 * noise + c2 * predicted_noise
        return x
