"""bf16 weights with fp32 master weights: AdamW exactly on the masters, state that survives a checkpoint."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from brainbench.errors import CheckpointMismatchError
from brainbench.interfaces import TrainSettings
from brainbench.master_weights import MasterWeightAdamW
from brainbench.training import train_torch_encoder
from tests.test_training import RecordingReporter, TinyEncoder, make_fit_data, weights_of


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 3))


def _groups(model: nn.Module) -> list[dict]:
    decayed = [p for p in model.parameters() if p.ndim > 1]
    exempt = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decayed, "weight_decay": 0.1}, {"params": exempt, "weight_decay": 0.0}]


def _gradients(steps: int) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    shapes = [p.shape for p in _model().parameters()]
    return [[torch.randn(shape, generator=generator) for shape in shapes] for _ in range(steps)]


def _run(optimizer: torch.optim.Optimizer, model: nn.Module, grads: list[list[torch.Tensor]], start: int = 0) -> None:
    for step, step_grads in enumerate(grads, start=start):
        for group in optimizer.param_groups:
            group["lr"] = 1e-2 / (1 + step)  # the trainer's schedule changes lr every step
        for param, grad in zip(model.parameters(), step_grads, strict=True):
            param.grad = grad.to(param.dtype)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_fp32_params_follow_torch_adamw():
    grads = _gradients(6)
    reference, ours = _model(), _model()
    _run(torch.optim.AdamW(_groups(reference), lr=1e-2), reference, grads)
    _run(MasterWeightAdamW(_groups(ours), lr=1e-2, param_dtype=torch.float32), ours, grads)
    for expected, got in zip(reference.parameters(), ours.parameters(), strict=True):
        assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6)  # a few fp32 ulps


def test_bf16_params_are_the_rounded_fp32_masters_of_an_exact_adamw():
    grads = _gradients(6)
    # what the masters must equal: fp32 AdamW fed the same (bf16-rounded) gradients
    rounded = [[g.to(torch.bfloat16).float() for g in step] for step in grads]
    reference, ours = _model(), _model()
    initial = [p.detach().clone() for p in ours.parameters()]
    _run(torch.optim.AdamW(_groups(reference), lr=1e-2), reference, rounded)
    optimizer = MasterWeightAdamW(_groups(ours), lr=1e-2)
    assert all(p.dtype == torch.bfloat16 for p in ours.parameters())
    assert all(torch.equal(optimizer.state[p]["master"], w) for p, w in zip(ours.parameters(), initial, strict=True))
    _run(optimizer, ours, grads)
    for expected, param in zip(reference.parameters(), ours.parameters(), strict=True):
        master = optimizer.state[param]["master"]
        assert master.dtype == torch.float32 and torch.allclose(master, expected, rtol=1e-6, atol=1e-6)
        assert torch.equal(param, master.to(torch.bfloat16))


def test_state_dict_round_trip_keeps_fp32_masters_and_continues_identically():
    grads = _gradients(8)
    straight = _model()
    straight_opt = MasterWeightAdamW(_groups(straight), lr=1e-2)
    _run(straight_opt, straight, grads)

    first = _model()
    first_opt = MasterWeightAdamW(_groups(first), lr=1e-2)
    _run(first_opt, first, grads[:3])
    saved_model, saved_opt = copy.deepcopy(first.state_dict()), copy.deepcopy(first_opt.state_dict())

    resumed = _model()
    resumed_opt = MasterWeightAdamW(_groups(resumed), lr=1e-2)
    resumed.load_state_dict(saved_model)
    resumed_opt.load_state_dict(saved_opt)
    for param in resumed.parameters():
        assert all(resumed_opt.state[param][key].dtype == torch.float32 for key in ("master", "exp_avg", "exp_avg_sq"))
    _run(resumed_opt, resumed, grads[3:], start=3)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_compiled_update_equals_the_eager_one():
    grads = _gradients(3)
    eager, compiled = _model(), _model()
    eager_opt = MasterWeightAdamW(_groups(eager), lr=1e-2, compile_update=False)
    compiled_opt = MasterWeightAdamW(_groups(compiled), lr=1e-2, compile_update=True)
    assert compiled_opt.compiled and not eager_opt.compiled
    _run(eager_opt, eager, grads)
    _run(compiled_opt, compiled, grads)
    for a, b in zip(eager.parameters(), compiled.parameters(), strict=True):
        master_a, master_b = eager_opt.state[a]["master"], compiled_opt.state[b]["master"]
        assert torch.allclose(master_a, master_b, rtol=1e-6, atol=1e-7)
    torch._dynamo.reset()


def test_trainer_with_bf16_master_weights_learns_and_resumes(tmp_path: Path):
    data = make_fit_data()
    settings = TrainSettings(epochs=4, seed=2, precision="bf16-master")
    reporter = RecordingReporter()
    fitted = train_torch_encoder(TinyEncoder(), data, settings, reporter)
    assert all(p.dtype == torch.bfloat16 for p in fitted.model.parameters())
    assert any("bf16 weights with fp32 master weights" in m for m in reporter.messages)
    first, last = reporter.epochs[0][1], reporter.epochs[-1][1]
    assert last["train_loss"] < first["train_loss"]  # no early stopping: no validation epochs to compare

    # killed after 2 epochs, resumed: the same weights as the uninterrupted run
    straight = weights_of(
        train_torch_encoder(TinyEncoder(), data, replace(settings, checkpoint_dir=tmp_path / "a"), RecordingReporter())
    )
    half = replace(settings, checkpoint_dir=tmp_path / "b")
    _interrupt_after(2, half, data)
    resumed = weights_of(train_torch_encoder(TinyEncoder(), data, half, RecordingReporter()))
    for key, value in straight.items():
        assert torch.equal(resumed[key], value), key

    # a plain-precision run refuses the master-weight checkpoint instead of loading the wrong state
    with pytest.raises(CheckpointMismatchError, match="precision"):
        train_torch_encoder(TinyEncoder(), data, replace(half, precision="fp32"), RecordingReporter())


class _Stop(Exception):
    pass


def _interrupt_after(epochs: int, settings: TrainSettings, data) -> None:
    reporter = RecordingReporter()
    original = reporter.epoch_end

    def epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        original(epoch, metrics)
        if epoch == epochs:
            raise _Stop

    reporter.epoch_end = epoch_end
    with pytest.raises(_Stop):
        train_torch_encoder(TinyEncoder(), data, settings, reporter)
