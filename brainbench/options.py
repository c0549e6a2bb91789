"""Declared plugin options: name, type, default, accepted values, help — in one typed place per plugin.

A plugin class declares them once, as a class attribute (every kind alike: encoder, task, dataset, target,
prior; see :class:`brainbench.interfaces.Configurable`), and reads them back as typed attributes::

    class KnnEncoder(Encoder):
        declared_options = Options(
            Option("k", int, 10, "neighbours averaged per prediction", minimum=1),
        )

        def fit(self, data, settings, reporter):
            k = self.options.k  # an int >= 1: validated once, before the plugin sees it

Values arrive as CLI text (``--opt k=3``), JSON-ish values or TOML values; :meth:`Options.parse` coerces them
to the declared types, checks choices and ranges (nan and inf are refused unless allowed), names the closest
declared option for a misspelling, fills in the defaults and returns a frozen dataclass of the values (lists
as tuples). Run settings (brainbench.config.RUN_SETTINGS) use the same declarations. Nothing here imports
anything heavy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, make_dataclass, replace
from typing import Any

from brainbench.errors import BrainbenchError
from brainbench.suggest import closest

TYPE_NAMES = {int: "an integer", float: "a number", str: "text", bool: "true or false", list: "a list"}
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


class OptionError(BrainbenchError, ValueError):
    """A plugin option that is unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class Option:
    """One option a plugin accepts.

    ``type``: int, float, str, bool or list (then ``item`` is the element type; "a,b" text is split on
    commas). ``choices``: the accepted values, when a closed set. ``minimum``/``maximum`` bound numbers
    (and list elements) inclusively; ``above`` is an exclusive lower bound, ``below`` an exclusive upper
    one. ``nullable``: None (or an empty value) is accepted and means "the plugin's own choice". ``also``:
    extra literal values accepted besides the type (e.g. ``draws="shared"``).
    """

    name: str
    type: type = str
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    item: type | None = None
    nullable: bool = False
    finite: bool = True
    also: tuple[Any, ...] = ()
    pattern: str | None = None  # text options: a regular expression the whole value must match...
    spelled: str = ""  # ...and what it accepts, in words ("auto, cpu, cuda, cuda:N, mps")

    def accepted(self) -> str:
        """What a user may write, in words."""
        if self.choices is not None:
            text = "one of " + ", ".join(map(str, self.choices))
        elif self.pattern is not None:
            text = "one of " + self.spelled
        elif self.type is list:
            text = f"a list of {TYPE_NAMES.get(self.item or str, 'values')} (a,b,c)"
        else:
            text = TYPE_NAMES.get(self.type, self.type.__name__)
        bounds = []
        if self.above is not None:
            bounds.append(f"> {number(self.above)}")
        if self.minimum is not None:
            bounds.append(f">= {number(self.minimum)}")
        if self.maximum is not None:
            bounds.append(f"<= {number(self.maximum)}")
        if self.below is not None:
            bounds.append(f"< {number(self.below)}")
        if bounds:
            text += " " + " and ".join(bounds)
        extras = [repr(v) for v in self.also] + (["none"] if self.nullable else [])
        if extras:
            text += " (or " + ", ".join(extras) + ")"
        return text

    def coerce(self, value: Any) -> Any:
        """The value as the declared type; raises ValueError with the reason."""
        if value in self.also:
            return value
        if self.nullable and (value is None or (isinstance(value, str) and value.strip().lower() in {"", "none"})):
            return None
        if value is None:
            raise ValueError("a value is required")
        if self.type is list:
            items = value.replace(";", ",").split(",") if isinstance(value, str) else value
            if not isinstance(items, list | tuple):
                items = [items]
            out = [self._scalar(self.item or str, v) for v in items]
            for v in out:
                self._check_range(v)
            if not out:
                raise ValueError("the list is empty")
            return out
        out = self._scalar(self.type, value)
        if self.choices is not None and out not in self.choices:
            near = closest(str(out), [str(c) for c in self.choices])
            raise ValueError(f"not one of {', '.join(map(str, self.choices))}" + (f"; did you mean {near!r}?"
                                                                                 if near else ""))
        if self.pattern is not None and not re.fullmatch(self.pattern, str(out)):
            raise ValueError(f"not one of {self.spelled}")
        self._check_range(out)
        return out

    def _scalar(self, kind: type, value: Any) -> Any:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in TRUE_WORDS:
                return True
            if text in FALSE_WORDS:
                return False
            raise ValueError("expected true or false")
        if kind is int:
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError("expected an integer")
                return int(value)
            try:
                return int(str(value).strip())
            except ValueError:
                raise ValueError("expected an integer") from None
        if kind is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError("expected a number") from None
            if self.finite and not math.isfinite(number):
                raise ValueError("expected a finite number")
            return number
        if kind is str:
            if isinstance(value, dict | list):
                raise ValueError("expected text")
            return str(value)
        return value

    def _check_range(self, value: Any) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be >= {number(self.minimum)}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"must be <= {number(self.maximum)}")
        if self.above is not None and value <= self.above:
            raise ValueError(f"must be > {number(self.above)}")
        if self.below is not None and value >= self.below:
            raise ValueError(f"must be < {number(self.below)}")


def number(value: float) -> str:
    """A bound as a user would write it: whole numbers in full (4294967295, not 4.29497e+09)."""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e16):
        return str(int(value))
    return f"{value:g}"


