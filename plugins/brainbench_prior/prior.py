"""Priors ``diffusion`` (our implementation) and ``dalle2`` (dalle2-pytorch's classes): the DALL-E-2-style
diffusion prior MindEye and Lite-Mind train to map brain embeddings to CLIP image embeddings.

Reference recipe (the defaults), Lite-Mind's ``train_prior.py`` on its CLS-only embeddings: a 6-block
transformer of width 768 (the embedding's), 14 heads of 52, not causal, 100 diffusion steps, condition dropped
with probability 0.2 (classifier-free guidance), 300 epochs of batch 128, AdamW at 1e-4 x 600/512 on timm's
per-epoch cosine (5 warm-up epochs from 1e-6, floor 1e-5); sampling: DDIM on 20 steps, guidance scale 1.
MindEye's prior differs in heads (12 x 64) and is causal: ``prior_opts=causal=true,heads=12,dim_head=64``.
The quick recipe (demo-scale data, seconds on a CPU) is a 1-block, 4-head prior trained for a few epochs.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from brainbench.errors import BrainbenchError, DataError
from brainbench.interfaces import Reporter, TrainSettings
from brainbench.options import Option, Options
from brainbench.priors import FittedPrior, Prior, PriorQuickRecipe

FORMAT = 1
#: Lite-Mind's prior learning rate: 1e-4 scaled by 600/512, whatever the batch.
REFERENCE_LR = 1e-4 * 600 / 512

PRIOR_OPTIONS = Options(
    Option("depth", int, 6, "transformer blocks", minimum=1),
    Option("dim_head", int, 52, "features per attention head (Lite-Mind 52, MindEye 64)", minimum=1),
    Option("heads", int, 14, "attention heads (Lite-Mind 768 // 52 = 14, MindEye 12)", minimum=1),
    Option("ff_mult", float, 4.0, "feed-forward width / embedding width", above=0),
    Option("causal", bool, False, "causal attention (MindEye, dalle2-pytorch: true; Lite-Mind: false)"),
    Option("null_tokens", int, 0, "learned padding tokens before the brain token (dalle2-pytorch's "
           "max_text_len, 256 there; the references' networks: none)", minimum=0),
    Option("timesteps", int, 100, "diffusion steps of training", minimum=2),
    Option("cond_drop_prob", float, 0.2, "probability the condition is dropped in training (guidance)",
           minimum=0, maximum=0.99),
    Option("epochs", int, 300, "training epochs", minimum=1),
    Option("batch_size", int, 128, "pairs per step (the last partial batch kept)", minimum=1),
    Option("lr", float, REFERENCE_LR, "peak learning rate of AdamW", above=0),
    Option("weight_decay", float, 0.01, "AdamW weight decay", minimum=0),
    Option("warmup_epochs", int, 5, "epochs of linear warm-up from warmup_lr (timm's, inside the cosine)",
           minimum=0),
    Option("warmup_lr", float, 1e-6, "learning rate the warm-up starts from", minimum=0),
    Option("min_lr", float, 1e-5, "floor of the cosine schedule", minimum=0),
    Option("sample_timesteps", int, 20, "sampling steps (all of timesteps: ancestral; fewer: DDIM)", minimum=1),
    Option("cond_scale", float, 1.0, "classifier-free guidance scale at sampling (1: none)", above=0),
)

QUICK = PriorQuickRecipe(
    {"depth": 1, "heads": 4, "dim_head": 64, "ff_mult": 1.0, "epochs": 12, "batch_size": 128,
     "lr": 1e-3, "warmup_epochs": 0, "min_lr": 1e-4},
    "1 block, 4 heads of 64, feed-forward x1, 12 epochs of batch 128 at lr 1e-3, no warm-up",
)


def _normalise(array: Any) -> Any:
    import torch.nn.functional as F

    return F.normalize(array, dim=-1)


class FittedDiffusionPrior(FittedPrior):
    def __init__(self, prior: DiffusionPrior, backend: Any, dim: int, device: Any, recipe: dict[str, Any]) -> None:
        self.prior, self.backend, self.dim, self.device = prior, backend, dim, device
        self.recipe = recipe
        self.n_parameters = sum(p.numel() for p in backend.module.parameters() if p.requires_grad)

    def sample(self, brain: np.ndarray, *, seed: int = 0, batch_size: int = 1024) -> np.ndarray:
        import torch

        brain = _checked(brain, self.dim, "brain embeddings")
        steps = min(self.prior.options.sample_timesteps, self.prior.options.timesteps)
        scale = self.prior.options.cond_scale
        self.backend.module.eval()
        out = np.empty_like(brain)
        generator = torch.Generator(self.device).manual_seed(int(seed))
        with torch.no_grad(), torch.random.fork_rng(devices=_cuda_devices(self.device)):
            torch.manual_seed(int(seed))  # the library draws from the global generator: seeded, then restored
            for start in range(0, len(brain), batch_size):
                rows = _normalise(torch.from_numpy(brain[start : start + batch_size]).to(self.device))
                sampled = self.backend.sample(rows, steps, scale, generator)
                out[start : start + len(rows)] = _normalise(sampled.float()).cpu().numpy()
        return out

    def metadata(self) -> dict[str, Any]:
        return {"format": FORMAT, "prior": self.prior.name, "dim": self.dim, "options": self.prior.params(),
                "recipe": dict(self.recipe), "n_parameters": self.n_parameters}

    def save(self, path: Path) -> Path:
        from brainbench.checkpoint import save_model_file

        path = Path(path)
        if path.is_dir():
            path = path / "prior.safetensors"
        state = {k: v.detach().cpu() for k, v in self.backend.module.state_dict().items()}
        return save_model_file(path, state, self.metadata())


def _cuda_devices(device: Any) -> list[int]:
    return [device.index or 0] if getattr(device, "type", "cpu") == "cuda" else []


def _checked(array: np.ndarray, dim: int | None, what: str) -> np.ndarray:
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim != 2 or (dim is not None and array.shape[1] != dim):
        expected = f"(n, {dim})" if dim is not None else "(n, d)"
        raise DataError(f"prior: {what} must be {expected}, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise DataError(f"prior: {what} hold NaN or infinite values")
    return array


class DiffusionPrior(Prior):
    """A DALL-E-2-style diffusion prior, brain embedding -> CLIP image embedding (see the module notes)."""

    name: ClassVar[str] = "diffusion"
    backend_name: ClassVar[str] = "ours"
    declared_options: ClassVar[Options] = PRIOR_OPTIONS

    def quick_recipe(self) -> PriorQuickRecipe | None:
        return QUICK

    def _backend(self, dim: int) -> Any:
        from brainbench_prior.backends import BACKENDS, Architecture

        return BACKENDS[self.backend_name](Architecture.from_options(dim, self.options))

    def fit(self, brain: np.ndarray, images: np.ndarray, settings: TrainSettings, reporter: Reporter) -> FittedPrior:
        import torch

        from brainbench.devices import resolve_device

        images = _checked(images, None, "image embeddings")
        brain = _checked(brain, images.shape[1], "brain embeddings (as wide as the image embeddings)")
        if len(brain) != len(images):
            raise DataError(f"prior: {len(brain)} brain embeddings but {len(images)} image embeddings")
        device = resolve_device(settings.device)
        started = time.perf_counter()
        # the library draws (and both initialise) from the global generator: seeded here, restored after
        with torch.random.fork_rng(devices=_cuda_devices(device)):
            torch.manual_seed(int(settings.seed))
            backend = self._backend(images.shape[1])
            backend.module.to(device)
            generator = torch.Generator(device).manual_seed(int(settings.seed))
            history = train(backend, brain, images, self.options.as_dict(), device, generator, reporter)
        recipe = {
            "backend": self.backend_name, "epochs": self.options.epochs,
            "batch_size": self.options.batch_size, "lr": self.options.lr,
            "schedule": "timm-cosine", "pairs": len(brain), "first_epoch_loss": history[0], "final_loss": history[-1],
            "train_seconds": round(time.perf_counter() - started, 3), "device": str(device),
        }
        return FittedDiffusionPrior(self, backend, images.shape[1], device, recipe)

    def load(self, path: Path) -> FittedPrior:
        from brainbench.devices import resolve_device

        state, metadata = read_prior_file(Path(path))
        prior = type(self)(**{**self.options.as_dict(), **metadata["options"]})
        backend = prior._backend(int(metadata["dim"]))
        try:
            backend.module.load_state_dict(state)
        except RuntimeError as exc:
            raise DataError(f"prior file {path} does not fit prior {self.name!r} with its options: {exc}") from None
        device = resolve_device("auto")
        backend.module.to(device)
        return FittedDiffusionPrior(prior, backend, int(metadata["dim"]), device, metadata.get("recipe", {}))


class Dalle2Prior(DiffusionPrior):
    """The same prior run by dalle2-pytorch's DiffusionPriorNetwork + DiffusionPrior (always causal)."""

    name: ClassVar[str] = "dalle2"
    backend_name: ClassVar[str] = "dalle2"
    declared_options: ClassVar[Options] = Options(
        *(Option(o.name, o.type, True, o.help) if o.name == "causal" else o for o in PRIOR_OPTIONS)
    )

    def check_ready(self) -> None:
        from brainbench_prior.backends import DALLE2_INSTALL, dalle2_available

        if not dalle2_available():
            raise BrainbenchError(f"prior 'dalle2' needs dalle2-pytorch, which is not installed: {DALLE2_INSTALL}")


