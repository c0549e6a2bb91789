"""What ``brainbench reproduce PAPER`` runs: the paper's spec, fitted to the data and budget asked for.

- ``--budget quick|reference`` becomes every cell's ``budget``; on the simulator quick runs at its demo scale
  (``small``), reference at real NSD sizes (``nsd``), unless ``--scale`` says otherwise.
- ``--data-path DIR`` (NSD) and ``--god-path DIR`` (GOD) swap the simulator's datasets and targets for the
  real ones (:data:`REAL_NAMES`) and drop the simulator-only dataset options; given one but not the other,
  the other's cells are skipped (a report never mixes simulated and real tables silently).
- ``--only`` keeps some experiments, ``--subject`` some subjects; ``--opt KEY=VALUE`` sets an encoder option
  on the cells whose encoder declares it.
- A cell needing an option this build does not declare (a plugin not installed or not merged yet, e.g.
  the LAION task's ``prior``) is skipped with the reason, so the rest still runs and the report says so.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from brainbench.config import RunConfig
from brainbench.errors import DataError
from brainbench.matrix.experiments import Experiment, cells_by_experiment
from brainbench.matrix.spec import Cell, MatrixSpec

#: The simulator's names -> the real datasets and targets they stand for (``--data-path``).
REAL_NAMES = {
    "synthetic-nsd": "nsd",
    "synthetic-god": "god",
    "synthetic-clip": "clip-vit-l-14",
    "synthetic-clip-tokens": "clip-vit-l-14-tokens",
}
#: Dataset options only the simulator has (dropped on real data).
SIMULATOR_OPTIONS = ("scale", "seed", "tokens", "images")
#: The simulator scale each budget runs at, by default.
BUDGET_SCALES = {"quick": "small", "reference": "nsd"}
SYNTHETIC_DATASETS = ("synthetic-nsd", "synthetic-god")
#: Report sections that are not experiments of their own: ``--only tsne`` keeps the runs the t-SNE figure is
#: drawn from (the retrieval table's Lite-Mind cells); ``parameters`` is counted without any run.
EXTRA_SECTIONS = ("tsne", "parameters")


@dataclass
class PlanOptions:
    budget: str = "quick"
    data_path: str | None = None  # real NSD
    god_path: str | None = None  # real GOD
    scale: str | None = None  # simulator scale; None: the budget's
    only: list[str] = field(default_factory=list)  # experiment names
    subjects: list[int] = field(default_factory=list)
    encoder_options: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    epochs: int | None = None  # every trained cell's (a smoke run)


@dataclass
class PlannedExperiment:
    experiment: Experiment
    cells: list[Cell]
    skipped: list[tuple[Cell, str]] = field(default_factory=list)  # (cell, why)


@dataclass
class Plan:
    spec: MatrixSpec
    experiments: list[PlannedExperiment]
    options: PlanOptions

    @property
    def cells(self) -> list[Cell]:
        """Every cell to run, once, in the order of the experiments."""
        union: dict[str, Cell] = {}
        for planned in self.experiments:
            for cell in planned.cells:
                union.setdefault(cell.config.key, cell)
        return list(union.values())

    @property
    def skipped(self) -> list[tuple[str, Cell, str]]:
        return [(p.experiment.name, cell, why) for p in self.experiments for cell, why in p.skipped]


def _task_dataset(config: RunConfig) -> str:
    if config.dataset:
        return config.dataset
    from brainbench.plugins import get_plugins

    entry = get_plugins().tasks.entry(config.task)
    factory = entry.factory
    default = getattr(factory, "default_dataset", None)
    if default is None:  # registered through a function: build the task once to ask
        default = get_plugins().tasks.create(config.task).default_dataset
    return default


def fit_config(config: RunConfig, options: PlanOptions) -> RunConfig:
    """One cell of the spec on the data and budget asked for."""
    values = copy.deepcopy(config.to_dict())
    values["budget"] = options.budget
    if options.device:
        values["device"] = options.device
    if options.epochs:
        values["epochs"] = options.epochs
    dataset = _task_dataset(config)
    real_path = real_data_path(dataset, options)
    if real_path is not None:
        values["dataset"] = REAL_NAMES.get(dataset, dataset)
        values["data_path"] = real_path
        if values.get("target"):
            values["target"] = REAL_NAMES.get(values["target"], values["target"])
        values["dataset_options"] = {k: v for k, v in values["dataset_options"].items() if k not in SIMULATOR_OPTIONS}
    elif dataset in SYNTHETIC_DATASETS:
        values["dataset"] = dataset
        scale = options.scale or BUDGET_SCALES[options.budget]
        if dataset == "synthetic-god" and scale == "nsd":
            scale = "small"  # the simulated GOD is already at GOD's real size
        values["dataset_options"] = {**values["dataset_options"], "scale": scale}
    if options.encoder_options:
        from brainbench.plugins import get_plugins

        declared = get_plugins().encoders.entry(config.encoder).declared_options()
        names = set() if declared is None else {row["name"] for row in declared.rows()}
        mine = {k: v for k, v in options.encoder_options.items() if k in names}
        values["encoder_options"] = {**values["encoder_options"], **mine}
    return RunConfig.from_dict(values)


def real_data_path(dataset: str, options: PlanOptions) -> str | None:
    """The real data folder standing in for a simulated dataset, if one was given."""
    return {"synthetic-nsd": options.data_path, "synthetic-god": options.god_path}.get(dataset)


def missing_real_data(config: RunConfig, options: PlanOptions) -> str | None:
    """Why a cell left on the simulator is skipped when the run is on real data, else None."""
    if options.data_path is None and options.god_path is None:
        return None
    if config.dataset in SYNTHETIC_DATASETS:
        flag = "--data-path" if config.dataset == "synthetic-nsd" else "--god-path"
        return f"the run is on real data but no {REAL_NAMES[config.dataset]} folder was given ({flag})"
    return None


def undeclared_option(config: RunConfig) -> str | None:
    """Why this build cannot run the cell (an option no installed plugin declares), else None."""
    from brainbench.errors import BrainbenchError
    from brainbench.plugins import get_plugins

    plugins = get_plugins()
    for kind, name, values in (
        ("encoder", config.encoder, config.encoder_options),
        ("task", config.task, config.task_options),
        ("dataset", config.dataset, config.dataset_options),
    ):
        if name is None or not values:
            continue
        try:
            declared = plugins.registry(kind).entry(name).declared_options()
        except BrainbenchError as exc:
            return str(exc)
        if declared is None:
            continue
        known = {row["name"] for row in declared.rows()}
        missing = sorted(set(values) - known)
        if missing:
            return (f"this build's {kind} {name!r} has no option {', '.join(map(repr, missing))} "
                    "(its plugin is older or not installed)")
    return None


def make_plan(spec: MatrixSpec, options: PlanOptions) -> Plan:
    if options.budget not in BUDGET_SCALES:
        raise DataError(f"--budget must be one of {', '.join(BUDGET_SCALES)}, got {options.budget!r}")
    names = [e.name for e in spec.experiments]
    unknown = sorted(set(options.only) - set(names) - set(EXTRA_SECTIONS))
    if unknown:
        raise DataError(f"--only: no experiment {', '.join(map(repr, unknown))} in {spec.source}; "
                        f"experiments: {', '.join([*names, *EXTRA_SECTIONS])}")
    tsne_only = "tsne" in options.only and "retrieval" not in options.only
    spec = copy.copy(spec)
    spec.defaults = {**spec.defaults, "budget": options.budget}  # so the experiments' quick overrides apply
    planned: list[PlannedExperiment] = []
    for experiment, cells in cells_by_experiment(spec):
        t_sne = tsne_only and experiment.name == "retrieval"
        if options.only and experiment.name not in options.only and not t_sne:
            continue
        kept = PlannedExperiment(experiment, [])
        for cell in cells:
            if options.subjects and cell.config.subject not in options.subjects:
                continue
            if t_sne and cell.config.encoder != "litemind":
                continue
            fitted = Cell(fit_config(cell.config, options), cell.details)
            why = missing_real_data(fitted.config, options) or undeclared_option(fitted.config)
            if why:
                kept.skipped.append((fitted, why))
            else:
                kept.cells.append(fitted)
        planned.append(kept)
    return Plan(spec, planned, options)
