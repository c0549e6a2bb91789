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
    data = FitData.from_splits(train[0], train[1], val[0], val[1])
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
    assert reporter.totals == [("ridge penalties scored", len(alphas))]
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
    data = FitData.from_splits(x, y, *draw(10))
    with pytest.raises(DataError, match="NaN"):
        get_plugins().encoders.create("ridge").fit(data, TrainSettings(), RecordingReporter())


def test_unknown_options_are_refused():
    with pytest.raises(ValueError, match="unknown ridge option.*'alpah'"):
        get_plugins().encoders.create("ridge", alpah=1.0)


# ------------------------------------------------------------------ the solver against the reference path


def reference_fit(x: np.ndarray, y: np.ndarray, n_fit: int, alphas, select_by: str = "mse"):
    """Ridge as before this solver: eigendecomposition on the fit rows for every penalty, then a second one
    on all rows for the refit at the chosen penalty."""
    from brainbench_ridge.encoder import mean_row_cosine, ridge_basis, standardisation

    def standardised(a, mean, scale):
        return ((a - mean) / scale).astype(np.float32)

    mean, scale = standardisation(x[:n_fit])
    y_mean = y[:n_fit].mean(axis=0)
    basis = ridge_basis(standardised(x[:n_fit], mean, scale), y[:n_fit] - y_mean)
    val_proj = standardised(x[n_fit:], mean, scale) @ basis.expand
    history = []
    for alpha in alphas:
        pred = (val_proj * basis.shrink(alpha)[None, :]) @ basis.projected_targets + y_mean
        history.append({"alpha": alpha, "val_mse": float(np.mean((pred - y[n_fit:]) ** 2, dtype=np.float64)),
                        "val_cosine": mean_row_cosine(pred, y[n_fit:])})
    key = (lambda h: h["val_mse"]) if select_by == "mse" else (lambda h: -h["val_cosine"])
    chosen = min(history, key=key)["alpha"]
    mean, scale = standardisation(x)
    y_mean = y.mean(axis=0)
    weights = ridge_basis(standardised(x, mean, scale), y - y_mean).weights(chosen)
    return chosen, history, (weights, y_mean, mean, scale)


def reference_predict(model, x):
    weights, bias, mean, scale = model
    return ((x - mean) / scale) @ weights + bias


def flat_draw(n, v, seed, noise=2.0):
    draw = linear_data(n, v, shape=(12,), noise=noise, seed=seed)

    def flat(m):
        x, y = draw(m)
        return x, y.reshape(m, -1)

    return flat


