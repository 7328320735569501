"""``FunctionRetriever``: any user function ``fn(query, k)`` as a retriever.

The function may return strings, mappings with ``text`` (and ``id``/``title``/``score``) or
``Passage`` objects. An artifact cannot hold code, so a function retriever saves only its
``name``; loading resolves the name among functions registered in this process (creating the
``FunctionRetriever`` with that name registers it), and says so clearly when there is none.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from oobleck.errors import ConfigurationError, RetrievalError
from oobleck.retrieval.base import Retriever, register_retriever_kind
from oobleck.retrieval.passage import Passage, as_passage

__all__ = ["FunctionRetriever"]

_registry: dict[str, FunctionRetriever] = {}
_lock = threading.Lock()


@register_retriever_kind
class FunctionRetriever(Retriever):
    """Wraps ``fn(query, k) -> list[str | dict | Passage]``; ``name`` is what artifacts record."""

    kind = "function"

    def __init__(self, fn: Callable[[str, int], Any], *, name: str | None = None):
        if not callable(fn):
            raise ConfigurationError(f"FunctionRetriever needs a function fn(query, k), not {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "function")
        with _lock:
            _registry[self.name] = self

    def retrieve(self, query: str, k: int = 5) -> list[Passage]:
        try:
            found = self.fn(query, k)
        except RetrievalError:
            raise
        except Exception as exc:  # the user's function failed: say whose it is
            raise RetrievalError(f"retriever function {self.name!r} failed: {type(exc).__name__}: {exc}") from exc
        if isinstance(found, (str, Mapping)) or not hasattr(found, "__iter__"):
            raise RetrievalError(f"retriever function {self.name!r} must return a list of passages, not {type(found).__name__}")
        passages = []
        for rank, item in enumerate(found):
            try:
                passages.append(as_passage(item, default_id=str(rank)))
            except ValueError as exc:
                raise RetrievalError(f"retriever function {self.name!r} returned item {rank} that is not a passage: {exc}") from None
        return passages[:k]

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FunctionRetriever:
        name = config.get("name")
        with _lock:
            found = _registry.get(name) if isinstance(name, str) else None
        if found is None:
            raise RetrievalError(
                f"the retriever function {name!r} is not defined in this process; create "
                f"ob.retrieval.FunctionRetriever(fn, name={name!r}) before loading"
            )
        return found

    def __repr__(self) -> str:
        return f"FunctionRetriever(name={self.name!r})"
