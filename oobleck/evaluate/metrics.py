"""Metrics: ``metric(example, prediction, trace=None) -> float | bool`` (DSPy's convention).

Built-ins compare the example's label fields (those not marked as inputs) with the
prediction's fields of the same name, after light normalisation.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from oobleck.errors import MetricError

__all__ = [
    "METRICS",
    "all_gold_retrieved",
    "answer_exact_match",
    "answer_f1",
    "contains",
    "exact_match",
    "f1",
    "get_metric",
    "normalize_text",
    "passage_recall",
    "recall_at_k",
    "retrieved_passages",
]  # fmt: skip

Metric = Callable[..., Any]
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_text(text: Any) -> str:
    """Lower-case, strip accents, punctuation and articles, squeeze spaces (SQuAD-style)."""
    text = unicodedata.normalize("NFD", str(text))
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn").lower()
    text = _ARTICLES.sub(" ", text.translate(_PUNCT))
    return " ".join(text.split())


def _pairs(example: Mapping[str, Any], prediction: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    labels = example.labels() if hasattr(example, "labels") else example
    pairs = [(labels[k], prediction[k]) for k in labels if k in prediction]
    if not pairs:
        raise MetricError(f"no label field of the example {sorted(labels)} appears in the prediction {sorted(prediction)}")
    return pairs


def _golds(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple, set)) else [value]


def exact_match(example: Mapping[str, Any], prediction: Mapping[str, Any], trace: Any = None) -> bool:
    """Every label field equals the prediction's, after normalisation (a list of golds: any)."""
    return all(any(normalize_text(g) == normalize_text(p) for g in _golds(gold)) for gold, p in _pairs(example, prediction))


def _f1(gold: str, predicted: str) -> float:
    g, p = normalize_text(gold).split(), normalize_text(predicted).split()
    common = sum((Counter(g) & Counter(p)).values())
    if not g or not p:
        return float(g == p)
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def f1(example: Mapping[str, Any], prediction: Mapping[str, Any], trace: Any = None) -> float:
    """Token F1 averaged over label fields (best over a list of golds)."""
    scores = [max(_f1(str(g), str(p)) for g in _golds(gold)) for gold, p in _pairs(example, prediction)]
    return sum(scores) / len(scores)


def contains(example: Mapping[str, Any], prediction: Mapping[str, Any], trace: Any = None) -> bool:
    """Each normalised gold appears inside the prediction's text."""
    return all(any(normalize_text(g) in normalize_text(p) for g in _golds(gold)) for gold, p in _pairs(example, prediction))


# -- question answering over retrieved passages (HotPotQA-style) ----------------------------------
# Examples carry ``answer`` plus the gold passages, by title (``gold_titles`` or
# ``supporting_titles``) or by id (``gold_ids``); predictions carry ``answer`` and the
# ``passages`` the program retrieved (else they are read from the Retrieve calls in the trace).

_GOLD_KEYS = (("gold_titles", "title"), ("supporting_titles", "title"), ("gold_ids", "id"))


def _answer_pair(example: Mapping[str, Any], prediction: Mapping[str, Any]) -> tuple[Any, Any]:
    if "answer" not in example or "answer" not in prediction:
        raise MetricError(f"answer metrics compare the 'answer' fields; example has {sorted(example)}, prediction {sorted(prediction)}")
    return example["answer"], prediction["answer"]


def answer_exact_match(example: Mapping[str, Any], prediction: Mapping[str, Any], trace: Any = None) -> bool:
    """The ``answer`` field alone, exact after normalisation (other label fields, e.g. gold titles, ignored)."""
    gold, predicted = _answer_pair(example, prediction)
    return any(normalize_text(g) == normalize_text(predicted) for g in _golds(gold))


def answer_f1(example: Mapping[str, Any], prediction: Mapping[str, Any], trace: Any = None) -> float:
    """Token F1 of the ``answer`` field alone (best over a list of golds)."""
    gold, predicted = _answer_pair(example, prediction)
    return max(_f1(str(g), str(predicted)) for g in _golds(gold))


def _key_of(passage: Any, attribute: str) -> str:
    if isinstance(passage, Mapping):
        value = passage.get(attribute, "")
    else:
        value = getattr(passage, attribute, None)
        if value is None or (value == "" and attribute == "title"):
            text = str(passage)
            value = text.partition(" | ")[0] if attribute == "title" else text
    return normalize_text(value)


def retrieved_passages(prediction: Any, trace: Any = None) -> list[Any]:
    """The prediction's ``passages``, else every passage the Retrieve calls in ``trace`` returned, in order."""
    if isinstance(prediction, Mapping) and prediction.get("passages") is not None:
        return list(prediction["passages"])
    found: list[Any] = []
    for entry in trace or []:
        outputs = getattr(entry, "outputs", None)
        if isinstance(outputs, Mapping) and type(getattr(entry, "predictor", None)).__name__ == "Retrieve":
            found.extend(outputs.get("passages") or [])
    return found


def _gold(example: Mapping[str, Any]) -> tuple[list[str], str]:
    for key, attribute in _GOLD_KEYS:
        if key in example:
            values = example[key]
            values = [values] if isinstance(values, str) else list(values)
            return list(dict.fromkeys(normalize_text(v) for v in values)), attribute
    raise MetricError(f"passage metrics need the gold passages in the example ({', '.join(k for k, _ in _GOLD_KEYS)}); it has {sorted(example)}")


def _recall(example: Mapping[str, Any], prediction: Any, trace: Any, k: int | None) -> float:
    gold, attribute = _gold(example)
    if not gold:
        return 1.0
    passages = retrieved_passages(prediction, trace)
    found = {_key_of(p, attribute) for p in (passages if k is None else passages[:k])}
    return sum(1 for g in gold if g in found) / len(gold)


def passage_recall(example: Mapping[str, Any], prediction: Any, trace: Any = None) -> float:
    """Fraction of the example's gold passages among the passages retrieved (by title or id)."""
    return _recall(example, prediction, trace, None)


def recall_at_k(k: int) -> Metric:
    """Passage recall counting only the first ``k`` passages retrieved."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise MetricError(f"recall_at_k needs an integer k >= 1, not {k!r}")

    def metric(example: Mapping[str, Any], prediction: Any, trace: Any = None) -> float:
        return _recall(example, prediction, trace, k)

    metric.__name__ = f"recall_at_{k}"
    return metric


def all_gold_retrieved(example: Mapping[str, Any], prediction: Any, trace: Any = None) -> bool:
    """Every gold passage was retrieved (HotPotQA's multi-hop retrieval success)."""
    return _recall(example, prediction, trace, None) == 1.0


METRICS: dict[str, Metric] = {"exact_match": exact_match, "em": exact_match, "f1": f1, "contains": contains,
                              "answer_em": answer_exact_match, "answer_exact_match": answer_exact_match, "answer_f1": answer_f1,
                              "passage_recall": passage_recall, "all_gold_retrieved": all_gold_retrieved}  # fmt: skip


def get_metric(spec: str | Metric | None) -> Metric:
    """A metric from a callable or a built-in name."""
    if spec is None:
        raise MetricError("a metric is required: pass a function metric(example, prediction, trace=None) or one of " + ", ".join(sorted(METRICS)))
    if callable(spec):
        return spec
    if isinstance(spec, str) and spec in METRICS:
        return METRICS[spec]
    raise MetricError(f"unknown metric {spec!r}; built-ins: {', '.join(sorted(METRICS))}")
