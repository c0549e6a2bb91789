"""brainbench/records/ is the one home of what touches MLflow: the architecture notes say which modules import
mlflow and that records never reaches up into the CLI, the runner or the matrix engine; these tests read the
source to hold that true, and check that the old module paths still hand out the very same objects."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "brainbench" / "records"
#: Where mlflow may be imported: the records package, and the server app MLflow loads for `brainbench ui`.
MLFLOW_ALLOWED = (RECORDS, ROOT / "brainbench" / "mlflow_app.py")
#: What records never imports: the layers above it, and the old paths that re-export it.
ABOVE_RECORDS = ("brainbench.cli", "brainbench.runner", "brainbench.matrix", "brainbench.launch",
                 "brainbench.workdirs", "brainbench.tracking", "brainbench.tracking_query", "brainbench.journal",
                 "brainbench.journal_replay", "brainbench.mlflow_model")
OLD_PATHS = ("brainbench.tracking", "brainbench.tracking_query", "brainbench.journal", "brainbench.journal_replay",
             "brainbench.mlflow_model")


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names, at any depth (lazy imports too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_mlflow_is_imported_only_in_records_and_the_ui_server_app():
    importers = [
        path.relative_to(ROOT).as_posix()
        for folder in (ROOT / "brainbench", ROOT / "plugins")
        for path in sorted(folder.rglob("*.py"))
        if any(name == "mlflow" or name.startswith("mlflow.") for name in imported_modules(path))
        and not any(path == allowed or allowed in path.parents for allowed in MLFLOW_ALLOWED)
    ]
    assert importers == [], f"mlflow imported outside brainbench/records/ and mlflow_app.py: {importers}"


def test_records_never_imports_the_layers_above_it():
    reaching_up = {
        path.name: sorted(name for name in imported_modules(path) if name.startswith(ABOVE_RECORDS))
        for path in sorted(RECORDS.glob("*.py"))
    }
    assert {name: found for name, found in reaching_up.items() if found} == {}


@pytest.mark.parametrize("old_path", OLD_PATHS)
def test_an_old_module_path_hands_out_the_records_objects_themselves(old_path):
    """A plugin written against brainbench <= 0.1 gets the same classes and functions, not copies."""
    old = importlib.import_module(old_path)
    assert old.__all__
    for name in old.__all__:
        value = getattr(old, name)
        home = getattr(value, "__module__", None)
        if home is not None and not isinstance(value, (str, tuple, dict, float, int)):
            assert home.startswith("brainbench.records."), (old_path, name, home)
            assert getattr(importlib.import_module(home), name.split(".")[-1], value) is value


def test_a_logged_models_code_still_finds_what_it_imports_at_the_old_path():
    """Models logged before the move carry a copy of mlflow_pyfunc.py that imports brainbench.mlflow_model."""
    from brainbench.mlflow_model import CHECKPOINT_ARTIFACT, SPEC_ARTIFACT, load_fitted
    from brainbench.records import model

    assert (CHECKPOINT_ARTIFACT, SPEC_ARTIFACT, load_fitted) == (model.CHECKPOINT_ARTIFACT, model.SPEC_ARTIFACT,
                                                                   model.load_fitted)


def test_the_journal_keeps_every_call_a_record_takes():
    """A Record method the journal does not know would be sent while the store answers and lost while it does
    not; replay checks each call against RunRecord's own signature."""
    import inspect

    from brainbench.records.journal import CALLS
    from brainbench.records.record import Record, RunRecord

    methods = {name for name, _ in inspect.getmembers(Record, inspect.isfunction) if not name.startswith("_")}
    assert set(CALLS) == methods
    assert all(callable(getattr(RunRecord, name)) for name in CALLS)
