"""The t-SNE map: scikit-learn's own TSNE of the joint brain + image rows, one point per row, both files written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from brainbench.errors import BrainbenchError
from brainbench.tsne import joint_rows, tsne_map, write_tsne


def test_the_map_is_sklearns_tsne_of_the_joint_rows(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(40, 3, 16)).astype(np.float32)  # token-shaped targets are flattened
    brain = image + 0.5 * rng.normal(size=image.shape).astype(np.float32)
    result = tsne_map(brain, image, np.arange(100, 140), seed=3)
    assert result.brain.shape == (40, 2) and result.image.shape == (40, 2)
    rows = joint_rows(brain, image)
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    reduced = PCA(n_components=48, random_state=3).fit_transform(rows)  # 80 rows x 48 dims: 48 components max
    expected = TSNE(n_components=2, perplexity=result.perplexity, init="pca", random_state=3,
                    method="exact").fit_transform(reduced)
    np.testing.assert_allclose(np.concatenate([result.brain, result.image]), expected, rtol=1e-4, atol=1e-4)
    png, data = write_tsne(result, tmp_path, "title")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(data.read_text())
    assert saved["n_points"] == 80 and len(saved["brain"]) == len(saved["image"]) == 40
    assert saved["stimulus_ids"][0] == 100 and saved["method"].startswith("sklearn.manifold.TSNE")


def test_mismatched_or_too_few_rows_are_refused():
    with pytest.raises(BrainbenchError, match="differ"):
        tsne_map(np.zeros((5, 4)), np.zeros((5, 3)), np.arange(5))
    with pytest.raises(BrainbenchError, match="at least 3"):
        tsne_map(np.zeros((2, 4)), np.zeros((2, 4)), np.arange(2))
