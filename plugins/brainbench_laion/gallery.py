"""The search interface shared by every gallery back end (local FAISS index, remote clip-retrieval)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

#: The url a simulated gallery gives an item that shows a dataset stimulus (brainbench_laion.simulate).
STIMULUS_URL = re.compile(r"^synthetic://[^/]+/stimulus/(\d+)$")


@dataclass
class SearchResult:
    """Top-k answers for a batch of queries, best first; id -1 marks "fewer than k results"."""

    ids: np.ndarray  # (n, k) int64 global gallery row ids
    scores: np.ndarray  # (n, k) float32 inner products of normalised vectors (cosine)
    metadata: list[list[dict]]  # per query, per candidate: {"id", "url", "caption", ...}


class Gallery(Protocol):
    name: str

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        """(n, d) queries (normalised here) -> the k nearest gallery items of each."""
        ...

    def describe(self) -> dict: ...


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as a contiguous float32 copy (zero rows stay zero)."""
    out = np.array(vectors, dtype=np.float32, copy=True, order="C")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out /= np.maximum(norms, 1e-12)
    return out


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard (scores, global ids) of shape (n, k_i) into the overall top-k by score."""
    scores = np.concatenate([np.where(ids < 0, -np.inf, s) for s, ids in parts], axis=1)
    ids = np.concatenate([ids for _, ids in parts], axis=1)
    k = min(k, scores.shape[1])
    top = (
        np.argpartition(-scores, k - 1, axis=1)[:, :k]
        if k < scores.shape[1]
        else np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
    )
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    out_scores = np.take_along_axis(scores, top, axis=1)
    out_ids = np.take_along_axis(ids, top, axis=1)
    out_ids = np.where(np.isfinite(out_scores), out_ids, -1)
    return out_ids.astype(np.int64), np.nan_to_num(out_scores, neginf=-1.0).astype(np.float32)


def stimulus_of(item: dict) -> int:
    """The dataset stimulus id a gallery item shows, or -1 (distractor / unknown)."""
    sid = item.get("stimulus_id")
    if sid is not None and int(sid) >= 0:
        return int(sid)
    match = STIMULUS_URL.match(str(item.get("url", "")))
    return int(match.group(1)) if match else -1
