"""The ``ridge`` encoder on data from a known linear map: penalty choice, accuracy, checkpoints."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from brainbench.errors import CheckpointMismatchError, DataError
from brainbench.interfaces import FitData, TrainSettings
from brainbench.plugins import get_plugins


class RecordingReporter:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.advanced = 0
        self.totals: list[tuple[str, int | None]] = []

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def info(self, message: str) -> None:
        self.messages.append(message)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None):
        """Like the real reporters: a generator context manager yielding a handle with ``advance``."""
        self.totals.append((description, total))
        reporter = self

        class Handle:
            def advance(self, n: int = 1) -> None:
                reporter.advanced += n

        yield Handle()


def linear_data(n: int, v: int, shape=(4, 6), noise: float = 1.0, seed: int = 0, rank: int = 8):
    """Voxels (uneven scales and offsets) mix a low-rank latent; targets are a linear map of it plus noise.

    Signal and noise have equal variance in both voxels and targets, so a perfect decoder reaches a
    correlation of about 1/sqrt(2) with the noisy targets.
    """
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    to_voxels = rng.standard_normal((rank, v)) / np.sqrt(rank)
    to_targets = rng.standard_normal((rank, d)) / np.sqrt(rank)
    scales, offsets = rng.uniform(0.5, 5.0, v), rng.uniform(-3, 3, v)

    def draw(m: int):
        latent = rng.standard_normal((m, rank))
        voxels = latent @ to_voxels + noise * rng.standard_normal((m, v))
        targets = latent @ to_targets + noise * rng.standard_normal((m, d))
        return (voxels * scales + offsets).astype(np.float32), targets.reshape(m, *shape).astype(np.float32)

    return draw


def fit(encoder, draw, n_train: int, n_val: int):
    train, val = draw(n_train), draw(n_val)
    data = FitData(train[0], train[1], val[0], val[1])
    reporter = RecordingReporter()
    return encoder.fit(data, TrainSettings(), reporter), reporter


def correlation(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.corrcoef(pred.ravel(), true.ravel())[0, 1])


@pytest.mark.parametrize(("n_train", "n_voxels"), [(400, 60), (80, 300)], ids=["primal", "dual"])
def test_ridge_picks_an_interior_alpha_and_predicts_well(n_train, n_voxels):
    draw = linear_data(n_train, n_voxels, noise=1.0, seed=n_voxels)
    encoder = get_plugins().encoders.create("ridge")
    fitted, reporter = fit(encoder, draw, n_train, 100)
    alphas = [h["alpha"] for h in fitted.history]
    assert alphas == sorted(encoder.alphas) and reporter.advanced == len(alphas)
    assert reporter.totals == [("ridge alphas", len(alphas))]
    assert min(alphas) < fitted.alpha < max(alphas), reporter.messages
    chosen = next(h for h in fitted.history if h["alpha"] == fitted.alpha)
    assert chosen["val_mse"] == min(h["val_mse"] for h in fitted.history)
    test_x, test_y = draw(300)
    pred = fitted.predict(test_x, batch_size=64)
    assert pred.shape == test_y.shape and pred.dtype == np.float32
    assert correlation(pred, test_y) > 0.85 / np.sqrt(2), reporter.messages
    assert fitted.n_parameters == n_voxels * 24 + 24


def test_ridge_matches_the_closed_form_solution_in_both_forms():
    from brainbench_ridge.encoder import ridge_basis

    rng = np.random.default_rng(5)
    for n, v in [(50, 20), (20, 50)]:
        x = rng.standard_normal((n, v)).astype(np.float32)
        y = rng.standard_normal((n, 3)).astype(np.float32)
        direct = np.linalg.solve(x.T.astype(np.float64) @ x + 2.5 * np.eye(v), x.T.astype(np.float64) @ y)
        np.testing.assert_allclose(ridge_basis(x, y).weights(2.5), direct, rtol=1e-3, atol=1e-4)


def test_select_by_cosine_and_fixed_alpha():
    draw = linear_data(200, 40, seed=3)
    by_cosine, _ = fit(get_plugins().encoders.create("ridge", select_by="cosine"), draw, 200, 80)
    best = max(by_cosine.history, key=lambda h: h["val_cosine"])
    assert by_cosine.alpha == best["alpha"]
    fixed, reporter = fit(get_plugins().encoders.create("ridge", alpha=7.0), draw, 200, 80)
    assert fixed.alpha == 7.0 and fixed.history == [] and any("fixed alpha" in m for m in reporter.messages)
    with pytest.raises(ValueError, match="select_by"):
        get_plugins().encoders.create("ridge", select_by="r2")


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    from brainbench_ridge.encoder import FittedRidge

    draw = linear_data(150, 30, seed=9)
    fitted, _ = fit(get_plugins().encoders.create("ridge", alphas=[0.1, 10, 1000]), draw, 150, 50)
    path = fitted.save(tmp_path / "ckpt")
    assert path.name == "ckpt.npz"
    with np.load(path, allow_pickle=False) as stored:
        assert stored["weights"].shape == (30, 24)
    loaded = FittedRidge.load(path, n_voxels=30, target_shape=(4, 6))
    x, _ = draw(20)
    np.testing.assert_array_equal(loaded.predict(x), fitted.predict(x))
    assert loaded.alpha == fitted.alpha and loaded.n_parameters == fitted.n_parameters
    with pytest.raises(CheckpointMismatchError, match="30 voxels, but the data has 31"):
        FittedRidge.load(path, n_voxels=31)
    with pytest.raises(CheckpointMismatchError, match=r"\(4, 6\), but the target is \(24,\)"):
        FittedRidge.load(path, target_shape=(24,))
    with pytest.raises(DataError, match="expects voxels of shape"):
        loaded.predict(np.zeros((2, 29), dtype=np.float32))


def test_bad_input_is_a_data_error():
    draw = linear_data(50, 10, seed=1)
    x, y = draw(50)
    x[3, 2] = np.nan
    data = FitData(x, y, *draw(10))
    with pytest.raises(DataError, match="NaN"):
        get_plugins().encoders.create("ridge").fit(data, TrainSettings(), RecordingReporter())


def test_unknown_options_are_refused():
    with pytest.raises(ValueError, match="unknown ridge option.*'alpah'"):
        get_plugins().encoders.create("ridge", alpah=1.0)
