"""The simulated data do not favour a linear decoder by construction: on noise-free responses a nonlinear
read-out (an MLP) explains clearly more of the CLIP-like target than the best ridge read-out."""

from __future__ import annotations

import pytest

from brainbench.simulate.nsd import SyntheticNsd
from brainbench.simulate.stats import oracle_ceilings


@pytest.fixture(autouse=True)
def _threads():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_linear_ceiling_is_below_the_nonlinear_one(tmp_path):
    sim = SyntheticNsd(tmp_path, "tiny", seed=0)  # nothing is written: the oracle draws fresh stimuli
    result = oracle_ceilings(sim, 1, n_train=4000, n_test=1000, epochs=25, hidden=256)
    assert 0.1 < result.linear_r2 < 0.8, result
    assert result.nonlinear_r2 > result.linear_r2 + 0.05, result
    assert result.nonlinear_cosine > result.linear_cosine, result
    assert not list(tmp_path.iterdir())
