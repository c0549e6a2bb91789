"""Matrix spec files (TOML): defaults, axes and per-cell overrides, expanded into RunConfigs.

    name = "decoders"
    [defaults]
    epochs = 2
    [axes]
    encoder = ["ridge", "mindeye"]
    subject = [1, 2]
    seed = [0, 1]
    "encoder_options.hidden" = [256, 512]
    [[overrides]]
    match = { encoder = "ridge" }
    drop = ["encoder_options.hidden"]

Keys are RunConfig fields, or ``encoder_options.X`` / ``task_options.X`` / ``dataset_options.X`` /
``target_options.X`` for a
plugin's hyperparameter. Cells that end up with the same config (hence the same key) run once.

Refused before anything runs: a file that is not UTF-8 text, a key given twice (``encoder`` and ``encoders``),
a table where a value belongs, an override whose ``match`` matches no cell, and more than ``MAX_CELLS`` cells
(counted from the axes' sizes before any is made).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from brainbench.config import RunConfig
from brainbench.errors import DataError

OPTION_FIELDS = ("encoder_options", "task_options", "dataset_options", "target_options")
PLAIN_FIELDS = tuple(f.name for f in fields(RunConfig) if f.name not in OPTION_FIELDS)
AXIS_ALIASES = {
    "encoders": "encoder",
    "tasks": "task",
    "datasets": "dataset",
    "subjects": "subject",
    "seeds": "seed",
}
TOP_LEVEL = {"name", "defaults", "axes", "overrides", "description", "experiments"}  # see matrix/experiments.py
OVERRIDE_KEYS = {"match", "set", "drop"}
#: The most cells one matrix may have: each cell is an MLflow run, and a matrix past this is a typo (an axis
#: of 1000 subjects) more often than a plan. Split a bigger study into several specs.
MAX_CELLS = 10_000


@dataclass
class Override:
    match: dict[str, Any]
    set: dict[str, Any] = field(default_factory=dict)
    drop: list[str] = field(default_factory=list)


@dataclass
class MatrixSpec:
    name: str
    defaults: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    overrides: list[Override] = field(default_factory=list)
    text: str = ""  # the TOML as written (logged with the parent run)
    source: str = "<spec>"
    experiments: list[Any] = field(default_factory=list)  # [[experiments]]: brainbench.matrix.experiments


@dataclass
class Cell:
    config: RunConfig
    details: list[str] = field(default_factory=list)  # hyperparameter axes and overrides that shaped it


def check_path(path: str, where: str) -> str:
    """A settable key: a RunConfig field or ``<options field>.<name>``; anything else names the culprit."""
    path = AXIS_ALIASES.get(path, path)
    head, dot, rest = path.partition(".")
    if head in OPTION_FIELDS and dot and rest:
        return path
    if head in PLAIN_FIELDS and not dot:
        return path
    if head in OPTION_FIELDS:
        raise DataError(f"{where}: {path!r} needs a name after {head!r}, e.g. '{head}.hidden'")
    known = ", ".join([*PLAIN_FIELDS, *(f"{name}.<name>" for name in OPTION_FIELDS)])
    raise DataError(f"{where}: unknown field {path!r}; known: {known}")


def _flatten(table: dict[str, Any], where: str) -> dict[str, Any]:
    """``{"encoder_options": {"hidden": 1}}`` and ``{"encoder_options.hidden": 1}`` both -> dotted keys.

    A key given twice under two spellings (``encoder`` and ``encoders``, or ``encoder_options.x`` both ways)
    is refused, naming both: one would silently win."""
    flat: dict[str, Any] = {}
    spelled: dict[str, str] = {}

    def put(written: str, path: str, value: Any) -> None:
        if path in flat:
            raise DataError(f"{where}: {spelled[path]!r} and {written!r} both set {path!r}; keep one")
        spelled[path] = written
        flat[path] = value

    for key, value in table.items():
        if key in OPTION_FIELDS and isinstance(value, dict):
            for option, option_value in value.items():
                put(f"{key}.{option}", check_path(f"{key}.{option}", where), option_value)
        else:
            put(key, check_path(key, where), value)
    return flat


def _check_value(path: str, value: Any, where: str, axis: bool = False) -> None:
    """A plain setting takes one scalar; an option a scalar or a list of scalars; no tables anywhere."""
    shown = f"{where}: {path!r}" + (" value" if axis else "")
    if isinstance(value, dict):
        raise DataError(f"{shown} is a table {value!r}; expected a single value"
                        + (" (an axis lists values: key = [a, b])" if axis else ""))
    if isinstance(value, list):
        if "." not in path:
            raise DataError(f"{shown} is a list {value!r}; expected a single value"
                            + ("" if axis else " (several values make an axis: put it under [axes])"))
        for item in value:
            if isinstance(item, dict | list):
                raise DataError(f"{shown} {value!r} nests {type(item).__name__}s; expected a list of single values")


def parse_spec(text: str, source: str = "<spec>") -> MatrixSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{source}: not valid TOML: {exc}") from None
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise DataError(f"{source}: name must be text, got {name!r}")
    unknown = sorted(set(data) - TOP_LEVEL)
    if unknown:
        raise DataError(
            f"{source}: unknown top-level key(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(TOP_LEVEL))}"
        )
    defaults = _flatten(_table(data, "defaults", source), f"{source} [defaults]")
    for key, value in defaults.items():
        _check_value(key, value, f"{source} [defaults]")
    axes: dict[str, list[Any]] = {}
    for key, values in _flatten(_table(data, "axes", source), f"{source} [axes]").items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise DataError(f"{source} [axes]: {key!r} has no values")
        for value in values:
            _check_value(key, value, f"{source} [axes]", axis=True)
        axes[key] = values
    items = data.get("overrides", [])
    if not isinstance(items, list):
        raise DataError(f"{source}: overrides must be a list of tables ([[overrides]] ...), got {items!r}")
    overrides = [_override(item, f"{source} [[overrides]] #{i + 1}") for i, item in enumerate(items)]
    name = str(data.get("name") or Path(source).stem)
    from brainbench.matrix.experiments import parse_experiments

    return MatrixSpec(name, defaults, axes, overrides, text, source, parse_experiments(data, source))


def _table(data: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise DataError(f"{source}: [{key}] must be a table, got {type(value).__name__}")
    return value


def _override(item: Any, where: str) -> Override:
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected a table with match/set/drop")
    unknown = sorted(set(item) - OVERRIDE_KEYS)
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; known: match, set, drop")
    for part in ("match", "set"):
        if not isinstance(item.get(part, {}), dict):
            raise DataError(f"{where}: {part!r} must be a table, e.g. {part} = {{ encoder = \"ridge\" }}; "
                            f"got {item[part]!r}")
    if not isinstance(item.get("drop", []), list):
        raise DataError(f"{where}: 'drop' must be a list of keys, e.g. drop = [\"epochs\"]; got {item['drop']!r}")
    match = _flatten(item.get("match", {}), f"{where} match")
    changes = _flatten(item.get("set", {}), f"{where} set")
    for key, value in changes.items():
        _check_value(key, value, f"{where} set")
    drop = [check_path(str(path), f"{where} drop") for path in item.get("drop", [])]
    if not changes and not drop:
        raise DataError(f"{where}: nothing to change (give 'set' or 'drop')")
    return Override(match, changes, drop)


def load_spec(path: Path) -> MatrixSpec:
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: a folder; expected a matrix spec file (TOML)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read matrix spec {path}: {exc}") from None
    return parse_spec(decode_text(raw, str(path)), str(path))


def decode_text(raw: bytes, source: str) -> str:
    """A spec's bytes as text: UTF-8 (TOML's encoding), with a clear word for UTF-16 and binary files."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{source}: UTF-16 text; TOML specs are UTF-8: save it as UTF-8")
    if b"\x00" in raw[:4096]:
        raise DataError(f"{source}: a binary file, not a TOML matrix spec (UTF-8 text)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); "
                        "a matrix spec is TOML, in UTF-8") from None