@dataclass(frozen=True)
class Options:
    """The options one plugin accepts, in declaration order."""

    items: tuple[Option, ...] = field(default_factory=tuple)

    def __init__(self, *items: Option) -> None:
        names = [o.name for o in items]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"options declared twice: {', '.join(duplicated)}")
        object.__setattr__(self, "items", tuple(items))

    @classmethod
    def from_defaults(cls, defaults: dict[str, Any], *details: Option) -> Options:
        """Options named by a plugin's own defaults dict, so names and defaults cannot drift apart.

        ``details`` add help, choices and ranges to some of them (their ``default`` is replaced by the
        dict's; a detail for a name the dict lacks is skipped). Others get the type of their default
        (text, and none accepted, for a None default).
        """
        by_name = {d.name: d for d in details}
        items = []
        for name, default in defaults.items():
            detail = by_name.get(name)
            if detail is None:
                kind = type(default) if isinstance(default, bool | int | float | str) else str
                items.append(Option(name, kind, default, nullable=default is None))
            else:
                items.append(replace(detail, default=default))
        return cls(*items)

    def __iter__(self) -> Iterator[Option]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, name: object) -> bool:
        return any(o.name == name for o in self.items)

    def names(self) -> list[str]:
        return [o.name for o in self.items]

    def get(self, name: str) -> Option | None:
        return next((o for o in self.items if o.name == name), None)

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.items}

    def validate(self, values: dict[str, Any], owner: str, where: str = "option ") -> dict[str, Any]:
        """``values`` coerced to their declared types; every problem at once, each naming the option.

        ``owner`` names the plugin (``ridge``); ``where`` prefixes the name as the user wrote it
        (``"--opt "``, ``"encoder_options."``).
        Only the options given are returned: defaults stay the plugin's own.
        """
        problems: list[str] = []
        out: dict[str, Any] = {}
        for name, value in values.items():
            option = self.get(name)
            if option is None:
                near = closest(name, self.names())
                known = ", ".join(self.names()) or "none"
                problems.append(
                    f"{where}{name}={_show(value)}: unknown {owner} option {name!r}"
                    + (f"; did you mean {near!r}?" if near else "")
                    + f" ({owner} options: {known})"
                )
                continue
            try:
                out[name] = option.coerce(value)
            except ValueError as exc:
                problems.append(f"{where}{name}={_show(value)}: {owner} {name} {exc}; accepted: {option.accepted()}")
        if problems:
            raise OptionError("\n".join(problems))
        return out

    def parse(self, values: Mapping[str, Any], owner: str, where: str = "option ") -> OptionValues:
        """``values`` validated (:meth:`validate`) with the defaults filled in: the frozen, typed values a
        plugin reads (``options.k``; a list option as a tuple)."""
        given = self.validate(dict(values), owner, where)
        merged = {o.name: _frozen(given[o.name] if o.name in given else o.default) for o in self.items}
        return self.values_type()(**merged)

    def values_type(self) -> type[OptionValues]:
        """The frozen dataclass of these options' values: one field per option, typed as declared."""
        made = self.__dict__.get("_values_type")
        if made is None:
            made = make_dataclass(
                "OptionValues", [(o.name, _annotation(o), field(default=_frozen(o.default))) for o in self.items],
                bases=(OptionValues,), frozen=True,
            )
            object.__setattr__(self, "_values_type", made)
        return made

    def rows(self) -> list[dict[str, str]]:
        """One row per option for ``brainbench info``: name, type, default, accepted, help."""
        return [
            {
                "name": o.name,
                "type": o.type.__name__ if o.type is not list else f"list[{(o.item or str).__name__}]",
                "default": _show(o.default),
                "accepted": o.accepted(),
                "help": o.help,
            }
            for o in self.items
        ]


class OptionValues:
    """Base of every plugin's option values (made by :meth:`Options.values_type`): a frozen dataclass whose
    attributes are the options, each of its declared type."""

    def as_dict(self) -> dict[str, Any]:
        """Name -> value of every option in force (what a plugin records as its params)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    def __getitem__(self, name: str) -> Any:
        """``options["k"]``, as code written when options were a dict reads them; ``options.k`` is the way."""
        if name not in {f.name for f in fields(self)}:  # type: ignore[arg-type]
            raise KeyError(name)
        return getattr(self, name)


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _annotation(option: Option) -> Any:
    kind: Any = tuple[option.item or str, ...] if option.type is list else option.type
    return kind | None if option.nullable or option.default is None else kind


def accept(declared: Options | None, owner: str, options: OptionValues | None, values: dict[str, Any]) -> Any:
    """What a plugin's constructor keeps: ``options`` already parsed (the registry's), else ``values`` parsed
    against ``declared``; an undeclared plugin (third-party, older style) keeps its values as a dict."""
    if options is not None:
        if values:
            raise TypeError(f"{owner}: give options= or option keywords, not both ({', '.join(values)})")
        return options
    return dict(values) if declared is None else declared.parse(values, owner)


def declares(options: Options) -> Callable[[Any], Any]:
    """Attach ``options`` to a factory function (a dataset opener) as its ``declared_options``, the same
    attribute a plugin class declares: the one place the registry, ``brainbench info`` and preflight read."""

    def attach(function: Any) -> Any:
        function.declared_options = options
        return function

    return attach


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)
