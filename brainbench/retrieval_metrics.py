"""Retrieval and identification maths shared by the tasks (pure numpy, memory-aware).

Conventions: ``sim[i, j]`` is the similarity of query ``i`` to candidate ``j``; the true candidate of query
``i`` is candidate ``i`` unless given. Ties are scored by their expectation under random tie-breaking, so a
constant prediction scores exactly chance instead of whatever ``argmax`` happens to pick first.
"""

from __future__ import annotations

import numpy as np

DRAW_SCHEMES = ("shared", "per-query")
#: Similarities closer than this are ties (float32 rounding of cosines, not a real difference).
TIE_TOL = 1e-6

def _rows(x: np.ndarray) -> np.ndarray:
    """(n, *shape) -> (n, d) float32 without copying when already float32 and contiguous."""
    x = np.asarray(x)
    return np.ascontiguousarray(x.reshape(x.shape[0], -1), dtype=np.float32)


def _row_norms(x: np.ndarray, chunk: int) -> np.ndarray:
    """Euclidean norm of each row in float64, chunked so no full-size temporary is made."""
    norms = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk].astype(np.float64)
        norms[start : start + chunk] = np.sqrt(np.einsum("ij,ij->i", block, block))
    return norms


def _row_means(x: np.ndarray, chunk: int) -> np.ndarray:
    means = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], chunk):
        means[start : start + chunk] = x[start : start + chunk].mean(axis=1, dtype=np.float64)
    return means


def _centred(norms: np.ndarray, means: np.ndarray, d: int) -> np.ndarray:
    """Norms of the centred rows; rounding residue of a constant row (relative 1e-9) counts as zero."""
    squares = norms**2 - d * means**2
    return np.sqrt(np.where(squares > 1e-9 * norms**2, squares, 0.0))


def _inverse(norms: np.ndarray) -> np.ndarray:
    return np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)


def cosine_similarity_matrix(a: np.ndarray, b: np.ndarray, chunk: int = 1024, center: bool = False) -> np.ndarray:
    """(n, *s) x (m, *s) -> (n, m) float32 cosine similarities of the flattened rows.

    The raw dot products come straight from BLAS into the output, ``chunk`` rows at a time, and are
    scaled by the row norms afterwards: no normalised copy of either input is made (982 x 197,376
    float32 inputs need only the (n, m) result beyond themselves). ``center=True`` centres each row
    first (Pearson correlation): a_c . b_c = a . b - d * mean_a * mean_b. Zero-norm rows give 0.
    """
    a, b = _rows(a), _rows(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    d = a.shape[1]
    a_norms, b_norms = _row_norms(a, chunk), _row_norms(b, chunk)
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.float32)
    for start in range(0, a.shape[0], chunk):
        np.matmul(a[start : start + chunk], b.T, out=out[start : start + chunk])
    if center:
        a_means, b_means = _row_means(a, chunk), _row_means(b, chunk)
        for start in range(0, a.shape[0], chunk):
            out[start : start + chunk] -= (d * a_means[start : start + chunk, None] * b_means[None, :]).astype(
                np.float32
            )
        a_norms, b_norms = _centred(a_norms, a_means, d), _centred(b_norms, b_means, d)
    out *= _inverse(a_norms).astype(np.float32)[:, None]
    out *= _inverse(b_norms).astype(np.float32)[None, :]
    return out


def topk_hits(scores: np.ndarray, true_cols: np.ndarray, k: int = 1, tie_tol: float = TIE_TOL) -> np.ndarray:
    """Per row, the probability that the true column ranks within the top ``k`` (ties broken at random).

    Scores within ``tie_tol`` of the true score count as ties: identical inputs can come out of a float32
    matrix product a few ulps apart, and that noise must not decide a ranking.
    """
    scores = np.asarray(scores)
    true_cols = np.asarray(true_cols, dtype=np.int64)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    true_scores = scores[np.arange(len(scores)), true_cols][:, None]
    greater = (scores > true_scores + tie_tol).sum(axis=1)
    tied_others = (np.abs(scores - true_scores) <= tie_tol).sum(axis=1) - 1
    # The true item lands uniformly among positions greater+1 .. greater+tied_others+1.
    return np.clip((k - greater) / (tied_others + 1.0), 0.0, 1.0)


def topk_accuracy(sim: np.ndarray, k: int = 1) -> float:
    """Fraction of queries (rows) whose true candidate (the diagonal) ranks within the top ``k``."""
    sim = np.asarray(sim)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"expected a square similarity matrix, got shape {sim.shape}")
    return float(topk_hits(sim, np.arange(len(sim)), k).mean())


