"""What the simulator's data are like: NSD-style noise ceilings per ROI, and oracle read-out ceilings.

``noise_table`` reads a subject's simulated betas, trial table and per-voxel ROI labels (as a run sees them)
and computes NSD's ncsnr and noise ceilings per ROI. ``oracle_ceilings`` measures how much of the CLIP-like
target the *noise-free* voxel responses carry for a linear read-out (ridge, penalty chosen on held-out
stimuli) and for a nonlinear one (an MLP), on fresh stimuli drawn from the prior: the gap says how far a
linear decoder is from optimal by construction of the data, before noise and sample size enter.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from brainbench.noise_ceiling import ceiling_percent, noise_ceiling
from brainbench.simulate.atlas_files import rois_file
from brainbench.simulate.nsd import SyntheticNsd, betas_file, trials_file
from brainbench.simulate.world import l2_normalize, prior_stimuli

ROI_ORDER = ("nsdgeneral", "prf-visualrois", "streams")


def simulated_nsd(scale: str, seed: int, subject: int, root: Path | None = None) -> SyntheticNsd:
    """The simulated NSD a run would use (the cached folder unless ``root``), with the subject written."""
    from brainbench.paths import synthetic_root
    from brainbench.simulate.nsd import GENERATOR_VERSION

    folder = Path(root) if root is not None else synthetic_root("nsd", f"{scale}-v{GENERATOR_VERSION}", seed)
    sim = SyntheticNsd(folder, scale, seed)
    sim.ensure_subject(subject)
    return sim


def noise_table(root: Path, subject: int) -> list[dict[str, object]]:
    """Per ROI (nsdgeneral, each prf-visualrois and streams label): voxels, median ncsnr (and its 90th
    percentile), median noise ceiling for 1 and 3 trials averaged (NSD's formula)."""
    root = Path(root)
    with open(root / trials_file(subject), newline="") as handle:
        images = np.array([int(row["image_index"]) for row in csv.DictReader(handle)])
    with h5py.File(root / betas_file(subject), "r") as f:
        snr = noise_ceiling(f["betas"], images).ncsnr
    rows = []
    with h5py.File(root / rois_file(subject), "r") as f:
        for atlas in ROI_ORDER:
            values = f[atlas][()]
            names = json.loads(f[atlas].attrs["labels"])
            for value, name in sorted(((int(k), v) for k, v in names.items())):
                if value == 0 or not (values == value).any():
                    continue
                chosen = snr[values == value]
                rows.append({
                    "atlas": atlas,
                    "roi": name,
                    "voxels": int(len(chosen)),
                    "median_ncsnr": float(np.median(chosen)),
                    "p90_ncsnr": float(np.percentile(chosen, 90)),
                    "nc1": float(np.median(ceiling_percent(chosen, 1.0))),
                    "nc3": float(np.median(ceiling_percent(chosen, 1 / 3))),
                })
    return rows


@dataclass
class Ceilings:
    """Held-out read-out quality on noise-free voxels: R^2 of the centred target and mean cosine."""

    linear_r2: float
    linear_cosine: float
    nonlinear_r2: float
    nonlinear_cosine: float
    ridge_alpha: float
    n_train: int
    n_test: int
    n_components: int


def _r2(prediction: np.ndarray, truth: np.ndarray) -> float:
    return float(1.0 - ((prediction - truth) ** 2).sum() / ((truth - truth.mean(axis=0)) ** 2).sum())


def _cosine(prediction: np.ndarray, truth: np.ndarray, mean: np.ndarray) -> float:
    """Mean cosine of the predicted and true embeddings (mean direction added back, as CLIP's)."""
    return float((l2_normalize(prediction + mean) * l2_normalize(truth + mean)).sum(axis=1).mean())


def oracle_ceilings(
    sim: SyntheticNsd,
    subject: int,
    n_train: int = 20000,
    n_test: int = 2000,
    epochs: int = 30,
    hidden: int = 512,
    n_components: int = 160,
    progress=None,
) -> Ceilings:
    """Ridge vs MLP from noise-free voxel responses of fresh stimuli to the (centred) CLIP-like target.

    The voxels are reduced to their top principal components first (noise-free responses span only the
    tuned channels' dimensions, 3 x 48 by default, so nothing is lost) to keep the MLP quick on a CPU.
    """
    import torch

    brain = sim.brain(subject)
    stimuli = prior_stimuli(sim.seed, n_train + n_test, sim.scale.n_categories, tag="oracle")
    voxels = brain.signal(stimuli).astype(np.float64)
    target = sim.clip.world.raw_target(stimuli).astype(np.float64)
    mean = sim.clip.mean.astype(np.float64)
    train, test = slice(0, n_train), slice(n_train, None)
    centre = voxels[train].mean(axis=0)
    _, singular, basis = np.linalg.svd(voxels[train] - centre, full_matrices=False)
    k = min(n_components, len(singular))
    whiten = basis[:k].T / (singular[:k] / np.sqrt(n_train))
    x = (voxels - centre) @ whiten
    y_mean = target[train].mean(axis=0)
    y = target - y_mean
    # Ridge: penalty chosen on the last tenth of the training stimuli, then refitted on all of them.
    fit, val = slice(0, n_train * 9 // 10), slice(n_train * 9 // 10, n_train)
    alphas = 10.0 ** np.arange(-3, 5)
    scores = []
    for alpha in alphas:
        weights = np.linalg.solve(x[fit].T @ x[fit] + alpha * np.eye(k), x[fit].T @ y[fit])
        scores.append(_r2(x[val] @ weights, y[val]))
    alpha = float(alphas[int(np.argmax(scores))])
    weights = np.linalg.solve(x[train].T @ x[train] + alpha * np.eye(k), x[train].T @ y[train])
    linear = x[test] @ weights
    # MLP: two GELU hidden layers, AdamW with a one-cycle schedule, mean-squared error.
    torch.manual_seed(sim.seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(k, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden), torch.nn.GELU(),
        torch.nn.Linear(hidden, y.shape[1]),
    )
    batch = 128
    steps = max(1, n_train // batch)
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=2e-3, total_steps=epochs * steps)
    inputs = torch.as_tensor(x[train], dtype=torch.float32)
    outputs = torch.as_tensor(y[train], dtype=torch.float32)
    generator = torch.Generator().manual_seed(sim.seed)
    for epoch in range(epochs):
        order = torch.randperm(n_train, generator=generator)
        for step in range(steps):
            rows = order[step * batch : (step + 1) * batch]
            loss = torch.nn.functional.mse_loss(net(inputs[rows]), outputs[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        if progress is not None:
            progress(epoch + 1, epochs, loss.item())
    with torch.no_grad():
        nonlinear = net(torch.as_tensor(x[test], dtype=torch.float32)).double().numpy()
    return Ceilings(
        linear_r2=_r2(linear, y[test]),
        linear_cosine=_cosine(linear + y_mean, target[test], mean),
        nonlinear_r2=_r2(nonlinear, y[test]),
        nonlinear_cosine=_cosine(nonlinear + y_mean, target[test], mean),
        ridge_alpha=alpha,
        n_train=n_train,
        n_test=n_test,
        n_components=k,
    )