# ------------------------------------------------------------------------------------------- expansion


def _get(values: dict[str, Any], path: str) -> Any:
    head, _, rest = path.partition(".")
    return values.get(head, {}).get(rest) if rest else values.get(head)


def _assign(values: dict[str, Any], path: str, value: Any) -> None:
    head, _, rest = path.partition(".")
    if rest:
        values.setdefault(head, {})[rest] = value
    else:
        values[head] = value


def _remove(values: dict[str, Any], path: str) -> None:
    head, _, rest = path.partition(".")
    if rest:
        values.get(head, {}).pop(rest, None)
    else:
        values.pop(head, None)


def _matches(values: dict[str, Any], match: dict[str, Any]) -> bool:
    for path, wanted in match.items():
        options = wanted if isinstance(wanted, list) else [wanted]
        if _get(values, path) not in options:
            return False
    return True


def _short(path: str, value: Any) -> str:
    return f"{path.split('.', 1)[-1] if '.' in path else path}={json.dumps(value)}"


MAIN_AXES = ("encoder", "task", "dataset", "subject", "seed")


def count_combinations(spec: MatrixSpec) -> int:
    """How many cells the axes make (before duplicates merge), from their sizes: nothing is expanded."""
    return math.prod(len(values) for values in spec.axes.values())


