"""The per-run figure: each test stimulus (first rows) beside its top retrieved candidates."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from brainbench.interfaces import EvalContext
from brainbench_laion.gallery import SearchResult, stimulus_of

SHOWN_CANDIDATES = 4


def _stimulus_label(ctx: EvalContext, row: int, names: list[str] | None, cats: np.ndarray | None) -> str:
    label = f"stimulus {int(ctx.stimulus_ids[row])}"
    if cats is not None:
        cat = int(cats[row])
        label += "\n" + (names[cat] if names and 0 <= cat < len(names) else f"category {cat}")
    return label


def retrieval_grid(
    ctx: EvalContext, found: SearchResult, chosen: np.ndarray, path: Path, rows: int = 8
) -> Path:
    """Write a PNG grid: stimulus (image if the dataset has one, else its id and category), then candidates
    as captions with scores; the chosen candidate is framed, a ground-truth hit is green."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(rows, len(found.ids))
    cols = 1 + min(SHOWN_CANDIDATES, found.ids.shape[1])
    ids = ctx.stimulus_ids[:n]
    images = ctx.dataset.images(ids)
    cats = ctx.dataset.categories(ids)
    names = ctx.dataset.category_names()
    fig, axes = plt.subplots(max(n, 1), cols, figsize=(2.6 * cols, 1.9 * max(n, 1)), squeeze=False)
    for row in range(n):
        ax = axes[row, 0]
        if images is not None:
            ax.imshow(np.clip(np.transpose(images[row], (1, 2, 0)), 0, 1))
            ax.set_title(_stimulus_label(ctx, row, names, cats).replace("\n", ": "), fontsize=7)
        else:
            ax.text(
                0.5,
                0.5,
                _stimulus_label(ctx, row, names, cats),
                ha="center",
                va="center",
                fontsize=8,
                weight="bold",
                transform=ax.transAxes,
            )
        for col in range(1, cols):
            ax = axes[row, col]
            item = found.metadata[row][col - 1] if col - 1 < len(found.metadata[row]) else {}
            caption = textwrap.fill(str(item.get("caption", f"id {item.get('id', '?')}"))[:90], 24)
            hit = stimulus_of(item) == int(ids[row]) if item else False
            ax.text(
                0.5,
                0.5,
                f"{caption}\n\ncos {found.scores[row, col - 1]:.3f}",
                ha="center",
                va="center",
                fontsize=7,
                color="green" if hit else "black",
                transform=ax.transAxes,
            )
            if col - 1 == int(chosen[row]):
                for spine in ax.spines.values():
                    spine.set_edgecolor("tab:blue")
                    spine.set_linewidth(2.5)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for col in range(1, cols):
        axes[0, col].set_title(f"candidate {col}", fontsize=8)
    fig.suptitle(
        "LAION retrieval: stimulus and top candidates (framed: chosen, green: ground truth)", fontsize=9
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
