"""oobleck: programmatic prompt optimization.

Write LM programs as typed signatures composed into modules, then compile them against data
and a metric. The names below are the public API; everything else is private.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from oobleck._version import __version__
from oobleck.adapters import Adapter, ChatAdapter, CompactAdapter, JSONAdapter
from oobleck.errors import (
    ArtifactError,
    BudgetExceeded,
    ConfigurationError,
    DataError,
    InputError,
    LMConnectionError,
    LMError,
    LMResponseError,
    MetricError,
    OobleckError,
    ParseError,
    RetrievalError,
    RetrievalIndexError,
    SignatureError,
    UnknownLMError,
)
from oobleck.example import Example, Prediction
from oobleck.lm import LM, BaseLM, Budget, Completion, Usage, set_price, spending, track_usage
from oobleck.modules import ChainOfThought, Module, Predict, Retrieve, trace
from oobleck.settings import configure, context
from oobleck.signatures import InputField, OutputField, Signature, make_signature

if TYPE_CHECKING:
    from oobleck import interop, optimizers, retrieval, testing
    from oobleck.data import load_examples
    from oobleck.evaluate import Evaluate, EvaluationResult, metrics
    from oobleck.interop import from_dspy, import_dspy_json, to_dspy

__all__ = [
    "LM",
    "Adapter",
    "ArtifactError",
    "BaseLM",
    "Budget",
    "BudgetExceeded",
    "ChainOfThought",
    "ChatAdapter",
    "CompactAdapter",
    "Completion",
    "ConfigurationError",
    "DataError",
    "Evaluate",
    "EvaluationResult",
    "Example",
    "InputError",
    "InputField",
    "JSONAdapter",
    "LMConnectionError",
    "LMError",
    "LMResponseError",
    "MetricError",
    "Module",
    "OobleckError",
    "OutputField",
    "ParseError",
    "Predict",
    "Prediction",
    "RetrievalError",
    "RetrievalIndexError",
    "Retrieve",
    "Signature",
    "SignatureError",
    "UnknownLMError",
    "Usage",
    "__version__",
    "configure",
    "context",
    "from_dspy",
    "import_dspy_json",
    "interop",
    "load",
    "load_examples",
    "make_signature",
    "metrics",
    "optimizers",
    "retrieval",
    "set_price",
    "spending",
    "testing",
    "to_dspy",
    "trace",
    "track_usage",
]  # fmt: skip

# Layers above modules load on first use, so ``import oobleck`` stays fast.
_LAZY = {
    "Evaluate": ("oobleck.evaluate", "Evaluate"),
    "EvaluationResult": ("oobleck.evaluate", "EvaluationResult"),
    "metrics": ("oobleck.evaluate.metrics", None),
    "optimizers": ("oobleck.optimizers", None),
    "testing": ("oobleck.testing", None),
    "serve": ("oobleck.serve", None),
    "retrieval": ("oobleck.retrieval", None),
    "load_examples": ("oobleck.data", "load_examples"),
    "interop": ("oobleck.interop", None),  # DSPy itself is imported only when a conversion needs it
    "from_dspy": ("oobleck.interop", "from_dspy"),
    "to_dspy": ("oobleck.interop", "to_dspy"),
    "import_dspy_json": ("oobleck.interop", "import_dspy_json"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, attribute = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attribute is None else getattr(module, attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'oobleck' has no attribute {name!r}")


def load(path: str, program: Module | None = None, *, lm: BaseLM | str | None = None) -> Module:
    """Load a compiled program saved with ``program.save(path)``.

    Predictors are matched to ``program``'s by name. Without ``program``, an artifact of a
    single Predict or ChainOfThought loads on its own; ``lm`` (an LM or id) is set on all
    predictors.
    """
    from oobleck.artifact import load_program

    return load_program(path, program, lm=lm)
