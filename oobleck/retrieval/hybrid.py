"""``Hybrid``: several retrievers fused into one ranking (default: BM25 + dense, convex fusion).

Each part retrieves ``depth`` passages (matched by passage id, so the parts must index the
same corpus). ``fusion="convex"`` (the default) ranks by a weighted mean of each part's
min-max normalised scores; ``fusion="rrf"`` by reciprocal-rank fusion, ``sum(weight / (rrf_k
+ rank))``. Convex fusion keeps what ranks discard: how far ahead a part's best passage is
(when BM25 is sure, with the right passage far ahead, rank fusion still lets the dense part's
favourite overtake it), and which passages a part scores equally (BM25 ties are in corpus
order, ranks invent a difference). On the multi-hop example corpus it beats rank fusion on
single-hop lookups (``benchmarks/retrieval.py``; settings chosen on other worlds than those
reported). Indexes saved before ``fusion`` existed load as ``"rrf"``, as they were built.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from oobleck.errors import ConfigurationError, RetrievalIndexError
from oobleck.lm.embedder import Embedder
from oobleck.retrieval.base import Retriever, register_retriever_kind, resolve_retriever, retriever_from_config
from oobleck.retrieval.index_store import IndexedRetriever, load_index, write_index
from oobleck.retrieval.passage import Passage
from oobleck.retrieval.ranking import convex_fusion, reciprocal_rank_fusion

__all__ = ["Hybrid"]

FUSIONS = ("convex", "rrf")


@register_retriever_kind
class Hybrid(IndexedRetriever):
    """``Hybrid(corpus=...)`` builds BM25 and dense over one corpus; ``Hybrid([a, b])`` fuses retrievers you have.

    ``fusion`` is ``"convex"`` (normalised scores, the default) or ``"rrf"`` (ranks, with
    ``rrf_k``); ``weights`` scale each part's contribution; ``depth`` is how many passages each
    part contributes (default for convex fusion ``max(10 * k, 100)``: min-max scaling needs a list
    deep enough that its bottom is unrelated passages, not the tail of the relevant ones; for rank
    fusion ``max(4 * k, 20)``, as before convex fusion existed, so older indexes rank as built).
    """

    kind = "hybrid"

    def __init__(self, retrievers: Sequence[Retriever | Any] | None = None, *, corpus: str | Iterable[Any] | None = None,
                 embedder: Embedder | str | None = None, fusion: str = "convex", rrf_k: float = 60.0,
                 weights: Sequence[float] | None = None, depth: int | None = None, progress: bool = True):  # fmt: skip
        if fusion not in FUSIONS:
            raise ConfigurationError(f"Hybrid fusion must be one of {FUSIONS}, not {fusion!r}")
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1):
            raise ConfigurationError(f"Hybrid depth must be a whole number of passages, at least 1, not {depth!r}")
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
        if any(w < 0 for w in self.weights) or not any(self.weights):
            raise ConfigurationError(f"Hybrid weights must be >= 0 and not all 0, not {self.weights}")
        self.fusion, self.rrf_k, self.depth = fusion, float(rrf_k), None if depth is None else int(depth)
        indexed = [p for p in self.parts if isinstance(p, IndexedRetriever)]
        self.passages: list[Passage] = list(indexed[0].passages) if indexed else []
        self.path: Path | None = None

    def _depth(self, k: int) -> int:
        if self.depth:
            return self.depth
        return max(4 * k, 20) if self.fusion == "rrf" else max(10 * k, 100)

    def _fuse(self, rankings: list[list[Passage]], k: int) -> list[Passage]:
        if self.fusion == "rrf":
            return reciprocal_rank_fusion(rankings, k, rrf_k=self.rrf_k, weights=self.weights)
        return convex_fusion(rankings, k, weights=self.weights)

    def retrieve(self, query: str, k: int = 5) -> list[Passage]:
        return self._fuse([p.retrieve(query, self._depth(k)) for p in self.parts], k)

    def retrieve_many(self, queries: Sequence[str], k: int = 5) -> list[list[Passage]]:
        per_part = [p.retrieve_many(queries, self._depth(k)) for p in self.parts]
        return [self._fuse([ranked[i] for ranked in per_part], k) for i in range(len(queries))]

    # -- persistence: each part that has a local index is saved inside this folder ----------------

    def _settings(self) -> dict[str, Any]:
        parts = [{"index": f"parts/{i}"} if isinstance(p, IndexedRetriever) else {"config": p.to_config()} for i, p in enumerate(self.parts)]
        return {"fusion": self.fusion, "rrf_k": self.rrf_k, "weights": self.weights, "depth": self.depth, "parts": parts}

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
        fusion = settings.get("fusion", "rrf")  # saved before convex fusion existed: rank fusion, as built
        if fusion not in FUSIONS:
            raise RetrievalIndexError(f"index {folder} names an unknown fusion {fusion!r}; known: {list(FUSIONS)}")
        depth = settings.get("depth") or None  # 0 was once taken to mean the default depth
        try:
            return cls(parts, fusion=fusion, rrf_k=settings.get("rrf_k", 60.0), weights=settings.get("weights"), depth=depth)
        except ConfigurationError as exc:
            raise RetrievalIndexError(f"index {folder} has unusable hybrid settings: {exc}") from None

    def __repr__(self) -> str:
        fusion = f"rrf, rrf_k={self.rrf_k:g}" if self.fusion == "rrf" else "convex"
        return f"Hybrid({[type(p).__name__ for p in self.parts]}, fusion={fusion}, weights={self.weights})"