def train(
    backend: Any,
    brain: np.ndarray,
    images: np.ndarray,
    options: dict[str, Any],
    device: Any,
    generator: Any,
    reporter: Reporter,
) -> list[float]:
    """AdamW over shuffled pairs for ``epochs``; returns each epoch's mean loss."""
    import torch

    from brainbench.schedules import LearningRateSchedule

    x = _normalise(torch.from_numpy(brain)).to(device)
    y = _normalise(torch.from_numpy(images)).to(device)
    epochs, batch = options["epochs"], options["batch_size"]
    steps = math.ceil(len(x) / batch)
    schedule = LearningRateSchedule(
        "timm-cosine", options["lr"], epochs * steps, options["warmup_epochs"] * steps,
        options["warmup_lr"], options["min_lr"], steps_per_epoch=steps,
    )
    parameters = [p for p in backend.module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        parameters, lr=schedule(0), weight_decay=options["weight_decay"], foreach=True
    )
    backend.module.train()
    history: list[float] = []
    with reporter.progress("training the diffusion prior", total=epochs) as bar:
        for epoch in range(epochs):
            order = torch.randperm(len(x), generator=generator, device=device)
            total = 0.0
            for number, start in enumerate(range(0, len(x), batch)):
                for group in optimizer.param_groups:
                    group["lr"] = schedule(epoch * steps + number)
                rows = order[start : start + batch]
                loss = backend.loss(x[rows], y[rows], generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(rows)
            history.append(total / len(x))
            if not math.isfinite(history[-1]):
                raise BrainbenchError(f"prior training diverged at epoch {epoch} (loss {history[-1]})")
            bar.advance()
            bar.update(loss=history[-1])
            reporter.epoch_end(epoch, {"prior_loss": history[-1]})
    return history


def read_prior_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state dict, metadata) of a prior file, read without running any code from it."""
    if not path.is_file():
        raise DataError(f"prior file {path} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # a truncated or foreign file: name it
        raise DataError(f"prior file {path} is not a readable safetensors file: {exc}") from None
    metadata = {key: json.loads(value) for key, value in header.items()}
    missing = {"format", "prior", "dim", "options"} - set(metadata)
    if missing:
        raise DataError(f"prior file {path}: header lacks {', '.join(sorted(missing))}; not a brainbench prior")
    return state, metadata
