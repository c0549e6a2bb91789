"""The figures papers compare: parameter counts (total and per module) and FLOPs per sample.

Models are built on torch's "meta" device where possible, so even MindEye's ~1e9 parameters are counted
without allocating memory. FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` on a batch of one:
matmuls and convolutions count 2 FLOPs per multiply-add; FFTs and elementwise ops are not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from brainbench.interfaces import Shape

if TYPE_CHECKING:  # for annotations only: torch_encoder imports this module to describe itself
    from brainbench.torch_encoder import TorchEncoder

#: A training step costs about three forward passes (forward, and backward for inputs and weights).
TRAINING_FLOPS_PER_FORWARD = 3


def _unique_count(parameters: Any, seen: set[int]) -> int:
    total = 0
    for param in parameters:
        if id(param) not in seen:  # tied weights are counted once
            seen.add(id(param))
            total += param.numel()
    return total


def parameter_counts(module: torch.nn.Module) -> tuple[int, dict[str, int]]:
    """(total, {top-level child or direct parameter name: count}); shared parameters count once."""
    seen: set[int] = set()
    per_module: dict[str, int] = {}
    for name, param in module.named_parameters(recurse=False):
        per_module[name] = _unique_count([param], seen)
    for name, child in module.named_children():
        per_module[name] = _unique_count(child.parameters(), seen)
    return sum(per_module.values()), per_module


def _module_device(module: torch.nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


def flops_per_sample(
    module: torch.nn.Module,
    n_voxels: int,
    embed: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Forward FLOPs of one sample through ``embed(module, x)`` (default ``module(x)``), on its device."""
    embed = embed or (lambda model, x: model(x))
    sample = torch.zeros(1, n_voxels, device=_module_device(module))
    was_training = module.training
    module.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            embed(module, sample)
    finally:
        module.train(was_training)
    counts = counter.get_flop_counts()
    root = type(module).__name__
    by_module = {
        key[len(root) + 1 :]: int(sum(ops.values()))
        for key, ops in counts.items()
        if key.startswith(root + ".") and "." not in key[len(root) + 1 :]
    }
    forward = int(counter.get_total_flops())
    return {
        "forward_flops": forward,
        "training_flops_estimate": TRAINING_FLOPS_PER_FORWARD * forward,
        "by_module": by_module,
    }


def build_for_figures(encoder: TorchEncoder, n_voxels: int, target_shape: Shape) -> torch.nn.Module:
    """The encoder's module on the meta device (no memory), or on the CPU if it cannot be built there."""
    try:
        with torch.device("meta"):
            return encoder.build(n_voxels, tuple(target_shape))
    except (NotImplementedError, RuntimeError, TypeError) as exc:  # e.g. init code that needs real numbers
        if "overflow" in str(exc).lower():  # a tensor past 2**63 bytes: building it for real cannot work either
            from brainbench.resources import ResourceError

            raise ResourceError(f"{encoder.name} with these options is too large to build: {exc}") from None
        return encoder.build(n_voxels, tuple(target_shape))


def model_figures(encoder: TorchEncoder, n_voxels: int, target_shape: Shape) -> dict[str, Any]:
    """Everything ``brainbench info`` prints for a torch encoder at one input/target size."""
    model = build_for_figures(encoder, n_voxels, target_shape)
    total, per_module = parameter_counts(model)
    figures: dict[str, Any] = {
        "encoder": encoder.name,
        "n_voxels": int(n_voxels),
        "target_shape": "x".join(map(str, target_shape)),
        "parameters": total,
        "parameters_by_module": per_module,
        "options": encoder.params(),
        "training": encoder.defaults.as_params(),
    }
    try:
        figures.update(flops_per_sample(model, n_voxels, encoder.embed))
    except (NotImplementedError, RuntimeError) as error:  # an op without a meta kernel
        figures["flops_error"] = f"{type(error).__name__}: {error}"
    return figures
