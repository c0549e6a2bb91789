"""Ridge at NSD scale: brainbench's ridge against scikit-learn RidgeCV and himalaya RidgeCV on identical data.

    python benchmarks/bench_ridge.py --trials 4000 --repeats 2
    python benchmarks/bench_ridge.py --trials nsd --methods brainbench
    python benchmarks/bench_ridge.py --trials 4000 --methods old,brainbench --old-tree /tmp/ridge-old

Data: the simulator's own generative model (brainbench.simulate.brain: stimuli, CLIP-like pooled targets,
subject 1's voxel responses session by session, 15,724 voxels), in memory: ``--trials`` training trials
(``nsd``: 24,980) over images with up to 3 repeats, the last 10% of training images (whole images, their
trials last) as the validation rows, and held-out test images (2-3 repeats each, averaged) for retrieval.

Every method fits in its own child process (data loaded from .npy, fit timed, peak RSS read with
``resource.getrusage``), methods alternating in each repetition. Each gets the same 17-penalty grid
(1e-1..1e7): brainbench chooses on its validation rows and refits on all rows; scikit-learn by efficient
leave-one-out (GCV) and himalaya by 5-fold CV, both on all rows, one shared penalty. ``old`` is brainbench's
ridge before this change, run from a git worktree (``--old-tree``, its ``plugins/`` on the path).
Retrieval: top-1 accuracy of each test prediction against all test images' targets (cosine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GRID = [float(a) for a in np.logspace(-1, 7, 17)]
NSD_TRIALS, NSD_TEST_IMAGES, N_VOXELS = 24980, 982, 15724
TRIALS_PER_IMAGE = NSD_TRIALS / 8859
METHODS = ("old", "brainbench", "sklearn", "himalaya")


# ------------------------------------------------------------------------------------------- data


def simulate(n_trials: int, n_test_images: int, out: Path, seed: int = 0, n_voxels: int = N_VOXELS) -> dict:
    """Write train_x/train_y/test_x/test_y .npy in ``out``; validation trials are the last rows of train."""
    from brainbench.simulate.brain import ClipSpace, SubjectBrain, make_stimuli, rng
    from brainbench.simulate.nsd import repeats_per_image

    gen = rng(seed, "bench-ridge", n_trials)
    n_train_images = int(round(n_trials / TRIALS_PER_IMAGE))
    n_images = n_train_images + n_test_images
    category = gen.integers(0, 80, size=n_images)
    stimuli = make_stimuli(seed, category)
    targets = ClipSpace(seed).pooled(stimuli)
    brain = SubjectBrain(seed, 1, n_voxels)

    n_val_images = int(round(0.1 * n_train_images))
    train_reps = repeats_per_image(gen, n_train_images, n_trials, min_repeats=1)
    images = np.repeat(np.arange(n_train_images), train_reps)
    images = images[gen.permutation(len(images))]
    is_val = images >= n_train_images - n_val_images  # the last images are the validation images
    images = np.concatenate([images[~is_val], images[is_val]])
    n_val = int(is_val.sum())

    def betas(image_rows: np.ndarray) -> np.ndarray:
        x = np.empty((len(image_rows), n_voxels), dtype=np.float32)
        for s, r0 in enumerate(range(0, len(image_rows), 750)):
            rows = image_rows[r0 : r0 + 750]
            x[r0 : r0 + len(rows)] = brain.session(brain.signal(stimuli.latent[rows]), s + 1)
        return x

    np.save(out / "train_x.npy", betas(images))
    np.save(out / "train_y.npy", targets[images])
    test_reps = repeats_per_image(gen, n_test_images, int(round(n_test_images * 2.82)), min_repeats=2)
    test_images = np.repeat(np.arange(n_train_images, n_images), test_reps)
    test_x = betas(test_images)
    averaged = np.stack([test_x[test_images == i].mean(axis=0) for i in range(n_train_images, n_images)])
    np.save(out / "test_x.npy", averaged.astype(np.float32))
    np.save(out / "test_y.npy", targets[n_train_images:])
    meta = {"n_trials": n_trials, "n_val": n_val, "n_voxels": n_voxels, "n_test_images": n_test_images}
    (out / "meta.json").write_text(json.dumps(meta))
    return meta


# ------------------------------------------------------------------------------------------ child


def top1(pred: np.ndarray, true: np.ndarray) -> float:
    p = pred / np.linalg.norm(pred, axis=1, keepdims=True)
    t = true / np.linalg.norm(true, axis=1, keepdims=True)
    return float(np.mean(np.argmax(p @ t.T, axis=1) == np.arange(len(t))))


class QuietReporter:
    def epoch_end(self, epoch, metrics):
        pass

    def info(self, message):
        pass

    def progress(self, description, total):
        import contextlib

        @contextlib.contextmanager
        def bar():
            class Handle:
                def advance(self, n=1):
                    pass

            yield Handle()

        return bar()


def standardise_in_place(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = x.std(axis=0, dtype=np.float64)
    scale = np.where(std > 0, std, 1.0).astype(np.float32)
    x -= mean
    x /= scale
    return mean, scale


def fit_and_predict(method: str, x: np.ndarray, y: np.ndarray, n_val: int, test_x: np.ndarray):
    if method == "brainbench":
        from brainbench.interfaces import FitData, TrainSettings
        from brainbench.plugins import get_plugins

        fitted = get_plugins().encoders.create("ridge").fit(
            FitData(x, y, n_validation=n_val), TrainSettings(device="cpu"), QuietReporter()
        )
        return fitted.alpha, lambda: fitted.predict(test_x), dict(getattr(fitted, "recipe", {}))
    if method == "old":
        from brainbench.interfaces import FitData, TrainSettings
        from brainbench_ridge.encoder import RidgeEncoder

        nf = len(x) - n_val
        fitted = RidgeEncoder().fit(FitData(x[:nf], y[:nf], x[nf:], y[nf:]), TrainSettings(), QuietReporter())
        return fitted.alpha, lambda: fitted.predict(test_x), {}
    mean, scale = standardise_in_place(x)  # both peers get standardised voxels, as ridge standardises its own
    if method == "sklearn":
        from sklearn.linear_model import RidgeCV

        model = RidgeCV(alphas=GRID, fit_intercept=True).fit(x, y)
        return float(model.alpha_), lambda: model.predict((test_x - mean) / scale), {}
    if method == "himalaya":
        from himalaya.backend import set_backend
        from himalaya.ridge import RidgeCV

        set_backend("numpy")
        model = RidgeCV(alphas=np.asarray(GRID), fit_intercept=True, cv=5, solver_params={"local_alpha": False})
        model.fit(x, y)
        return float(np.asarray(model.best_alphas_).ravel()[0]), lambda: model.predict((test_x - mean) / scale), {}
    raise SystemExit(f"unknown method {method!r}")


def child(method: str, data: Path) -> None:
    meta = json.loads((data / "meta.json").read_text())
    x, y = np.load(data / "train_x.npy"), np.load(data / "train_y.npy")
    test_x, test_y = np.load(data / "test_x.npy"), np.load(data / "test_y.npy")
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    alpha, predict, recipe = fit_and_predict(method, x, y, meta["n_val"], test_x)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pred = np.asarray(predict(), dtype=np.float32).reshape(len(test_x), -1)
    cosine = float(np.mean(np.sum(pred * test_y, 1) / np.linalg.norm(pred, axis=1) / np.linalg.norm(test_y, axis=1)))
    print("RESULT " + json.dumps({
        "method": method, "seconds": seconds, "peak_bytes": peak, "data_bytes": loaded,
        "alpha": alpha, "top1": top1(pred, test_y), "cosine": cosine, "recipe": recipe,
        "load": os.getloadavg()[0],
    }), flush=True)


# ----------------------------------------------------------------------------------------- parent


def run_child(method: str, data: Path, old_tree: Path | None, timeout: float) -> dict:
    env = dict(os.environ)
    if method == "old":
        if old_tree is None:
            raise SystemExit("--old-tree is needed for method old")
        env["PYTHONPATH"] = f"{old_tree}{os.pathsep}{old_tree / 'plugins'}"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--data", str(data)]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"method": method, "error": f"over the {timeout:.0f} s limit"}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    if done.returncode < 0:  # killed by a signal: say which (SIGKILL is usually the out-of-memory killer)
        import signal

        last = f"killed by {signal.Signals(-done.returncode).name} after {last!r}"
    return {"method": method, "error": last}


def table(rows: list[dict], baseline: str = "brainbench") -> str:
    gib = 2**30
    by_method: dict[str, list[dict]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    ok = {m: [r for r in rs if "error" not in r] for m, rs in by_method.items()}
    base = ok.get(baseline) or []
    base_s = float(np.median([r["seconds"] for r in base])) if base else float("nan")
    base_m = float(np.median([r["peak_bytes"] for r in base])) if base else float("nan")
    lines = [f"{'method':<11} {'fit s (each)':<22} {'median':>8} {'x brainbench':>12} {'peak GiB':>9} "
             f"{'x brainbench':>12} {'alpha':>9} {'top-1':>6} {'cosine':>7} {'load':>5}"]
    for method, rs in by_method.items():
        good = ok[method]
        if not good:
            lines.append(f"{method:<11} {rs[0]['error']}")
            continue
        sec = float(np.median([r["seconds"] for r in good]))
        mem = float(np.median([r["peak_bytes"] for r in good]))
        each = ", ".join(f"{r['seconds']:.1f}" for r in good)
        lines.append(
            f"{method:<11} {each:<22} {sec:8.1f} {sec / base_s:12.2f} {mem / gib:9.2f} {mem / base_m:12.2f} "
            f"{good[0]['alpha']:9.3g} {good[0]['top1']:6.3f} {good[0]['cosine']:7.4f} "
            f"{np.mean([r['load'] for r in good]):5.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", default="4000", help="training trials, or 'nsd' (24,980)")
    parser.add_argument("--test-images", type=int, default=None, help="default 300, or 982 at nsd")
    parser.add_argument("--voxels", type=int, default=N_VOXELS, help="voxels (subject 1 of NSD: 15,724)")
    parser.add_argument("--methods", default="brainbench,sklearn,himalaya")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--once", default="", help="methods run in the first repetition only (slow peers)")
    parser.add_argument("--old-tree", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per fit before a method is dropped")
    parser.add_argument("--data", type=Path, default=None, help="reuse (or write) the simulated data here")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data)
        return
    n_trials = NSD_TRIALS if args.trials == "nsd" else int(args.trials)
    n_test = args.test_images or (NSD_TEST_IMAGES if args.trials == "nsd" else 300)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-ridge-")
        args.data = Path(tmp.name)
    args.data.mkdir(parents=True, exist_ok=True)
    if not (args.data / "meta.json").exists():
        started = time.perf_counter()
        meta = simulate(n_trials, n_test, args.data, n_voxels=args.voxels)
        print(f"simulated {meta} in {time.perf_counter() - started:.0f} s", flush=True)
    meta = json.loads((args.data / "meta.json").read_text())
    print(f"data: {meta['n_trials']} trials ({meta['n_val']} validation) x {meta['n_voxels']} voxels -> 768, "
          f"{meta['n_test_images']} test images; cores: {os.cpu_count()}, load {os.getloadavg()}", flush=True)
    rows: list[dict] = []
    for rep in range(args.repeats):
        order = methods[rep % len(methods):] + methods[: rep % len(methods)]  # alternate who goes first
        for method in order:
            if any(r["method"] == method and "error" in r for r in rows):
                continue  # a method that failed (memory, time) is not retried
            if rep > 0 and method in args.once.split(","):
                continue
            row = run_child(method, args.data, args.old_tree, args.timeout)
            row["repeat"] = rep
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
