"""Declared plugin options: coercion, ranges, closest names, and checks that run before any MLflow run."""

import json
import sqlite3

import pytest

from brainbench.options import Option, OptionError, Options
from brainbench.plugins import get_plugins

OPTIONS = Options(
    Option("alpha", float, 1.0, "penalty", minimum=0),
    Option("k", int, 16, minimum=1),
    Option("pooling", str, "cls", choices=("cls", "mean")),
    Option("widths", list, None, item=int, minimum=1, nullable=True),
    Option("learn", bool, False),
    Option("draws", int, 30, minimum=1, also=("shared",)),
)


def test_cli_text_is_coerced_to_the_declared_type():
    got = OPTIONS.validate(
        {"alpha": "3", "k": 5.0, "pooling": "mean", "widths": "128,64", "learn": "yes", "draws": "shared"}, "p"
    )
    assert got == {"alpha": 3.0, "k": 5, "pooling": "mean", "widths": [128, 64], "learn": True, "draws": "shared"}
    assert type(got["alpha"]) is float and OPTIONS.validate({"widths": "none"}, "p") == {"widths": None}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"alpah": 3}, "did you mean 'alpha'"),
        ({"k": 0}, "k must be >= 1"),
        ({"k": 2.5}, "expected an integer"),
        ({"alpha": "nan"}, "finite"),
        ({"alpha": float("inf")}, "finite"),
        ({"alpha": -1}, "must be >= 0"),
        ({"pooling": "max"}, "not one of cls, mean"),
        ({"widths": "128,0"}, "must be >= 1"),
        ({"learn": "maybe"}, "true or false"),
    ],
)
def test_bad_values_name_the_option_the_value_and_what_is_accepted(values, expected):
    with pytest.raises(OptionError) as err:
        OPTIONS.validate(values, "encoder 'x'", "--opt ")
    message = str(err.value)
    name, value = next(iter(values.items()))
    assert expected in message and f"--opt {name}=" in message, message


def test_every_problem_is_reported_at_once():
    with pytest.raises(OptionError) as err:
        OPTIONS.validate({"alpah": 1, "k": 0}, "p")
    assert len(str(err.value).splitlines()) == 2


def test_from_defaults_keeps_names_and_defaults_of_the_plugin_dict():
    declared = Options.from_defaults({"a": 1, "b": None, "c": "x"}, Option("a", int, 99, minimum=0), Option("gone"))
    assert declared.names() == ["a", "b", "c"] and declared.defaults() == {"a": 1, "b": None, "c": "x"}
    assert declared.validate({"b": "none"}, "p") == {"b": None}


def test_every_builtin_plugin_declares_its_options():
    plugins = get_plugins()
    for kind in ("encoder", "task", "dataset", "target"):
        for entry in plugins.registry(kind):
            if entry.provider in {"nsd", "god", "ridge", "litemind", "mindeye", "laion", "clip"}:
                assert entry.declared_options() is not None, f"{kind} {entry.name} declares no options"


@pytest.mark.parametrize("name", ["litemind", "mindeye", "ridge"])
def test_encoders_run_with_exactly_their_declared_defaults(name):
    """Declared once: built with no options, an encoder's options in force are its declaration's defaults."""
    entry = get_plugins().encoders.entry(name)
    declared = entry.declared_options()
    built = entry.create({})
    assert built.options.as_dict() == {k: tuple(v) if isinstance(v, list) else v
                                       for k, v in declared.defaults().items()}


def test_declared_defaults_build_each_plugin():
    """A declaration's defaults must be values its plugin accepts (else the declaration lies)."""
    plugins = get_plugins()
    for kind in ("encoder", "task"):
        for entry in plugins.registry(kind):
            declared = entry.declared_options()
            if declared is not None:
                given = {k: v for k, v in declared.defaults().items() if v is not None}
                entry.factory(**entry.check_options(given))


