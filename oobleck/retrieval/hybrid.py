"""``Hybrid``: several retrievers fused by reciprocal-rank fusion (default: BM25 + dense).

Each part retrieves ``depth`` passages; a passage's fused score is ``sum(weight / (rrf_k +
rank))`` over the parts that found it (matched by passage id, so the parts must index the
same corpus). Rank fusion needs no score calibration between BM25 and cosine similarity.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from oobleck.errors import ConfigurationError, RetrievalIndexError
from oobleck.lm.embedder import Embedder
from oobleck.retrieval.base import Retriever, register_retriever_kind, resolve_retriever, retriever_from_config
from oobleck.retrieval.index_store import IndexedRetriever, load_index, write_index
from oobleck.retrieval.passage import Passage
from oobleck.retrieval.ranking import reciprocal_rank_fusion

__all__ = ["Hybrid"]


@register_retriever_kind
class Hybrid(IndexedRetriever):
    """``Hybrid(corpus=...)`` builds BM25 and dense over one corpus; ``Hybrid([a, b])`` fuses retrievers you have.

    ``weights`` scale each part's votes; ``depth`` is how many passages each part contributes
    (default ``max(4 * k, 20)``).
    """

    kind = "hybrid"

    def __init__(self, retrievers: Sequence[Retriever | Any] | None = None, *, corpus: str | Iterable[Any] | None = None,
                 embedder: Embedder | str | None = None, rrf_k: float = 60.0, weights: Sequence[float] | None = None,
                 depth: int | None = None, progress: bool = True):  # fmt: skip
        if retrievers is None:
            if corpus is None:
                raise ConfigurationError("Hybrid needs retrievers=[...] or corpus=... to build BM25 and dense over")
            from oobleck.retrieval.bm25 import BM25
            from oobleck.retrieval.corpus import load_corpus
            from oobleck.retrieval.dense import Dense

            passages = load_corpus(corpus, progress=progress)
            retrievers = [BM25(passages, progress=progress), Dense(passages, embedder=embedder, progress=progress)]
        elif corpus is not None:
            raise ConfigurationError("Hybrid takes retrievers=[...] or corpus=..., not both")
        self.parts = [resolve_retriever(r) for r in retrievers]
        if len(self.parts) < 2:
            raise ConfigurationError("Hybrid fuses at least two retrievers")
        self.weights = [1.0] * len(self.parts) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.parts):
            raise ConfigurationError(f"Hybrid got {len(self.weights)} weights for {len(self.parts)} retrievers")
        self.rrf_k, self.depth = float(rrf_k), depth
        indexed = [p for p in self.parts if isinstance(p, IndexedRetriever)]
        self.passages: list[Passage] = list(indexed[0].passages) if indexed else []
        self.path: Path | None = None

    def retrieve(self, query: str, k: int = 5) -> list[Passage]:
        depth = self.depth or max(4 * k, 20)
        return reciprocal_rank_fusion([p.retrieve(query, depth) for p in self.parts], k, rrf_k=self.rrf_k, weights=self.weights)

    def retrieve_many(self, queries: Sequence[str], k: int = 5) -> list[list[Passage]]:
        depth = self.depth or max(4 * k, 20)
        per_part = [p.retrieve_many(queries, depth) for p in self.parts]
        return [reciprocal_rank_fusion([ranked[i] for ranked in per_part], k, rrf_k=self.rrf_k, weights=self.weights)
                for i in range(len(queries))]  # fmt: skip

    # -- persistence: each part that has a local index is saved inside this folder ----------------

    def _settings(self) -> dict[str, Any]:
        parts = [{"index": f"parts/{i}"} if isinstance(p, IndexedRetriever) else {"config": p.to_config()} for i, p in enumerate(self.parts)]
        return {"rrf_k": self.rrf_k, "weights": self.weights, "depth": self.depth, "parts": parts}

    def _write_files(self, folder: Path) -> None:
        for i, part in enumerate(self.parts):
            if isinstance(part, IndexedRetriever):
                write_index(folder / "parts" / str(i), kind=part.kind, config=part._settings(), passages=part.passages,
                            write_files=part._write_files)  # fmt: skip

    def save(self, path: str | os.PathLike[str]) -> Path:
        folder = super().save(path)
        for i, part in enumerate(self.parts):
            if isinstance(part, IndexedRetriever):
                part.path = (folder / "parts" / str(i)).resolve()
        return folder

    @classmethod
    def _from_files(cls, folder: Path, settings: dict[str, Any], passages: list[Passage]) -> Hybrid:
        parts: list[Retriever] = []
        for entry in settings.get("parts") or []:
            if isinstance(entry, dict) and isinstance(entry.get("index"), str):
                part = folder / entry["index"]
                if not part.resolve().is_relative_to(folder.resolve()):
                    raise RetrievalIndexError(f"index {folder} names a part outside itself: {entry['index']!r}")
                parts.append(load_index(part, verify=False))  # inside this folder: its manifest already checked their files
            elif isinstance(entry, dict) and isinstance(entry.get("config"), dict):
                parts.append(retriever_from_config(entry["config"]))
            else:
                raise RetrievalIndexError(f"index {folder} has an unreadable part entry: {entry!r}")
        return cls(parts, rrf_k=settings.get("rrf_k", 60.0), weights=settings.get("weights"), depth=settings.get("depth"))

    def __repr__(self) -> str:
        return f"Hybrid({[type(p).__name__ for p in self.parts]}, rrf_k={self.rrf_k:g})"
