"""Usage errors as one or two lines: the option, the value given, what is accepted, the closest valid name.

Typer 0.12-0.15 raise the standalone ``click`` package's exceptions; newer Typer ships its own copy
(``typer._click``). Both sets are recognised here by class *name* along the MRO, so neither is missed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from brainbench.suggest import closest

#: Arguments whose values are plugin names: the message lists the registered ones.
PLUGIN_ARGUMENTS = {"encoders": "encoder", "encoder": "encoder", "plugin": None, "task": "task", "dataset": "dataset"}


def class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def is_click_exception(exc: BaseException) -> bool:
    module = type(exc).__module__
    return "ClickException" in class_names(exc) and (module.startswith("click") or module.startswith("typer"))


def is_exit(exc: BaseException) -> bool:
    return type(exc).__name__ == "Exit" and hasattr(exc, "exit_code")


def is_abort(exc: BaseException) -> bool:
    return type(exc).__name__ == "Abort" and type(exc).__module__.split(".")[0] in {"click", "typer"}


def _command_path(ctx: Any) -> str:
    return getattr(ctx, "command_path", None) or "brainbench"


def _option_names(ctx: Any) -> list[str]:
    command = getattr(ctx, "command", None)
    names: list[str] = []
    for param in getattr(command, "params", []):
        if getattr(param, "param_type_name", "") == "option":
            names += [*param.opts, *param.secondary_opts]
    return names + ["--help"]


def given_value(param: Any, args: Sequence[str]) -> str | None:
    """The text the user typed for ``param`` (its last occurrence), read back from the command line."""
    opts = [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]
    value = None
    for i, arg in enumerate(args):
        for opt in opts:
            if arg == opt and i + 1 < len(args):
                value = args[i + 1]
            elif opt.startswith("--") and arg.startswith(opt + "="):
                value = arg[len(opt) + 1 :]
    return value


def _hint_value(hint: str | None, args: Sequence[str]) -> str | None:
    if not hint or not hint.startswith("-"):
        return None

    class _P:
        opts = [h.strip().strip("'") for h in hint.split("/")]
        secondary_opts: list[str] = []

    return given_value(_P, args)


def _param_label(param: Any, hint: Any) -> str:
    if hint:
        return hint if isinstance(hint, str) else " / ".join(hint)
    if param is None:
        return "value"
    if getattr(param, "param_type_name", "") == "argument":
        return str(getattr(param, "metavar", None) or getattr(param, "name", None) or "argument").upper()
    return "/".join(param.opts) or str(param.name)


def _choices(param: Any, message: str) -> list[str]:
    choices = list(getattr(getattr(param, "type", None), "choices", None) or [])
    if choices:
        return [str(getattr(c, "value", c)) for c in choices]
    found = re.search(r"one of:?\s+(.+?)(?:[,;]\s*got\b.*)?\.?$", message)
    if found:
        return [part.strip(" '\"") for part in re.split(r",\s*|\s+\|\s+|\s+or\s+", found.group(1)) if part.strip()]
    return []


def _plugin_names(kind: str | None) -> list[str]:
    if kind is None:
        return []
    try:
        from brainbench.plugins import get_plugins

        return get_plugins().registry(kind).names()
    except Exception:  # listing is a courtesy; the error itself must still print
        return []


def _type_name(param: Any) -> str:
    kind = getattr(getattr(param, "type", None), "name", "") or ""
    return {"integer": "an integer", "float": "a number", "boolean": "true or false"}.get(kind, kind)


def format_usage_error(exc: BaseException, args: Sequence[str]) -> list[str]:
    """One or two lines for a click/typer usage error."""
    names = class_names(exc)
    ctx = getattr(exc, "ctx", None)
    where = _command_path(ctx)
    help_hint = f"see '{where} --help'"
    message = exc.message if hasattr(exc, "message") else str(exc)  # type: ignore[attr-defined]
    if "NoSuchOption" in names:
        option = exc.option_name  # type: ignore[attr-defined]
        near = closest(option, [*(getattr(exc, "possibilities", None) or []), *_option_names(ctx)])
        first = f"{where}: no option {option}"
        return [first + (f"; did you mean {near}?" if near else ""), f"  {help_hint} for the options it accepts"]
    if "MissingParameter" in names:
        param = getattr(exc, "param", None)
        label = _param_label(param, getattr(exc, "param_hint", None))
        kind = PLUGIN_ARGUMENTS.get(getattr(param, "name", "") or "", None)
        known = _plugin_names(kind)
        second = f"  choose from: {', '.join(known)}" if known else f"  {help_hint}"
        return [f"{where}: missing {label}", second]
    if "BadParameter" in names:
        param = getattr(exc, "param", None)
        hint = getattr(exc, "param_hint", None)
        label = _param_label(param, hint)
        value = given_value(param, args) if param is not None else _hint_value(hint if isinstance(hint, str) else None,
                                                                                args)
        if value is None:
            typed = re.search(r"'([^']*)' is not", message)
            value = typed.group(1) if typed else None
        message = re.sub(r"^Value error,\s*", "", message)
        choices = _choices(param, message)
        expected = _type_name(param)
        detail = message.rstrip(".")
        shown = f" {value!r}" if value is not None else ""
        first = f"{where}: invalid value{shown} for {label}: {detail}"
        if choices:
            near = closest(value or "", choices) if value is not None else None
            second = f"  accepted: {', '.join(choices)}" + (f"; did you mean {near!r}?" if near else "")
        elif expected and expected not in detail:
            second = f"  expected {expected}"
        else:
            second = f"  {help_hint}"
        return [first, second]
    if "NoArgsIsHelpError" in names:
        return [message]
    text = exc.format_message() if hasattr(exc, "format_message") else str(exc)  # type: ignore[attr-defined]
    found = re.match(r"No such command '([^']+)'", text)
    if found and "Did you mean" not in text:
        commands = getattr(getattr(ctx, "command", None), "commands", {}) or {}
        near = closest(found.group(1), commands)
        if near:
            text = text.rstrip(".") + f". Did you mean {near!r}?"
    return [f"{where}: {text}", f"  {help_hint}"]
