"""Is a compiled program really better? A paired bootstrap interval of the held-out gain.

A compile that scores 3 points higher on 50 examples may have found nothing: the same
examples, scored again by a slightly different program, move by that much by chance. Both
programs run on the same held-out examples, so the honest question is about the per-example
differences. Resampling the examples (with replacement) and recomputing the mean difference
each time shows how far the gain would move on other examples like these; the central
``confidence`` share of those means is the interval. The gain is called significant when the
whole interval lies above 0.

This is the percentile bootstrap: it needs no normality assumption, but with very few
examples (a dozen or less) it gives intervals that are too narrow, so trust it only on
held-out sets of a reasonable size.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from oobleck.errors import ConfigurationError, DataError

if TYPE_CHECKING:
    from oobleck.evaluate.evaluate import EvaluationResult

__all__ = ["GainInterval", "compare", "paired_bootstrap"]

# Resampled index matrices are built in chunks of at most this many cells, so a large held-out
# set (10,000 examples x 10,000 resamples) costs a few MB at a time rather than gigabytes.
_CHUNK_CELLS = 2_000_000


@dataclass(frozen=True)
class GainInterval:
    """Baseline and compiled mean scores, the gain, and its bootstrap interval ``[low, high]``.

    ``p_value`` is the one-sided share of resamples whose gain is ``<= 0``: roughly, how often
    examples like these would show no gain at all. ``significant`` means ``low > 0``.
    """

    baseline: float
    compiled: float
    gain: float
    low: float
    high: float
    confidence: float
    n: int
    p_value: float
    resamples: int = 10_000
    seed: int | None = 0

    @property
    def significant(self) -> bool:
        return self.low > 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GainInterval:
        """The interval ``to_dict`` wrote (``significant`` is recomputed, not read)."""
        try:
            return cls(
                baseline=float(data["baseline"]), compiled=float(data["compiled"]), gain=float(data["gain"]),
                low=float(data["low"]), high=float(data["high"]), confidence=float(data["confidence"]),
                n=int(data["n"]), p_value=float(data["p_value"]), resamples=int(data.get("resamples", 10_000)),
                seed=data.get("seed"),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"not a gain interval record ({type(exc).__name__}: {exc}): {data!r}") from None

    def describe(self, scale: float = 100.0) -> str:
        """One line for people, e.g. ``+12.0 points (95% CI +4.0 to +20.0, n=100): significant``.

        Scores are fractions (as ``Evaluate`` gives them), so ``scale=100`` shows percentage
        points; pass ``scale=1`` for scores already on a 0-100 scale.
        """
        head = f"{_points(self.gain, scale)} points ({self.confidence * 100:g}% CI {_points(self.low, scale)} to {_points(self.high, scale)}, n={self.n})"
        if self.significant:
            return f"{head}: significant"
        if self.high < 0:
            return f"{head}: not significant: the compiled program scores lower (the whole interval is below 0)"
        return f"{head}: not significant: the interval includes 0"


def _points(value: float, scale: float) -> str:
    return f"{round(value * scale, 1) + 0.0:+.1f}"  # + 0.0 turns a rounded -0.0 into 0.0


def paired_bootstrap(baseline_scores: Sequence[float], compiled_scores: Sequence[float], *, confidence: float = 0.95,
                     resamples: int = 10_000, seed: int | None = 0) -> GainInterval:  # fmt: skip
    """The gain of ``compiled`` over ``baseline`` with a paired bootstrap ``confidence`` interval.

    Both lists hold per-example scores on the same held-out examples in the same order. The
    same ``seed`` always gives the same interval.
    """
    import numpy as np

    base = _scores("baseline", baseline_scores)
    comp = _scores("compiled", compiled_scores)
    if len(base) != len(comp):
        raise DataError(f"paired scores must cover the same examples: baseline has {len(base)} scores, compiled has {len(comp)}")
    if not base:
        raise DataError("paired_bootstrap needs at least one example; both score lists are empty")
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0 < confidence < 1:
        raise ConfigurationError(f"confidence must be a fraction between 0 and 1 (e.g. 0.95), not {confidence!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, numbers.Integral) or resamples < 1:
        raise ConfigurationError(f"resamples must be a positive integer, not {resamples!r}")

    diffs = np.asarray(comp, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    n = len(diffs)
    rng = np.random.default_rng(seed)
    means = np.empty(int(resamples), dtype=np.float64)
    rows = max(1, _CHUNK_CELLS // n)
    for start in range(0, int(resamples), rows):
        stop = min(int(resamples), start + rows)
        means[start:stop] = diffs[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = (1.0 - float(confidence)) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return GainInterval(
        baseline=float(np.mean(base)), compiled=float(np.mean(comp)), gain=float(diffs.mean()),
        low=float(low), high=float(high), confidence=float(confidence), n=n,
        p_value=float(np.mean(means <= 0.0)), resamples=int(resamples), seed=seed,
    )  # fmt: skip


def _scores(name: str, values: Sequence[float]) -> list[float]:
    try:
        scores = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} scores must be numbers: {exc}") from None
    for i, score in enumerate(scores):
        if not math.isfinite(score):
            raise DataError(f"{name} score {i} is {score}; every score must be a finite number")
    return scores


def compare(baseline: EvaluationResult, compiled: EvaluationResult, **kw: Any) -> GainInterval:
    """``paired_bootstrap`` over two ``Evaluate`` results on the same dev set.

    Results are paired by devset position, so both runs must cover the same examples in the
    same order (an evaluation stopped by ``max_errors`` holds fewer results and is refused).
    ``kw`` goes to ``paired_bootstrap``.
    """
    left, right = baseline.results, compiled.results
    if len(left) != len(right):
        raise DataError(f"cannot pair evaluations of different sizes: baseline has {len(left)} results, compiled has {len(right)}")
    for i, (a, b) in enumerate(zip(left, right)):
        if a.example != b.example:
            raise DataError(
                f"the evaluations disagree at devset position {i}: {a.example!r} vs {b.example!r}; evaluate both on the same devset"
            )
    return paired_bootstrap([r.score for r in left], [r.score for r in right], **kw)
