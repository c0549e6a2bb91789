"""Lite-Mind's DFT backbone, built the way the reference code builds it (see shared/reference/models.md).

Two options cover the places where the reference code and the paper disagree:
``pad`` ("drop": trailing voxels are dropped, as in the code; "zero": zero-padded, as in the paper) and
``fremlp`` ("diagonal": only the diagonal of the complex weights acts, as in the code; "dense": the full
complex matrix of the paper's figure). ``odd_tokens`` covers a reference quirk: for an odd token count N
(NSD subject 2: 31) the filter's inverse FFT has no length argument and returns N-1 tokens, the block's LN
and MLP run on N-1 tokens and FreMLP's inverse FFT (which does pass N) restores N ("reference", the
default, as the papers' figures were made); "keep" keeps N tokens throughout (a correction). Every
LayerNorm uses eps 1e-6, as the reference builds them. ``impl`` picks how the spectral operators are
computed: "faithful" uses complex ``torch.fft`` like the reference, "fast" uses real DFT matmuls
(:mod:`brainbench_litemind.fast`); both have the same parameters, so state dicts move freely between them.

Module ablation (the paper's ablation of its modules; docs/litemind.md says how each variant is read):
``filter="none"`` removes the spectrum-compression filter, ``fremlp="none"`` the frequency projector,
``pos_embed="none"`` the positional embedding, ``tokenizer="linear"`` the patch compression (each token a
linear map of all voxels instead of a 450-voxel patch). Both ``impl`` paths share these (the removed
modules are identities in the shared :class:`Block`), so they stay the same function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

FULL_WIDTHS = (512, 256, 128)  # the last stage's width is the number of target tokens (257)
FULL_DEPTHS = (2, 10, 2, 4)
CLS_WIDTHS = (512, 256, 128, 50)
CLS_DEPTHS = (2, 2, 2, 2)
FILTER_ORDER = 2  # F: number of complex weights the spectrum-compression filter sums
SOFTSHRINK = 0.01
INIT_SCALE = 0.02
LAYER_NORM_EPS = 1e-6  # the reference builds every LayerNorm with eps=1e-6 (PyTorch's default is 1e-5)
ODD_TOKEN_MODES = ("reference", "keep")
SPECTRAL_PRECISIONS = ("fp32", "autocast")  # impl=fast: the spectral ops' precision under autocast
SPECTRAL_KERNELS = ("auto", "triton", "torch")  # impl=fast: fused Triton chains (auto: on CUDA) or plain ops
# Module ablation (the paper's module-ablation table): each module can be taken out of the backbone.
FILTER_MODES = ("on", "none")  # none: no spectrum-compression filter (nor its pre-norm) in the blocks
FREMLP_MODES = ("diagonal", "dense", "none")  # none: no frequency projector (nor its pre-norm) in the blocks
POS_EMBED_MODES = ("learned", "none")  # none: patch tokens without the positional embedding
TOKENIZERS = ("patch", "linear")  # linear: no patch compression, every token a linear map of all voxels


@dataclass(frozen=True)
class LiteMindConfig:
    """Everything that fixes the architecture; defaults reproduce the reference."""

    n_voxels: int
    target_shape: tuple[int, ...]
    patch_size: int = 450
    pad: str = "drop"  # drop | zero
    fremlp: str = "diagonal"  # diagonal | dense
    impl: str = "faithful"  # faithful | fast
    odd_tokens: str = "reference"  # reference: the filter returns N-1 tokens for odd N | keep: N throughout
    spectral_precision: str = "fp32"  # impl=fast: fp32 | autocast (see brainbench_litemind.fast)
    spectral_kernel: str = "auto"  # impl=fast: auto | triton | torch (see brainbench_litemind.fast)
    filter: str = "on"  # on | none (module ablation)
    pos_embed: str = "learned"  # learned | none (module ablation)
    tokenizer: str = "patch"  # patch | linear (module ablation: no patch compression)
    widths: tuple[int, ...] | None = None  # None: the reference's; full variant: all but the last stage
    depths: tuple[int, ...] | None = None
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    drop_path: float = 0.15

    def __post_init__(self) -> None:
        if self.pad not in ("drop", "zero"):
            raise ValueError(f"pad must be 'drop' or 'zero', got {self.pad!r}")
        for name, allowed in (("fremlp", FREMLP_MODES), ("filter", FILTER_MODES), ("pos_embed", POS_EMBED_MODES),
                              ("tokenizer", TOKENIZERS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.impl not in ("faithful", "fast"):
            raise ValueError(f"impl must be 'faithful' or 'fast', got {self.impl!r}")
        if self.odd_tokens not in ODD_TOKEN_MODES:
            raise ValueError(f"odd_tokens must be one of {', '.join(ODD_TOKEN_MODES)}, got {self.odd_tokens!r}")
        if self.spectral_precision not in SPECTRAL_PRECISIONS:
            raise ValueError(
                f"spectral_precision must be one of {', '.join(SPECTRAL_PRECISIONS)}, got {self.spectral_precision!r}"
            )
        if self.spectral_kernel not in SPECTRAL_KERNELS:
            raise ValueError(
                f"spectral_kernel must be one of {', '.join(SPECTRAL_KERNELS)}, got {self.spectral_kernel!r}"
            )
        if len(self.target_shape) not in (1, 2):
            raise ValueError(f"Lite-Mind needs a (D,) or (tokens, D) target, got {self.target_shape}")
        if self.n_tokens < 1:
            raise ValueError(
                f"{self.n_voxels} voxels make no {self.patch_size}-voxel patch; use a smaller patch_size"
            )
        if self.fremlp == "none" and self.filtered_tokens != self.n_tokens:
            # the reference's filter returns N-1 tokens for odd N and only FreMLP's inverse FFT restores N
            raise ValueError(
                f"fremlp=none with {self.n_tokens} tokens (odd) and odd_tokens=reference: the filter returns "
                f"{self.filtered_tokens} tokens and nothing restores {self.n_tokens} without FreMLP; "
                "add odd_tokens=keep (or filter=none)"
            )

    @property
    def cls_only(self) -> bool:
        """A pooled (D,) target selects the CLS-only variant."""
        return len(self.target_shape) == 1

    @property
    def n_tokens(self) -> int:
        if self.pad == "drop":
            return (self.n_voxels - self.patch_size) // self.patch_size + 1
        return math.ceil(self.n_voxels / self.patch_size)

    @property
    def filtered_tokens(self) -> int:
        """Tokens the spectrum filter returns: 2 * (N // 2) as the reference's length-less irfft gives, or N."""
        if self.filter == "none" or self.odd_tokens == "keep":
            return self.n_tokens
        return 2 * (self.n_tokens // 2)

    @property
    def stage_widths(self) -> tuple[int, ...]:
        if self.cls_only:
            widths = tuple(self.widths or CLS_WIDTHS)
            # three widths name the stages before the 50-wide last one, as for the full variant
            return (*widths, CLS_WIDTHS[-1]) if len(widths) == len(CLS_WIDTHS) - 1 else widths
        # the last stage's width is always the target's token count, so ``widths`` names the others
        return (*(self.widths or FULL_WIDTHS), self.target_shape[0])

    @property
    def stage_depths(self) -> tuple[int, ...]:
        depths = tuple(self.depths or (CLS_DEPTHS if self.cls_only else FULL_DEPTHS))
        if len(depths) != len(self.stage_widths):
            raise ValueError(f"{len(depths)} depths for {len(self.stage_widths)} stage widths")
        return depths


# ------------------------------------------------------------------------------------------ pieces


class DropPath(nn.Module):
    """Stochastic depth: drops the whole branch per sample and rescales survivors.

    The keep probability is a (non-persistent) tensor, not a Python float: torch.compile specialises on
    float attributes, and with a rate rising block by block every block would compile its own graph
    (18 for Lite-Mind, past dynamo's recompile limit). As a tensor, blocks of one width share one graph.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.enabled = p > 0.0
        self.register_buffer("keep", torch.tensor(1.0 - p), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.enabled:
            return x
        keep = self.keep.to(x.dtype)
        mask = torch.bernoulli(keep.expand((x.shape[0],) + (1,) * (x.ndim - 1)))
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


def compression_coefficients(order: int) -> list[float]:
    """cos((2k+1) pi / (2F)), the weights of the spectrum-compression sum."""
    return [math.cos((2 * k + 1) * math.pi / (2 * order)) for k in range(order)]


def fft_dtype(x: torch.Tensor) -> torch.dtype:
    """FFTs run in at least fp32 (half-precision FFTs need power-of-two lengths and lose accuracy)."""
    return torch.promote_types(x.dtype, torch.float32)


class SpectrumFilter(nn.Module):
    """Spectrum compression: y = irfft(sum_k c_k W_k X X^2) with X = rfft(x) along tokens (orthonormal)."""

    def __init__(self, n_tokens: int, dim: int, out_tokens: int | None = None) -> None:
        super().__init__()
        self.n_tokens = n_tokens
        # the reference's irfft has no length: it returns 2 * (K - 1) tokens, N - 1 for an odd N
        self.out_tokens = n_tokens if out_tokens is None else out_tokens
        # stored as (real, imag) pairs, like the reference: 2 * F * (N//2+1) * C parameters
        self.complex_weight = nn.Parameter(
            torch.randn(FILTER_ORDER, n_tokens // 2 + 1, dim, 2) * INIT_SCALE
        )
        self.coefficients = compression_coefficients(FILTER_ORDER)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        spectrum = torch.fft.rfft(x.to(fft_dtype(x)), dim=1, norm="ortho")
        cubed = spectrum * (spectrum * spectrum)
        weights = torch.view_as_complex(self.complex_weight.to(fft_dtype(x)))
        out = sum(c * weights[k] * cubed for k, c in enumerate(self.coefficients))
        return torch.fft.irfft(out, n=self.out_tokens, dim=1, norm="ortho").to(dtype)


class FreMLP(nn.Module):
    """Frequency projector: complex linear map + ReLU on the token spectrum, softshrink, inverse FFT.

    The reference instantiates dense (C, C) weights and a (1, C) ``embeddings`` parameter it never uses;
    both are kept so parameter counts and state dicts match it.
    """

    def __init__(self, n_tokens: int, dim: int, mode: str, in_tokens: int | None = None) -> None:
        super().__init__()
        self.n_tokens = n_tokens  # tokens returned (the inverse FFT passes n=N, as in the reference)
        self.in_tokens = n_tokens if in_tokens is None else in_tokens  # tokens received (N - 1 after an odd filter)
        self.mode = mode
        self.r = nn.Parameter(INIT_SCALE * torch.randn(dim, dim))
        self.i = nn.Parameter(INIT_SCALE * torch.randn(dim, dim))
        self.rb = nn.Parameter(INIT_SCALE * torch.randn(dim))
        self.ib = nn.Parameter(INIT_SCALE * torch.randn(dim))
        self.embeddings = nn.Parameter(torch.randn(1, dim))  # unused, as in the reference

    def complex_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The diagonal (C,) or the dense (C, C) real and imaginary weights."""
        if self.mode == "diagonal":
            return torch.diagonal(self.r), torch.diagonal(self.i)
        return self.r, self.i

    def project(self, real: torch.Tensor, imag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The complex affine map + ReLU + softshrink on (B, K, C) real and imaginary parts."""
        wr, wi = (w.to(real.dtype) for w in self.complex_weights())
        if self.mode == "diagonal":
            out_r = real * wr - imag * wi + self.rb
            out_i = imag * wr + real * wi + self.ib
        else:
            out_r = real @ wr - imag @ wi + self.rb
            out_i = imag @ wr + real @ wi + self.ib
        return F.softshrink(F.relu(out_r), SOFTSHRINK), F.softshrink(F.relu(out_i), SOFTSHRINK)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        spectrum = torch.fft.rfft(x.to(fft_dtype(x)), dim=1, norm="ortho")
        real, imag = self.project(spectrum.real, spectrum.imag)
        out = torch.complex(real, imag)
        return torch.fft.irfft(out, n=self.n_tokens, dim=1, norm="ortho").to(dtype)


SpectralFactory = Callable[..., nn.Module]


class Block(nn.Module):
    """x + DropPath(FreMLP(LN(DropPath(MLP(LN(Filter(LN(x)))))))).

    Module ablation: with ``filter="none"`` the filter and its pre-norm are gone (``MLP(LN(x))``); with
    ``fremlp="none"`` FreMLP and its pre-norm are gone (``x + DropPath(branch)``).
    """

    def __init__(
        self,
        n_tokens: int,
        dim: int,
        cfg: LiteMindConfig,
        drop_path: float,
        make_filter: SpectralFactory,
        make_fremlp: SpectralFactory,
    ) -> None:
        super().__init__()
        filtered = cfg.filtered_tokens
        self.norm1: nn.Module = nn.Identity()
        self.filter: nn.Module = nn.Identity()
        if cfg.filter != "none":
            self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
            self.filter = make_filter(n_tokens, dim, filtered)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, cfg.mlp_ratio, cfg.dropout)
        self.norm3: nn.Module = nn.Identity()
        self.fremlp: nn.Module = nn.Identity()
        if cfg.fremlp != "none":
            self.norm3 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
            self.fremlp = make_fremlp(n_tokens, dim, cfg.fremlp, filtered)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.drop_path(self.mlp(self.norm2(self.filter(self.norm1(x)))))
        return x + self.drop_path(self.fremlp(self.norm3(branch)))


# ------------------------------------------------------------------------------------------ model


class LiteMind(nn.Module):
    """(B, V) voxels -> (B, tokens, D) (full variant) or (B, D) (CLS-only variant)."""

    def __init__(self, cfg: LiteMindConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n = cfg.n_tokens
        widths, depths = cfg.stage_widths, cfg.stage_depths
        make_filter, make_fremlp = spectral_factories(cfg.impl)
        if cfg.tokenizer == "patch":
            self.patch_embed: nn.Module = nn.Conv1d(1, widths[0], kernel_size=cfg.patch_size, stride=cfg.patch_size)
        else:  # no patch compression: each of the N tokens is a linear map of every voxel
            self.patch_embed = nn.Linear(cfg.n_voxels, n * widths[0])
        self.pos_embed: nn.Parameter | None = None
        if cfg.pos_embed == "learned":
            self.pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, n, widths[0]), std=0.02))
        self.pos_drop = nn.Dropout(cfg.dropout)
        rates = drop_path_rates(cfg.drop_path, sum(depths))
        stages, transitions = [], []
        for s, (dim, depth) in enumerate(zip(widths, depths, strict=True)):
            first = sum(depths[:s])
            blocks = [
                Block(n, dim, cfg, rates[first + j], make_filter, make_fremlp) for j in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
            if s > 0:
                transitions.append(nn.Linear(widths[s - 1], dim))
        self.stages = nn.ModuleList(stages)
        self.transitions = nn.ModuleList(transitions)
        self.norm = nn.LayerNorm(widths[-1], eps=LAYER_NORM_EPS)  # the head's LayerNorm(257) when full
        out_dim = cfg.target_shape[-1]
        self.head = nn.Linear(widths[-1] if cfg.cls_only else n, out_dim)
        self.apply(_init_linear)
        for module in self.modules():
            if hasattr(module, "configure"):  # the fast spectral modules
                module.configure(cfg.spectral_precision, cfg.spectral_kernel)

    def tokens(self, voxels: torch.Tensor) -> torch.Tensor:
        """(B, V) -> (B, N, C0) patch tokens with positional embedding (each optional: module ablation)."""
        cfg = self.cfg
        if cfg.tokenizer == "linear":
            x = self.patch_embed(voxels).view(voxels.shape[0], cfg.n_tokens, -1)
        else:
            if cfg.pad == "zero":
                voxels = F.pad(voxels, (0, cfg.n_tokens * cfg.patch_size - voxels.shape[1]))
            x = self.patch_embed(voxels.unsqueeze(1)).transpose(1, 2)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        return self.pos_drop(x)

    def features(self, voxels: torch.Tensor) -> torch.Tensor:
        """(B, V) -> (B, N, C_last): the normalised tokens the head reads."""
        x = self.tokens(voxels)
        for s, stage in enumerate(self.stages):
            if s > 0:
                x = self.transitions[s - 1](x)
            x = stage(x)
        return self.norm(x)

    def forward(self, voxels: torch.Tensor) -> torch.Tensor:
        x = self.features(voxels)
        if self.cfg.cls_only:
            return self.head(x.mean(dim=1))
        return self.head(x.transpose(1, 2))


def drop_path_rates(top: float, n_blocks: int) -> list[float]:
    """Stochastic depth rising linearly from 0 at the first block to ``top`` at the last."""
    if n_blocks == 1:
        return [0.0]
    return [top * i / (n_blocks - 1) for i in range(n_blocks)]


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def spectral_factories(impl: str) -> tuple[SpectralFactory, SpectralFactory]:
    if impl == "fast":
        from brainbench_litemind.fast import FastFreMLP, FastSpectrumFilter

        return FastSpectrumFilter, FastFreMLP
    return SpectrumFilter, FreMLP


def build_litemind(
    n_voxels: int, target_shape: Sequence[int], **options: object
) -> LiteMind:
    return LiteMind(LiteMindConfig(n_voxels=n_voxels, target_shape=tuple(target_shape), **options))
