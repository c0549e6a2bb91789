"""Feature-network image metrics of the LAION task, on weight files written from random torchvision models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import models

from brainbench.errors import DataError
from brainbench.interfaces import EvalContext
from brainbench_laion.image_metrics import (
    FEATURE_METRICS,
    feature_metrics,
    feature_weight_files,
    load_network,
    missing_feature_weights,
    network_features,
    score_features,
)
from brainbench_laion.index import build_index
from brainbench_laion.simulate import simulate_for_dataset
from brainbench_laion.task import LaionTask
from brainbench_laion.testing import FakeDataset

TWO_WAY = [m.name for m in FEATURE_METRICS if m.kind == "2way"]
DISTANCES = [m.name for m in FEATURE_METRICS if m.kind == "distance"]


@pytest.fixture(scope="module")
def weights_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TORCH_HOME whose hub checkpoints hold randomly initialised weights in the published file names."""
    torch.manual_seed(0)
    home = tmp_path_factory.mktemp("torch_home")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    files = feature_weight_files()
    torch.save(models.alexnet(weights=None).state_dict(), folder / files["alexnet"])
    inception = models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    torch.save(inception.state_dict(), folder / files["inception"])  # with AuxLogits, like the real file
    torch.save(models.efficientnet_b1(weights=None).state_dict(), folder / files["efficientnet"])
    # SwAV's layout: a trunk without fc, nested under "state_dict" with DistributedDataParallel prefixes.
    trunk = {f"module.{k}": v for k, v in models.resnet50(weights=None).state_dict().items() if "fc." not in k}
    torch.save({"state_dict": trunk, "epoch": 800}, folder / files["swav"])
    return home


def without(weights_home: Path, tmp_path: Path, network: str) -> Path:
    """A TORCH_HOME with every weight file of ``weights_home`` linked in except ``network``'s."""
    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    for name, file in feature_weight_files().items():
        if name != network:
            (folder / file).symlink_to(weights_home / "hub" / "checkpoints" / file)
    return tmp_path / "torch_home"


def images(n: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 16, 16)).astype(np.float32)


def test_feature_metrics_are_declared_with_their_directions():
    specs = {spec.name: spec for spec in LaionTask.metrics}
    assert TWO_WAY == ["alexnet2_2way", "alexnet5_2way", "inception_2way"]
    assert DISTANCES == ["efficientnet_distance", "swav_distance"]
    assert all(specs[name].higher_is_better for name in TWO_WAY)
    assert not any(specs[name].higher_is_better for name in DISTANCES)


@pytest.mark.parametrize("network", ["alexnet", "inception", "efficientnet", "swav"])
def test_identical_images_score_perfectly_and_shuffled_ones_do_not(weights_home, monkeypatch, network):
    monkeypatch.setenv("TORCH_HOME", str(weights_home))
    torch.set_num_threads(2)
    model = load_network(network)  # from the file in $TORCH_HOME/hub/checkpoints
    features = network_features(network, model, images(), batch_size=4)
    names = [m.name for m in FEATURE_METRICS if m.network == network]
    assert sorted(features) == sorted(names) and all(len(f) == 6 for f in features.values())
    wrong = np.roll(np.arange(6), 1)  # every candidate is another image
    for name, truth in features.items():
        same, shuffled = score_features(name, truth, truth), score_features(name, truth[wrong], truth)
        if name in TWO_WAY:
            assert same == 1.0 and shuffled < 0.85, (name, shuffled)
        else:
            # Untrained ResNet-50 pooled features are much alike across images (r ~ 0.999): small but real.
            assert same == pytest.approx(0.0, abs=1e-9) and shuffled > 1e-4, (name, shuffled)


def test_task_skips_and_names_only_the_network_whose_weights_are_missing(
    weights_home, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("TORCH_HOME", str(without(weights_home, tmp_path, "inception")))
    assert missing_feature_weights() == ["inception"]
    dataset = FakeDataset(dim=16, n_test=6, with_images=True)
    simulate_for_dataset(dataset, 50, tmp_path / "gal", shard_rows=100)
    build_index(tmp_path / "gal", tmp_path / "idx", "flat", progress=False)
    ids = dataset.trials(1, "test").stimulus_ids
    ctx = EvalContext(
        dataset.embeddings[ids], dataset.embeddings[ids], ids, dataset, target=None, subject=1, seed=0,
        output_dir=tmp_path / "out",
    )  # fmt: skip
    results = {r.name: r for r in LaionTask(index=str(tmp_path / "idx"), k=3).evaluate(ctx)}
    assert "inception_2way" not in results
    for name in ("alexnet2_2way", "alexnet5_2way"):
        assert results[name].value == 1.0 and results[name].higher_is_better and results[name].chance == 0.5
    for name in DISTANCES:
        assert results[name].value == pytest.approx(0.0, abs=1e-5) and not results[name].higher_is_better
    err = capsys.readouterr().err
    assert "inception_2way skipped" in err and "weights not on disk for inception" in err
    assert "alexnet" not in err.split("skipped")[0]


def test_wrong_weights_file_is_a_data_error_naming_it(weights_home, tmp_path, monkeypatch):
    home = without(weights_home, tmp_path, "alexnet")
    wrong = home / "hub" / "checkpoints" / feature_weight_files()["alexnet"]
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    monkeypatch.setenv("TORCH_HOME", str(home))
    with pytest.raises(DataError, match=wrong.name):
        load_network("alexnet")
    wrong.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="not a readable weights file"):
        feature_metrics(images(2), images(2))
