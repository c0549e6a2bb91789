"""Plugin identity with real installed distributions: a same-named plugin never silently replaces another.

Hostile cases: a PYTHONPATH package whose entry point is named ``ridge`` (the built-in's); a plugin that
registers the taken encoder name ``ridge`` under its own entry-point name; two third-party distributions
providing one entry-point name. Through ``load_plugins`` and through the installed console script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from brainbench.errors import PluginError
from brainbench.plugins import load_plugins
from tests.conftest import REPO, pip_install_target, write_dist

# Registers an encoder "ridge" that would poison every ridge run if it ever replaced the built-in.
IMPOSTOR = '''
from brainbench import hookimpl

@hookimpl
def register_encoders(register):
    register("ridge", lambda **o: (_ for _ in ()).throw(RuntimeError("impostor ridge ran")),
             description="not the real ridge")
'''
TAKER = '''
from brainbench import hookimpl

@hookimpl
def register_encoders(register):
    register("ridge", lambda **o: o, description="takes a built-in name")
    register("taker-own", lambda **o: o, description="a name of its own")
'''
SHARED = '''
from brainbench import hookimpl

@hookimpl
def register_tasks(register):
    register("shared-task-{n}", lambda **o: o)
'''
MODULES = ("bb_impostor", "bb_taker", "bb_one", "bb_two", "bb_pkg_ridge")


@pytest.fixture
def site(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in MODULES:
        sys.modules.pop(name, None)


def console(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("brainbench")  # the installed console script
    return subprocess.run([str(script), *args], capture_output=True, text=True, env={**os.environ, **env},
                          cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def impostor_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real pip-installed distribution ``bb-pkg-ridge`` whose entry point in group brainbench is ``ridge``."""
    root = tmp_path_factory.mktemp("impostor")
    source = root / "src"
    source.mkdir()
    (source / "bb_pkg_ridge.py").write_text(IMPOSTOR)
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "bb-pkg-ridge"\nversion = "6.6.6"\n'
        '[project.entry-points.brainbench]\nridge = "bb_pkg_ridge"\n'
        '[tool.setuptools]\npy-modules = ["bb_pkg_ridge"]\n'
    )
    target = root / "target"
    pip_install_target(source, target)
    return target


# ------------------------------------------------------------------ an entry point named like a built-in


def test_entry_point_named_ridge_does_not_replace_the_builtin(site, capsys):
    write_dist(site, "bb-impostor", "bb_impostor", IMPOSTOR, entry_name="ridge")
    plugins = load_plugins()
    err = capsys.readouterr().err
    ridge = plugins.plugins["ridge"]
    assert ridge.builtin and ridge.distribution == "brainbench"
    assert ridge.path == str(REPO / "plugins" / "brainbench_ridge")
    assert plugins.encoders.entry("ridge").provider == "ridge" and "bb_impostor" not in sys.modules  # never ran
    [refused] = plugins.refused
    assert (refused.distribution, refused.path) == ("bb-impostor", str(site / "bb_impostor.py"))
    # One warning naming both distributions and both paths, and the way out.
    assert err.count("Warning") == 1
    for needle in ("'ridge'", "brainbench 0.1.0", str(REPO / "plugins" / "brainbench_ridge"), "bb-impostor 0.1",
                   str(site / "bb_impostor.py"), "reserved", "BRAINBENCH_PLUGINS=", "pip uninstall bb-impostor"):
        assert needle in err, (needle, err)


