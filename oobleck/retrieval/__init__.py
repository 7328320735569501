"""Retrieval: passages, retrievers (BM25, dense, hybrid, ColBERTv2, any function) and their indexes.

This layer sits beside ``lm`` (below modules): ``ob.Retrieve`` calls a retriever from here.
Only ``Passage`` and ``Retriever`` load with the package; the rest on first use, so
``import oobleck`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from oobleck.retrieval.base import Retriever, register_retriever_kind, resolve_retriever, retriever_from_config, retriever_kinds
from oobleck.retrieval.passage import Passage

if TYPE_CHECKING:
    from oobleck.retrieval.bm25 import BM25
    from oobleck.retrieval.colbert import ColBERTv2
    from oobleck.retrieval.corpus import load_corpus
    from oobleck.retrieval.dense import Dense
    from oobleck.retrieval.function import FunctionRetriever
    from oobleck.retrieval.hotpotqa import hotpotqa_corpus, load_hotpotqa
    from oobleck.retrieval.hybrid import Hybrid
    from oobleck.retrieval.index_store import IndexedRetriever, load_index

__all__ = [
    "BM25", "ColBERTv2", "Dense", "FunctionRetriever", "Hybrid", "IndexedRetriever", "Passage", "Retriever",
    "hotpotqa_corpus", "load_corpus", "load_hotpotqa", "load_index", "register_retriever_kind", "resolve_retriever",
    "retriever_from_config", "retriever_kinds",
]  # fmt: skip

_LAZY = {
    "BM25": "oobleck.retrieval.bm25",
    "ColBERTv2": "oobleck.retrieval.colbert",
    "Dense": "oobleck.retrieval.dense",
    "FunctionRetriever": "oobleck.retrieval.function",
    "Hybrid": "oobleck.retrieval.hybrid",
    "IndexedRetriever": "oobleck.retrieval.index_store",
    "load_index": "oobleck.retrieval.index_store",
    "load_corpus": "oobleck.retrieval.corpus",
    "load_hotpotqa": "oobleck.retrieval.hotpotqa",
    "hotpotqa_corpus": "oobleck.retrieval.hotpotqa",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'oobleck.retrieval' has no attribute {name!r}")
