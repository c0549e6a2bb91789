"""The contract as a pytest module: ``pytest --pyargs brainbench.testing`` runs it on installed plugins.

Set ``BRAINBENCH_CONTRACT=myplugin`` to test only your plugin (the built-ins take a minute). A kind the
plugins under test do not provide is one skip that says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from brainbench.testing.contract import (
    POOLED_SHAPE,
    TOKEN_SHAPE,
    ContractSkip,
    check_dataset,
    check_declared_options,
    check_encoder,
    check_target,
    check_task,
    contract_names,
)


@pytest.fixture(autouse=True)
def _brainbench_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated data are written once per session, never into the user's own home.
    monkeypatch.setenv("BRAINBENCH_HOME", str(_session_home(tmp_path_factory)))


_HOME: list[Path] = []


def _session_home(factory: pytest.TempPathFactory) -> Path:
    if not _HOME:
        _HOME.append(factory.mktemp("brainbench-contract-home"))
    return _HOME[0]


def _cases(kind: str, *more: Any) -> list[Any]:
    """Every name of ``kind`` under test (times ``more``), or one case skipped with the reason."""
    names = contract_names(kind)
    if not names:
        chosen = os.environ.get("BRAINBENCH_CONTRACT", "").strip() or "the installed plugins"
        return [pytest.param(None, *(m[0] for m in more),
                             marks=pytest.mark.skip(reason=f"{chosen} provide(s) no {kind}: nothing to check"))]
    if not more:
        return names
    return [pytest.param(name, value, id=f"{name}-{label}") for name in names for label, value in more[0]]


def _skipping(check: Any, *args: Any) -> None:
    try:
        check(*args)
    except ContractSkip as reason:
        pytest.skip(str(reason))


SHAPES = [("pooled", POOLED_SHAPE), ("tokens", TOKEN_SHAPE)]


@pytest.mark.parametrize(("name", "shape"), _cases("encoder", SHAPES))
def test_encoder_contract(name: str, shape: tuple[int, ...], tmp_path: Path) -> None:
    check_encoder(name, tmp_path, target_shape=shape)


@pytest.mark.parametrize("name", _cases("task"))
def test_task_contract(name: str, tmp_path: Path) -> None:
    check_task(name, tmp_path)


@pytest.mark.parametrize("name", _cases("dataset"))
def test_dataset_contract(name: str) -> None:
    _skipping(check_dataset, name)


@pytest.mark.parametrize("name", _cases("target"))
def test_target_contract(name: str) -> None:
    _skipping(check_target, name)


KINDS = ("encoder", "task", "dataset", "target")
DECLARED = [(kind, name) for kind in KINDS for name in contract_names(kind)]


@pytest.mark.parametrize(("kind", "name"), DECLARED or [pytest.param(
    None, None, marks=pytest.mark.skip(reason="no plugin under test registers anything"))])
def test_declared_options(kind: str, name: str) -> None:
    check_declared_options(kind, name)
