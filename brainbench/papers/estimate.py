"""Expected training time of a plan's cells, for ``brainbench reproduce --dry-run``.

How it is estimated (a rough figure, said so wherever it is printed):

- sizes from the plan without generating data: the simulator's scale tables (voxels, training trials), or
  the real dataset's files (opened, not read);
- the recipe each cell will run: its own epochs/batch, else the encoder's quick recipe (budget quick), else
  its reference recipe; steps = epochs x ceil(trials / batch);
- cost of a step: ``brainbench.model_info``'s training FLOPs per sample (3 x the forward pass's matmul and
  convolution FLOPs, counted on the meta device at the cell's voxel count, target shape and options) plus the
  contrastive loss's similarities (3 x 2 x batch x target size per sample) x batch,
  divided by the matmul rate measured here and now (a float32 matmul, a fraction of a second); ridge's fit
  is its Gram matrix plus ~6 Cholesky solves;
- plus a fixed :data:`OVERHEAD_SECONDS` per cell (data, evaluation, MLflow).

Small layers, FFTs (not counted as FLOPs), the optimizer and data movement run below the matmul rate, so
on a CPU the real time is typically 2-5x this figure; read it as a lower bound and an order of magnitude.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from brainbench.config import RunConfig

OVERHEAD_SECONDS = 15.0
MATMUL_SIZE = 512


@dataclass
class CellEstimate:
    seconds: float | None
    epochs: int | None
    steps: int | None
    n_voxels: int | None
    n_trials: int | None
    note: str = ""


def matmul_rate(device: str = "cpu", seconds: float = 0.3) -> float:
    """FLOP/s of a float32 square matmul on ``device``, measured for about ``seconds``."""
    import torch

    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device)
    (a @ b).sum().item()  # warm-up
    count, started = 0, time.perf_counter()
    while True:
        (a @ b).sum().item()
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return count * 2 * MATMUL_SIZE**3 / elapsed


def data_sizes(config: RunConfig) -> tuple[int | None, int | None, str]:
    """(voxels, training trials) of the cell's subject, without generating simulated data."""
    dataset = config.dataset or ""
    if dataset == "synthetic-nsd":
        from brainbench.simulate.nsd import SCALES

        scale = SCALES.get(str(config.dataset_options.get("scale", "small")))
        if scale is None:
            return None, None, "unknown simulator scale"
        note = "voxels of the whole simulated nsdgeneral (an ROI cell reads fewer)" if config.dataset_options.get(
            "roi") else ""
        return scale.voxels.get(config.subject), scale.train_trials, note
    if dataset == "synthetic-god":
        from brainbench.simulate.god import GOD_SCALES

        sizes = GOD_SCALES.get(str(config.dataset_options.get("scale", "small")))
        if sizes is None:
            return None, None, "unknown simulator scale"
        n_train_categories, per_category, *_, n_voxels = sizes
        return n_voxels, n_train_categories * per_category, ""
    try:
        from brainbench.runner import resolve

        cell = resolve(config)
        try:
            return (int(cell.dataset.n_voxels(config.subject)),
                    int(cell.dataset.trials(config.subject, "train").n_trials), "")
        finally:
            cell.dataset.close()
    except Exception as exc:  # an estimate never stops a dry run
        return None, None, f"sizes unknown ({type(exc).__name__}: {exc})"


def _target_shape(config: RunConfig) -> tuple[int, ...]:
    from brainbench.runner import resolve

    if config.target:
        from brainbench.plugins import get_plugins

        return tuple(get_plugins().targets.create(config.target, **config.target_options).shape)
    cell = resolve(config)
    try:
        return tuple(cell.target.shape)
    finally:
        cell.dataset.close()


def _recipe(config: RunConfig) -> tuple[Any, int | None, int | None, dict[str, Any]]:
    """(encoder as it will run, epochs, batch, options in force)."""
    from brainbench.plugins import get_plugins

    plugins = get_plugins()
    encoder = plugins.encoders.create(config.encoder, **config.encoder_options)
    quick = encoder.quick_recipe() if config.budget == "quick" else None
    options = dict(config.encoder_options)
    if quick is not None and quick.options:
        options = {**quick.options, **config.encoder_options}
        encoder = plugins.encoders.create(config.encoder, **options)
    defaults = encoder.training_defaults() if hasattr(encoder, "training_defaults") else None
    epochs = config.epochs or getattr(quick, "epochs", None) or getattr(defaults, "epochs", None)
    batch = config.batch_size or getattr(quick, "batch_size", None) or getattr(defaults, "batch_size", None)
    return encoder, epochs, batch, options


def estimate_cell(config: RunConfig, rate: float, cache: dict[Any, float] | None = None) -> CellEstimate:
    cache = {} if cache is None else cache
    n_voxels, n_trials, note = data_sizes(config)
    if n_voxels is None or n_trials is None:
        return CellEstimate(None, None, None, n_voxels, n_trials, note)
    shape = _target_shape(config)
    encoder, epochs, batch, options = _recipe(config)
    output = math.prod(shape)
    if not hasattr(encoder, "build"):  # closed-form (ridge): Gram matrix, solves, cross-products
        side = min(n_voxels, n_trials)
        flops = 2.0 * max(n_trials, n_voxels) * side**2 + 6 * side**3 / 3 + 2.0 * n_trials * n_voxels * output
        return CellEstimate(flops / rate + OVERHEAD_SECONDS, None, None, n_voxels, n_trials,
                            note or "closed form: Gram + ~6 Cholesky solves")
    key = (config.encoder, tuple(sorted(options.items())), n_voxels, shape)
    if key not in cache:
        from brainbench.model_info import model_figures

        figures = model_figures(encoder, n_voxels, shape)
        cache[key] = float(figures.get("training_flops_estimate") or 0.0)
    # the contrastive loss compares each prediction with the batch's targets: 2 x batch x output FLOPs forward
    per_sample = cache[key] + 3 * 2.0 * int(batch or 1) * output
    steps = int(epochs or 0) * math.ceil(n_trials / max(int(batch or 1), 1))
    seconds = per_sample * n_trials * int(epochs or 0) / rate + OVERHEAD_SECONDS
    return CellEstimate(seconds, epochs, steps, n_voxels, n_trials, note)


def human(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
