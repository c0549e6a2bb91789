"""AdamW with low-precision states (torchao): the same loss curve as fp32 AdamW, states really reduced,
no recompiles as the schedule moves lr and beta1, and a checkpoint that resumes to the same weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from brainbench.errors import BrainbenchError, CheckpointMismatchError
from brainbench.interfaces import TrainSettings
from brainbench.low_precision_adamw import OPTIMIZERS, adamw_update
from brainbench.training import build_optimizer, train_torch_encoder
from brainbench_mindeye.model import BrainNetwork
from tests.test_training import RecordingReporter, TinyEncoder, make_fit_data, weights_of

pytest.importorskip("torchao", reason="the low-precision optimizers come from torchao (the lowbit extra)")

STEPS = 30


def _mindeye() -> BrainNetwork:
    torch.manual_seed(0)
    # no dropout: with bf16 weights the stochastic rounding draws from the global RNG, and different dropout
    # masks would make the curves differ for a reason that is not the optimizer's
    return BrainNetwork(300, (4, 32), hidden=128, blocks=2, projector_hidden=64, input_dropout=0, block_dropout=0)


def _loss_curve(optimizer_name: str, master_weights: bool = False, amp: torch.dtype | None = None) -> list[float]:
    """MindEye-shaped contrastive training, lr decaying and beta1 moving every step as one-cycle does."""
    model = _mindeye()
    groups = [
        {"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": 0.01},
        {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0},
    ]
    optimizer = build_optimizer(groups, 1e-3, torch.device("cpu"), master_weights, optimizer_name)
    generator = torch.Generator().manual_seed(1)
    voxels, targets = torch.randn(64, 300, generator=generator), torch.randn(64, 4, 32, generator=generator)
    losses = []
    for step in range(STEPS):
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * (1 - step / STEPS)
            group["betas"] = (0.95 - 0.1 * step / STEPS, 0.999)
        rows = torch.randint(0, 64, (16,), generator=generator)
        with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
            _, projected = model(voxels[rows])
            logits = F.normalize(projected.float().flatten(1), dim=1) @ F.normalize(targets[rows].flatten(1), dim=1).T
            loss = F.cross_entropy(logits / 0.05, torch.arange(16))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def _smoothed(values: list[float], window: int = 5) -> torch.Tensor:
    series = torch.tensor(values)
    return series.unfold(0, window, 1).mean(dim=1)


def test_8bit_states_follow_the_fp32_adamw_loss_curve():
    reference, eight_bit = _loss_curve("adamw"), _loss_curve("adamw8bit")
    assert reference[-1] < reference[0] - 1.0  # it learns, so the comparison means something
    # step for step within 0.05 of a loss that falls by > 1: the 8-bit moments barely move the trajectory
    assert max(abs(a - b) for a, b in zip(reference, eight_bit, strict=True)) < 0.05


@pytest.mark.parametrize("name", ["adamw8bit-bf16", "adamw-bf16-states"])
def test_bf16_weight_optimizers_follow_the_bf16_master_weight_curve(name):
    # the fair reference for bf16 weights: the same bf16 forward with exact fp32-master AdamW
    reference = _loss_curve("adamw", master_weights=True, amp=torch.bfloat16)
    low = _loss_curve(name, amp=torch.bfloat16)
    assert reference[-1] < reference[0] - 1.0
    # stochastic rounding makes single steps noisy: compare 5-step means, and the end of training
    assert (_smoothed(low) - _smoothed(reference)).abs().max() < 0.15
    assert abs(sum(low[-5:]) - sum(reference[-5:])) / 5 < 0.1


def test_states_are_reduced_and_weights_take_the_optimizer_dtype():
    for name, weight_dtype, state_kind in (
        ("adamw8bit", torch.float32, "OptimState8bit"),
        ("adamw8bit-bf16", torch.bfloat16, "OptimState8bit"),
        ("adamw-bf16-states", torch.bfloat16, "Tensor"),
    ):
        model = _mindeye()
        optimizer = build_optimizer([{"params": list(model.parameters())}], 1e-3, torch.device("cpu"), optimizer=name)
        big = model.lin0[0].weight  # 128 x 300: quantised (>= 4,096 values, whole blocks of 256)
        assert big.dtype == weight_dtype
        big.grad = torch.randn_like(big)
        optimizer.step()
        state = optimizer.state[big]["exp_avg"]
        assert type(state).__name__ == state_kind, name
        if state_kind == "Tensor":
            assert state.dtype == torch.bfloat16
        else:
            assert state.codes.dtype == torch.uint8 and state.codes.shape == big.shape


def test_compiled_update_equals_eager_and_does_not_recompile_as_lr_and_betas_move():
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager_model, compiled_model = _mindeye(), _mindeye()
    optimizers = []
    for model, compiled in ((eager_model, False), (compiled_model, True)):
        groups = [{"params": list(model.parameters())}]
        optimizer = build_optimizer(groups, 1e-3, torch.device("cpu"), optimizer="adamw8bit")
        optimizer.compile_update, optimizer.compile_backend = compiled, "aot_eager"
        optimizers.append(optimizer)
    generator = torch.Generator().manual_seed(3)
    graphs_after_first = None
    for step in range(4):
        grads = [torch.randn(p.shape, generator=generator) for p in eager_model.parameters()]
        for model, optimizer in zip((eager_model, compiled_model), optimizers, strict=True):
            for group in optimizer.param_groups:
                group["lr"], group["betas"] = 1e-3 / (1 + step), (0.95 - 0.02 * step, 0.999)
            for param, grad in zip(model.parameters(), grads, strict=True):
                param.grad = grad.clone()
            optimizer.step()
        if step == 0:
            graphs_after_first = counters["stats"]["unique_graphs"]
    assert graphs_after_first > 0
    assert counters["stats"]["unique_graphs"] == graphs_after_first  # one graph per tensor kind, reused
    for a, b in zip(eager_model.parameters(), compiled_model.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()


def test_update_is_torch_adamw_on_plain_fp32_states():
    torch.manual_seed(0)
    param = torch.randn(50)
    reference = param.clone().requires_grad_()
    torch_adamw = torch.optim.AdamW([reference], lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    exp_avg, exp_avg_sq = torch.zeros(50), torch.zeros(50)
    for step in range(1, 6):
        grad = torch.randn(50)
        reference.grad = grad.clone()
        torch_adamw.step()
        adamw_update(param, grad, torch.tensor(float(step)), exp_avg, exp_avg_sq, torch.tensor(1e-2),
                     torch.tensor(0.9), torch.tensor(0.99), 0.1, 1e-8, False)  # fmt: skip
    assert torch.allclose(param, reference.detach(), rtol=1e-6, atol=1e-7)


def test_low_precision_optimizers_refuse_master_weights_and_unknown_names():
    groups = [{"params": list(_mindeye().parameters())}]
    with pytest.raises(BrainbenchError, match="bf16-master"):
        build_optimizer(groups, 1e-3, torch.device("cpu"), master_weights=True, optimizer="adamw8bit")
    with pytest.raises(BrainbenchError, match=", ".join(OPTIMIZERS)):
        build_optimizer(groups, 1e-3, torch.device("cpu"), optimizer="adam9bit")


def test_trainer_with_8bit_states_records_it_learns_and_resumes(tmp_path: Path):
    data = make_fit_data()
    settings = TrainSettings(epochs=4, seed=2, optimizer="adamw8bit")
    encoder = TinyEncoder(hidden=256)  # a 20 x 256 first layer: quantised states
    reporter = RecordingReporter()
    fitted = train_torch_encoder(encoder, data, settings, reporter)
    assert fitted.recipe["optimizer_setting"] == "adamw8bit"
    assert "8-bit" in fitted.recipe["optimizer"]
    assert reporter.epochs[-1][1]["train_loss"] < reporter.epochs[0][1]["train_loss"]

    # killed after 2 epochs, resumed from a weights_only checkpoint holding 8-bit states: same weights
    straight = weights_of(
        train_torch_encoder(TinyEncoder(hidden=256), data, replace(settings, checkpoint_dir=tmp_path / "a"),
                            RecordingReporter())
    )  # fmt: skip
    half = replace(settings, checkpoint_dir=tmp_path / "b")
    _interrupt_after(2, half, data, TinyEncoder(hidden=256))
    resumed = weights_of(train_torch_encoder(TinyEncoder(hidden=256), data, half, RecordingReporter()))
    for key, value in straight.items():
        assert torch.equal(resumed[key], value), key
    # another optimizer's states must not be loaded into this one
    with pytest.raises(CheckpointMismatchError, match="optimizer"):
        train_torch_encoder(TinyEncoder(hidden=256), data, replace(half, optimizer="adamw"), RecordingReporter())


class _Stop(Exception):
    pass


def _interrupt_after(epochs: int, settings: TrainSettings, data, encoder: TinyEncoder) -> None:
    reporter = RecordingReporter()
    original = reporter.epoch_end

    def epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        original(epoch, metrics)
        if epoch == epochs:
            raise _Stop

    reporter.epoch_end = epoch_end
    with pytest.raises(_Stop):
        train_torch_encoder(encoder, data, settings, reporter)


def test_the_cli_and_run_config_take_the_optimizer_and_refuse_unknown_ones(capsys):
    from typer.testing import CliRunner

    from brainbench.cli.app import build_app, main
    from brainbench.config import RunConfig

    assert RunConfig(encoder="mindeye", task="retrieval", optimizer="adamw8bit").optimizer == "adamw8bit"
    with pytest.raises(ValueError, match="optimizer=.adam9bit.: must be one of"):
        RunConfig(encoder="mindeye", task="retrieval", optimizer="adam9bit")
    assert main(["run", "mindeye", "--optimizer", "adam9bit"]) == 2  # a user's mistake: status 2, no traceback
    error = capsys.readouterr().err
    assert "adam9bit" in error and "adamw8bit-bf16" in error
    help_text = CliRunner().invoke(build_app(), ["run", "--help"], env={"COLUMNS": "200"}).output
    assert "--optimizer" in help_text and "torchao" in help_text
