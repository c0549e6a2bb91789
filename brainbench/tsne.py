"""The Lite-Mind paper's t-SNE figure: test-set brain embeddings and CLIP image embeddings in one 2-D map.

Both sets of rows are flattened and L2-normalised (the space retrieval ranks them in), reduced to at most
50 principal components together, then embedded together by scikit-learn's ``TSNE`` (exact gradients
below 200 points, Barnes-Hut above), so distances between a brain embedding and an image embedding are
comparable. scikit-learn is an optional extra (``pip install brainbench[paper]``), imported only here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainbench.errors import BrainbenchError

PCA_COMPONENTS = 50
DEFAULT_PERPLEXITY = 30.0
#: Pairs joined by a line in the figure (a sample, so the map stays readable).
PAIRS_DRAWN = 25


@dataclass
class TsneMap:
    brain: np.ndarray  # (N, 2)
    image: np.ndarray  # (N, 2)
    stimulus_ids: np.ndarray
    perplexity: float
    kl_divergence: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "n_items": int(len(self.brain)),
            "n_points": int(len(self.brain) + len(self.image)),
            "perplexity": self.perplexity,
            "pca_components": PCA_COMPONENTS,
            "kl_divergence": self.kl_divergence,
            "stimulus_ids": [int(i) for i in self.stimulus_ids],
            "brain": np.round(self.brain, 5).tolist(),
            "image": np.round(self.image, 5).tolist(),
        }


def _sklearn() -> tuple[Any, Any]:
    try:
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE
    except ImportError:
        raise BrainbenchError(
            "the t-SNE figure needs scikit-learn: pip install 'brainbench[paper]' (or scikit-learn)"
        ) from None
    return PCA, TSNE


def joint_rows(brain: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Brain rows then image rows, flattened and L2-normalised, as float32."""
    rows = np.concatenate([np.asarray(brain, np.float32).reshape(len(brain), -1),
                           np.asarray(image, np.float32).reshape(len(image), -1)])
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def tsne_map(
    brain: np.ndarray, image: np.ndarray, stimulus_ids: np.ndarray, seed: int = 0,
    perplexity: float = DEFAULT_PERPLEXITY,
) -> TsneMap:
    """The joint t-SNE of ``brain`` (predictions) and ``image`` (targets), one row per test item each."""
    if brain.shape != image.shape:
        raise BrainbenchError(f"t-SNE: brain embeddings {brain.shape} and image embeddings {image.shape} differ")
    n = len(brain)
    if n < 3:
        raise BrainbenchError(f"t-SNE needs at least 3 test items, got {n}")
    PCA, TSNE = _sklearn()
    rows = joint_rows(brain, image)
    components = min(PCA_COMPONENTS, rows.shape[0] - 1, rows.shape[1])
    reduced = PCA(n_components=components, random_state=seed).fit_transform(rows)
    # perplexity must stay below the number of points; sklearn refuses otherwise
    perplexity = float(min(perplexity, (2 * n - 1) / 3))
    method = "exact" if 2 * n < 200 else "barnes_hut"
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, method=method)
    points = tsne.fit_transform(reduced)
    return TsneMap(points[:n], points[n:], np.asarray(stimulus_ids).reshape(-1), perplexity,
                   float(tsne.kl_divergence_), f"sklearn.manifold.TSNE ({method}) on PCA-{components}")


def write_tsne(result: TsneMap, folder: Path, title: str) -> list[Path]:
    """tsne.png (the figure) and tsne.json (the coordinates) in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 5.4))
    drawn = np.linspace(0, len(result.brain) - 1, num=min(PAIRS_DRAWN, len(result.brain))).astype(int)
    for i in drawn:
        ax.plot(*zip(result.brain[i], result.image[i], strict=True), color="grey", linewidth=0.5, alpha=0.6)
    ax.scatter(*result.image.T, s=7, color="tab:orange", label="CLIP image embeddings", alpha=0.8)
    ax.scatter(*result.brain.T, s=7, color="tab:blue", label="brain embeddings (test fMRI)", alpha=0.8)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8, loc="best")
    fig.text(0.01, 0.01, f"{result.method}, perplexity {result.perplexity:g}; lines join {len(drawn)} pairs",
             fontsize=7, color="grey")
    fig.tight_layout()
    png, data = folder / "tsne.png", folder / "tsne.json"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    data.write_text(json.dumps(result.to_dict()))
    return [png, data]
