"""Task ``laion``: retrieve gallery images with each test prediction and score what was retrieved.

The gallery is a local index (``index=PATH``), a clip-retrieval back end (``remote=URL``), or by default a
simulated LAION-like gallery for the run's dataset, built once under ``brainbench.paths.home()``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from brainbench.constants import EMBEDDING_TOKENS
from brainbench.errors import DataError
from brainbench.interfaces import Dataset, EvalContext, MetricResult, MetricSpec, Task
from brainbench.options import Option, Options
from brainbench.priors import NO_PRIOR
from brainbench_laion.gallery import SearchResult, normalise, stimulus_of
from brainbench_laion.image_metrics import FEATURE_METRICS
from brainbench_laion.prior_stage import build_prior, parse_prior_options, prior_queries

POOLINGS = ("cls", "mean")
RERANKS = ("auto", "none", "tokens")

METRICS = (
    MetricSpec("query_cosine", True, "cosine of the query (the prediction, or the prior's sample) to the ground truth"),
    MetricSpec("candidate_cosine", True, "cosine of the chosen candidate's embedding to the ground truth's"),
    MetricSpec("clip_2way", True, "2-way identification of chosen candidates vs ground truths in CLIP space"),
    MetricSpec("category_agreement", True, "fraction of chosen candidates in the ground truth's category"),
    MetricSpec("gt_top1", True, "fraction of queries whose chosen candidate is the ground-truth image"),
    MetricSpec("gt_recall_at_k", True, "fraction of queries with the ground-truth image among the top k"),
    MetricSpec("pixcorr", True, "pixel correlation of chosen candidate and stimulus images"),
    MetricSpec("ssim", True, "structural similarity of chosen candidate and stimulus images"),
    # AlexNet(2)/(5) and Inception 2-way (higher is better); EfficientNet-B1 and SwAV distances (lower).
    *(MetricSpec(m.name, m.higher_is_better, m.description) for m in FEATURE_METRICS),
)


def info(message: str) -> None:
    """One line for the user on stderr (the run's progress display owns stdout)."""
    sys.stderr.write(f"laion: {message}\n")


def pool(array: np.ndarray, pooling: str) -> np.ndarray:
    """(n, d) stays; (n, tokens, d) -> the CLS token (``cls``) or the token mean (``mean``)."""
    if array.ndim == 2:
        return array
    if array.ndim != 3:
        raise DataError(f"laion: predictions must be (n, d) or (n, tokens, d), got {array.shape}")
    return array[:, 0] if pooling == "cls" else array.mean(axis=1)


def default_gallery_dir(dataset: Dataset, size: int, seed: int, include_test: bool = False) -> Path:
    from brainbench.paths import home

    key = hashlib.sha256(json.dumps(dataset.describe(), sort_keys=True, default=str).encode()).hexdigest()[
        :10
    ]
    test = "with-test" if include_test else "without-test"
    return home() / "laion" / f"{dataset.name}-{size}-seed{seed}-{test}-{key}"


def ensure_default_gallery(dataset: Dataset, size: int, seed: int, include_test: bool = False) -> Path:
    """Simulated gallery + its index for ``dataset``, built on first use and reused afterwards; the test
    stimuli are in it only when ``include_test`` (LAION-5B does not hold NSD's test images)."""
    from brainbench.locks import building_directory, hold
    from brainbench_laion.index import MANIFEST, build_index
    from brainbench_laion.simulate import simulate_for_dataset

    root = default_gallery_dir(dataset, size, seed, include_test)
    index_dir = root / "index"
    if (index_dir / MANIFEST).exists():
        return index_dir
    # One process builds (the others wait on the lock, then find it); the index folder appears whole, by a
    # rename, only once the gallery it points to is complete: its presence marks the gallery built.
    with hold(root.with_name(root.name + ".lock"), f"the simulated gallery {root}", patience=5.0, say=info):
        if (index_dir / MANIFEST).exists():
            return index_dir
        info(f"building a simulated {size}-item gallery for {dataset.name} under {root} (once)")
        if (root / "gallery").exists():  # left by a build that was killed: no index points to it
            shutil.rmtree(root / "gallery")
        simulate_for_dataset(dataset, size, root / "gallery", include_test=include_test, seed=seed)
        with building_directory(index_dir) as staging:
            build_index(root / "gallery", staging, "auto", seed=seed, progress=False)
    return index_dir


class LaionTask(Task):
    """LAION-style retrieval: top-k gallery candidates per test prediction, scored against the ground truth.

    Options: ``index`` (a gallery index folder or file), ``remote`` (clip-retrieval URL) with ``indice_name``,
    ``k`` (16), ``pooling`` of token predictions (``cls`` | ``mean``), ``rerank`` (``auto``: with token
    predictions and candidate token embeddings at hand, re-rank the top k by flattened-token cosine as
    MindEye does; ``none``; ``tokens``: require it), ``nprobe`` and ``refine`` (10: the IVF-PQ top
    k*refine are re-scored exactly from the source shards when they are at hand) for an approximate index,
    ``gallery_size`` (20000) and ``gallery_seed`` (0) of the default simulated gallery, which holds the test
    stimuli only with ``include_test_images`` (false, as LAION-5B), ``figure_rows`` (8). ``prior`` (``none``)
    names a registered prior (``brainbench list priors``) trained on the training trials' predictions whose
    samples query the gallery instead of the predictions; ``prior_opts`` sets its options.
    """

    name: ClassVar[str] = "laion"
    declared_options: ClassVar[Options] = Options(
        Option("index", str, None, "a gallery index folder or file (default: a simulated gallery)", nullable=True),
        Option("remote", str, None, "clip-retrieval back end URL, e.g. http://127.0.0.1:1234", nullable=True),
        Option("indice_name", str, None, "index of the remote back end (default: its only one)", nullable=True),
        Option("k", int, 16, "candidates retrieved per prediction", minimum=1, maximum=10_000),
        Option("pooling", str, "cls", "token predictions pooled for the search", choices=POOLINGS),
        Option("rerank", str, "auto", "re-rank the top k by flattened-token cosine", choices=RERANKS),
        Option("nprobe", int, None, "IVF cells probed (approximate index)", minimum=1, maximum=2**20, nullable=True),
        Option("refine", int, 10, "IVF-PQ top k x refine re-scored exactly", minimum=1, maximum=1000),
        # its disk is checked against the free space before a run (LaionTask.check_ready)
        Option("gallery_size", int, 20_000, "items of the default simulated gallery", minimum=1, maximum=10**10),
        Option("gallery_seed", int, 0, "seed of the default simulated gallery", minimum=0, maximum=2**32 - 1),
        Option("gt_in_gallery", bool, None, "whether the test stimuli are in the gallery (default: detect)",
               nullable=True),
        Option("figure_rows", int, 8, "rows of the retrieval figure", minimum=0),
        Option("include_test_images", bool, False, "the default simulated gallery holds the test stimuli (LAION-5B "
               "does not hold NSD's; true makes gt_top1/gt_recall_at_k measurable)"),
        Option("prior", str, NO_PRIOR, "prior whose samples query the gallery (brainbench list priors); none: the "
               "prediction itself"),
        Option("prior_opts", list, None, "options of the prior as KEY=VALUE items, e.g. depth=2,epochs=5",
               nullable=True),
    )
    metrics: ClassVar[tuple[MetricSpec, ...]] = METRICS
    default_dataset: ClassVar[str] = "synthetic-nsd"
    default_target: ClassVar[str | None] = "synthetic-clip"

    def __init__(self, options: Any = None, **values: Any) -> None:
        super().__init__(options, **values)
        o = self.options
        if o.index and o.remote:  # each is valid alone: the pair is what this task refuses
            raise ValueError("laion: give index=PATH or remote=URL, not both")
        self.k, self.pooling, self.rerank = o.k, o.pooling, o.rerank
        self.prior_name = o.prior or NO_PRIOR
        self.prior_options = parse_prior_options(list(o.prior_opts) if o.prior_opts else None)
        if self.prior_name == NO_PRIOR and self.prior_options:
            raise ValueError("laion: prior_opts given without a prior (add --task-opt prior=NAME)")
        if self.prior_name != NO_PRIOR:  # an unknown prior or option stops the run before it trains anything
            build_prior(self.prior_name, self.prior_options, "reference")
        self._prior_record: dict[str, Any] | None = None
        self.notes: list[str] = []
        self._gallery_info: dict[str, Any] = {}
        self._remote_gallery: Any = None

    # ------------------------------------------------------------------------------------------- gallery
    def open_gallery(self, dataset: Dataset, seed: int) -> Any:
        if self.options.remote:
            return self._remote()
        from brainbench_laion.index import LocalIndex

        path = self.options.index
        path = (
            Path(path)
            if path
            else ensure_default_gallery(
                dataset, self.options.gallery_size, seed, self.options.include_test_images
            )
        )
        gallery = LocalIndex.open(path)
        if self.options.nprobe:
            gallery.nprobe = self.options.nprobe
        gallery.refine = self.options.refine
        return gallery

    def _remote(self) -> Any:
        """The remote back end, its index settled once (named, else its only one)."""
        if self._remote_gallery is None:
            from brainbench_laion.remote import RemoteGallery

            self._remote_gallery = RemoteGallery(self.options.remote, self.options.indice_name)
        return self._remote_gallery

    def _check_gallery_disk(self) -> None:
        """The default simulated gallery (no index, no remote) must fit on the disk it will be written to."""
        if self.options.remote or self.options.index:
            return
        from brainbench.paths import home
        from brainbench.resources import GALLERY_BYTES_PER_ITEM, check_disk

        size = self.options.gallery_size
        check_disk(home() / "laion", size * GALLERY_BYTES_PER_ITEM,
                   f"the simulated {size:,}-item gallery (--task-opt gallery_size={size})", "gallery_size")

    def check_ready(self) -> None:
        """Before training: a remote back end must answer and serve the index asked for (or exactly one)."""
        self._check_gallery_disk()
        if self.options.remote:
            self._remote().check()
        if self.prior_name != NO_PRIOR:
            build_prior(self.prior_name, self.prior_options, "reference")[0].check_ready()

    # ---------------------------------------------------------------------------------------- evaluation
    def evaluate(self, ctx: EvalContext) -> list[MetricResult]:
        self.notes = []
        queries = pool(np.asarray(ctx.predictions, dtype=np.float32), self.pooling)
        truths = normalise(pool(np.asarray(ctx.targets, dtype=np.float32), self.pooling))
        self._prior_record = None
        if self.prior_name != NO_PRIOR:
            queries, self._prior_record = prior_queries(
                ctx, queries, self.prior_name, self.prior_options, pool, self.pooling, info
            )
            self._note(f"queries are prior {self.prior_name!r}'s samples ({self._prior_record['recipe_note']})")
        # One gallery for every run seed (a seed-specific gallery would rebuild per matrix cell).
        gallery = self.open_gallery(ctx.dataset, self.options.gallery_seed)
        self._gallery_info = gallery.describe()
        found = gallery.search(queries, self.k)
        vectors = gallery.vectors(found.ids) if hasattr(gallery, "vectors") else None
        chosen = self._choose(ctx, found)
        rows = np.arange(len(chosen))
        results: list[MetricResult] = []
        if vectors is not None:
            picked = vectors[rows, chosen]
            results.append(self.result("candidate_cosine", float(np.mean(np.sum(picked * truths, axis=1)))))
            if len(picked) >= 2:
                results.append(self.result("clip_2way", _two_way(picked, truths), chance=0.5))
        else:
            self._note(
                f"gallery {gallery.name} returns no candidate embeddings: candidate_cosine and "
                "clip_2way skipped"
            )
        picked_meta = [
            found.metadata[i][c] if found.metadata[i] else {} for i, c in zip(rows, chosen, strict=True)
        ]
        results += self._category(ctx, picked_meta)
        results += self._recall(ctx, found, picked_meta)
        results += self._images(ctx, picked_meta)
        self._write(ctx, gallery, found, chosen)
        if not results:  # exit status 0 with no numbers would read as success
            raise DataError(
                f"laion: none of its metrics could be computed with gallery {gallery.name}: "
                + "; ".join(self.notes)
            )
        query_cosine = float(np.mean(np.sum(normalise(queries) * truths, axis=1)))
        return [self.result("query_cosine", query_cosine), *results]

    def _note(self, message: str) -> None:
        self.notes.append(message)
        info(message)

    def _choose(self, ctx: EvalContext, found: SearchResult) -> np.ndarray:
        """Column of the chosen candidate per query: the best by pooled score, or by token re-ranking."""
        chosen = np.zeros(len(found.ids), dtype=np.int64)
        if self.rerank == "none" or ctx.predictions.ndim != 3:
            if self.rerank == "tokens":
                raise DataError("laion rerank=tokens needs token predictions (n, tokens, d)")
            return chosen
        tokens = ctx.dataset.stored_embeddings(EMBEDDING_TOKENS)
        if tokens is None or tuple(tokens.shape[1:]) != tuple(ctx.predictions.shape[1:]):
            if self.rerank == "tokens":
                raise DataError(
                    f"laion rerank=tokens: dataset {ctx.dataset.name!r} stores no candidate tokens"
                )
            self._note("no candidate token embeddings: candidates ranked by the pooled prediction only")
            return chosen
        from brainbench_laion.simulate import take_rows

        reranked = 0
        for row, items in enumerate(found.metadata):
            sids = np.array([stimulus_of(item) for item in items])
            if len(sids) == 0 or (sids < 0).any():
                continue  # re-rank only when every candidate's tokens are known; else keep the pooled order
            cand = take_rows(tokens, sids).reshape(len(sids), -1)
            pred = ctx.predictions[row].reshape(-1)
            scores = normalise(cand) @ (pred / max(float(np.linalg.norm(pred)), 1e-12))
            chosen[row] = int(np.argmax(scores))
            reranked += 1
        self._note(
            f"token re-ranking applied to {reranked} of {len(chosen)} queries (the rest: no candidate tokens)"
        )
        return chosen

    def _category(self, ctx: EvalContext, picked: list[dict]) -> list[MetricResult]:
        truth = ctx.dataset.categories(ctx.stimulus_ids)
        if truth is None or not picked or any("category" not in item for item in picked):
            why = "the dataset has no categories" if truth is None else "gallery items carry no category"
            self._note(f"category_agreement skipped: {why}")
            return []
        got = np.array([int(item["category"]) for item in picked])
        truth = np.asarray(truth, dtype=np.int64)
        freq = np.bincount(truth) / len(truth)
        ctx.per_item["category_agreement"] = (got == truth).astype(np.float64)  # for paired comparisons
        return [
            self.result("category_agreement", float(np.mean(got == truth)), chance=float(np.sum(freq**2)))
        ]

    def _recall(self, ctx: EvalContext, found: SearchResult, picked: list[dict]) -> list[MetricResult]:
        in_gallery = self.options.gt_in_gallery
        if in_gallery is None and "included_stimuli" in self._gallery_info:
            in_gallery = self._gallery_info["included_stimuli"] > 0
        if in_gallery is None:  # unknown (e.g. remote): the stimuli are there if any of them was retrieved
            in_gallery = any(stimulus_of(item) >= 0 for items in found.metadata for item in items)
        if not in_gallery:
            self._note(
                "gt_top1 and gt_recall_at_k skipped: no test stimulus is in the gallery (none was retrieved, or "
                "gt_in_gallery=false)"
            )
            return []
        ids = ctx.stimulus_ids
        top1_hits = np.array([stimulus_of(item) == sid for item, sid in zip(picked, ids, strict=True)], float)
        recall_hits = np.array(
            [
                any(stimulus_of(item) == sid for item in items)
                for items, sid in zip(found.metadata, ids, strict=True)
            ],
            float,
        )
        ctx.per_item.update(gt_top1=top1_hits, gt_recall_at_k=recall_hits)  # for paired comparisons
        top1, hits = top1_hits.mean(), recall_hits.mean()
        return [self.result("gt_top1", float(top1)), self.result("gt_recall_at_k", float(hits))]

    def _images(self, ctx: EvalContext, picked: list[dict]) -> list[MetricResult]:
        """PixCorr, SSIM and the feature-network metrics whose weights are on disk, when every chosen
        candidate's image is at hand (a dataset stimulus)."""
        sids = np.array([stimulus_of(item) for item in picked])
        truth_images = ctx.dataset.images(ctx.stimulus_ids) if len(sids) and (sids >= 0).all() else None
        if truth_images is None:
            self._note(
                "candidate images not available locally: image metrics (PixCorr, SSIM, AlexNet(2)/(5), "
                "Inception, EfficientNet-B1, SwAV) skipped"
            )
            return []
        from brainbench_laion.image_metrics import feature_metrics, pixcorr, ssim

        candidate_images = ctx.dataset.images(sids)
        out = [
            self.result("pixcorr", pixcorr(candidate_images, truth_images)),
            self.result("ssim", ssim(candidate_images, truth_images)),
        ]
        features, missing = feature_metrics(candidate_images, truth_images)
        out += [
            self.result(name, value, chance=0.5 if self.spec(name).higher_is_better else None)
            for name, value in features.items()
        ]
        if missing:
            skipped = [m.name for m in FEATURE_METRICS if m.network in missing]
            self._note(
                f"feature image metrics {', '.join(skipped)} skipped: torchvision weights not on disk for "
                f"{', '.join(missing)} (looked in torch.hub's checkpoints folder; nothing is downloaded)"
            )
        return out

    # ------------------------------------------------------------------------------------------ artifacts
    def _write(self, ctx: EvalContext, gallery: Any, found: SearchResult, chosen: np.ndarray) -> None:
        from brainbench_laion.figure import retrieval_grid

        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        table = ctx.output_dir / "laion_retrieval.json"
        record = {
            "gallery": gallery.describe(),
            "k": self.k,
            "pooling": self.pooling,
            "prior": self._prior_record,  # None: the predictions queried the gallery themselves
            "notes": self.notes,
            "queries": [
                {
                    "stimulus_id": int(sid),
                    "chosen": int(c),
                    "candidates": [
                        {**_jsonable(m), "score": float(s)} for m, s in zip(meta, scores, strict=False)
                    ],
                }
                for sid, c, meta, scores in zip(
                    ctx.stimulus_ids, chosen, found.metadata, found.scores, strict=True
                )
            ],
        }
        table.write_text(json.dumps(record, indent=1))
        ctx.artifacts.append(table)
        figure = retrieval_grid(
            ctx,
            found,
            chosen,
            ctx.output_dir / "laion_retrieval.png",
            rows=self.options.figure_rows or 8,  # 0: the default 8, as before
        )
        ctx.artifacts.append(figure)


def _jsonable(item: dict) -> dict:
    return {key: (value.item() if isinstance(value, np.generic) else value) for key, value in item.items()}


def _two_way(candidates: np.ndarray, truths: np.ndarray) -> float:
    from brainbench.retrieval_metrics import two_way_identification

    return float(two_way_identification(candidates, truths))
