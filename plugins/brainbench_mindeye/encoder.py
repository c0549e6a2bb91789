"""The ``mindeye`` encoder: MindEye's residual MLP + projector, BiMixCo -> SoftCLIP, the reference recipe.

The defaults are the MedARC reference's (models.md); docs/mindeye.md lists every difference and the options
that apply a correction. Evaluation embeds with the projector output by default: it is what the contrastive
losses align with the CLIP targets and what the reference's retrieval evaluation scores. The backbone output
feeds MindEye's diffusion prior in the reference; without the prior's loss it is not trained towards the
target space, so ``embed="backbone"`` is offered only for use with such a loss.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from brainbench.interfaces import QuickRecipe, Shape
from brainbench.losses import MIXCO_TARGETS, MindEyeLoss
from brainbench.options import Option, Options
from brainbench.schedules import OneCycleDefaults
from brainbench.torch_encoder import Objective, TorchEncoder, TrainingDefaults
from brainbench_mindeye.model import BrainNetwork


class MindEyeEncoder(TorchEncoder):
    name: ClassVar[str] = "mindeye"
    reference_target: ClassVar[str] = "tokens"  # MindEye's retrieval trains on the 257x768 tokens
    # Each option once, with the MedARC reference's default; read back typed (self.options.hidden: an int).
    declared_options: ClassVar[Options] = Options(
        Option("hidden", int, 4096, "width of the residual MLP", minimum=1, maximum=2**20),
        Option("blocks", int, 4, "residual blocks", minimum=0, maximum=1000),
        Option("projector_hidden", int, 2048, "width of the projector", minimum=1, maximum=2**20),
        Option("input_dropout", float, 0.5, "dropout on the input layer", minimum=0, maximum=0.99),
        Option("block_dropout", float, 0.15, "dropout in each residual block", minimum=0, maximum=0.99),
        Option("embed", str, "projector", "what evaluation embeds with", choices=("projector", "backbone")),
        Option("mix_fraction", float, 0.33, "share of training with BiMixCo before SoftCLIP (BiMixCo while "
               "epoch < int(mix_fraction * epochs): 79 of 240)", minimum=0, maximum=1),
        Option("mixco_targets", str, "faithful", "faithful (the reference's soft targets) | corrected (rows sum "
               "to 1)", choices=MIXCO_TARGETS),
        Option("norm_weight_decay", str, "decay", "decay (the reference decays LayerNorm weights) | exempt",
               choices=("decay", "exempt")),
        Option("mix_beta", float, 0.15, "Beta(a, a) parameter of the voxel mix-up", above=0),
        Option("mix_probability", float, 0.5, "probability a batch is mixed", minimum=0, maximum=1),
        Option("mix_temperature", float, 0.006, "BiMixCo temperature", above=0),
        Option("soft_temperature_start", float, 0.004, "SoftCLIP temperature at the start", above=0),
        Option("soft_temperature_end", float, 0.0075, "SoftCLIP temperature at the end", above=0),
    )
    #: The reference: AdamW (weight decay 1e-2), OneCycleLR(max_lr 3e-4, total steps = epochs x steps per
    #: epoch, pct_start 2 / epochs, final_div_factor 1000) with beta1 cycled 0.95 -> 0.85 -> 0.95, no clipping.
    defaults: ClassVar[TrainingDefaults] = OneCycleDefaults(
        epochs=240,
        batch_size=32,
        lr=3e-4,  # OneCycle's peak
        weight_decay=1e-2,
        schedule="onecycle",
        warmup_epochs=2,  # pct_start = 2 / epochs: the peak after 2 epochs
        final_div_factor=1000.0,
        grad_clip=None,
        checkpoint_every=10,  # ~11 GB of weights + AdamW state at NSD scale: not every epoch
    )

    def build(self, n_voxels: int, target_shape: Shape) -> nn.Module:
        o = self.options
        return BrainNetwork(
            n_voxels,
            target_shape,
            hidden=o.hidden,
            blocks=o.blocks,
            projector_hidden=o.projector_hidden,
            input_dropout=o.input_dropout,
            block_dropout=o.block_dropout,
        )

    def quick_recipe(self) -> QuickRecipe:
        # The 4096-wide MLP (~80M parameters even at demo voxel counts) is hours per run on a laptop CPU.
        return QuickRecipe(options={"hidden": 512}, epochs=10, note="hidden width 512, 10 epochs")

    def objective(self, target_shape: Shape) -> Objective:
        o = self.options
        return MindEyeLoss(
            mix_fraction=o.mix_fraction,
            mix_beta=o.mix_beta,
            mix_probability=o.mix_probability,
            mix_temperature=o.mix_temperature,
            soft_temperature=(o.soft_temperature_start, o.soft_temperature_end),
            targets=o.mixco_targets,
            epochs=self.defaults.epochs,  # the trainer sets the run's own count (MindEyeLoss.set_epochs)
        )

    def no_weight_decay(self, name: str, param: torch.nn.Parameter) -> bool:
        """The reference exempts names containing "bias"; its "LayerNorm.weight" entry matches none of this
        model's names, so LayerNorm weights are decayed. ``norm_weight_decay="exempt"`` exempts them too
        (in this model the only 1-D weights)."""
        if "bias" in name:
            return True
        return self.options.norm_weight_decay == "exempt" and param.ndim <= 1

    def embed(self, model: nn.Module, voxels: torch.Tensor) -> torch.Tensor:
        backbone, projected = model(voxels)
        return projected if self.options.embed == "projector" else backbone

    def describe(self, n_voxels: int, target_shape: Shape) -> dict[str, Any]:
        summary = super().describe(n_voxels, target_shape)
        backbone = summary["parameters"] - summary["parameters_per_module"]["projector"]
        return {**summary, "parameters_backbone": backbone}
