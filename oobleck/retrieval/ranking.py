"""Ranking helpers shared by retrievers: deterministic top-k, and two ways to fuse ranked lists.

Equal scores go to the passage earlier in the corpus, so a query always returns the same
passages in the same order, whatever numpy's partitioning does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from oobleck.retrieval.passage import Passage

if TYPE_CHECKING:
    import numpy as np

__all__ = ["convex_fusion", "reciprocal_rank_fusion", "top_k"]

_DECIMALS = 6  # scores equal to this many places are ties: float noise must not reorder passages


def top_k(scores: np.ndarray, k: int, *, positive_only: bool = False) -> list[int]:
    """Indices of the ``k`` highest scores, best first; ties by index. ``positive_only`` drops scores <= 0."""
    import numpy as np

    n = scores.shape[0]
    if n == 0 or k <= 0:
        return []
    if k < n:
        # Everything within rounding distance of the k-th best (so every tie is in), then an exact ordered sort of those.
        kth = np.partition(scores, n - k)[n - k]
        candidates = np.nonzero(scores >= kth - 10.0**-_DECIMALS)[0]
    else:
        candidates = np.arange(n)
    rounded = np.round(scores[candidates].astype(np.float64), _DECIMALS)
    keep = np.lexsort((candidates, -rounded))[:k]
    order, values = candidates[keep], rounded[keep]
    if positive_only:
        order = order[values > 0]
    return [int(i) for i in order]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Passage]], k: int, *, rrf_k: float = 60.0,
                           weights: Sequence[float] | None = None) -> list[Passage]:  # fmt: skip
    """Fuse ranked lists by ``sum(weight / (rrf_k + rank))`` over the lists a passage (by id) appears in.

    Ties go to the passage with the better best rank, then to the earlier list. The fused
    score is the passage's score.
    """
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    shares = [[weight / (rrf_k + rank) for rank in range(1, len(ranking) + 1)] for ranking, weight in zip(rankings, weights, strict=True)]
    return _fused(rankings, shares, k)


def convex_fusion(rankings: Sequence[Sequence[Passage]], k: int, *, weights: Sequence[float] | None = None) -> list[Passage]:
    """Fuse ranked lists by a weighted mean of min-max normalised scores (0 where a list lacks the passage).

    Each list's scores are rescaled to [0, 1] (its best passage 1, its last 0; a list whose
    scores are all equal counts 1 for each), so BM25 and cosine scores become comparable
    without calibration. Unlike rank fusion this keeps how far apart a list's scores are:
    a passage far ahead in one list stays ahead, and passages a list scores equally stay
    equal (its order among them is arbitrary, so it must not count). A list with unscored
    passages (a function retriever returning texts) is scored by position instead. Ties go to
    the better best rank, then the earlier list. The fused score (in [0, 1]) is the passage's score.
    """
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    total = sum(weights) or 1.0
    shares = []
    for ranking, weight in zip(rankings, weights, strict=True):
        if any(p.score is None for p in ranking):
            scores = [float(len(ranking) - i) for i in range(len(ranking))]
        else:
            scores = [float(p.score) for p in ranking]  # type: ignore[arg-type]
        low, high = (min(scores), max(scores)) if scores else (0.0, 0.0)
        shares.append([weight * ((score - low) / (high - low) if high > low else 1.0) / total for score in scores])
    return _fused(rankings, shares, k)


def _fused(rankings: Sequence[Sequence[Passage]], shares: Sequence[Sequence[float]], k: int) -> list[Passage]:
    """The top ``k`` passages (by id) by the sum of their shares over the lists; ties to the better best rank, then the earlier list."""
    fused: dict[str, float] = {}
    best: dict[str, tuple[int, int]] = {}
    first: dict[str, Passage] = {}
    for list_index, (ranking, list_shares) in enumerate(zip(rankings, shares, strict=True)):
        for rank, (passage, share) in enumerate(zip(ranking, list_shares, strict=True), 1):
            fused[passage.id] = fused.get(passage.id, 0.0) + share
            best[passage.id] = min(best.get(passage.id, (rank, list_index)), (rank, list_index))
            first.setdefault(passage.id, passage)
    order = sorted(fused, key=lambda pid: (-round(fused[pid], 12), best[pid]))
    return [first[pid].with_score(fused[pid]) for pid in order[:k]]