@pytest.fixture
def cli(capsys, monkeypatch):
    """The CLI in this process (none of these tests is about the process): status, stdout, stderr."""
    from types import SimpleNamespace

    from brainbench.cli.app import main

    def call(*args, env=None, cwd=None):
        with monkeypatch.context() as patch:
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            if cwd is not None:
                patch.chdir(cwd)
            capsys.readouterr()
            code = main(list(args))
            out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return call


def _runs(db):
    if not db.exists():
        return 0
    with sqlite3.connect(db) as connection:
        tables = {row[0] for row in connection.execute("select name from sqlite_master where type='table'")}
        return connection.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0


@pytest.mark.parametrize(
    "args",
    [
        ("run", "ridge", "--opt", "alpah=3"),
        ("run", "ridge", "--task", "laion", "--task-opt", "galery_seed=3"),
        ("run", "ridge", "--task", "laion", "--task-opt", "index=/x", "--task-opt", "remote=http://127.0.0.1:9"),
        ("run", "ridge", "mindeye", "--seed", "0", "--seed", "1", "--opt", "hiden=3"),
        ("run", "ridge", "mindeye", "--subject", "1", "--subject", "9"),
    ],
)
def test_bad_options_stop_before_any_mlflow_run(tmp_path, args, cli):
    db = tmp_path / "m.db"
    result = cli(*args, "--tracking-uri", f"sqlite:///{db}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and _runs(db) == 0


def test_opt_reaches_only_the_encoders_that_declare_it(tmp_path, cli):
    result = cli("run", "ridge", "mindeye", "--opt", "hidden=256", "--dry-run", "--dataset-opt", "scale=tiny",
                 env={"COLUMNS": "300"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = {line.split("│")[2].strip(): line for line in result.stdout.splitlines() if line.count("│") > 5}
    assert "hidden=256" in lines["mindeye"] and "hidden" not in lines["ridge"]


def test_spec_option_no_cell_plugin_declares_fails_in_dry_run(tmp_path, cli):
    spec = tmp_path / "spec.toml"
    spec.write_text('name = "x"\n[axes]\nencoder = ["ridge", "mindeye"]\n"encoder_options.dropout" = [0.1]\n'
                    '[defaults]\ntask = "retrieval"\n"dataset_options.scale" = "tiny"\n')
    result = cli("matrix", "run", str(spec), "--dry-run", cwd=tmp_path)
    assert result.returncode == 2
    assert "encoder_options.dropout=0.1: unknown mindeye option 'dropout'" in result.stderr, result.stderr


def test_info_lists_declared_options_of_any_plugin(cli):
    result = cli("info", "laion", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["declared_options"]}
    assert rows["pooling"]["accepted"] == "one of cls, mean" and rows["k"]["default"] == "16"


def test_base_classes_validate_against_their_declaration():
    from brainbench.interfaces import Task
    from brainbench_ridge.encoder import RidgeEncoder

    assert RidgeEncoder(alpha="3").options.alpha == 3.0  # built directly: parsed by the same declaration
    with pytest.raises(OptionError, match="option alpah=3: unknown ridge option 'alpah'; did you mean 'alpha'"):
        RidgeEncoder(alpah=3)
    assert get_plugins().encoders.entry("ridge").check_options({"alpha": "3"}, "--opt ") == {"alpha": 3.0}

    class Undeclared(Task):
        def evaluate(self, ctx):
            return []

    assert Undeclared(anything=1).options == {"anything": 1}  # undeclared: passed through


def test_plugins_read_typed_attributes():
    """Validated once, then typed: a list option arrives as a tuple of its item type, a number as its type."""
    plugins = get_plugins()
    litemind = plugins.encoders.create("litemind", widths="16,8,4", dropout="0.2")
    assert litemind.options.widths == (16, 8, 4) and litemind.options.dropout == 0.2
    assert plugins.tasks.create("retrieval", draws="per-query").scheme == "per-query"
    with pytest.raises(AttributeError):  # frozen: a plugin cannot change what was validated
        litemind.options.dropout = 0.9
