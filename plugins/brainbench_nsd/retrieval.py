"""Task ``retrieval``: NSD test-set fMRI->image and image->fMRI identification by cosine similarity."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np

from brainbench.interfaces import EvalContext, MetricResult, MetricSpec, Task
from brainbench.retrieval_metrics import (
    DRAW_SCHEMES,
    cosine_similarity_matrix,
    mean_interval,
    n_way_accuracy,
    topk_accuracy,
)

DIRECTIONS = ("fmri_to_image", "image_to_fmri")


def metric_specs(way: int) -> tuple[MetricSpec, ...]:
    specs = []
    for direction in DIRECTIONS:
        query, candidate = direction.split("_to_")
        specs.append(
            MetricSpec(
                f"{direction}_top1_full",
                True,
                f"{query}->{candidate} top-1 among all N test items (fraction)",
            )
        )
        specs.append(
            MetricSpec(
                f"{direction}_top1_{way}way",
                True,
                f"{query}->{candidate} top-1 among {way} items, mean over draws with 95% interval (fraction)",
            )
        )
    return tuple(specs)


class RetrievalTask(Task):
    """Full N-way and ``way``-way x ``draws`` retrieval in both directions, by cosine of flattened rows.

    Options: ``way`` (300, capped at N with a note), ``draws`` (30) and ``scheme``: "shared" (MindEye: each
    draw is one batch of ``way`` test items, shared by all its queries) or "per-query" (Lite-Mind: each query
    gets its true item plus ``way - 1`` distractors of its own). ``draws="shared"``/``"per-query"`` is read as
    the scheme, with the default count. Accuracies are fractions; draws are seeded by the run's seed.
    """

    name: ClassVar[str] = "retrieval"
    metrics: ClassVar[tuple[MetricSpec, ...]] = metric_specs(300)
    default_dataset: ClassVar[str] = "synthetic-nsd"
    default_target: ClassVar[str | None] = None

    def __init__(
        self, way: int = 300, draws: int | str = 30, scheme: str = "shared", chunk: int = 128, **options: Any
    ):
        if isinstance(draws, str):  # draws="shared" / "per-query" names the scheme
            scheme, draws = draws, 30
        super().__init__(way=way, draws=draws, scheme=scheme, chunk=chunk, **options)
        if scheme not in DRAW_SCHEMES:
            raise ValueError(f"retrieval scheme must be one of {', '.join(DRAW_SCHEMES)}, got {scheme!r}")
        if int(way) < 2 or int(draws) < 1:
            raise ValueError(f"retrieval needs way >= 2 and draws >= 1, got way={way}, draws={draws}")
        self.way, self.draws, self.scheme, self.chunk = int(way), int(draws), scheme, int(chunk)
        if self.way != 300:
            self.metrics = metric_specs(self.way)  # type: ignore[misc]  # names follow the way count
        self.notes: list[str] = []

    def params(self) -> dict[str, Any]:
        return {
            **self.options,
            "way": self.way,
            "draws": self.draws,
            "draw_scheme": self.scheme,
            "similarity": "cosine of flattened, L2-normalised rows",
        }

    def evaluate(self, ctx: EvalContext) -> list[MetricResult]:
        n = len(ctx.predictions)
        if ctx.predictions.shape != ctx.targets.shape:
            raise ValueError(
                f"predictions {ctx.predictions.shape} and targets {ctx.targets.shape} differ in shape"
            )
        if n < 2:
            raise ValueError(f"retrieval needs at least 2 test items, got {n}")
        sim = cosine_similarity_matrix(ctx.predictions, ctx.targets, chunk=self.chunk)
        way = min(self.way, n)
        self.notes = []
        if way < self.way:
            note = f"only {n} test items: {self.way}-way retrieval was run as {way}-way (chance 1/{way})"
            self.notes.append(note)
            ctx.notes.append(note)

        results: list[MetricResult] = []
        draws: dict[str, list[float]] = {}
        for direction, matrix in zip(DIRECTIONS, (sim, sim.T), strict=True):
            results.append(self.result(f"{direction}_top1_full", topk_accuracy(matrix, 1), chance=1.0 / n))
            # The same seed for both directions: shared draws use identical batches, as MindEye does.
            per_draw = n_way_accuracy(matrix, way, self.draws, self.scheme, np.random.default_rng(ctx.seed))
            mean, interval = mean_interval(per_draw)
            results.append(self.result(f"{direction}_top1_{self.way}way", mean, interval, chance=1.0 / way))
            draws[direction] = per_draw.tolist()
        self._write_draws(ctx, way, draws)
        return results

    def _write_draws(self, ctx: EvalContext, way: int, draws: dict[str, list[float]]) -> None:
        """Per-draw accuracies as a run artifact, so intervals can be recomputed or compared later."""
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        path = ctx.output_dir / "retrieval_draws.json"
        record = {
            "scheme": self.scheme,
            "way": way,
            "requested_way": self.way,
            "seed": ctx.seed,
            "n_items": len(ctx.predictions),
            "notes": self.notes,
            "accuracy_per_draw": draws,
        }
        path.write_text(json.dumps(record, indent=1))
        ctx.artifacts.append(path)
