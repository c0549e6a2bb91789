"""The LAION task's optional prior stage: train a registered prior (``--task-opt prior=NAME``) on the
encoder's predictions for the TRAINING trials paired with their stimuli's pooled target embeddings, then
turn each test prediction into the prior's sample, which is what queries the gallery.

As the references do: MindEye and Lite-Mind train their diffusion prior on the training set's brain
embeddings of the already-trained encoder (in-sample predictions, so the pairs are tighter than test-time
ones), and query LAION-5B with the prior's sample for each test image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from brainbench.errors import DataError
from brainbench.interfaces import EvalContext

#: Training trials predicted per chunk, and stimuli embedded per chunk (257x768 token targets: ~200 MB).
CHUNK_ROWS = 2048
EMBED_CHUNK = 256
PRIOR_FILE = "prior.safetensors"


def parse_prior_options(items: list[str] | str | None) -> dict[str, Any]:
    """``["depth=2", "epochs=5"]`` (or "depth=2,epochs=5") -> ``{"depth": "2", "epochs": "5"}`` (the prior's
    declaration coerces the values)."""
    if isinstance(items, str):
        items = [part for part in items.replace(";", ",").split(",") if part.strip()]
    parsed: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"laion prior_opts: expected KEY=VALUE items (depth=2,epochs=5), got {item!r}")
        parsed[key.strip()] = value.strip()
    return parsed


def prior_entry(name: str) -> Any:
    """The registered prior ``name`` (an unknown name is an error listing the close ones)."""
    from brainbench.plugins import get_plugins

    return get_plugins().priors.entry(name)


def build_prior(name: str, user_options: dict[str, Any], budget: str) -> tuple[Any, str]:
    """The prior with its quick recipe under budget "quick" (the user's options win); (prior, recipe note)."""
    entry = prior_entry(name)
    prior = entry.create(user_options, "prior option ")
    note = "reference recipe"
    if budget == "quick":
        quick = prior.quick_recipe()
        if quick is not None:
            prior = entry.create({**quick.options, **user_options}, "prior option ")
            note = f"quick recipe ({quick.note})"
    return prior, note


def training_pairs(ctx: EvalContext, pool: Any, pooling: str) -> tuple[np.ndarray, np.ndarray]:
    """(brain, image) rows for every training trial: the encoder's pooled prediction and the pooled target
    embedding of the trial's stimulus."""
    stage = ctx.training
    if stage is None:
        raise DataError(
            "laion prior: the prior trains on the encoder's training-set predictions, which this evaluation "
            "was not given (run the task through `brainbench run`)"
        )
    trials, encoder = stage.trials, stage.encoder
    brain = []
    with stage.reporter.progress("predicting training trials for the prior", total=trials.n_trials) as bar:
        for start in range(0, trials.n_trials, CHUNK_ROWS):
            rows = np.arange(start, min(start + CHUNK_ROWS, trials.n_trials))
            brain.append(pool(np.asarray(encoder.predict(trials.load(rows)), dtype=np.float32), pooling))
            bar.advance(len(rows))
    unique, inverse = np.unique(trials.stimulus_ids, return_inverse=True)
    images = np.concatenate(
        [
            pool(np.asarray(ctx.target.embed(ctx.dataset, unique[start : start + EMBED_CHUNK]), np.float32), pooling)
            for start in range(0, len(unique), EMBED_CHUNK)
        ]
    )
    return np.concatenate(brain), images[inverse]


def prior_queries(
    ctx: EvalContext, queries: np.ndarray, name: str, user_options: dict[str, Any], pool: Any, pooling: str,
    say: Any,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The prior's samples for ``queries`` (n, d), and the record of which prior made them and how."""
    budget = ctx.training.budget if ctx.training is not None else "reference"
    prior, note = build_prior(name, user_options, budget)
    brain, images = training_pairs(ctx, pool, pooling)
    say(f"training prior {name!r} ({note}) on {len(brain)} training pairs")
    fitted = prior.fit(brain, images, ctx.training.settings, ctx.training.reporter)
    path = fitted.save(Path(ctx.output_dir) / PRIOR_FILE)
    ctx.artifacts.append(path)
    sampled = fitted.sample(queries, seed=int(ctx.seed))
    record = {
        "name": name,
        "budget": budget,
        "recipe_note": note,
        "options": prior.params(),
        "fit": dict(fitted.recipe),
        "n_parameters": int(fitted.n_parameters),
        "file": path.name,
    }
    return sampled, record
