"""AdamW with optimizer states in reduced precision, from torchao (the optional ``torchao`` extra).

Why: MindEye (947M parameters at batch 32) is bound by per-parameter memory traffic, most of it the AdamW
update over fp32 weights and two fp32 moments. The trainer's ``optimizer`` setting picks:

- ``adamw``: torch's AdamW (fused on CUDA), fp32 states; with ``precision bf16-master`` brainbench's own
  bf16-weights + fp32-master AdamW (:mod:`brainbench.master_weights`);
- ``adamw8bit``: torchao's ``AdamW8bit``: both moments block-wise quantised to 8 bits (dynamic tree
  quantisation, blocks of 256, as bitsandbytes does; tensors under 4,096 values stay full precision),
  the weights as the precision gives them (fp32);
- ``adamw8bit-bf16``: the same 8-bit moments, the weights themselves in bf16 and updated with stochastic
  rounding (no fp32 master copy): ~6 bytes of state per parameter instead of 16;
- ``adamw-bf16-states``: the weights and both moments in bf16, the update computed in fp32 and rounded
  stochastically back to bf16 (torchao's ``_AdamW`` with ``bf16_stochastic_round``).

The states (8-bit block-quantised tensors) and the stochastic rounding are torchao's; the update is
:func:`adamw_update`, torch.optim.AdamW's arithmetic in fp32 on the dequantised states (one compiled
kernel per tensor shape on CUDA). It differs from torchao's own step in one way the trainer needs: the
learning rate and both betas are 0-d device tensors refilled each step. torchao compiles its update with
``dynamic=False`` and Python-float betas, so a one-cycle schedule, which changes beta1 every step (MindEye's
recipe), would recompile it every step. A float written into ``group["lr"]`` by a schedule is accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from brainbench.config import OPTIMIZERS as CONFIG_OPTIMIZERS
from brainbench.errors import BrainbenchError

#: optimizer setting -> (torchao class name, parameter dtype, what it is)
LOW_PRECISION_OPTIMIZERS: dict[str, tuple[str, torch.dtype | None, str]] = {
    "adamw8bit": ("AdamW8bit", None, "AdamW, 8-bit moments (torchao)"),
    "adamw8bit-bf16": (
        "AdamW8bit", torch.bfloat16, "AdamW, 8-bit moments, bf16 weights, stochastic rounding (torchao)"
    ),
    "adamw-bf16-states": ("_AdamW", torch.bfloat16, "AdamW, bf16 weights and moments, stochastic rounding (torchao)"),
}
OPTIMIZERS = ("adamw", *LOW_PRECISION_OPTIMIZERS)
assert OPTIMIZERS == CONFIG_OPTIMIZERS, "brainbench.config.OPTIMIZERS must list the same settings"


def describe_optimizer(name: str, master_weights: bool = False) -> str:
    """What the recipe records for ``name``."""
    if name == "adamw":
        return "AdamW (fp32 master weights)" if master_weights else "AdamW"
    return LOW_PRECISION_OPTIMIZERS[name][2]


def parameter_dtype(name: str) -> torch.dtype | None:
    """The dtype the model's weights take under optimizer ``name`` (None: left as built, fp32)."""
    return LOW_PRECISION_OPTIMIZERS[name][1] if name in LOW_PRECISION_OPTIMIZERS else None


def _torchao_optim() -> Any:
    try:
        import torchao.optim
    except ImportError as error:
        raise BrainbenchError(
            "the low-precision optimizers come from torchao: pip install 'brainbench[lowbit]' (or torchao)"
        ) from error
    return torchao.optim


def build_low_precision_adamw(
    name: str, groups: list[dict[str, Any]], lr: float, compile_update: bool | None = None
) -> torch.optim.Optimizer:
    """A torchao AdamW for ``name`` over ``groups``; cast the model with :func:`parameter_dtype` first.

    The per-tensor update is compiled on CUDA (``compile_update`` None) and runs eagerly elsewhere (an
    inductor compile per tensor shape takes seconds to minutes on a CPU); both do the same arithmetic.
    """
    if name not in LOW_PRECISION_OPTIMIZERS:
        raise BrainbenchError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    base = getattr(_torchao_optim(), LOW_PRECISION_OPTIMIZERS[name][0])
    stochastic = LOW_PRECISION_OPTIMIZERS[name][1] is torch.bfloat16
    cls = _with_tensor_hyperparameters(base)
    optimizer = cls(groups, lr=lr, bf16_stochastic_round=stochastic)
    devices = {p.device.type for group in optimizer.param_groups for p in group["params"]}
    optimizer.compile_update = devices == {"cuda"} if compile_update is None else compile_update
    return optimizer


