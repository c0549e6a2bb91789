"""Parsing helpers shared by commands."""

from __future__ import annotations

import json
import math
from typing import Any

import typer


def parse_key_values(items: list[str] | None, option: str) -> dict[str, Any]:
    """``["a=1", "b=true", "c=x"]`` -> ``{"a": 1, "b": True, "c": "x"}`` (values read as JSON when they parse).

    A key given twice (``--opt pad=zero --opt pad=drop``) is refused, naming both: one would silently win."""
    parsed: dict[str, Any] = {}
    given: dict[str, str] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        if key in given:
            from brainbench.options import OptionError

            raise OptionError(f"{option} {given[key]} and {option} {item}: {key!r} given twice; give it once")
        try:
            value: Any = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            value = raw
        given[key] = item
        parsed[key] = value
    return parsed


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.lower().replace("*", "x").split("x"))
    except ValueError:
        raise typer.BadParameter(f"expected a shape like 257x768 or 768, got {text!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise typer.BadParameter(f"shape dimensions must be positive, got {text!r}")
    return shape


def check_choice(value: str, choices: tuple[str, ...] | list[str], option: str) -> str:
    """``value`` if it is one of ``choices``; else a usage error naming the option, the value and the closest."""
    if value in choices:
        return value
    raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}", param_hint=option)


def check_number(
    value: float | None, option: str, minimum: float | None = None, below: float | None = None
) -> float | None:
    """A finite number at or above ``minimum`` (and under ``below``); nan and inf are refused."""
    if value is None:
        return None
    if math.isnan(value) or math.isinf(value):
        raise typer.BadParameter(f"{value} is not a finite number", param_hint=option)
    if minimum is not None and value < minimum:
        raise typer.BadParameter(f"{value:g} is below the minimum {minimum:g}", param_hint=option)
    if below is not None and value >= below:
        raise typer.BadParameter(f"{value:g} must be below {below:g}", param_hint=option)
    return value


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def check_launcher(launcher: str, option: str = "--launcher") -> str:
    """A known launcher whose dependencies are installed (ray is an extra)."""
    from brainbench.errors import BrainbenchError
    from brainbench.launch import LAUNCHERS

    check_choice(launcher, LAUNCHERS, option)
    if launcher == "ray" and not _installed("ray"):
        raise BrainbenchError(
            "--launcher ray needs the ray package, which is not installed: pip install 'brainbench[ray]' "
            "(or use --launcher local / local-gpus)"
        )
    return launcher
