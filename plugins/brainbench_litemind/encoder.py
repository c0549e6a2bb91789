"""The ``litemind`` encoder: Lite-Mind's DFT backbone, its loss and the reference training recipe."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any, ClassVar

import torch
from torch import nn

from brainbench.interfaces import QuickRecipe, Shape
from brainbench.losses import DIRECTIONS, InfoNCELoss, PredictionObjective
from brainbench.options import Option, Options
from brainbench.torch_encoder import Objective, TorchEncoder, TrainingDefaults, allow_recompiles
from brainbench_litemind.fused_loss import HeadFusedObjective
from brainbench_litemind.model import (
    FILTER_MODES,
    FREMLP_MODES,
    POS_EMBED_MODES,
    SPECTRAL_KERNELS,
    SPECTRAL_PRECISIONS,
    TOKENIZERS,
    Block,
    LiteMind,
    LiteMindConfig,
)

COMPILE_SCOPES = ("auto", "step", "regions", "blocks")


def _block_forward(block: Block, x: torch.Tensor) -> torch.Tensor:
    return Block.forward(block, x)


_block_region: Any = None


def mark_block_regions(model: nn.Module) -> None:
    """Route every block's forward through one nested compile region (traced once per input shape)."""
    global _block_region
    if _block_region is None:
        _block_region = torch.compiler.nested_compile_region(_block_forward)
    for module in model.modules():
        if isinstance(module, Block):
            module.forward = functools.partial(_block_region, module)


#: The reference's rate: 1e-4 x 600 / 512, whatever the batch (its batch-scaling line is commented out).
REFERENCE_LR = 1e-4 * 600 / 512
LR_SCALINGS = ("none", "linear")