def n_way_accuracy(
    sim: np.ndarray,
    way: int = 300,
    draws: int = 30,
    scheme: str = "shared",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Top-1 accuracy among ``way`` candidates, once per draw; returns the (draws,) accuracies.

    ``shared`` (MindEye): each draw picks ``way`` test items; each of them is a query against the same
    ``way`` candidates. ``per-query`` (Lite-Mind): each draw gives every query its true item plus
    ``way - 1`` distractors drawn for that query alone. Two calls with equally seeded generators make the
    same draws, so both retrieval directions can share them.
    """
    sim = np.asarray(sim)
    n = sim.shape[0]
    if sim.ndim != 2 or sim.shape[1] != n:
        raise ValueError(f"expected a square similarity matrix, got shape {sim.shape}")
    if scheme not in DRAW_SCHEMES:
        raise ValueError(f"draw scheme must be one of {', '.join(DRAW_SCHEMES)}, got {scheme!r}")
    if not 2 <= way <= n:
        raise ValueError(f"way must be between 2 and the number of items ({n}), got {way}")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    rng = rng if rng is not None else np.random.default_rng(0)
    accuracies = np.empty(draws, dtype=np.float64)
    for draw in range(draws):
        if scheme == "shared":
            items = rng.choice(n, size=way, replace=False)
            accuracies[draw] = topk_accuracy(sim[np.ix_(items, items)], 1)
        else:
            # A uniformly random subset of the n-1 others per query: the way-1 smallest of random keys.
            keys = rng.random((n, n - 1))
            picks = np.argpartition(keys, way - 2, axis=1)[:, : way - 1]
            picks += picks >= np.arange(n)[:, None]  # skip the query's own index
            candidates = np.concatenate([np.arange(n)[:, None], picks], axis=1)
            scores = np.take_along_axis(sim, candidates, axis=1)
            accuracies[draw] = topk_hits(scores, np.zeros(n, dtype=np.int64), 1).mean()
    return accuracies


def n_way_expected_hits(sim: np.ndarray, way: int, tie_tol: float = TIE_TOL) -> np.ndarray:
    """Per query (row), the exact probability of a top-1 hit among its true item and ``way - 1`` others drawn
    uniformly without replacement from the ``n - 1`` others (ties broken at random).

    This is what ``n_way_accuracy`` estimates by Monte Carlo, per item and without draw noise: in both draw
    schemes an item's distractors, given that it is a query, are a uniform ``way - 1`` subset of the others.
    With ``g`` others scoring above the true item and ``t`` tied with it, a hit needs no "above" drawn, and
    ``j`` tied drawn leaves a 1/(j+1) chance: sum_j C(t, j) C(n-1-g-t, way-1-j) / C(n-1, way-1) / (j + 1).
    """
    sim = np.asarray(sim)
    n = sim.shape[0]
    if sim.ndim != 2 or sim.shape[1] != n:
        raise ValueError(f"expected a square similarity matrix, got shape {sim.shape}")
    if not 2 <= way <= n:
        raise ValueError(f"way must be between 2 and the number of items ({n}), got {way}")
    true_scores = np.diag(sim)[:, None]
    above = (sim > true_scores + tie_tol).sum(axis=1)
    tied = (np.abs(sim - true_scores) <= tie_tol).sum(axis=1) - 1
    others, k = n - 1, way - 1
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])

    def log_choose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ok = (b >= 0) & (b <= a)
        safe_a, safe_b = np.where(ok, a, 0), np.where(ok, b, 0)
        return np.where(ok, log_fact[safe_a] - log_fact[safe_b] - log_fact[safe_a - safe_b], -np.inf)

    lower = others - above - tied
    total = np.zeros(n, dtype=np.float64)
    for j in range(int(min(tied.max(initial=0), k)) + 1):
        terms = log_choose(tied, np.full(n, j)) + log_choose(lower, k - j) - log_choose(np.array(others), k)
        total += np.exp(terms) / (j + 1)
    return np.clip(total, 0.0, 1.0)


def two_way_identification(pred: np.ndarray, true: np.ndarray, per_item: bool = False) -> float | np.ndarray:
    """The papers' 2-way identification: for each prediction, the fraction of the other ground-truth items
    whose Pearson correlation with it is lower than that of its own ground truth (ties count one half)."""
    n = len(pred)
    if n < 2 or len(true) != n:
        raise ValueError(f"need two or more paired items, got {len(pred)} predictions and {len(true)} targets")
    corr = cosine_similarity_matrix(pred, true, center=True)
    own = np.diag(corr)[:, None]
    lower = (corr < own - TIE_TOL).sum(axis=1) + 0.5 * ((np.abs(corr - own) <= TIE_TOL).sum(axis=1) - 1)
    scores = lower / (n - 1)
    return scores if per_item else float(scores.mean())
