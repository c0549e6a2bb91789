"""StoredTarget reads the embeddings the simulator stores with the data."""

from __future__ import annotations

import numpy as np
import pytest

from brainbench.errors import DataError
from brainbench.interfaces import Dataset
from brainbench_clip.stored import StoredTarget
from brainbench_nsd.dataset import open_synthetic_nsd


class NoEmbeddings(Dataset):
    name = "bare"

    def subjects(self):
        return [1]

    def n_voxels(self, subject):
        return 3

    def trials(self, subject, split):
        raise NotImplementedError


class WithText(NoEmbeddings):
    def stored_text_embeddings(self, texts):
        return np.ones((len(texts), 768))


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINBENCH_HOME", str(tmp_path))
    return open_synthetic_nsd(scale="tiny", seed=0)


def test_pooled_and_tokens_come_from_the_dataset(dataset):
    ids = dataset.trials(1, "test").stimulus_ids[[5, 0, 5]]
    pooled_target = StoredTarget(tokens=False)
    assert pooled_target.name == "synthetic-clip" and pooled_target.shape == (768,)
    pooled = pooled_target.embed(dataset, ids)
    np.testing.assert_array_equal(pooled, dataset.stored_embeddings("clip-pooled")[:][ids])
    tokens_target = StoredTarget(tokens=True, normalize=True)
    assert tokens_target.name == "synthetic-clip-tokens"
    tokens = tokens_target.embed(dataset, ids)  # generated on first request
    assert tokens.shape == (3, 257, 768) and tokens.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(tokens[:, 0], axis=-1), 1, atol=1e-3)
    np.testing.assert_array_equal(tokens[0], tokens[2])
    assert (pooled * tokens[:, 0]).sum(-1).min() > 0.95


def test_clear_errors_without_stored_embeddings(dataset):
    with pytest.raises(DataError, match="dataset 'bare' has no 'clip-pooled'"):
        StoredTarget(tokens=False).embed(NoEmbeddings(), np.array([0]))
    with pytest.raises(DataError, match="stores no text embeddings"):
        StoredTarget(tokens=False).embed_text(["dog"], dataset)
    with pytest.raises(DataError, match="outside"):
        StoredTarget(tokens=False).embed(dataset, np.array([10**6]))
    assert StoredTarget(tokens=False).embed_text(["a", "b"], WithText()).shape == (2, 768)
