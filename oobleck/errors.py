"""Every error a user can cause is an ``OobleckError``.

One root class lets callers catch everything oobleck raises on purpose, while the subclasses
say which layer the problem came from. Messages name the problem and where it happened.
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "ConfigurationError",
    "DataError",
    "InputError",
    "LMConnectionError",
    "LMError",
    "LMResponseError",
    "MetricError",
    "OobleckError",
    "ParseError",
    "RetrievalError",
    "RetrievalIndexError",
    "SignatureError",
    "UnknownLMError",
]


class OobleckError(Exception):
    """Base class of every error oobleck raises deliberately."""


class SignatureError(OobleckError, ValueError):
    """A signature string or class is malformed; ``position`` points into the source string."""

    def __init__(self, message: str, *, source: str | None = None, position: int | None = None):
        self.source = source
        self.position = position
        if source is not None and position is not None:
            caret = " " * position + "^"
            message = f"{message} (at position {position})\n  {source}\n  {caret}"
        super().__init__(message)


class InputError(OobleckError, TypeError):
    """A module was called with missing, extra or ill-typed inputs."""


class ParseError(OobleckError, ValueError):
    """An LM completion could not be parsed into the signature's output fields.

    ``raw`` keeps the completion text so nothing the LM said is lost.
    """

    def __init__(self, message: str, *, raw: str = "", field: str | None = None):
        self.raw = raw
        self.field = field
        super().__init__(message)


class ConfigurationError(OobleckError):
    """Something needed was not configured, e.g. no LM set for a predictor."""


class LMError(OobleckError):
    """An LM call failed for good (after any retries)."""


class UnknownLMError(LMError, ValueError):
    """An LM id names no known provider or model."""


class LMConnectionError(LMError):
    """The LM server could not be reached."""


class LMResponseError(LMError):
    """The LM server answered with an error or a body that cannot be read."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False):
        self.status = status
        self.retryable = retryable
        super().__init__(message)


class DataError(OobleckError, ValueError):
    """A data file or dataset is missing, unreadable or lacks the named fields."""


class MetricError(OobleckError, ValueError):
    """A metric is missing, unknown or returned something that is not a score."""


class ArtifactError(OobleckError):
    """A compiled-program artifact is missing, truncated, foreign or does not fit the program."""


class RetrievalError(OobleckError):
    """A retriever failed: its server is unreachable or answered badly, or its corpus is unusable."""


class RetrievalIndexError(RetrievalError):
    """A saved retrieval index is missing, incomplete, damaged or not an oobleck index."""


class BudgetExceeded(OobleckError):
    """A compile's LM budget (calls, tokens or cost) is spent; optimizers stop and keep their best."""

    def __init__(self, message: str, *, limit: str = ""):
        super().__init__(message)
        self.limit = limit


def misfit(*parts: tuple[list[str], str]) -> str:
    """The phrases (each with ``{}`` for its names) of the name lists that are not empty, joined by "; ".

    For messages saying how two sets of names fail to match, such as a saved program's
    predictors against the program it is loaded into; "" when every list is empty.
    """
    return "; ".join(phrase.format(names) for names, phrase in parts if names)
