"""A paper's published numbers (``NAME_published.toml``): each with its source; a missing value is unknown."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainbench.errors import DataError

REQUIRED = ("experiment", "row", "metric", "source")
KNOWN = {*REQUIRED, "subject", "value", "protocol"}


@dataclass(frozen=True)
class Published:
    experiment: str
    row: str
    metric: str
    source: str
    subject: int | None = None
    value: float | None = None  # None: not filled in (the paper has it; brainbench could not check it)
    protocol: str = ""


@dataclass
class PublishedNumbers:
    paper: dict[str, Any]
    numbers: list[Published]

    def lookup(self, experiment: str, row: str, metric: str, subject: int | None) -> Published | None:
        for number in self.numbers:
            rows = (row, "(every variant)", "(every depth)", "(every region)")  # a table's rows still to fill in
            if (number.experiment, number.metric) == (experiment, metric) and number.row in rows and (
                number.subject is None or subject is None or number.subject == subject
            ):
                return number
        return None

    def metrics(self, experiment: str) -> set[str]:
        return {n.metric for n in self.numbers if n.experiment == experiment}

    def missing(self) -> list[Published]:
        return [n for n in self.numbers if n.value is None]

    def known(self) -> list[Published]:
        return [n for n in self.numbers if n.value is not None]


def load_published(path: Path) -> PublishedNumbers:
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DataError(f"{path}: cannot read the published numbers: {exc}") from None
    numbers = []
    for i, item in enumerate(data.get("numbers", []), start=1):
        where = f"{path} [[numbers]] #{i}"
        missing = [k for k in REQUIRED if k not in item]
        if missing:
            raise DataError(f"{where}: needs {', '.join(missing)}")
        unknown = sorted(set(item) - KNOWN)
        if unknown:
            raise DataError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN))}")
        value = item.get("value")
        if value is not None and not isinstance(value, int | float):
            raise DataError(f"{where}: value must be a number, got {value!r}")
        numbers.append(Published(
            experiment=str(item["experiment"]), row=str(item["row"]), metric=str(item["metric"]),
            source=str(item["source"]), subject=item.get("subject"),
            value=None if value is None else float(value), protocol=str(item.get("protocol", "")),
        ))
    return PublishedNumbers(dict(data.get("paper", {})), numbers)
