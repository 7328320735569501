"""The evaluation of retrieval QA (HotPotQA's): answer EM and F1, passage recall, all gold retrieved.

One run of the program per example; every figure comes from the same predictions, which must
carry ``answer`` and ``passages`` (all passages retrieved, over every hop).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from oobleck.errors import DataError
from oobleck.evaluate.evaluate import Evaluate
from oobleck.evaluate.metrics import all_gold_retrieved, answer_exact_match, answer_f1, passage_recall
from oobleck.example import Example

__all__ = ["RETRIEVAL_QA_METRICS", "evaluate_retrieval_qa"]

RETRIEVAL_QA_METRICS: dict[str, Callable[..., Any]] = {
    "answer_em": answer_exact_match,
    "answer_f1": answer_f1,
    "passage_recall": passage_recall,
    "all_gold_retrieved": all_gold_retrieved,
}


def evaluate_retrieval_qa(program: Callable[..., Any], devset: Sequence[Example], *, num_threads: int = 8,
                          display_progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Mean of each metric over ``devset`` (a failed example scores 0 on all), plus ``n`` and ``errors``."""
    if not devset:
        raise DataError("evaluate_retrieval_qa needs at least one example; the devset is empty")
    result = Evaluate(devset=list(devset), metric=answer_exact_match, num_threads=num_threads, display_progress=display_progress)(program)
    totals = dict.fromkeys(RETRIEVAL_QA_METRICS, 0.0)
    for item in result.results:
        if item.error is not None or item.prediction is None:
            continue
        for name, metric in RETRIEVAL_QA_METRICS.items():
            totals[name] += float(metric(item.example, item.prediction))
    n = len(result.results)
    return {**{name: total / n for name, total in totals.items()}, "n": n, "errors": result.errors}
