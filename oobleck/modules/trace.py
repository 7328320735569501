"""Traces of predictor calls, for bootstrapping demos from successful runs.

A trace is a list of ``TraceEntry`` (predictor, inputs, outputs) held in a ``ContextVar``, so
each thread or asyncio task running a program gets its own, and worker threads started with
the caller's context append to the caller's list.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oobleck.modules.predict import Predict
    from oobleck.modules.retrieve import Retrieve

__all__ = ["TraceEntry", "record", "trace", "tracing_active"]


@dataclass(frozen=True)
class TraceEntry:
    predictor: Predict | Retrieve  # a Retrieve records its query and passages too
    inputs: dict[str, Any]
    outputs: dict[str, Any]


_current: contextvars.ContextVar[list[TraceEntry] | None] = contextvars.ContextVar("oobleck_trace", default=None)


@contextmanager
def trace() -> Iterator[list[TraceEntry]]:
    """Collect every predictor call made inside the block, in call order."""
    entries: list[TraceEntry] = []
    token = _current.set(entries)
    try:
        yield entries
    finally:
        _current.reset(token)


def tracing_active() -> bool:
    return _current.get() is not None


def _snapshot(value: Any) -> Any:
    """Lists and dicts copied, so a program that later appends to its notes list does not rewrite the trace."""
    if isinstance(value, list):
        return [_snapshot(v) for v in value]
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    return value


def record(predictor: Predict | Retrieve, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
    entries = _current.get()
    if entries is not None:
        entries.append(TraceEntry(predictor, _snapshot(inputs), outputs))
