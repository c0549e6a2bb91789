"""Checks before any MLflow run exists: every cell's options validated and every plugin object built.

A mistake in the 20th cell of a matrix is reported before the first cell trains, and no FAILED run is
left behind for it. In order, cheapest first: settings (types, ranges, seeds), plugin names and options,
devices (``--device cuda`` on a machine without one), then per cell the plugin objects, the data (every split's
trial list read, a sample of rows checked by brainbench/data_checks.py) and the model's size against the
machine's memory (brainbench/resources.py).
"""

from __future__ import annotations

import json
from typing import Any

from brainbench.errors import BrainbenchError
from brainbench.options import OptionError

#: How each kind of option is written on the command line and in a spec file.
CLI_FLAGS = {"encoder": "--opt ", "task": "--task-opt ", "dataset": "--dataset-opt ", "target": "--target-opt "}
SPEC_PATHS = {kind: f"{kind}_options." for kind in CLI_FLAGS}
Names = tuple[str | None, str | None]  # a cell's dataset and target names
#: MLflow's SQL stores keep an experiment name in a 256-character column.
MAX_EXPERIMENT_NAME = 256


def spread_options(
    names: list[str], options: dict[str, Any], kind: str, flag: str
) -> dict[str, dict[str, Any]]:
    """Each plugin's share of options given once for several (a one-liner matrix).

    With one plugin every option goes to it (and is validated there). With several, an option goes to each
    plugin that declares it (an undeclared plugin takes them all); one that no named plugin declares is an
    error that names the closest declared option.
    """
    from brainbench.plugins import get_plugins

    registry = get_plugins().registry(kind)
    unique = list(dict.fromkeys(names))
    if len(unique) <= 1 or not options:
        return {name: dict(options) for name in unique}
    declared = {name: registry.entry(name).declared_options() for name in unique}
    shares: dict[str, dict[str, Any]] = {name: {} for name in unique}
    for option, value in options.items():
        takers = [name for name in unique if declared[name] is None or option in declared[name]]
        if not takers:
            every = sorted({o for d in declared.values() if d is not None for o in d.names()})
            from brainbench.options import closest

            near = closest(option, every)
            raise OptionError(
                f"{flag}{option}={value}: no {kind} named ({', '.join(unique)}) has an option {option!r}"
                + (f"; did you mean {near!r}?" if near else f" (their options: {', '.join(every) or 'none'})")
            )
        for name in takers:
            shares[name][option] = value
    return shares


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def check_cli_settings(
    scalars: dict[str, Any], repeated: dict[str, list[Any]], resume: bool = False, restart: bool = False,
    experiment: str | None = None, launch: dict[str, Any] | None = None,
) -> None:
    """``brainbench run``'s own flags against the declared run settings (brainbench.config.RUN_SETTINGS): every
    problem at once, each naming the flag; seeds past what the random generators take are refused."""
    from brainbench.config import LAUNCH_SETTINGS, setting_problems

    problems = setting_problems(scalars, _flag) + setting_problems(launch or {}, _flag, LAUNCH_SETTINGS)
    for field, values in repeated.items():
        for value in dict.fromkeys(values):
            problems += setting_problems({field: value}, _flag)
    if resume and restart:
        problems.append("--resume and --restart together: --resume continues an interrupted training, --restart "
                        "discards it; give one of them")
    if experiment is not None and not experiment.strip():
        problems.append(f"--experiment {experiment!r}: an MLflow experiment needs a name (default: brainbench)")
    elif experiment is not None and len(experiment) > MAX_EXPERIMENT_NAME:
        problems.append(f"--experiment: a name of {len(experiment):,} characters; MLflow stores at most "
                        f"{MAX_EXPERIMENT_NAME}")
    if problems:
        raise OptionError("\n".join(dict.fromkeys(problems)))


def check_numbers(config: Any) -> list[str]:
    """A cell's settings against their declarations (a RunConfig checks itself when made; this says it again
    for configs made by other code paths, e.g. a plugin's)."""
    from brainbench.config import setting_problems

    return setting_problems({name: getattr(config, name) for name in config.to_dict()})


def check_names(configs: list[Any]) -> None:
    """Unknown plugin names, each with the closest registered one."""
    from brainbench.plugins import get_plugins

    plugins = get_plugins()
    problems: list[str] = []
    for config in configs:
        for kind in ("encoder", "task", "dataset", "target"):
            name = getattr(config, kind)
            if name is not None and name not in plugins.registry(kind):
                try:
                    plugins.registry(kind).entry(name)
                except BrainbenchError as exc:
                    problems.append(str(exc))
    if problems:
        raise BrainbenchError("\n".join(dict.fromkeys(problems)))


