"""TorchEncoder: an Encoder defined by a torch module, an objective and training defaults.

Every neural encoder (Lite-Mind, MindEye, third-party ones) subclasses this and is trained by the one
shared trainer in :mod:`brainbench.training`.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from brainbench.interfaces import Encoder, FitData, FittedEncoder, Reporter, Shape, TrainSettings
from brainbench.recipes import TrainingDefaults  # defined in the recipes leaf; imported from here too

if TYPE_CHECKING:
    import torch


class Objective(Protocol):
    """One training step's loss. ``progress`` in [0, 1) is the fraction of training done.

    It runs the forward pass itself, so objectives such as MindEye's BiMixCo can mix inputs first.
    An objective that is a ``torch.nn.Module`` has its parameters (e.g. a learned temperature) trained too.
    """

    def __call__(
        self, model: torch.nn.Module, voxels: torch.Tensor, targets: torch.Tensor, progress: float
    ) -> torch.Tensor: ...


@runtime_checkable
class EpochAware(Protocol):
    """An objective indexed by epoch (MindEye's: BiMixCo, then SoftCLIP): before the first step the trainer
    tells it the run's epoch count, which the recipe, the run's ``--epochs`` or early stopping decide."""

    def set_epochs(self, epochs: int) -> None: ...


#: Graphs one compiled function may keep: training, evaluation (no grad) and a dynamic batch size each add
#: variants per distinct shape, and dynamo's default (8) would send the rest back to eager mode.
RECOMPILE_LIMIT = 32


def allow_recompiles(limit: int = RECOMPILE_LIMIT) -> None:
    """Raise dynamo's per-function graph limit to at least ``limit`` (its name changed across torch versions)."""
    import torch._dynamo

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(int(getattr(config, name)), limit))


class TorchEncoder(Encoder):
    defaults: ClassVar[TrainingDefaults]

    @abstractmethod
    def build(self, n_voxels: int, target_shape: Shape) -> torch.nn.Module:
        """A fresh module mapping (B, n_voxels) to an output :meth:`embed` turns into (B, *target_shape)."""

    @abstractmethod
    def objective(self, target_shape: Shape) -> Objective:
        """The loss this encoder trains with by default (chosen by its options)."""

    def training_defaults(self) -> TrainingDefaults:
        """The recipe in force for this encoder's options (override when an option changes it)."""
        return self.defaults

    def embed(self, model: torch.nn.Module, voxels: torch.Tensor) -> torch.Tensor:
        """Prediction used for evaluation; override when forward returns more than the embedding."""
        return model(voxels)

    def compile_by_default(self) -> bool:
        """Whether ``compile="auto"`` compiles this encoder's model when training on a GPU."""
        return False

    def compile_model(self, model: torch.nn.Module, mode: str = "default") -> None:
        """torch.compile ``model`` in place (state dict keys unchanged); override to compile regions only."""
        allow_recompiles()
        model.compile(mode=mode)

    def no_weight_decay(self, name: str, param: torch.nn.Parameter) -> bool:
        """Biases, norms and positional embeddings get no weight decay."""
        return param.ndim <= 1 or "pos_embed" in name or "norm" in name.lower()

    def describe(self, n_voxels: int, target_shape: Shape) -> dict[str, Any]:
        """Parameter counts (total, per module) and FLOPs per sample, built on the meta device.

        Encoders add their own figures (variant, token count, ...) on top of this one summary.
        """
        from brainbench.model_info import model_figures

        figures = model_figures(self, n_voxels, target_shape)
        total = figures["parameters"]
        summary: dict[str, Any] = {
            "parameters": total,
            "parameters_per_module": figures["parameters_by_module"],
            "size_mb_fp32": round(total * 4 / 2**20, 1),
        }
        if "forward_flops" in figures:
            summary["flops_per_sample"] = figures["forward_flops"]
            summary["gflops_per_sample"] = round(figures["forward_flops"] / 1e9, 3)
        else:
            summary["flops_error"] = figures["flops_error"]
        return {**summary, "options": self.params()}

    def fit(self, data: FitData, settings: TrainSettings, reporter: Reporter) -> FittedEncoder:
        from brainbench.training import train_torch_encoder

        return train_torch_encoder(self, data, settings, reporter)