def expand(spec: MatrixSpec, limit: int = MAX_CELLS) -> list[Cell]:
    """Every combination of the axes over the defaults, overrides applied in order, duplicates removed.

    More than ``limit`` combinations is refused before any cell is made; so is an override that matches no
    cell (a typo in its ``match`` would otherwise change nothing, silently)."""
    if spec.experiments:  # a union of named experiments, each expanded like this
        from brainbench.matrix.experiments import expand_experiments

        return expand_experiments(spec)
    combinations = count_combinations(spec)
    if combinations > limit:
        sizes = " x ".join(f"{len(v)} {k}" for k, v in spec.axes.items() if len(v) > 1)
        raise DataError(
            f"{spec.source}: the axes make {combinations:,} cells ({sizes}); a matrix may have at most {limit:,} "
            "(each cell is a run): split the study into several specs"
        )
    names = list(spec.axes)
    cells: dict[str, Cell] = {}
    matched = [0] * len(spec.overrides)
    for combination in itertools.product(*(spec.axes[name] for name in names)):
        values: dict[str, Any] = {}
        for path, value in spec.defaults.items():
            _assign(values, path, copy.deepcopy(value))
        details = []
        for path, value in zip(names, combination, strict=True):
            _assign(values, path, copy.deepcopy(value))
            if path not in MAIN_AXES and len(spec.axes[path]) > 1:
                details.append(_short(path, value))
        for number, override in enumerate(spec.overrides, start=1):
            if _matches(values, override.match):
                matched[number - 1] += 1
                for path in override.drop:
                    _remove(values, path)
                for path, value in override.set.items():
                    _assign(values, path, copy.deepcopy(value))
                changes = [_short(path, value) for path, value in override.set.items()]
                changes += [f"-{path.split('.', 1)[-1]}" for path in override.drop]
                details.append(f"override #{number} ({', '.join(changes)})")
        if "encoder" not in values or "task" not in values:
            missing = [k for k in ("encoder", "task") if k not in values]
            raise DataError(
                f"{spec.source}: every cell needs {' and '.join(missing)} (in [defaults] or [axes])"
            )
        try:
            config = RunConfig.from_dict(values)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{spec.source}: bad cell {values}: {exc}") from None
        cells.setdefault(config.key, Cell(config, details))
    for number, (override, count) in enumerate(zip(spec.overrides, matched, strict=True), start=1):
        if count == 0:
            raise DataError(f"{spec.source} [[overrides]] #{number}: match {_show_match(override.match)} matches "
                            f"no cell; {_values_seen(spec, override.match)}")
    return list(cells.values())


def _show_match(match: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in match.items()) + " }"


def _values_seen(spec: MatrixSpec, match: dict[str, Any]) -> str:
    """What the matched keys take in the cells, so a typo shows next to the real values."""
    parts = []
    for path in match:
        if path in spec.axes:
            seen = spec.axes[path]
        elif path in spec.defaults:
            seen = [spec.defaults[path]]
        else:
            parts.append(f"{path!r} is set by no default and no axis")
            continue
        parts.append(f"{path} takes {', '.join(json.dumps(v) for v in seen)}")
    return "; ".join(parts)


def matrix_id(configs: list[RunConfig]) -> str:
    """The matrix's identity: the same set of cells gives the same id (how --resume finds its parent)."""
    blob = "\n".join(sorted({config.key for config in configs})).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ------------------------------------------------------------------------------- spec from a command line


def spec_from_configs(configs: list[RunConfig], name: str) -> MatrixSpec:
    """The TOML a one-liner (``brainbench run a b --seed 0 --seed 1``) stands for, logged with its parent."""
    rows = [config.to_dict() for config in configs]
    flat_rows = [_flat_config(row) for row in rows]
    paths = list(dict.fromkeys(path for row in flat_rows for path in row))
    defaults: dict[str, Any] = {}
    axes: dict[str, list[Any]] = {}
    for path in paths:
        seen = [row.get(path) for row in flat_rows]
        distinct = list(dict.fromkeys(json.dumps(v, sort_keys=True) for v in seen))
        if len(distinct) == 1:
            if seen[0] is not None:
                defaults[path] = seen[0]
        else:
            axes[path] = [json.loads(v) for v in distinct]
    lines = [f"name = {_toml_value(name)}", "", "[defaults]"]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in defaults.items()]
    lines += ["", "[axes]"]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in axes.items()]
    text = "\n".join(lines) + "\n"
    spec = parse_spec(text, f"{name}.toml")
    expanded = {cell.config.key for cell in expand(spec)}
    if expanded != {config.key for config in configs}:
        # The command line is not a full product (should not happen); keep the exact list instead.
        text += "\n# cells: " + ", ".join(sorted(config.key for config in configs)) + "\n"
        spec.text = text
    return spec


def _flat_config(row: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if key in OPTION_FIELDS:
            flat.update({f"{key}.{option}": v for option, v in value.items()})
        else:
            flat[key] = value
    return flat


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise DataError(f"cannot write {value!r} ({type(value).__name__}) to a TOML spec")