def check_options(configs: list[Any], spec_source: str | None = None) -> None:
    """Every option of every cell against its plugin's declaration; all problems reported at once.

    A cell that names no dataset or target gets the task's (and the dataset's) default: its options are
    checked against that plugin, so ``--dataset-opt scale=huge`` is named as such.
    """
    from brainbench.plugins import get_plugins

    plugins = get_plugins()
    prefixes = SPEC_PATHS if spec_source else CLI_FLAGS
    problems: list[str] = []
    defaults: dict[str, Names] = {}

    def check(kind: str, name: str | None, values: dict[str, Any]) -> bool:
        if name is None or not values:
            return True
        try:
            plugins.registry(kind).entry(name).check_options(values, prefixes[kind])
        except BrainbenchError as exc:
            problems.append(str(exc))
            return False
        return True

    for config in configs:
        ok = check("encoder", config.encoder, config.encoder_options)
        ok = check("task", config.task, config.task_options) and ok
        dataset, target = config.dataset, config.target
        if ok and (dataset is None or (target is None and config.target_options)):
            try:
                dataset, target = _default_names(config, plugins, defaults)
            except (BrainbenchError, ValueError, TypeError, KeyError) as exc:  # a task refusing its options
                problems.append(f"{config.label()}: {exc}")
                continue
        ok = check("dataset", dataset, config.dataset_options) and ok
        if ok:
            check("target", target, config.target_options)
        problems += [f"{config.label()}: {p}" for p in check_numbers(config)]
    if problems:
        where = f"{spec_source}: " if spec_source else ""
        unique = list(dict.fromkeys(problems))
        raise OptionError(where + ("\n" + " " * len(where)).join(unique))


def _default_names(config: Any, plugins: Any, seen: dict[str, Names]) -> Names:
    """The dataset and target a cell gets when it names none: the task's, else the dataset's target."""
    key = json.dumps([config.task, config.task_options, config.dataset, config.target, config.data_path,
                      config.dataset_options, bool(config.target_options)], sort_keys=True, default=str)
    if key not in seen:
        task = plugins.tasks.create(config.task, **config.task_options)
        dataset = config.dataset or task.default_dataset
        target = config.target or task.default_target
        if target is None and config.target_options:  # the dataset's default target: open it to ask
            try:
                opened = plugins.datasets.create(dataset, root=config.data_path, **config.dataset_options)
            except BrainbenchError:
                opened = None  # reported, with the cell, when the cell's objects are built
            if opened is not None:
                target = opened.default_target
                opened.close()
        seen[key] = (dataset, target)
    return seen[key]


def check_devices(configs: list[Any]) -> None:
    """Every device a cell names exists here: ``--device cuda`` on a machine without a GPU is refused now, not
    after the data are simulated and the MLflow run is made (how a device is spelled, and which precisions
    exist, the declared run settings check). torch is imported only for a named device."""
    names = sorted({config.device for config in configs} - {"auto", "cpu"})  # their spelling: RUN_SETTINGS
    if not names:
        return
    import torch

    for name in names:
        if name.startswith("cuda"):
            if not torch.cuda.is_available():
                raise BrainbenchError(
                    f"--device {name}: CUDA is not available on this machine (torch {torch.__version__} sees no "
                    "GPU); use --device cpu, or auto to take a GPU only where there is one"
                )
            index = int(name.partition(":")[2] or 0)
            count = torch.cuda.device_count()
            if index >= count:
                raise BrainbenchError(f"--device {name}: this machine has {count} GPU(s), cuda:0..cuda:{count - 1}")
        elif name == "mps" and not torch.backends.mps.is_available():
            raise BrainbenchError("--device mps: Apple's MPS back end is not available on this machine")


def build_cells(configs: list[Any], keep: bool = False) -> list[Any]:
    """Build every plugin object each cell names (dataset opened, subject checked), ask each task whether
    it is ready (``Task.check_ready``), read the cell's data (trial lists, a sample of rows) and size its model
    against the machine's memory. With ``keep`` the resolved cells come back open, to be run as they are
    (one process runs them: a cell is resolved once); else they are let go."""
    from brainbench.data_checks import check_cell_data
    from brainbench.resources import check_model_fits
    from brainbench.runner import resolve

    seen: set[str] = set()
    voxels_of: dict[str, int] = {}  # data checked once per dataset and subject, models once per size
    sized: set[str] = set()
    built: list[Any] = []
    for config in configs:
        if config.key in seen:
            continue
        seen.add(config.key)
        try:
            cell = resolve(config)
        except BrainbenchError as exc:
            raise type(exc)(f"{config.label()}: {exc}") from None
        except (ValueError, TypeError, KeyError) as exc:  # a plugin refusing its options in its constructor
            raise BrainbenchError(f"{config.label()}: {exc}") from None
        try:
            cell.task.check_ready()  # e.g. a remote back end reachable, its index settled
            data = _json([cell.dataset_name, config.data_path, config.dataset_options, config.subject])
            if data not in voxels_of:  # the data first: a broken file is named before what depends on it
                voxels_of[data] = check_cell_data(cell.dataset, cell.dataset_name, config.subject)
            n_voxels = voxels_of[data]
            cell.target.check_ready(cell.dataset)  # e.g. CLIP weights or a target cache present
            model = _json([config.encoder, config.encoder_options, config.budget, n_voxels, cell.target.shape,
                           config.device])
            if model not in sized:
                check_model_fits(cell.encoder, n_voxels, tuple(cell.target.shape), config.device,
                                 _given(config.encoder_options))
                sized.add(model)
        except BrainbenchError as exc:
            cell.dataset.close()
            raise type(exc)(f"{config.label()}: {exc}") from None
        except BaseException:
            cell.dataset.close()
            raise
        if keep:
            built.append(cell)
        else:
            cell.dataset.close()
    return built


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _given(options: dict[str, Any]) -> str:
    return " ".join(f"--opt {k}={v}" for k, v in options.items())


def preflight(configs: list[Any], spec_source: str | None = None, keep: bool = False) -> list[Any]:
    """Everything a run can be refused for, before it is created; with ``keep``, the resolved cells (open),
    which this process then runs without building them again."""
    check_names(configs)
    check_options(configs, spec_source)
    check_devices(configs)
    return build_cells(configs, keep)
