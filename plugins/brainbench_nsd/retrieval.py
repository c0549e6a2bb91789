"""Task ``retrieval``: NSD test-set fMRI->image and image->fMRI identification by cosine similarity."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np

from brainbench.interfaces import EvalContext, MetricResult, MetricSpec, Task
from brainbench.options import Option, Options
from brainbench.retrieval_metrics import (
    DRAW_SCHEMES,
    cosine_similarity_matrix,
    n_way_accuracy,
    n_way_expected_hits,
    topk_hits,
)
from brainbench.stats import bootstrap_interval

DIRECTIONS = ("fmri_to_image", "image_to_fmri")


def metric_specs(way: int) -> tuple[MetricSpec, ...]:
    specs = []
    for direction in DIRECTIONS:
        query, candidate = direction.split("_to_")
        specs.append(
            MetricSpec(
                f"{direction}_top1_full",
                True,
                f"{query}->{candidate} top-1 among all N test items (fraction; 95% bootstrap over items)",
            )
        )
        specs.append(
            MetricSpec(
                f"{direction}_top1_{way}way",
                True,
                f"{query}->{candidate} top-1 among {way} items, mean over random draws (fraction; 95% "
                "bootstrap over items of each item's exact hit rate)",
            )
        )
    return tuple(specs)


class RetrievalTask(Task):
    """Full N-way and ``way``-way x ``draws`` retrieval in both directions, by cosine of flattened rows.

    Options: ``way`` (300, capped at N with a note), ``draws`` (30) and ``scheme``: "shared" (MindEye: each
    draw is one batch of ``way`` test items, shared by all its queries) or "per-query" (Lite-Mind: each query
    gets its true item plus ``way - 1`` distractors of its own). ``draws="shared"``/``"per-query"`` is read as
    the scheme, with the default count. Accuracies are fractions; draws are seeded by the run's seed.

    A metric is named for the way count actually run: below ``way`` test items the ``300way`` metric becomes
    e.g. ``50way`` (with a note). Intervals are bootstraps over test items; the spread of the draws (which
    shrinks with more draws of the same test set) is stored as ``draws_sd`` in ``retrieval_draws.json``,
    never as an interval. Per-item outcomes (full-way hits; n-way: each item's exact expected hit rate) go to
    ``ctx.per_item`` for paired comparisons.
    """

    name: ClassVar[str] = "retrieval"
    declared_options: ClassVar[Options] = Options(
        Option("way", int, 300, "items per draw (capped at the test set's size, with a note)", minimum=2,
               maximum=10**6),
        Option("draws", int, 30, "draws of `way` items (or the scheme's name)", minimum=1, maximum=10**6,
               also=("shared", "per-query")),
        Option("scheme", str, "shared", "shared: one batch per draw (MindEye) | per-query (Lite-Mind)",
               choices=DRAW_SCHEMES),
        Option("chunk", int, 128, "queries scored at once (memory, not results)", minimum=1, maximum=10**6),
        Option("tsne", bool, False, "also draw the t-SNE map of the test brain embeddings and CLIP image "
               "embeddings (figures/tsne.png, tsne.json; needs scikit-learn)"),
    )
    metrics: ClassVar[tuple[MetricSpec, ...]] = metric_specs(300)
    default_dataset: ClassVar[str] = "synthetic-nsd"
    default_target: ClassVar[str | None] = None

    def __init__(self, options: Any = None, **values: Any) -> None:
        super().__init__(options, **values)
        o = self.options
        # draws="shared" / "per-query" names the scheme (the declared `also` values), with 30 draws
        self.scheme, self.draws = (o.draws, 30) if isinstance(o.draws, str) else (o.scheme, o.draws)
        self.way, self.chunk = o.way, o.chunk
        if self.way != 300:
            self.metrics = metric_specs(self.way)  # type: ignore[misc]  # names follow the way count
        self.notes: list[str] = []

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "scheme": self.scheme,
            "way": self.way,
            "draws": self.draws,
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
            note = (
                f"only {n} test items: {self.way}-way retrieval was run as {way}-way "
                f"(metric *_top1_{way}way, chance 1/{way})"
            )
            self.notes.append(note)
            ctx.notes.append(note)
        self.metrics = metric_specs(way)  # type: ignore[misc]  # named for the way count actually run

        results: list[MetricResult] = []
        draws: dict[str, dict[str, Any]] = {}
        bootstrap_rng = np.random.default_rng([ctx.seed, 7])
        for direction, matrix in zip(DIRECTIONS, (sim, sim.T), strict=True):
            full_name, way_name = f"{direction}_top1_full", f"{direction}_top1_{way}way"
            hits = topk_hits(matrix, np.arange(n), 1)
            interval = bootstrap_interval(hits, seed=bootstrap_rng)
            results.append(self.result(full_name, float(hits.mean()), interval.as_tuple(), chance=1.0 / n))
            # The same seed for both directions: shared draws use identical batches, as MindEye does.
            per_draw = n_way_accuracy(matrix, way, self.draws, self.scheme, np.random.default_rng(ctx.seed))
            expected = n_way_expected_hits(matrix, way)
            interval = bootstrap_interval(expected, seed=bootstrap_rng)
            # The value is the published protocol's mean over draws; the interval is over test items.
            results.append(self.result(way_name, float(per_draw.mean()), interval.as_tuple(), chance=1.0 / way))
            ctx.per_item[full_name] = hits
            ctx.per_item[way_name] = expected
            draws[direction] = {
                "accuracy_per_draw": per_draw.tolist(),
                "draws_mean": float(per_draw.mean()),
                "draws_sd": float(per_draw.std(ddof=1)) if len(per_draw) > 1 else 0.0,
                "expected_accuracy": float(expected.mean()),
            }
        self._write_draws(ctx, way, draws)
        self._write_rank_figure(ctx, sim)
        if self.options.tsne:
            self._write_tsne(ctx)
        return results

    def _write_tsne(self, ctx: EvalContext) -> None:
        """The Lite-Mind paper's t-SNE figure of this run's test embeddings (brainbench.tsne)."""
        from brainbench.tsne import tsne_map, write_tsne

        result = tsne_map(ctx.predictions, ctx.targets, ctx.stimulus_ids, seed=ctx.seed)
        title = f"test embeddings, subject {ctx.subject}, seed {ctx.seed}: brain vs CLIP image"
        ctx.artifacts.extend(write_tsne(result, ctx.output_dir, title))

    def _write_rank_figure(self, ctx: EvalContext, sim: np.ndarray) -> None:
        """Histogram of the true item's rank among all N candidates, per direction (rank 1 = top-1 hit)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = len(sim)
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
        bins = np.unique(np.geomspace(1, n + 1, num=min(n, 30)).astype(int))
        for ax, direction, matrix in zip(axes, DIRECTIONS, (sim, sim.T), strict=True):
            ranks = 1 + (matrix > np.diag(matrix)[:, None] + 1e-6).sum(axis=1)
            ax.hist(ranks, bins=bins, color="tab:blue")
            ax.axhline(n / len(bins), color="grey", linestyle="--", linewidth=1, label="uniform (chance)")
            ax.set_xscale("log")
            query, candidate = direction.split("_to_")
            ax.set_title(f"{query} -> {candidate}: top-1 {float((ranks == 1).mean()):.3f}", fontsize=10)
            ax.set_xlabel(f"rank of the true item among {n}")
        axes[0].set_ylabel("test items")
        axes[0].legend(fontsize=8)
        fig.suptitle(f"retrieval ranks, subject {ctx.subject}, seed {ctx.seed}", fontsize=11)
        fig.tight_layout()
        path = ctx.output_dir / "retrieval_ranks.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        ctx.artifacts.append(path)

    def _write_draws(self, ctx: EvalContext, way: int, draws: dict[str, dict[str, Any]]) -> None:
        """Per-draw accuracies as a run artifact: the draws' spread is Monte-Carlo noise, not a 95% interval."""
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        path = ctx.output_dir / "retrieval_draws.json"
        record = {
            "scheme": self.scheme,
            "way": way,
            "requested_way": self.way,
            "seed": ctx.seed,
            "n_items": len(ctx.predictions),
            "notes": self.notes,
            "draws_sd_meaning": "standard deviation of the accuracy over the random draws of one fixed test set "
            "(Monte-Carlo noise of the protocol; not an interval of the model's accuracy)",
            "accuracy_per_draw": {d: v["accuracy_per_draw"] for d, v in draws.items()},
            "draws": draws,
        }
        path.write_text(json.dumps(record, indent=1))
        ctx.artifacts.append(path)
