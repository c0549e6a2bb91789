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
