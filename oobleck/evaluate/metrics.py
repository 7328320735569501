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

__all__ = ["exact_match", "f1", "contains", "normalize_text", "get_metric", "METRICS"]

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


METRICS: dict[str, Metric] = {"exact_match": exact_match, "em": exact_match, "f1": f1, "contains": contains}


def get_metric(spec: str | Metric | None) -> Metric:
    """A metric from a callable or a built-in name."""
    if spec is None:
        raise MetricError("a metric is required: pass a function metric(example, prediction, trace=None) or one of " + ", ".join(sorted(METRICS)))
    if callable(spec):
        return spec
    if isinstance(spec, str) and spec in METRICS:
        return METRICS[spec]
    raise MetricError(f"unknown metric {spec!r}; built-ins: {', '.join(sorted(METRICS))}")