def test_entry_point_named_ridge_is_an_error_under_strict(site, monkeypatch):
    write_dist(site, "bb-impostor", "bb_impostor", IMPOSTOR, entry_name="ridge")
    monkeypatch.setenv("BRAINBENCH_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError) as err:
        load_plugins()
    message = str(err.value)
    assert "brainbench 0.1.0" in message and "bb-impostor 0.1" in message and "BRAINBENCH_PLUGINS=" in message


def test_excluding_the_impostor_by_env_is_silent(site, monkeypatch, capsys):
    write_dist(site, "bb-impostor", "bb_impostor", IMPOSTOR, entry_name="ridge")
    monkeypatch.setenv("BRAINBENCH_PLUGINS", "")  # the way out the message gives: built-ins only
    plugins = load_plugins()
    assert capsys.readouterr().err == "" and plugins.refused == []
    assert plugins.plugins["ridge"].distribution == "brainbench"


def test_pip_installed_impostor_on_pythonpath_through_the_console_script(impostor_package, tmp_path):
    env = {"PYTHONPATH": str(impostor_package), "COLUMNS": "250"}
    done = console("plugins", "--json", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    [ridge] = [r for r in rows if r["name"] == "ridge" and r["status"] == "loaded"]
    assert (ridge["distribution"], ridge["builtin"]) == ("brainbench", True)
    assert ridge["path"] == str(REPO / "plugins" / "brainbench_ridge")
    [impostor] = [r for r in rows if r["status"] == "refused"]
    assert (impostor["name"], impostor["distribution"], impostor["version"]) == ("ridge", "bb-pkg-ridge", "6.6.6")
    assert impostor["path"] == str(impostor_package / "bb_pkg_ridge.py")
    assert "bb-pkg-ridge 6.6.6" in done.stderr and "brainbench 0.1.0" in done.stderr
    assert "BRAINBENCH_PLUGINS=" in done.stderr and "Traceback" not in done.stderr

    strict = console("plugins", env={**env, "BRAINBENCH_STRICT_PLUGINS": "1"}, cwd=tmp_path)
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert "bb-pkg-ridge 6.6.6" in strict.stderr and "brainbench 0.1.0" in strict.stderr

    table = console("plugins", env=env, cwd=tmp_path)  # the table shows distribution, version, path, status
    assert table.returncode == 0
    assert "bb-pkg-ridge" in table.stdout and "6.6.6" in table.stdout and "refused" in table.stdout
    assert "brainbench_ridge" in table.stdout


# ------------------------------------------------------- a taken encoder name under another entry point


def test_taken_encoder_name_is_refused_and_the_rest_of_the_plugin_loads(site, capsys):
    write_dist(site, "bb-taker", "bb_taker", TAKER)  # entry point "bb_taker" sorts before every built-in
    plugins = load_plugins()
    err = capsys.readouterr().err
    assert plugins.encoders.entry("ridge").provider == "ridge"  # built-ins register first
    assert plugins.encoders.entry("taker-own").provider == "bb_taker"
    assert plugins.plugins["bb_taker"].provides == {"encoder": ["taker-own"]}
    assert "encoder 'ridge' is registered twice" in plugins.plugins["bb_taker"].error
    for needle in ("brainbench 0.1.0", str(REPO / "plugins" / "brainbench_ridge"), "bb-taker 0.1",
                   str(site / "bb_taker.py"), "reserved", "BRAINBENCH_PLUGINS=", "pip uninstall bb-taker"):
        assert needle in err, (needle, err)


def test_taken_encoder_name_is_an_error_under_strict(site, monkeypatch):
    write_dist(site, "bb-taker", "bb_taker", TAKER)
    monkeypatch.setenv("BRAINBENCH_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"encoder 'ridge' is registered twice.*brainbench 0\.1\.0.*bb-taker 0\.1"):
        load_plugins()


def test_taken_name_does_not_make_every_command_fail(tmp_path):
    site = tmp_path / "site"
    write_dist(site, "bb-taker", "bb_taker", TAKER)
    done = console("list", "encoders", env={"PYTHONPATH": str(site), "COLUMNS": "200"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "taker-own" in done.stdout and "bb-taker" in done.stderr and "BRAINBENCH_PLUGINS=" in done.stderr


# ------------------------------------------------------------- two third-party distributions, one name


def test_two_third_party_distributions_with_one_entry_point_name(site, monkeypatch, capsys):
    write_dist(site, "bb-one", "bb_one", SHARED.format(n=1), entry_name="shared")
    write_dist(site, "bb-two", "bb_two", SHARED.format(n=2), entry_name="shared")
    plugins = load_plugins()
    err = capsys.readouterr().err
    assert "bb-one 0.1" in err and "bb-two 0.1" in err and "entry point 'shared'" in err
    assert "choose one: BRAINBENCH_PLUGINS=bb-" in err and "BRAINBENCH_STRICT_PLUGINS=1" in err
    assert len(plugins.refused) == 1 and plugins.plugins["shared"].distribution != plugins.refused[0].distribution
    monkeypatch.setenv("BRAINBENCH_PLUGINS", "bb-two")  # choose one by its distribution name
    chosen = load_plugins()
    assert chosen.plugins["shared"].distribution == "bb-two" and chosen.refused == []
    assert "shared-task-2" in chosen.tasks and "shared-task-1" not in chosen.tasks


# ------------------------------------------------------------------- the run records the distributions


def test_run_tags_name_the_distribution_of_every_plugin_it_used(impostor_package, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"PYTHONPATH": str(impostor_package), "MLFLOW_TRACKING_URI": uri}
    done = console("run", "ridge", "--task", "retrieval", "--dataset-opt", "scale=tiny", "--device", "cpu",
                   env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "impostor ridge ran" not in done.stdout + done.stderr
    [run] = MlflowClient(tracking_uri=uri).search_runs(
        [MlflowClient(tracking_uri=uri).get_experiment_by_name("brainbench").experiment_id])
    tags = run.data.tags
    assert tags["brainbench.encoder.plugin"] == "ridge"
    assert tags["brainbench.plugin.ridge.distribution"] == "brainbench"
    assert tags["brainbench.plugin.ridge.path"] == str(REPO / "plugins" / "brainbench_ridge")
    assert tags["brainbench.plugin.ridge.version"] == "0.1.0"
    for kind in ("task", "dataset", "target"):
        plugin = tags[f"brainbench.{kind}.plugin"]
        assert tags[f"brainbench.plugin.{plugin}.distribution"] == "brainbench"
        assert tags[f"brainbench.plugin.{plugin}.path"].startswith(str(REPO / "plugins"))
    assert not any("bb-pkg-ridge" in value for value in tags.values())
