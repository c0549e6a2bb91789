"""Every third-party module brainbench/ and plugins/ import is a declared dependency (or extra) of the package
whose pyproject.toml holds it: a dependency that arrives only through another package (scipy through mlflow,
say) disappears the day that package drops it."""

from __future__ import annotations

import ast
import os
import re
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKED = ("brainbench", "plugins")
#: Distributions the README installs with ``pip install --no-deps`` and so no extra can name (pip would resolve
#: their pins); counted as optional: a module-level import of them is still reported.
INSTALLED_WITHOUT_DEPS = {"dalle2-pytorch"}  # its pins would downgrade open_clip and pandas (docs/laion.md)


@dataclass(frozen=True)
class Undeclared:
    module: Path
    line: int
    name: str  # the top-level import name
    distributions: tuple[str, ...]  # what provides it here; empty: not installed
    why: str = "not declared in its pyproject.toml"

    def __str__(self) -> str:
        provided = f"distribution {' or '.join(self.distributions)}" if self.distributions else "not installed"
        return f"{self.module}:{self.line}: imports {self.name!r} ({provided}), {self.why}"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalize(re.split(r"[\s\[<>=!~;@(]", requirement.strip(), maxsplit=1)[0])


def declared(pyproject: Path) -> tuple[set[str], set[str]]:
    """Distributions a pyproject.toml declares: (its dependencies, those of its extras)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    core = {requirement_name(r) for r in project.get("dependencies", [])}
    extras = {requirement_name(r) for extra in project.get("optional-dependencies", {}).values() for r in extra}
    return core, extras


def imports(source: str) -> list[tuple[int, str, bool]]:
    """(line, top-level name, at module level) of every absolute import, at any depth (function-level ones
    too); imports under a top-level ``if``/``try`` count as module level (they run on import)."""
    tree = ast.parse(source)
    nested = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            nested |= {id(inner) for inner in ast.walk(node) if inner is not node}
    found = []
    for node in ast.walk(tree):
        top = id(node) not in nested
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0], top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0], top))
    return found


@cache
def own_packages(root: Path) -> frozenset[str]:
    """Import names a project tree provides itself: its packages (folders with __init__.py) and modules.
    Hidden folders (.venv, .git) and build output are not the project's: walking a virtual environment is
    most of the time this check would take, and its modules are third-party."""
    names = set()
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in ("build", "dist")]
        if "__init__.py" in files:
            names.add(Path(folder).name)
        names.update(f[:-3] for f in files if f.endswith(".py"))
    return frozenset(names)


def nearest_pyproject(path: Path, top: Path) -> Path:
    for folder in path.parents:
        if (folder / "pyproject.toml").is_file():
            return folder / "pyproject.toml"
        if folder == top:
            break
    raise AssertionError(f"{path}: no pyproject.toml above it")


def undeclared_imports(top: Path, folders: tuple[str, ...] = CHECKED) -> list[Undeclared]:
    """Third-party imports under ``top/folders`` that the nearest pyproject.toml does not declare."""
    providers = packages_distributions()
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    problems = []
    for folder in folders:
        for module in sorted((top / folder).rglob("*.py")):
            if any(part.startswith(".") for part in module.relative_to(top).parts):
                continue
            pyproject = nearest_pyproject(module, top)
            core, extras = declared(pyproject)
            extras = extras | INSTALLED_WITHOUT_DEPS
            first_party = own_packages(pyproject.parent) | {normalize(pyproject.parent.name)}
            relative = module.relative_to(top)
            for line, name, module_level in imports(module.read_text()):
                if name in stdlib or name in first_party:
                    continue
                distributions = tuple(sorted({normalize(d) for d in providers.get(name, [])}))
                found = set(distributions)
                if not found & (core | extras):
                    problems.append(Undeclared(relative, line, name, distributions))
                elif module_level and not found & core and not module.name.startswith("test_"):  # pytest's files
                    problems.append(Undeclared(
                        relative, line, name, distributions,
                        "declared only in an extra but imported at module level: import it in the function that "
                        "needs it (with a message naming the extra), or make it a dependency",
                    ))
    return problems


def test_every_third_party_import_is_declared() -> None:
    problems = undeclared_imports(REPO)
    assert not problems, "\n".join(map(str, problems))


def test_the_checker_reports_an_undeclared_import(tmp_path: Path) -> None:
    """A module importing a package its pyproject does not declare (here yaml, installed through mlflow) is
    reported with its file, line and distribution; declaring the package clears it."""
    assert "yaml" in packages_distributions()  # installed here, as a transitive dependency
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "demo"\ndependencies = ["numpy>=1.26"]\n')
    package = tmp_path / "brainbench"
    package.mkdir()
    (package / "__init__.py").write_text("import numpy\nfrom brainbench import helper\n")
    (package / "helper.py").write_text("import os\n\n\ndef load():\n    import yaml.constructor\n    return yaml\n")
    problems = undeclared_imports(tmp_path, ("brainbench",))
    assert [(str(p.module), p.line, p.name, p.distributions) for p in problems] == [
        (str(Path("brainbench/helper.py")), 5, "yaml", ("pyyaml",))
    ]
    assert "not declared" in str(problems[0])
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "demo"\ndependencies = ["numpy>=1.26"]\n[project.optional-dependencies]\n'
        'config = ["PyYAML>=6"]\n'
    )
    assert undeclared_imports(tmp_path, ("brainbench",)) == []
    # an extra's package at module level would break every command of an install without that extra
    (package / "helper.py").write_text("import yaml\n")
    [problem] = undeclared_imports(tmp_path, ("brainbench",))
    assert (problem.line, problem.name) == (1, "yaml") and "only in an extra" in problem.why


def test_a_package_that_is_not_installed_is_reported_too(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "demo"\ndependencies = []\n')
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "mod.py").write_text("import surely_not_a_real_package_xyz\n")
    problems = undeclared_imports(tmp_path, ("plugins",))
    assert [(p.name, p.distributions) for p in problems] == [("surely_not_a_real_package_xyz", ())]


def test_a_virtual_environment_inside_the_project_is_not_first_party(tmp_path: Path) -> None:
    """CI's .venv lives in the clone: a package installed there (yaml) is third-party, not the project's own."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "demo"\ndependencies = []\n')
    installed = tmp_path / ".venv" / "lib" / "python3.11" / "site-packages" / "yaml"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "mod.py").write_text("import yaml\n")
    own_packages.cache_clear()
    assert [p.name for p in undeclared_imports(tmp_path, ("plugins",))] == ["yaml"]
