import pytest

from brainbench.errors import DuplicateNameError, UnknownNameError
from brainbench.registry import Registry


def test_create_builds_on_demand_with_options():
    built = []
    reg: Registry[dict] = Registry("encoder")
    reg.register("alpha", lambda **o: built.append(o) or o, provider="p1", description="first")
    assert built == []  # registering builds nothing
    assert reg.create("alpha", k=3) == {"k": 3}
    assert reg.entry("alpha").provider == "p1"
    assert reg.names() == ["alpha"]


def test_duplicate_names_both_providers():
    reg: Registry[object] = Registry("task")
    reg.register("retrieval", object, provider="nsd")
    with pytest.raises(DuplicateNameError) as err:
        reg.register("retrieval", object, provider="thirdparty")
    assert "'nsd'" in str(err.value) and "'thirdparty'" in str(err.value)


def test_unknown_name_suggests_closest():
    reg: Registry[object] = Registry("encoder")
    for name in ("litemind", "mindeye", "ridge"):
        reg.register(name, object, provider="x")
    with pytest.raises(UnknownNameError) as err:
        reg.create("litemnd")
    assert "did you mean 'litemind'" in str(err.value)
    with pytest.raises(UnknownNameError) as err:
        reg.create("zzzzzz")
    assert "known: litemind, mindeye, ridge" in str(err.value)


def test_rejects_bad_registrations():
    reg: Registry[object] = Registry("dataset")
    with pytest.raises(ValueError):
        reg.register("", object, provider="x")
    with pytest.raises(TypeError):
        reg.register("a", "not callable", provider="x")  # type: ignore[arg-type]


def test_a_registration_names_its_class_and_imports_it_only_when_used():
    import sys

    from brainbench.errors import PluginError

    sys.modules.pop("brainbench_knn_absent", None)
    reg: Registry[object] = Registry("encoder")
    reg.register("late", "brainbench_knn_absent.encoder:Knn", provider="x")
    assert "brainbench_knn_absent" not in sys.modules and reg.names() == ["late"]  # listing imports nothing
    with pytest.raises(PluginError, match="'brainbench_knn_absent.encoder:Knn', which cannot be loaded"):
        reg.create("late")
    reg.register("ridge", "brainbench_ridge.encoder:RidgeEncoder", provider="ridge")
    built = reg.create("ridge", alpha="2")
    assert type(built).__name__ == "RidgeEncoder" and built.options.alpha == 2.0
    with pytest.raises(TypeError):
        reg.register("odd", "brainbench_ridge.encoder", provider="x")  # no ":Name"
