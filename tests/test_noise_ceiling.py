"""brainbench.noise_ceiling: NSD's formula on hand-checkable repeats and on simulated signal + noise."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from brainbench.noise_ceiling import by_region, ceiling_metrics, ceiling_percent, noise_ceiling


def test_known_repeat_variances_give_the_known_ncsnr_and_ceiling():
    # Voxel 0: each image's 3 repeats are s - a, s, s + a: variance across repeats (ddof=1) is a^2 = 0.2 exactly,
    # so noise sd = sqrt(0.2), signal sd = sqrt(0.8), ncsnr = 2, NC(3 trials) = 100 * 4 / (4 + 1/3) = 92.307...%
    # Voxel 1: repeats s - b, s + b, s: variance b^2 = 0.64 -> signal sd 0.6, noise sd 0.8, ncsnr 0.75,
    # NC = 100 * 0.5625 / (0.5625 + 1/3) = 62.79...%.
    a, b = np.sqrt(0.2), 0.8
    signal = np.array([[0.5, -1.0], [-0.2, 0.3], [1.1, 0.0], [0.0, 0.7]])
    rows, ids = [], []
    for image, s in enumerate(signal):
        for da, db in ((-a, -b), (0.0, b), (a, 0.0)):
            rows.append(s + np.array([da, db]))
            ids.append(10 + image)
    shuffle = np.random.default_rng(0).permutation(len(ids))  # trial order must not matter
    result = noise_ceiling(np.array(rows)[shuffle], np.array(ids)[shuffle])
    np.testing.assert_allclose(result.ncsnr, [2.0, 0.75], rtol=1e-12)
    np.testing.assert_allclose(result.noise_ceiling, [100 * 4 / (4 + 1 / 3), 100 * 0.5625 / (0.5625 + 1 / 3)])
    assert result.n_images == 4 and result.n_average == pytest.approx(3.0)
    single = noise_ceiling(np.array(rows)[shuffle], np.array(ids)[shuffle], n_average=1)
    np.testing.assert_allclose(single.noise_ceiling, [100 * 4 / 5, 100 * 0.5625 / 1.5625])


def test_mixed_repeat_counts_use_nsds_mean_of_inverse_counts_and_noise_only_voxels_score_zero():
    rng = np.random.default_rng(1)
    ids = np.array([0, 0, 0, 1, 1, 2])  # 3, 2 and 1 repeats: 1/n -> (1/3 + 1/2 + 1) / 3
    betas = rng.standard_normal((6, 3))
    betas[:, 2] = np.array([2.0, -2.0, 0.0, 1.5, -1.5, 0.0])  # repeat variance > 1: no signal left
    result = noise_ceiling(betas, ids)
    assert result.n_images == 2 and result.n_average == pytest.approx(3 / (1 / 3 + 1 / 2 + 1))
    assert result.ncsnr[2] == 0.0 and result.noise_ceiling[2] == 0.0
    np.testing.assert_allclose(ceiling_percent(result.ncsnr, (1 / 3 + 1 / 2 + 1) / 3), result.noise_ceiling)
    with pytest.raises(ValueError, match="shown twice"):
        noise_ceiling(betas[:3], np.array([0, 1, 2]))


def test_simulated_signal_and_noise_recover_the_true_ncsnr():
    # z-scored betas = signal (variance 0.25) + noise (variance 0.75): ncsnr = sqrt(0.25 / 0.75) = 0.577.
    rng = np.random.default_rng(2)
    n_images, repeats, n_voxels = 1000, 3, 40
    signal = rng.normal(0, 0.5, (n_images, n_voxels))
    betas = np.repeat(signal, repeats, axis=0) + rng.normal(0, np.sqrt(0.75), (n_images * repeats, n_voxels))
    result = noise_ceiling(betas, np.repeat(np.arange(n_images), repeats))
    assert result.median_ncsnr == pytest.approx(np.sqrt(1 / 3), abs=0.02)
    assert result.median == pytest.approx(100 * (1 / 3) / (1 / 3 + 1 / 3), abs=2.0)  # 50% for 3 trials


def test_regions_and_run_metrics():
    rng = np.random.default_rng(3)
    ids = np.repeat(np.arange(200), 2)
    signal = rng.standard_normal((200, 6)) * np.array([0.9, 0.9, 0.9, 0.3, 0.3, 0.3])
    betas = np.repeat(signal, 2, axis=0) + rng.standard_normal((400, 6)) * np.sqrt(1 - np.array([.81] * 3 + [.09] * 3))
    labels = {"streams": SimpleNamespace(values=np.array([5, 5, 5, 1, 1, 0]), labels={0: "Unknown", 1: "early",
                                                                                    5: "ventral"})}
    result = noise_ceiling(betas, ids)
    regions = by_region(result, labels)
    assert set(regions) == {"streams.early", "streams.ventral"}
    assert regions["streams.ventral"] > regions["streams.early"]
    metrics = ceiling_metrics(betas, ids, labels)
    assert metrics["data.noise_ceiling_median"] == pytest.approx(result.median)
    assert metrics["data.noise_ceiling.streams.ventral"] == regions["streams.ventral"]
    assert metrics["data.noise_ceiling_n"] == 2.0
    assert ceiling_metrics(betas[:200], np.arange(200)) == {}  # nothing repeated: nothing to log
