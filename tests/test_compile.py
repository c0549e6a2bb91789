"""torch.compile in training: when it is on, that it compiles what it says, and that it trains the same weights.

These compile with inductor on the CPU (a C++ compiler, tens of seconds), so the models are tiny.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from brainbench.config import RunConfig
from brainbench.errors import BrainbenchError
from brainbench.interfaces import TrainSettings
from brainbench.training import should_compile, train_torch_encoder
from brainbench_litemind.encoder import LiteMindEncoder
from brainbench_litemind.model import Block
from tests.test_training import RecordingReporter, TinyEncoder, make_fit_data, weights_of

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    yield
    torch._dynamo.reset()  # compiled graphs and caches do not leak into other tests


def _is_compiled(module: torch.nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def test_auto_compiles_only_a_fast_path_on_a_gpu():
    fast, faithful = LiteMindEncoder(impl="fast"), LiteMindEncoder(impl="faithful")
    assert should_compile("auto", CUDA, fast)
    assert not should_compile("auto", CUDA, faithful)
    assert not should_compile("auto", CPU, fast)  # CPU compiles take minutes for a big model
    assert should_compile("on", CPU, faithful) and not should_compile("off", CUDA, fast)
    with pytest.raises(BrainbenchError, match="compile must be one of auto, on, off"):
        should_compile("yes", CPU, fast)
    with pytest.raises(ValueError, match="compile='always': must be one of auto, on, off"):
        RunConfig(encoder="litemind", task="retrieval", compile="always")


def test_litemind_compiles_each_block_in_place_and_keeps_its_state_dict_keys():
    encoder = LiteMindEncoder(impl="fast", patch_size=10, widths="8,6,4", depths="1,2,1,1")
    model = encoder.build(123, (5, 12))
    keys = list(model.state_dict())
    encoder.compile_model(model, scope="blocks")  # the fast path's default scope is now "step" (the whole step)
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    assert len(blocks) == 5 and all(_is_compiled(b) for b in blocks)
    assert not _is_compiled(model)  # regional: the stem, transitions and head stay eager
    assert list(model.state_dict()) == keys


def test_compiled_training_learns_the_same_weights():
    data = make_fit_data(n_train=48, n_val=16)
    settings = TrainSettings(epochs=2, seed=5, compile="off")
    eager = train_torch_encoder(TinyEncoder(), data, settings, RecordingReporter())
    reporter = RecordingReporter()
    # inductor draws dropout masks with its own RNG unless told to use torch's, as eager does
    with torch._inductor.config.patch(fallback_random=True):
        compiled = train_torch_encoder(TinyEncoder(), data, replace(settings, compile="on"), reporter)
    assert _is_compiled(compiled.model) and not _is_compiled(eager.model)
    assert any("torch.compile" in message for message in reporter.messages)
    for name, value in weights_of(eager).items():
        assert torch.allclose(weights_of(compiled)[name], value, rtol=1e-4, atol=1e-5), name
    assert compiled.predict(data.val_voxels).shape == (16, 3, 4)


def test_litemind_blocks_of_one_width_share_compiled_graphs():
    """Drop-path rates differ in every block; were they Python floats, dynamo would compile each of the 18
    blocks separately and, past its recompile limit, run the rest eagerly."""
    from torch._dynamo.testing import CompileCounter

    encoder = LiteMindEncoder(impl="fast", patch_size=10, widths="16,12,8", depths="2,10,2,4")
    model = encoder.build(343, (6, 12)).train()
    counter = CompileCounter()
    for module in model.modules():
        if isinstance(module, Block):
            module.compile(backend=counter)
    for _ in range(3):
        model(torch.randn(8, 343)).sum().backward()
    # 4 stage widths, the first block (drop-path rate 0) and at most one re-trace once gradients exist
    assert counter.frame_count <= 6