_CLASSES: dict[type, type] = {}


def _as_fp32(state: torch.Tensor) -> torch.Tensor:
    """A state tensor's value in fp32 (torchao's quantised states dequantise themselves)."""
    if type(state) is torch.Tensor:  # small tensors (< 4,096 values) keep a plain state
        return state.float()
    return state.dequantize(torch.float32)


def adamw_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    step: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    lr: torch.Tensor,
    beta1: torch.Tensor,
    beta2: torch.Tensor,
    weight_decay: float,
    eps: float,
    stochastic_round: bool,
) -> None:
    """One AdamW step (torch.optim.AdamW's arithmetic, in fp32) writing the states and ``param`` back in
    their own precision: quantised states re-quantise on ``copy_``; a bf16 ``param`` is rounded
    stochastically when asked (an unbiased rounding, so small updates are not lost on average)."""
    from torchao.optim.quant_utils import _fp32_to_bf16_sr

    g = grad.float()
    p = param.float() * (1 - lr * weight_decay)
    m = _as_fp32(exp_avg)
    v = _as_fp32(exp_avg_sq)
    m = m + (1 - beta1) * (g - m)
    v = v * beta2 + (1 - beta2) * g * g
    exp_avg.copy_(m)
    exp_avg_sq.copy_(v)
    denom = v.sqrt() / (1 - beta2**step).sqrt() + eps
    p = p - lr / (1 - beta1**step) * m / denom
    param.copy_(_fp32_to_bf16_sr(p) if stochastic_round else p)


def _with_tensor_hyperparameters(base: type) -> type:
    """A subclass of torchao's optimizer whose step passes lr and betas as refilled 0-d tensors."""
    if base in _CLASSES:
        return _CLASSES[base]

    class TensorHyperparameterAdamW(base):  # type: ignore[misc, valid-type]
        compile_update = False
        compile_backend = "inductor"  # the tests trace with "aot_eager" (an inductor compile on a CPU is slow)
        def add_param_group(self, param_group: dict[str, Any]) -> None:
            super().add_param_group(param_group)
            group = self.param_groups[-1]
            group["lr"] = float(group["lr"])  # kept a float for schedules; the tensor lives in _hyper

        def _hyper(self, group: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, ...]:
            """(lr, beta1, beta2) as 0-d fp32 tensors on ``device``, refilled in place (no recompiles)."""
            cache = group.setdefault("_hyper", {})
            tensors = cache.get(device)
            if tensors is None:
                tensors = cache[device] = tuple(torch.zeros((), device=device) for _ in range(3))
            lr, (beta1, beta2) = group["lr"], group["betas"]
            for tensor, value in zip(tensors, (float(lr), beta1, beta2), strict=True):
                tensor.fill_(value)
            return tensors

        def state_dict(self) -> dict[str, Any]:
            state = super().state_dict()
            for group in state["param_groups"]:
                group.pop("_hyper", None)  # device tensors: rebuilt on the first step
            return state

        @torch.no_grad()
        def step(self, closure: Callable[[], Any] | None = None) -> Any:
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            update = (
                torch.compile(adamw_update, fullgraph=True, dynamic=False, backend=self.compile_backend)
                if self.compile_update
                else adamw_update
            )
            with torch._dynamo.utils.disable_cache_limit():  # one graph per (shape, dtype, state kind)
                for group in self.param_groups:
                    hyper: tuple[torch.Tensor, ...] | None = None
                    for p in group["params"]:
                        if p.grad is None:
                            continue
                        if p.grad.is_sparse:
                            raise RuntimeError("sparse gradients are not supported")
                        state = self.state[p]
                        if not state:
                            state["step"] = torch.zeros((), device=p.device)
                            state["exp_avg"] = self._new_buffer(p, True)
                            state["exp_avg_sq"] = self._new_buffer(p, False)
                        state["step"] += 1
                        if hyper is None:
                            hyper = self._hyper(group, p.device)
                        lr, beta1, beta2 = hyper
                        update(
                            p.detach(), p.grad, state["step"], state["exp_avg"], state["exp_avg_sq"], lr, beta1,
                            beta2, group["weight_decay"], group["eps"],
                            self.bf16_stochastic_round and p.dtype is torch.bfloat16,
                        )  # fmt: skip
            return loss

    TensorHyperparameterAdamW.__name__ = f"{base.__name__}TensorHyperparameters"
    _CLASSES[base] = TensorHyperparameterAdamW
    return TensorHyperparameterAdamW


def cast_parameters(params: Iterable[torch.nn.Parameter], dtype: torch.dtype) -> None:
    """Cast parameters in place (modules keep their Parameter objects, hooks and names)."""
    for param in params:
        param.data = param.data.to(dtype)