class LiteMindEncoder(TorchEncoder):
    name: ClassVar[str] = "litemind"
    reference_target: ClassVar[str] = "tokens"  # the paper's headline: the 257x768 full variant
    # Each option once: name, type, the reference-faithful default, help, accepted values; every one of them
    # is logged with the run and read back typed (self.options.widths: a tuple of ints, or None).
    declared_options: ClassVar[Options] = Options(
        Option("pad", str, "drop", "voxels past the last whole patch: dropped (reference) or zero-padded (paper)",
               choices=("drop", "zero")),
        Option("fremlp", str, "diagonal", "frequency MLP: the reference's diagonal, the paper's dense matrix, or "
               "none (module ablation: no frequency projector)", choices=FREMLP_MODES),
        Option("impl", str, "faithful", "faithful (complex torch.fft) | fast (real DFT matmuls, head in the loss)",
               choices=("faithful", "fast")),
        Option("odd_tokens", str, "reference", "odd token counts: N-1 after the filter (reference) | keep",
               choices=("reference", "keep")),
        Option("spectral_precision", str, "fp32", "impl=fast: the DFTs and the chain between them in fp32 under bf16 "
               "autocast, or autocast's dtype", choices=SPECTRAL_PRECISIONS),
        Option("spectral_kernel", str, "auto", "impl=fast: fused Triton kernels for the spectral chains (auto: on "
               "CUDA)", choices=SPECTRAL_KERNELS),
        Option("filter", str, "on", "spectrum-compression filter in every block: on, or none (module ablation)",
               choices=FILTER_MODES),
        Option("pos_embed", str, "learned", "positional embedding of the tokens: learned, or none (module ablation)",
               choices=POS_EMBED_MODES),
        Option("tokenizer", str, "patch", "patch: Conv1d over patch_size-voxel patches (patch compression) | "
               "linear: each token a linear map of all voxels (module ablation)", choices=TOKENIZERS),
        Option("lr_scaling", str, "none", "none: the reference rate whatever the batch | linear: x batch / 512",
               choices=LR_SCALINGS),
        Option("patch_size", int, 450, "voxels per patch", minimum=1),
        # what fits in memory is checked before a run (brainbench.resources)
        Option("widths", list, None, "stage widths, e.g. 128,64,32 (default: the reference's: full 512,256,128 + "
               "target tokens; CLS-only 512,256,128,50)", item=int, minimum=1, maximum=2**20, nullable=True),
        Option("depths", list, None, "blocks per stage (default: the reference's: full 2,10,2,4; CLS-only "
               "2,2,2,2)", item=int, minimum=1, maximum=1000, nullable=True),
        Option("dropout", float, 0.1, "dropout inside the blocks", minimum=0, maximum=0.99),
        Option("drop_path", float, 0.15, "stochastic depth rate", minimum=0, maximum=0.99),
        Option("direction", str, "image_to_fmri", "InfoNCE direction(s) trained (the reference trains one; "
               "symmetric is CLIP-style)", choices=DIRECTIONS),
        Option("log_logit_scale", float, 8.0, "log of the InfoNCE logit scale (8: e^8, fixed in the reference)"),
        Option("learn_temperature", bool, False, "learn the logit scale instead of fixing it"),
        Option("mse_weight", float, 0.0, "weight of an added MSE term (the paper's; 0 in the reference code)",
               minimum=0),
    )
    defaults: ClassVar[TrainingDefaults] = TrainingDefaults(
        epochs=1500,
        batch_size=1000,
        lr=REFERENCE_LR,
        weight_decay=0.1,
        schedule="timm-cosine",  # timm's CosineLRScheduler stepped at each epoch's end, warm-up inside
        warmup_epochs=5,
        warmup_start_lr=1e-6,
        min_lr=1e-5,
        grad_clip=None,  # the reference does not clip
        drop_last=False,  # the reference keeps the last partial batch (25 steps of 1000 for 24,980 trials)
    )

    def config_for(self, n_voxels: int, target_shape: Shape) -> LiteMindConfig:
        o = self.options
        return LiteMindConfig(
            n_voxels=n_voxels,
            target_shape=tuple(target_shape),
            patch_size=o.patch_size,
            pad=o.pad,
            fremlp=o.fremlp,
            impl=o.impl,
            odd_tokens=o.odd_tokens,
            spectral_precision=o.spectral_precision,
            spectral_kernel=o.spectral_kernel,
            filter=o.filter,
            pos_embed=o.pos_embed,
            tokenizer=o.tokenizer,
            widths=o.widths,
            depths=o.depths,
            dropout=o.dropout,
            drop_path=o.drop_path,
        )

    def training_defaults(self) -> TrainingDefaults:
        """The reference recipe; ``lr_scaling=linear`` applies the linear rule lr = 1e-4 x batch / 512."""
        if self.options.lr_scaling == "linear":
            return replace(self.defaults, lr=1e-4, lr_reference_batch=512)
        return self.defaults

    def build(self, n_voxels: int, target_shape: Shape) -> nn.Module:
        return LiteMind(self.config_for(n_voxels, target_shape))

    def quick_recipe(self) -> QuickRecipe:
        # A laptop CPU and ~2,000 simulated trials: 4x narrower stages, heavier dropout against overfitting, a
        # softer fixed temperature and both directions, so it learns in tens of epochs, not the reference's 1500.
        return QuickRecipe(
            options={
                "widths": "128,64,32",
                "dropout": 0.5,
                "drop_path": 0.3,
                "log_logit_scale": 3.0,
                "direction": "symmetric",
            },
            epochs=30,
            batch_size=128,
            lr=3e-3,
            note="widths 128/64/32, dropout 0.5, drop-path 0.3, temperature 0.05, symmetric InfoNCE, "
            "30 epochs of batch 128",
        )

    def objective(self, target_shape: Shape) -> Objective:
        o = self.options
        loss = InfoNCELoss(
            log_scale=o.log_logit_scale,
            learn_scale=o.learn_temperature,
            direction=o.direction,
            mse_weight=o.mse_weight,
        )
        # the fast path also folds the head into the loss's similarities (same function, no B x 197,376 output)
        return HeadFusedObjective(loss) if o.impl == "fast" else PredictionObjective(loss)

    def compile_by_default(self) -> bool:
        # the fast path's real elementwise chain is what inductor fuses; complex FFTs it cannot
        return self.options.impl == "fast"

    def compile_model(
        self, model: nn.Module, mode: str = "default", scope: str = "auto", backend: str = "inductor"
    ) -> None:
        """Compile for training, in place (state dict keys unchanged). ``scope``:

        - "step" (auto's choice for the fast path's folded loss): forward + loss as one graph
          (:class:`~brainbench_litemind.fused_loss.CompiledTrainingLoss`), so inductor fuses across block
          boundaries and into the loss; on an H200 42 ms a batch-1000 step against 64 ms for "blocks";
        - "regions": as "step", with each block marked a nested compile region, so blocks of one shape are
          traced and lowered once and stamped out (a shorter compile; no fusion across block boundaries);
        - "blocks" (auto's choice otherwise): each block compiled in place; blocks of one width share one
          graph and evaluation is compiled too, but nothing fuses across blocks or into the loss.
        """
        if scope not in COMPILE_SCOPES:
            raise ValueError(f"compile scope must be one of {', '.join(COMPILE_SCOPES)}, got {scope!r}")
        allow_recompiles()  # 4 stage widths x (train, eval, dynamic batch) graphs, past dynamo's default 8
        if scope == "auto":
            scope = "step" if self.options.impl == "fast" else "blocks"
        elif scope != "blocks" and self.options.impl != "fast":
            raise ValueError(f"compile scope {scope!r} compiles the fast path's loss; impl=faithful compiles 'blocks'")
        if scope == "blocks":
            options: dict[str, Any] = {"mode": mode} if backend == "inductor" else {}
            for module in model.modules():
                if isinstance(module, Block):
                    module.compile(backend=backend, **options)
            return
        from brainbench_litemind.fused_loss import COMPILED_LOSS_ATTR, CompiledTrainingLoss

        if scope == "regions":
            mark_block_regions(model)
        setattr(model, COMPILED_LOSS_ATTR, CompiledTrainingLoss(mode, backend))

    def params(self) -> dict[str, Any]:
        return {k: ("x".join(map(str, v)) if isinstance(v, tuple) else v) for k, v in super().params().items()}

    def describe(self, n_voxels: int, target_shape: Shape) -> dict[str, Any]:
        cfg = self.config_for(n_voxels, target_shape)
        return {
            **super().describe(n_voxels, target_shape),
            "variant": "cls-only" if cfg.cls_only else "full",
            "tokens": cfg.n_tokens,
            "stage_widths": list(cfg.stage_widths),
            "stage_depths": list(cfg.stage_depths),
            "flops_note": "matmuls and convolutions only; complex FFT ops are not counted",
            "ablated_modules": ", ".join(ablated_modules(self.options.as_dict())) or "none (the full model)",
            "default_target": DEFAULT_TARGET_NOTE,
        }


#: What a plain run trains on (brainbench.runner.default_target_for): said by `brainbench info litemind`.
DEFAULT_TARGET_NOTE = (
    "real NSD or --dataset-opt scale=nsd: the 257x768 ViT-L/14 tokens (clip-vit-l-14-tokens / "
    "synthetic-clip-tokens: the full variant, the paper's headline); demo-scale simulator: pooled 768 "
    "(synthetic-clip: the CLS-only variant, fast); --target overrides"
)


def ablated_modules(options: dict[str, Any]) -> list[str]:
    """The modules a set of options takes out of the backbone (module ablation), in the paper's order."""
    removed = []
    if options.get("tokenizer") == "linear":
        removed.append("patch compression")
    if options.get("pos_embed") == "none":
        removed.append("positional embedding")
    if options.get("filter") == "none":
        removed.append("spectrum-compression filter")
    if options.get("fremlp") == "none":
        removed.append("frequency projector (FreMLP)")
    return removed
