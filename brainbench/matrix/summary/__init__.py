"""A matrix's cells summarised: :mod:`.statistics` groups them over seeds with intervals and paired tests,
:mod:`.formats` writes the groups out (CSV, JSON, Markdown, LaTeX, terminal text, MLflow summaries).

The names the commands and the report use are importable from here."""

from brainbench.matrix.summary.formats import (
    blocks,
    cells_csv,
    comparison_table,
    legend,
    paired_rows,
    parent_metrics,
    rich_table,
    table_cells,
    to_csv,
    to_json,
    to_latex,
    to_markdown,
)
from brainbench.matrix.summary.statistics import (
    INTERVAL_LEVELS,
    BaselineError,
    CellRow,
    GroupRow,
    Stat,
    as_stat,
    cell_rows,
    compare_to_baseline,
    directions,
    group_rows,
)

__all__ = [
    "INTERVAL_LEVELS", "BaselineError", "CellRow", "GroupRow", "Stat", "as_stat", "cell_rows", "compare_to_baseline",
    "directions", "group_rows", "blocks", "cells_csv", "comparison_table", "legend", "paired_rows", "parent_metrics",
    "rich_table", "table_cells", "to_csv", "to_json", "to_latex", "to_markdown",
]
