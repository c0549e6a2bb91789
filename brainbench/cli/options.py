"""Parsing helpers shared by commands."""

from __future__ import annotations

import json
from typing import Any

import typer


def parse_key_values(items: list[str] | None, option: str) -> dict[str, Any]:
    """``["a=1", "b=true", "c=x"]`` -> ``{"a": 1, "b": True, "c": "x"}`` (values read as JSON when they parse)."""
    parsed: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        parsed[key.strip()] = value
    return parsed


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.lower().replace("*", "x").split("x"))
    except ValueError:
        raise typer.BadParameter(f"expected a shape like 257x768 or 768, got {text!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise typer.BadParameter(f"shape dimensions must be positive, got {text!r}")
    return shape
