"""The ``litemind`` encoder: Lite-Mind's DFT backbone, its loss and the reference training recipe."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from torch import nn

from brainbench.interfaces import QuickRecipe, Shape
from brainbench.losses import DIRECTIONS, InfoNCELoss, PredictionObjective
from brainbench.options import Option, Options
from brainbench.torch_encoder import Objective, TorchEncoder, TrainingDefaults, allow_recompiles
from brainbench_litemind.fused_loss import HeadFusedObjective
from brainbench_litemind.model import Block, LiteMind, LiteMindConfig

#: The reference's rate: 1e-4 x 600 / 512, whatever the batch (its batch-scaling line is commented out).
REFERENCE_LR = 1e-4 * 600 / 512
LR_SCALINGS = ("none", "linear")


class LiteMindEncoder(TorchEncoder):
    name: ClassVar[str] = "litemind"
    # Each option once: name, type, the reference-faithful default, help, accepted values; every one of them
    # is logged with the run and read back typed (self.options.widths: a tuple of ints, or None).
    declared_options: ClassVar[Options] = Options(
        Option("pad", str, "drop", "voxels past the last whole patch: dropped (reference) or zero-padded (paper)",
               choices=("drop", "zero")),
        Option("fremlp", str, "diagonal", "frequency MLP: the reference's diagonal or the paper's dense matrix",
               choices=("diagonal", "dense")),
        Option("impl", str, "faithful", "faithful (complex torch.fft) | fast (real DFT matmuls, head in the loss)",
               choices=("faithful", "fast")),
        Option("odd_tokens", str, "reference", "odd token counts: N-1 after the filter (reference) | keep",
               choices=("reference", "keep")),
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

    def compile_model(self, model: nn.Module, mode: str = "default") -> None:
        """Regional compilation: each block in place, so blocks of one width share one compiled graph.

        Far shorter to compile than the whole model with 18 blocks inlined, at the price of no fusion
        across block boundaries.
        """
        allow_recompiles()  # 4 stage widths x (train, eval, dynamic batch) graphs, past dynamo's default 8
        for module in model.modules():
            if isinstance(module, Block):
                module.compile(mode=mode)

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
        }
