"""Mean cosine similarity between each prediction and its true embedding."""

from __future__ import annotations

import numpy as np

from brainbench.interfaces import EvalContext, MetricResult, MetricSpec, Task
from brainbench.options import Options


class MeanCosineTask(Task):
    declared_options = Options()  # no options: any given is an error
    name = "mean-cosine"
    metrics = (MetricSpec("mean_cosine", higher_is_better=True, description="mean cosine(prediction, truth)"),)

    def evaluate(self, ctx: EvalContext) -> list[MetricResult]:
        p = ctx.predictions.reshape(len(ctx.predictions), -1)
        t = ctx.targets.reshape(len(ctx.targets), -1)
        cos = (p * t).sum(1) / np.maximum(np.linalg.norm(p, axis=1) * np.linalg.norm(t, axis=1), 1e-8)
        half = 1.96 * cos.std(ddof=1) / np.sqrt(len(cos)) if len(cos) > 1 else 0.0
        return [self.result("mean_cosine", cos.mean(), interval=(cos.mean() - half, cos.mean() + half))]
