"""brainbench-knn's own tests: the contract brainbench ships, run on this package's plugins only.

    pip install -e . && python -m pytest -q tests
    BRAINBENCH_CONTRACT=knn python -m pytest -q --pyargs brainbench.testing   # the same, as brainbench ships it
"""

import pytest

from brainbench.testing import check_declared_options, check_encoder, check_task


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINBENCH_HOME", str(tmp_path / "home"))  # simulated data, never the user's home


@pytest.mark.parametrize("k", [1, 5])
def test_knn_encoder_contract(tmp_path, k):
    check_encoder("knn", tmp_path, options={"k": k})


def test_mean_cosine_task_contract(tmp_path):
    check_task("mean-cosine", tmp_path)


def test_declared_options():
    check_declared_options("encoder", "knn")
    check_declared_options("task", "mean-cosine")
