"""The prior's denoiser: a transformer over [null tokens, brain embedding, diffusion time, noised image
embedding, learned query] whose last token predicts the clean image embedding (DALL-E 2's prior, sec. 2.2).

Written from the DALL-E 2 paper and the arithmetic of dalle2-pytorch's ``DiffusionPriorNetwork``, the
network MindEye and Lite-Mind build their priors on: pre-norm blocks with bias-free LayerNorms (gain ``g``),
multi-query attention (one key/value head) with a learned null key/value, cosine-similarity attention at
scale 16, rotary position embedding on the first min(32, dim_head) features, a T5 relative position bias,
SwiGLU feed-forward, a "stable" final norm and a bias-free output projection. Parameter and buffer names
are that library's, so one state dict loads into either (tests/test_prior_dalle2.py checks the outputs).

One difference in cost, none in value: only the last token is read, so the last block computes its
query, feed-forward, final norm and projection for that token alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Cosine-similarity attention multiplies q.k (both unit length) by this, as dalle2-pytorch does.
ATTENTION_SCALE = 16.0
ROTARY_THETA = 10000.0
MAX_ROTARY_DIM = 32


class LayerNorm(nn.Module):
    """LayerNorm with a gain and no bias; ``stable`` first divides by the row maximum (the final norm)."""

    def __init__(self, dim: int, eps: float = 1e-5, stable: bool = False) -> None:
        super().__init__()
        self.eps, self.stable = eps, stable
        self.g = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stable:
            x = x / x.amax(dim=-1, keepdim=True).detach()
        var = torch.var(x, dim=-1, unbiased=False, keepdim=True)
        mean = torch.mean(x, dim=-1, keepdim=True)
        return (x - mean) * (var + self.eps).rsqrt() * self.g


class RotaryEmbedding(nn.Module):
    """Rotates adjacent feature pairs of the first ``dim`` features by position-dependent angles."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        freqs = 1.0 / (ROTARY_THETA ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        self.register_buffer("freqs", freqs)  # stored, as the library stores it (a frozen parameter there)

    def rotate(self, t: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """``t`` (..., n, d) with token i at position ``offset + i``."""
        n = t.shape[-2]
        positions = torch.arange(offset, offset + n, device=t.device, dtype=t.dtype).type(self.freqs.dtype)
        angles = torch.einsum("n,f->nf", positions, self.freqs).repeat_interleave(2, dim=-1)
        width = angles.shape[-1]
        head, tail = t[..., :width], t[..., width:]
        pairs = head.unflatten(-1, (-1, 2))
        turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return torch.cat((head * angles.cos() + turned * angles.sin(), tail), dim=-1).type(t.dtype)


class RelativePositionBias(nn.Module):
    """T5's bucketed relative position bias, one value per head: exact buckets for near keys, log-spaced
    buckets up to ``max_distance`` beyond (only keys at or before the query are told apart)."""

    def __init__(self, heads: int, buckets: int = 32, max_distance: int = 128) -> None:
        super().__init__()
        self.buckets, self.max_distance = buckets, max_distance
        self.relative_attention_bias = nn.Embedding(buckets, heads)

    def forward(self, queries: int, keys: int, device: torch.device) -> torch.Tensor:
        """(heads, queries, keys) for query positions 0..queries-1 and key positions 0..keys-1."""
        relative = torch.arange(keys, device=device)[None, :] - torch.arange(queries, device=device)[:, None]
        distance = (-relative).clamp(min=0)
        exact = self.buckets // 2
        scaled = torch.log(distance.float() / exact) / math.log(self.max_distance / exact) * (self.buckets - exact)
        far = (exact + scaled.long()).clamp(max=self.buckets - 1)
        bucket = torch.where(distance < exact, distance, far)
        return self.relative_attention_bias(bucket).permute(2, 0, 1)


class Attention(nn.Module):
    """Multi-query cosine-similarity attention with a learned null key/value in front of the keys."""

    def __init__(self, dim: int, dim_head: int, heads: int, causal: bool, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.heads, self.dim_head, self.causal = heads, dim_head, causal
        self.norm = LayerNorm(dim)
        self.null_kv = nn.Parameter(torch.randn(2, dim_head))
        self.to_q = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_kv = nn.Linear(dim, dim_head * 2, bias=False)
        self.rotary_emb = rotary
        self.to_out = nn.Sequential(nn.Linear(dim_head * heads, dim, bias=False), LayerNorm(dim))

    def forward(self, x: torch.Tensor, bias: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(b, n, dim) -> (b, n, dim), or (b, 1, dim) for the last token alone; ``bias`` (h, n, n + 1)."""
        b, n, _ = x.shape
        x = self.norm(x)
        rows = x[:, -1:] if last_only else x
        q = self.to_q(rows).unflatten(-1, (self.heads, self.dim_head)).transpose(1, 2) * ATTENTION_SCALE
        k, v = self.to_kv(x).chunk(2, dim=-1)
        q = self.rotary_emb.rotate(q, offset=n - rows.shape[1])
        k = self.rotary_emb.rotate(k)
        null_k, null_v = (part.expand(b, 1, self.dim_head) for part in self.null_kv.unbind(dim=0))
        k, v = torch.cat((null_k, k), dim=1), torch.cat((null_v, v), dim=1)
        root = math.sqrt(ATTENTION_SCALE)
        q, k = F.normalize(q, dim=-1) * root, F.normalize(k, dim=-1) * root
        sim = torch.einsum("bhid,bjd->bhij", q, k) + (bias[:, -1:] if last_only else bias)
        if self.causal and not last_only:  # the last query sees every key anyway
            hidden = torch.ones(n, n + 1, dtype=torch.bool, device=x.device).triu(2)
            sim = sim.masked_fill(hidden, -torch.finfo(sim.dtype).max)
        attention = sim.softmax(dim=-1, dtype=torch.float32).type(sim.dtype)
        out = torch.einsum("bhij,bjd->bhid", attention, v).transpose(1, 2).flatten(2)
        return self.to_out(out)


class SwiGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return x * F.silu(gate)


def feed_forward(dim: int, mult: float) -> nn.Sequential:
    """LN -> Linear(dim, 2 x inner) -> SwiGLU -> Linear(inner, dim); the placeholders keep the library's
    module indices (1 and 5) in the parameter names."""
    inner = int(mult * dim)
    return nn.Sequential(
        LayerNorm(dim),
        nn.Linear(dim, inner * 2, bias=False),
        SwiGLU(),
        nn.Identity(),
        nn.Dropout(0.0),
        nn.Linear(inner, dim, bias=False),
    )


class Transformer(nn.Module):
    def __init__(self, dim: int, depth: int, dim_head: int, heads: int, ff_mult: float, causal: bool) -> None:
        super().__init__()
        self.rel_pos_bias = RelativePositionBias(heads)
        rotary = RotaryEmbedding(min(MAX_ROTARY_DIM, dim_head))  # one rotation shared by every block
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(dim, dim_head, heads, causal, rotary), feed_forward(dim, ff_mult)])
            for _ in range(depth)
        )
        self.norm = LayerNorm(dim, stable=True)
        self.project_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, n, dim) tokens -> (b, dim): the last token's output."""
        n = x.shape[1]
        bias = self.rel_pos_bias(n, n + 1, x.device)
        for number, (attention, ff) in enumerate(self.layers):
            if number == len(self.layers) - 1:
                x = x[:, -1:] + attention(x, bias, last_only=True)
            else:
                x = x + attention(x, bias)
            x = x + ff(x)
        return self.project_out(self.norm(x[:, -1]))


def keep_mask(batch: int, keep: float, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """(batch,) True where the condition is kept; no random draw when ``keep`` is 0 or 1."""
    if keep >= 1:
        return torch.ones(batch, dtype=torch.bool, device=device)
    if keep <= 0:
        return torch.zeros(batch, dtype=torch.bool, device=device)
    return torch.empty(batch, device=device).uniform_(0, 1, generator=generator) < keep


class PriorNetwork(nn.Module):
    """Denoiser: (noised image embedding, time, brain embedding) -> predicted clean image embedding."""

    def __init__(
        self,
        dim: int,
        timesteps: int,
        depth: int,
        dim_head: int,
        heads: int,
        ff_mult: float = 4.0,
        null_tokens: int = 0,
        causal: bool = True,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.to_time_embeds = nn.Sequential(nn.Embedding(timesteps, dim))
        self.learned_query = nn.Parameter(torch.randn(dim))
        self.causal_transformer = Transformer(dim, depth, dim_head, heads, ff_mult, causal)
        # dalle2-pytorch's learned padding for absent text encodings (its max_text_len, 256 by default); the
        # references' own prior networks have none (null_tokens=0)
        self.null_text_encodings = nn.Parameter(torch.randn(1, null_tokens, dim))
        self.null_text_embeds = nn.Parameter(torch.randn(1, 1, dim))  # the brain condition, when dropped
        self.null_image_embed = nn.Parameter(torch.randn(1, dim))

    def forward(
        self,
        image_embed: torch.Tensor,
        times: torch.Tensor,
        brain: torch.Tensor,
        brain_drop_prob: float = 0.0,
        image_drop_prob: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``image_embed`` (b, dim) noised, ``times`` (b,) long, ``brain`` (b, dim) -> (b, dim).

        The drop probabilities replace the brain condition and the noised image by learned null tokens
        (classifier-free guidance is trained with both dropped together, as in the library)."""
        b, device = image_embed.shape[0], image_embed.device
        keep_brain = keep_mask(b, 1.0 - brain_drop_prob, device, generator)[:, None, None]
        keep_image = keep_mask(b, 1.0 - image_drop_prob, device, generator)[:, None, None]
        brain_token = torch.where(keep_brain, brain[:, None], self.null_text_embeds.to(brain.dtype))
        image_token = torch.where(keep_image, image_embed[:, None], self.null_image_embed.to(image_embed.dtype))
        tokens = torch.cat(
            (
                self.null_text_encodings.expand(b, -1, -1),
                brain_token,
                self.to_time_embeds(times)[:, None],
                image_token,
                self.learned_query.expand(b, 1, -1),
            ),
            dim=1,
        )
        return self.causal_transformer(tokens)

    def guided(
        self, image_embed: torch.Tensor, times: torch.Tensor, brain: torch.Tensor, cond_scale: float
    ) -> torch.Tensor:
        """Classifier-free guidance: null + (conditional - null) x ``cond_scale`` (1: conditional only)."""
        conditional = self(image_embed, times, brain)
        if cond_scale == 1:
            return conditional
        null = self(image_embed, times, brain, brain_drop_prob=1.0, image_drop_prob=1.0)
        return null + (conditional - null) * cond_scale
