"""The contract as a pytest module: ``pytest --pyargs brainbench.testing`` runs it on installed plugins.

Set ``BRAINBENCH_CONTRACT=myplugin`` to test only your plugin (the built-ins take a minute).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from brainbench.testing.contract import check_declared_options, check_encoder, check_task, contract_names


@pytest.fixture(autouse=True)
def _brainbench_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated data are written once per session, never into the user's own home.
    monkeypatch.setenv("BRAINBENCH_HOME", str(_session_home(tmp_path_factory)))


_HOME: list[Path] = []


def _session_home(factory: pytest.TempPathFactory) -> Path:
    if not _HOME:
        _HOME.append(factory.mktemp("brainbench-contract-home"))
    return _HOME[0]


@pytest.mark.parametrize("name", contract_names("encoder"))
def test_encoder_contract(name: str, tmp_path: Path) -> None:
    check_encoder(name, tmp_path)


@pytest.mark.parametrize("name", contract_names("task"))
def test_task_contract(name: str, tmp_path: Path) -> None:
    check_task(name, tmp_path)


KINDS = ("encoder", "task", "dataset", "target")


@pytest.mark.parametrize(("kind", "name"), [(kind, name) for kind in KINDS for name in contract_names(kind)])
def test_declared_options(kind: str, name: str) -> None:
    check_declared_options(kind, name)
