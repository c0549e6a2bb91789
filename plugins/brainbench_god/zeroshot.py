"""Task ``god-zeroshot``: classify predicted CLIP image embeddings among the test classes' text embeddings.

The test categories never occur in training, so this is zero-shot: each test image's prediction is compared
by cosine with one prototype per test class (the mean of the class name's prompt embeddings, or with
``prototypes="image"`` the mean image embedding of the class's other images), giving 50-way top-1 and top-5
accuracy with Wilson 95% intervals and chance k/50.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from brainbench.errors import DataError
from brainbench.interfaces import EvalContext, MetricResult, MetricSpec, Task
from brainbench.options import Option, Options
from brainbench.retrieval_metrics import cosine_similarity_matrix, topk_hits
from brainbench.stats import wilson_interval

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "an image of a {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a cropped photo of a {}.",
)
PROTOTYPE_KINDS = ("text", "image")


def unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def average_per_stimulus(predictions: np.ndarray, stimulus_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One row per stimulus: repeated rows (trials not averaged upstream) are averaged here."""
    ids, inverse = np.unique(stimulus_ids, return_inverse=True)
    if len(ids) == len(stimulus_ids):
        return predictions, np.asarray(stimulus_ids)
    sums = np.zeros((len(ids), predictions.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, predictions)
    return (sums / np.bincount(inverse)[:, None]).astype(np.float32), ids


class GodZeroShotTask(Task):
    """Options: ``templates`` (prompt templates with one ``{}``), ``prototypes`` ("text" or "image"), ``top_k``."""

    name: ClassVar[str] = "god-zeroshot"
    declared_options: ClassVar[Options] = Options(
        Option("templates", list, None, "prompt templates, each with {} for the class name (default: the set's)",
               item=str, nullable=True),
        Option("prototypes", str, "text", "class prototypes from class-name text or from training images",
               choices=PROTOTYPE_KINDS),
    )
    metrics: ClassVar[tuple[MetricSpec, ...]] = (
        MetricSpec("top1", True, "zero-shot top-1 accuracy among the test classes (fraction)"),
        MetricSpec("top5", True, "zero-shot top-5 accuracy among the test classes (fraction)"),
    )
    default_dataset: ClassVar[str] = "synthetic-god"
    default_target: ClassVar[str | None] = "synthetic-clip"

    def __init__(self, options: Any = None, **values: Any) -> None:
        super().__init__(options, **values)
        chosen = self.options.templates if self.options.templates is not None else DEFAULT_TEMPLATES
        if any("{}" not in t for t in chosen):  # what no declared type says: each names where the class goes
            raise ValueError(f"god-zeroshot templates must each contain '{{}}' for the class name, got {chosen}")
        self.templates, self.prototypes = tuple(chosen), self.options.prototypes

    def params(self) -> dict[str, Any]:
        return {**super().params(), "templates": list(self.templates), "n_templates": len(self.templates),
                "interval": "Wilson 95%"}

    def evaluate(self, ctx: EvalContext) -> list[MetricResult]:
        predictions = np.asarray(ctx.predictions, dtype=np.float32).reshape(len(ctx.predictions), -1)
        predictions, stimulus_ids = average_per_stimulus(predictions, ctx.stimulus_ids)
        categories = ctx.dataset.categories(stimulus_ids)
        names = ctx.dataset.category_names()
        if categories is None or names is None:
            raise DataError(f"dataset {ctx.dataset.name!r} provides no category labels/names for zero-shot")
        classes = np.unique(categories)  # the test classes, candidates of the n-way choice
        if self.prototypes == "text":
            candidates = self._text_prototypes(ctx, [names[c] for c in classes])
        else:
            candidates = self._image_prototypes(ctx, classes, stimulus_ids)
        if candidates.shape[1] != predictions.shape[1]:
            raise DataError(
                f"god-zeroshot: class prototypes are {candidates.shape[1]}-d but predictions "
                f"{predictions.shape[1]}-d; use a pooled CLIP target"
            )
        scores = cosine_similarity_matrix(predictions, candidates)
        true_cols = np.searchsorted(classes, categories)
        results = []
        for k in (1, 5):
            hits = topk_hits(scores, true_cols, min(k, len(classes)))
            if len(stimulus_ids) == len(ctx.stimulus_ids):  # per-item outcomes, for paired comparisons
                ctx.per_item[f"top{k}"] = hits
            results.append(
                self.result(
                    f"top{k}",
                    float(hits.mean()),
                    wilson_interval(float(hits.sum()), len(hits)),
                    chance=min(k, len(classes)) / len(classes),
                )
            )
        return results

    def _text_prototypes(self, ctx: EvalContext, class_names: list[str]) -> np.ndarray:
        prompts = [template.format(name) for name in class_names for template in self.templates]
        embedded = np.asarray(ctx.target.embed_text(prompts, ctx.dataset), dtype=np.float32)
        embedded = unit(embedded.reshape(len(class_names), len(self.templates), -1))
        return unit(embedded.mean(axis=1))

    def _image_prototypes(self, ctx: EvalContext, classes: np.ndarray, test_ids: np.ndarray) -> np.ndarray:
        """Class means of the target embeddings of each class's images other than the test images."""
        pool = np.setdiff1d(ctx.dataset.all_stimulus_ids(), test_ids)
        if len(pool) == 0:
            raise DataError(
                f"dataset {ctx.dataset.name!r} lists no images beyond the test set; use prototypes='text'"
            )
        pool_categories = ctx.dataset.categories(pool)
        prototypes = []
        for cls in classes:
            members = pool[pool_categories == cls]
            if len(members) == 0:
                raise DataError(
                    f"dataset {ctx.dataset.name!r} has no images of test class {cls} besides the test images; "
                    "image prototypes need them (use prototypes='text')"
                )
            embedded = np.asarray(ctx.target.embed(ctx.dataset, members), dtype=np.float32)
            prototypes.append(unit(embedded.reshape(len(members), -1)).mean(axis=0))
        return unit(np.stack(prototypes))
