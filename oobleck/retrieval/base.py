"""``Retriever``: the one interface every retriever implements, and the registry of kinds.

A retriever maps a query to its ``k`` best passages. Its ``to_config()`` is plain JSON (the
kind plus settings and, for local indexes, the index folder, never the corpus), and
``retriever_from_config`` rebuilds it by looking the kind up in a registry, so an artifact
can name a retriever without naming code to import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from oobleck.errors import ConfigurationError, RetrievalError
from oobleck.retrieval.passage import Passage

__all__ = ["Retriever", "register_retriever_kind", "resolve_retriever", "retriever_from_config", "retriever_kinds"]


class Retriever:
    """Base of retrievers: subclasses implement ``retrieve`` and, to be savable, ``to_config``/``from_config``."""

    kind: ClassVar[str] = ""

    def retrieve(self, query: str, k: int = 5) -> list[Passage]:
        """The ``k`` best passages for ``query``, best first, each with its score."""
        raise NotImplementedError(f"{type(self).__name__} must define retrieve()")

    def retrieve_many(self, queries: Sequence[str], k: int = 5) -> list[list[Passage]]:
        """``retrieve`` for each query; subclasses batch when they can."""
        return [self.retrieve(q, k) for q in queries]

    def __call__(self, query: str, k: int = 5) -> list[Passage]:
        return self.retrieve(query, k)

    def to_config(self) -> dict[str, Any]:
        """JSON settings that ``from_config`` rebuilds this retriever from (no corpus)."""
        raise RetrievalError(f"{type(self).__name__} cannot be saved: it defines no to_config()")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Retriever:
        raise RetrievalError(f"{cls.__name__} cannot be loaded: it defines no from_config()")

    def __deepcopy__(self, memo: dict[int, Any]) -> Retriever:
        return self  # shared like an LM when a program is copied: it holds an index

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


_KINDS: dict[str, type[Retriever]] = {}


def register_retriever_kind(cls: type[Retriever]) -> type[Retriever]:
    """Make ``cls`` loadable from configs whose ``kind`` is ``cls.kind`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Retriever)) or not cls.kind:
        raise ConfigurationError(f"only a Retriever subclass with a non-empty kind can be registered, not {cls!r}")
    _KINDS[cls.kind] = cls
    return cls


def retriever_kinds() -> list[str]:
    _load_builtin_kinds()
    return sorted(_KINDS)


def _load_builtin_kinds() -> None:
    """Import the built-in retriever modules so their kinds are registered (they are light to import)."""
    from oobleck.retrieval import bm25, colbert, dense, function, hybrid  # noqa: F401


def retriever_from_config(config: Any, *, base: Path | None = None) -> Retriever:
    """Rebuild a retriever from its ``to_config()``; a relative ``index`` resolves against ``base``."""
    _load_builtin_kinds()
    if not isinstance(config, Mapping):
        raise RetrievalError(f"a retriever config must be an object, not {type(config).__name__}")
    kind = config.get("kind")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise RetrievalError(f"unknown retriever kind {kind!r}; known: {sorted(_KINDS)}")
    config = dict(config)
    index = config.get("index")
    if isinstance(index, str) and base is not None and not Path(index).is_absolute():
        config["index"] = str(base / index)
    return _KINDS[kind].from_config(config)


def resolve_retriever(spec: Retriever | Callable[..., Any]) -> Retriever:
    """A ``Retriever`` as is, or a plain callable ``fn(query, k)`` wrapped in a ``FunctionRetriever``."""
    if isinstance(spec, Retriever):
        return spec
    if callable(spec):
        from oobleck.retrieval.function import FunctionRetriever

        return FunctionRetriever(spec)
    raise ConfigurationError(f"a retriever must be an ob.retrieval.Retriever or a function fn(query, k), not {type(spec).__name__}")