def relative_error(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.mark.parametrize(("n", "v"), [(500, 120), (140, 400)], ids=["primal", "dual"])
@pytest.mark.parametrize("search", ["full", "walk"])
def test_solver_equals_the_eigendecomposition_path(n, v, search, monkeypatch):
    """Same penalty, same validation scores, same refitted predictions (1e-5) as two eigendecompositions."""
    from brainbench_ridge import solver as ridge_solver

    monkeypatch.setattr(ridge_solver, "PROXY_ROWS", 25)  # a rough proxy: the walk has to move to the minimum
    draw = flat_draw(n, v, seed=v)
    x, y = draw(n)
    n_fit = n - n // 5
    alphas = list(get_plugins().encoders.create("ridge").alphas)
    chosen, history, model = reference_fit(x, y, n_fit, alphas)
    encoder = get_plugins().encoders.create("ridge", search=search)
    reporter = RecordingReporter()
    fitted = encoder.fit(FitData(x, y, n - n_fit), TrainSettings(device="cpu"), reporter)
    assert fitted.alpha == chosen
    # the bar counts what is scored: the grid when it is known, an open count for the walk
    assert reporter.totals == [("ridge penalties scored", len(alphas) if search == "full" else None)]
    assert reporter.advanced == len(fitted.history)
    reference = {h["alpha"]: h for h in history}
    for entry in fitted.history:
        np.testing.assert_allclose(entry["val_mse"], reference[entry["alpha"]]["val_mse"], rtol=1e-5)
        np.testing.assert_allclose(entry["val_cosine"], reference[entry["alpha"]]["val_cosine"], rtol=1e-5)
    test_x, _ = draw(100)
    assert relative_error(fitted.predict(test_x), reference_predict(model, test_x)) < 1e-5
    expected_form = "primal" if n_fit >= v else "dual"
    assert fitted.recipe["selection_solver"] == expected_form and fitted.recipe["alpha_search"] == search
    if search == "walk":
        assert len(fitted.history) < len(alphas)  # the point of the walk: fewer solves than the grid
        assert fitted.recipe["alphas_scored"] == len(fitted.history)


def test_walk_finds_the_minimum_of_a_unimodal_score_from_any_start():
    from brainbench_ridge.solver import walk

    grid = list(range(17))
    for minimum in (0, 5, 16):
        for start in (0, 8, 16):
            seen: list[int] = []

            def score(i, minimum=minimum, seen=seen):
                seen.append(i)
                return (i - minimum) ** 2

            assert walk(grid, start, score) == minimum
            assert len(set(seen)) <= abs(start - minimum) + 2


@pytest.mark.parametrize(("n", "v"), [(400, 90), (90, 300)], ids=["primal", "dual"])
def test_torch_path_equals_the_numpy_path(n, v):
    """The GPU maths (torch), run here on the CPU, gives the numpy path's penalty, scores and model."""
    pytest.importorskip("torch")
    from brainbench_ridge.backends import make_ops
    from brainbench_ridge.solver import RidgeSolver

    draw = flat_draw(n, v, seed=n)
    x, y = draw(n)
    alphas = list(get_plugins().encoders.create("ridge").alphas)
    results = {}
    for device in ("cpu", "torch-cpu"):
        for search in ("full", "walk"):
            solver = RidgeSolver(x, y, n - 40, make_ops(device))
            alpha, history, _ = solver.select(alphas, "mse", search)
            weights, bias = solver.refit(alpha)
            results[device, search] = alpha, history, weights, bias
    for search in ("full", "walk"):
        alpha, history, weights, bias = results["cpu", search]
        t_alpha, t_history, t_weights, t_bias = results["torch-cpu", search]
        assert t_alpha == alpha and [h["alpha"] for h in t_history] == [h["alpha"] for h in history]
        np.testing.assert_allclose([h["val_mse"] for h in t_history], [h["val_mse"] for h in history], rtol=1e-5)
        assert relative_error(t_weights, weights) < 1e-4
        np.testing.assert_allclose(t_bias, bias, rtol=1e-6)


def test_fit_is_lean_no_copy_of_the_voxels_and_leaves_them_untouched(monkeypatch):
    """Voxels are standardised block by block into scratch: the fit never holds a second copy of them."""
    import tracemalloc

    from brainbench_ridge import solver as ridge_solver
    from brainbench_ridge.solver import RidgeSolver, flat_targets

    monkeypatch.setattr(ridge_solver, "BLOCK_BYTES", 32 << 10)
    draw = flat_draw(8000, 60, seed=2)
    x, y = draw(8000)
    before = x.copy()
    data = FitData(x, y, 800)
    assert np.shares_memory(data.fit_voxels, x) and np.shares_memory(data.val_voxels, x)
    assert np.shares_memory(flat_targets(data.targets, 8000), y)  # float32 targets are not copied either
    from brainbench_ridge.backends import NumpyOps

    assert RidgeSolver(x, y, 7200, NumpyOps()).x is x
    encoder = get_plugins().encoders.create("ridge")
    tracemalloc.start()
    fitted = encoder.fit(data, TrainSettings(device="cpu"), RecordingReporter())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_array_equal(x, before)
    # The old path held ~3 copies (train/val standardised, the concatenation, its standardised copy).
    assert peak < 0.5 * x.nbytes, f"fit allocated {peak} bytes at peak against {x.nbytes} of voxels"
    assert fitted.alpha in encoder.alphas


@pytest.mark.parametrize(("n", "v"), [(300, 50), (60, 200)], ids=["primal", "dual"])
def test_ridge_refits_on_all_rows_and_reports_its_recipe(n, v):
    """The returned model is closed-form ridge on ALL rows (validation rows included) at the chosen alpha."""
    draw = flat_draw(n, v, seed=11)
    x, y = draw(n)
    fitted = get_plugins().encoders.create("ridge").fit(FitData(x, y, 30), TrainSettings(device="cpu"),
                                                         RecordingReporter())
    mean = x.mean(axis=0, dtype=np.float64)
    scale = x.std(axis=0, dtype=np.float64)
    z = (x - mean) / scale
    yc = y - y.mean(axis=0, dtype=np.float64)
    direct = np.linalg.solve(z.T @ z + fitted.alpha * np.eye(v), z.T @ yc)
    assert relative_error(fitted.weights, direct) < 1e-4
    without_val = np.linalg.solve(z[:-30].T @ z[:-30] + fitted.alpha * np.eye(v), z[:-30].T @ yc[:-30])
    assert relative_error(fitted.weights, without_val) > 1e-3  # the validation rows did count
    assert fitted.recipe == {
        "fit_rows": n, "selection_rows": n - 30, "validation_rows": 30, "alpha": fitted.alpha,
        "alpha_selection": "validation mse", "alpha_search": "full", "alphas_scored": 17,
        "selection_solver": "primal" if n - 30 >= v else "dual", "solver": "primal" if n >= v else "dual",
        "device": "cpu (numpy)",
    }
    fixed = get_plugins().encoders.create("ridge", alpha=3.0).fit(FitData(x, y, 30), TrainSettings(device="cpu"),
                                                                  RecordingReporter())
    assert fixed.recipe["alpha_selection"] == "fixed" and fixed.recipe["fit_rows"] == n
    direct = np.linalg.solve(z.T @ z + 3.0 * np.eye(v), z.T @ yc)
    assert relative_error(fixed.weights, direct) < 1e-4
