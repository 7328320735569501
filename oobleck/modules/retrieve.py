"""``Retrieve``: the retrieval step of a program, ``Retrieve(k=3)(query).passages``.

It calls its own retriever, else the configured one (``ob.configure(retriever=...)``), and
returns a ``Prediction`` whose ``passages`` are ``Passage`` objects (text, id, title,
score). Each call is recorded in the active trace (inputs ``query`` and ``k``, output
``passages``), so metrics can check what every hop retrieved when optimizers bootstrap
multi-hop demos, and ``oobleck inspect --trace`` can show it. Artifacts save the retriever's
configuration (its index folder or server URL, never the corpus) by the module's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from oobleck.errors import ConfigurationError, InputError
from oobleck.example import Prediction
from oobleck.modules.module import Module
from oobleck.modules.trace import record, tracing_active
from oobleck.retrieval.base import Retriever, resolve_retriever
from oobleck.retrieval.passage import Passage
from oobleck.settings import get_setting

__all__ = ["Retrieve", "named_retrievers"]


class Retrieve(Module):
    """Retrieves the ``k`` best passages for a query (or fuses several queries' results by rank)."""

    kind = "Retrieve"

    def __init__(self, k: int = 3, *, retriever: Retriever | Any | None = None):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigurationError(f"Retrieve k must be an integer >= 1, not {k!r}")
        self.k = k
        self.retriever: Retriever | None = None if retriever is None else resolve_retriever(retriever)

    def resolve_retriever(self) -> Retriever:
        found = self.retriever if self.retriever is not None else get_setting("retriever")
        if found is None:
            raise ConfigurationError(
                "no retriever configured: pass Retrieve(retriever=...), or call ob.configure(retriever=ob.retrieval.BM25(corpus))"
            )
        return resolve_retriever(found)

    def forward(self, query: str | Sequence[str], k: int | None = None) -> Prediction:
        queries = [query] if isinstance(query, str) else list(query) if isinstance(query, (list, tuple)) else None
        if queries is None or not queries or not all(isinstance(q, str) for q in queries):
            raise InputError(f"Retrieve takes a query string (or a list of them), not {type(query).__name__}: {str(query)[:60]!r}")
        depth = self.k if k is None else k
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise InputError(f"Retrieve k must be an integer >= 1, not {depth!r}")
        retriever = self.resolve_retriever()
        if len(queries) == 1:
            passages = list(retriever.retrieve(queries[0], depth))
        else:
            from oobleck.retrieval.ranking import reciprocal_rank_fusion

            passages = reciprocal_rank_fusion(retriever.retrieve_many(queries, depth), depth)
        passages = [p if isinstance(p, Passage) else Passage(str(p)) for p in passages]
        if tracing_active():
            record(self, {"query": query, "k": depth}, {"passages": list(passages)})  # type: ignore[arg-type]
        return Prediction(passages=passages)

    def __deepcopy__(self, memo: dict[int, Any]) -> Retrieve:
        """Copies share the retriever (an index, a client), like predictors share their LM."""
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        clone.__dict__.update(self.__dict__)
        return clone

    def __repr__(self) -> str:
        return f"Retrieve(k={self.k}, retriever={self.retriever!r})"


def named_retrievers(program: Module) -> list[tuple[str, Retrieve]]:
    """Every ``Retrieve`` reachable from ``program``, named by attribute path like predictors are."""
    return program.named_parts(Retrieve)
