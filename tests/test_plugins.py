"""Plugin discovery through real entry points (dist-info folders on sys.path)."""

import sys
import types

import pytest

from brainbench import hookimpl
from brainbench.errors import PluginError
from brainbench.plugins import load_plugins
from tests.conftest import write_dist

GOOD = '''
from brainbench import hookimpl

@hookimpl
def register_encoders(register):
    register("thirdparty-enc", lambda **o: o, description="from a third party")
'''
BROKEN = "raise ImportError('this plugin needs a library that is not installed')\n"
MISSPELLED = '''
from brainbench import hookimpl

@hookimpl
def register_encoder(register):
    register("never", lambda **o: o)
'''


@pytest.fixture
def site(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in ("bb_good", "bb_broken", "bb_typo"):
        sys.modules.pop(name, None)


def test_builtins_are_found_through_entry_points():
    plugins = load_plugins()
    assert {"ridge", "litemind", "mindeye", "nsd", "clip"} <= set(plugins.plugins)
    assert all(plugins.plugins[n].builtin for n in ("ridge", "nsd"))
    assert "ridge" in plugins.encoders and plugins.encoders.entry("ridge").provider == "ridge"
    assert "retrieval" in plugins.tasks and "synthetic-nsd" in plugins.datasets


def test_third_party_plugin_is_loaded(site):
    write_dist(site, "bb-good", "bb_good", GOOD)
    plugins = load_plugins()
    assert plugins.plugins["bb_good"].builtin is False
    assert plugins.encoders.entry("thirdparty-enc").provider == "bb_good"
    assert plugins.plugins["bb_good"].provides == {"encoder": ["thirdparty-enc"]}


def test_broken_plugin_warns_and_is_skipped(site, capsys):
    write_dist(site, "bb-broken", "bb_broken", BROKEN)
    write_dist(site, "bb-good", "bb_good", GOOD)
    plugins = load_plugins()
    err = capsys.readouterr().err
    assert "bb_broken" in err and "needs a library" in err and err.count("Warning") == 1
    assert "bb_broken" not in plugins.plugins
    assert "thirdparty-enc" in plugins.encoders  # the others still load
    assert "ridge" in plugins.encoders


def test_strict_mode_makes_a_broken_plugin_an_error(site, monkeypatch):
    write_dist(site, "bb-broken", "bb_broken", BROKEN)
    monkeypatch.setenv("BRAINBENCH_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="bb_broken"):
        load_plugins()


def test_plugin_selection_by_env(site, monkeypatch):
    write_dist(site, "bb-good", "bb_good", GOOD)
    monkeypatch.setenv("BRAINBENCH_PLUGINS", "")
    plugins = load_plugins()
    assert "bb_good" not in plugins.plugins and "ridge" in plugins.plugins  # built-ins always
    monkeypatch.setenv("BRAINBENCH_PLUGINS", "bb-good")  # distribution name works too
    assert "bb_good" in load_plugins().plugins


def test_misspelled_hook_warns_and_skips_the_plugin(site, monkeypatch, capsys):
    write_dist(site, "bb-typo", "bb_typo", MISSPELLED)
    write_dist(site, "bb-good", "bb_good", GOOD)
    plugins = load_plugins()
    err = capsys.readouterr().err
    assert "register_encoder" in err and "did you mean 'register_encoders'" in err and "bb-typo 0.1" in err
    assert "bb_typo" not in plugins.plugins and [p.name for p in plugins.skipped] == ["bb_typo"]
    assert "thirdparty-enc" in plugins.encoders and "ridge" in plugins.encoders  # every other plugin loads
    monkeypatch.setenv("BRAINBENCH_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="register_encoder.*did you mean 'register_encoders'"):
        load_plugins()


def test_duplicate_name_across_plugins_names_both(capsys, monkeypatch):
    module = types.ModuleType("dup_plugin")

    @hookimpl
    def register_encoders(register):
        register("ridge", lambda **o: o)
        register("dup-own", lambda **o: o)

    module.register_encoders = register_encoders
    plugins = load_plugins(extra_modules=[("dup", module)])  # refused loudly, the rest keeps working
    err = capsys.readouterr().err
    assert "encoder 'ridge' is registered twice" in err and "plugin 'ridge'" in err and "plugin 'dup'" in err
    assert plugins.encoders.entry("ridge").provider == "ridge" and "dup-own" in plugins.encoders
    monkeypatch.setenv("BRAINBENCH_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="'ridge'.*'dup'"):
        load_plugins(extra_modules=[("dup", module)])


def test_one_plugin_registering_a_name_twice_is_refused_the_second_time(capsys):
    module = types.ModuleType("twice_plugin")

    @hookimpl
    def register_tasks(register):
        register("twice-task", lambda **o: "first")
        register("twice-task", lambda **o: "second")

    module.register_tasks = register_tasks
    plugins = load_plugins(extra_modules=[("twice", module)])
    assert plugins.tasks.create("twice-task") == "first"
    assert "task 'twice-task' is registered twice" in capsys.readouterr().err


def test_plugin_hook_that_raises_is_skipped_with_warning(capsys):
    module = types.ModuleType("raising_plugin")

    @hookimpl
    def register_tasks(register):
        raise RuntimeError("boom")

    module.register_tasks = register_tasks
    plugins = load_plugins(extra_modules=[("raising", module)])
    assert "raising" in capsys.readouterr().err
    assert plugins.plugins["raising"].error == "failed while running its register_tasks hook: RuntimeError: boom"
