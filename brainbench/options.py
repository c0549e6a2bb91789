"""Declared plugin options: name, type, default, accepted values, help — in one typed place per plugin.

A plugin class declares them as a class attribute (see ``Encoder.declared_options`` in
:mod:`brainbench.interfaces`)::

    class KnnEncoder(Encoder):
        declared_options = Options(
            Option("k", int, 10, minimum=1, help="neighbours averaged per prediction"),
        )

Values arrive as CLI text (``--opt k=3``), JSON-ish values or TOML values; :meth:`Options.validate`
coerces them to the declared type, checks choices and ranges (nan and inf are refused unless allowed) and
names the closest declared option for a misspelling. Nothing here imports anything heavy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
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

    def accepted(self) -> str:
        """What a user may write, in words."""
        if self.choices is not None:
            text = "one of " + ", ".join(map(str, self.choices))
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


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def check_declared(owner_class: Any, values: dict[str, Any], owner: str, where: str = "option ") -> dict[str, Any]:
    """What the base classes' ``check_options`` does: validate against ``declared_options`` when declared."""
    declared = getattr(owner_class, "declared_options", None)
    if declared is None:
        return dict(values)  # an undeclared plugin takes its options unchecked, as before
    return declared.validate(values, owner, where)
