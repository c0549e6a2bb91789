"""Named experiments inside one matrix spec: a paper's tables as one matrix (``[[experiments]]``).

    name = "litemind-paper"
    [defaults]                      # every experiment
    seed = 0

    [[experiments]]
    name = "depth"                  # required, unique
    title = "Depth ablation"        # shown in reports
    [experiments.defaults]          # over the top-level defaults
    encoder = "litemind"
    task = "retrieval"
    [experiments.axes]              # over the top-level axes
    subject = [1]
    [[experiments.variants]]        # a zipped axis: one cell per variant, each a label and its settings
    label = "2/10/2/4 (reference)"
    [[experiments.variants]]
    label = "1/1/1/1"
    "encoder_options.depths" = "1,1,1,1"
    [[experiments.overrides]]       # then these, then the top-level overrides
    match = { subject = 2 }
    set = { epochs = 1 }
    [[experiments.quick]]           # overrides applied only to cells whose budget is "quick"
    match = { encoder = "mindeye" }
    set = { target = "synthetic-clip" }

Each experiment expands like a spec of its own; the matrix is the union of their cells in order, a cell
shared by several experiments (same key) running once. A cell's details say which experiments hold it and
under which variant label; :func:`cells_by_experiment` gives each experiment its cells for a report.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from brainbench.config import RunConfig
from brainbench.errors import DataError

EXPERIMENT_KEYS = {"name", "title", "note", "defaults", "axes", "variants", "overrides", "quick"}
VARIANT_LABEL = "label"


@dataclass
class Variant:
    label: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Experiment:
    name: str
    title: str
    note: str
    defaults: dict[str, Any]
    axes: dict[str, list[Any]]
    variants: list[Variant]
    overrides: list[Any]
    quick: list[Any]


def parse_experiments(data: dict[str, Any], source: str) -> list[Experiment]:
    """The ``[[experiments]]`` of a parsed TOML spec (empty when it has none)."""
    from brainbench.matrix.spec import _flatten, _override, _table

    items = data.get("experiments", [])
    if not isinstance(items, list):
        raise DataError(f"{source}: experiments must be a list of tables ([[experiments]] ...), got {items!r}")
    experiments: list[Experiment] = []
    for number, item in enumerate(items, start=1):
        where = f"{source} [[experiments]] #{number}"
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected a table")
        unknown = sorted(set(item) - EXPERIMENT_KEYS)
        if unknown:
            raise DataError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                            f"known: {', '.join(sorted(EXPERIMENT_KEYS))}")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise DataError(f"{where}: every experiment needs a name")
        if any(e.name == name for e in experiments):
            raise DataError(f"{where}: experiment name {name!r} used twice")
        where = f"{source} experiment {name!r}"
        axes: dict[str, list[Any]] = {}
        for key, values in _flatten(_table(item, "axes", where), f"{where} axes").items():
            values = values if isinstance(values, list) else [values]
            if not values:
                raise DataError(f"{where} axes: {key!r} has no values")
            axes[key] = values
        variants = []
        for i, variant in enumerate(item.get("variants", []), start=1):
            if not isinstance(variant, dict) or not isinstance(variant.get(VARIANT_LABEL), str):
                raise DataError(f"{where} variants #{i}: expected a table with a 'label' and settings")
            settings = {k: v for k, v in variant.items() if k != VARIANT_LABEL}
            variants.append(Variant(variant[VARIANT_LABEL], _flatten(settings, f"{where} variants #{i}")))
        experiments.append(Experiment(
            name=name,
            title=str(item.get("title") or name),
            note=str(item.get("note") or ""),
            defaults=_flatten(_table(item, "defaults", where), f"{where} defaults"),
            axes=axes,
            variants=variants,
            overrides=[_override(o, f"{where} overrides #{i + 1}") for i, o in enumerate(item.get("overrides", []))],
            quick=[_override(o, f"{where} quick #{i + 1}") for i, o in enumerate(item.get("quick", []))],
        ))
    return experiments


def _experiment_spec(spec: Any, experiment: Experiment, variant: Variant | None) -> Any:
    from brainbench.matrix.spec import MatrixSpec

    defaults = {**spec.defaults, **experiment.defaults, **(variant.settings if variant else {})}
    axes = {**spec.axes, **experiment.axes}
    for path in variant.settings if variant else {}:
        axes.pop(path, None)  # a variant's own setting wins over an axis of the same key
    return MatrixSpec(f"{spec.name}/{experiment.name}", defaults, axes,
                      [*experiment.overrides, *spec.overrides], spec.text, f"{spec.source} ({experiment.name})")


def _apply_quick(cell: Any, experiment: Experiment) -> Any:
    """The experiment's ``quick`` overrides, for a cell whose budget is quick."""
    from brainbench.matrix.spec import Cell, _assign, _matches, _remove, _short

    if cell.config.budget != "quick" or not experiment.quick:
        return cell
    values = cell.config.to_dict()
    details = list(cell.details)
    for number, override in enumerate(experiment.quick, start=1):
        if _matches(values, override.match):
            for path in override.drop:
                _remove(values, path)
            for path, value in override.set.items():
                _assign(values, path, copy.deepcopy(value))
            changes = [_short(p, v) for p, v in override.set.items()]
            changes += [f"-{p.split('.', 1)[-1]}" for p in override.drop]
            details.append(f"quick #{number} ({', '.join(changes)})")
    try:
        return Cell(RunConfig.from_dict(values), details)
    except (TypeError, ValueError) as exc:
        raise DataError(f"experiment {experiment.name!r}: bad quick cell {values}: {exc}") from None


def cells_by_experiment(spec: Any) -> list[tuple[Experiment, list[Any]]]:
    """Each experiment with its cells (details naming the variant), in the spec's order."""
    from brainbench.matrix.spec import Cell, expand

    out = []
    for experiment in spec.experiments:
        cells: dict[str, Any] = {}
        for variant in experiment.variants or [None]:
            for cell in expand(_experiment_spec(spec, experiment, variant)):
                cell = _apply_quick(cell, experiment)
                details = [f"experiment {experiment.name}"] + ([f"variant {variant.label!r}"] if variant else [])
                cells.setdefault(cell.config.key, Cell(cell.config, details + cell.details))
        out.append((experiment, list(cells.values())))
    return out


def variant_of(cell: Any) -> str | None:
    """The variant label a cell of :func:`cells_by_experiment` was made for, if any."""
    for detail in cell.details:
        if detail.startswith("variant "):
            return detail[len("variant "):].strip("'\"")
    return None


def expand_experiments(spec: Any) -> list[Any]:
    """The union of every experiment's cells, in order; a cell shared by experiments runs once."""
    from brainbench.matrix.spec import Cell

    union: dict[str, Any] = {}
    for experiment, cells in cells_by_experiment(spec):
        for cell in cells:
            if cell.config.key in union:
                first = union[cell.config.key]
                union[cell.config.key] = Cell(first.config, [*first.details, f"also experiment {experiment.name}"])
            else:
                union[cell.config.key] = cell
    return list(union.values())
