"""brainbench-knn's own tests: the contract brainbench ships, run on this package's plugins only.

    pip install -e . && python -m pytest -q tests
    BRAINBENCH_CONTRACT=knn python -m pytest -q --pyargs brainbench.testing   # the same, as brainbench ships it
"""

import pytest

from brainbench.testing import ContractError, check_declared_options, check_encoder, check_task


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINBENCH_HOME", str(tmp_path / "home"))  # simulated data, never the user's home


@pytest.mark.parametrize("shape", [(768,), (5, 16)], ids=["pooled", "tokens"])
@pytest.mark.parametrize("k", [1, 5])
def test_knn_encoder_contract(tmp_path, k, shape):
    """Fit, predict, save, load back and predict the same: pooled and token-shaped targets."""
    check_encoder("knn", tmp_path, options={"k": k}, target_shape=shape)


def test_the_contract_catches_a_load_that_loses_the_model(tmp_path, monkeypatch):
    """The round trip can fail: a load that forgets the saved bank is caught."""
    import numpy as np

    from brainbench_knn.encoder import FittedKnn

    real_load = FittedKnn.load.__func__

    def forgetful(cls, path, **kwargs):
        fitted = real_load(cls, path, **kwargs)
        fitted.targets = np.zeros_like(fitted.targets)
        return fitted

    monkeypatch.setattr(FittedKnn, "load", classmethod(forgetful))
    with pytest.raises(ContractError, match="predicts differently"):
        check_encoder("knn", tmp_path, options={"k": 3})


def test_mean_cosine_task_contract(tmp_path):
    check_task("mean-cosine", tmp_path)


def test_declared_options():
    check_declared_options("encoder", "knn")
    check_declared_options("task", "mean-cosine")
