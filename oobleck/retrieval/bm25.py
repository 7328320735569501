"""``BM25``: lexical retrieval with bm25s (sparse scores in numpy, an index that saves to disk).

Texts are tokenised by bm25s (lower-case words of two or more characters, no stemming), with
NLTK's English stop words removed by default (``stopwords="en_plus"``): that list includes
question words (who, where, which), which carry no evidence in the questions and LM-written
queries a program sends, and would otherwise match every passage that says "who works for". A passage's title is indexed with its text. Passages that share no
word with the query are not returned, so a query may get fewer than ``k`` passages.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from oobleck.errors import ConfigurationError, RetrievalError, RetrievalIndexError
from oobleck.retrieval.base import register_retriever_kind
from oobleck.retrieval.corpus import load_corpus, progress_bar
from oobleck.retrieval.index_store import IndexedRetriever
from oobleck.retrieval.passage import Passage
from oobleck.retrieval.ranking import top_k

__all__ = ["BM25"]

_INSTALL_HINT = "pip install 'oobleck[retrieval]'"
_SUBFOLDER = "bm25s"


def _bm25s() -> Any:
    try:
        import bm25s
    except ImportError:
        raise ConfigurationError(f"BM25 retrieval needs bm25s: {_INSTALL_HINT}") from None
    return bm25s


@register_retriever_kind
class BM25(IndexedRetriever):
    """BM25 over a corpus: ``BM25(corpus)`` builds the index; ``BM25.load(folder)`` reloads a saved one.

    ``corpus`` is anything ``load_corpus`` reads (a file path, a ``datasets.Dataset``, a list of
    texts, dicts or passages). ``k1``, ``b`` and ``method`` are bm25s's scoring settings;
    ``stopwords`` is a bm25s language code ("en" is Lucene's shorter list), a list, or None.
    """

    kind = "bm25"

    def __init__(self, corpus: str | Iterable[Any] | None = None, *, k1: float = 1.5, b: float = 0.75, method: str = "lucene",
                 stopwords: str | list[str] | None = "en_plus", include_titles: bool = True, progress: bool = True):  # fmt: skip
        self.k1, self.b, self.method, self.stopwords, self.include_titles = float(k1), float(b), method, stopwords, include_titles
        self.passages: list[Passage] = []
        self.path: Path | None = None
        self._model: Any = None
        if corpus is not None:
            self.index(load_corpus(corpus, progress=progress), progress=progress)

    def _doc_text(self, passage: Passage) -> str:
        return f"{passage.title}\n{passage.text}" if self.include_titles and passage.title else passage.text

    def _tokenize(self, texts: list[str], *, ids: bool, progress: bool = False) -> Any:
        return _bm25s().tokenize(texts, stopwords=self.stopwords, return_ids=ids, show_progress=progress)

    def index(self, passages: Sequence[Passage], *, progress: bool = True) -> BM25:
        """(Re)build the index over ``passages``."""
        bm25s = _bm25s()
        if not passages:
            raise RetrievalError("cannot build a BM25 index over an empty corpus")
        with progress_bar("BM25: tokenising", len(passages), progress) as bar:
            tokens = self._tokenize([self._doc_text(p) for p in passages], ids=True)
            bar.advance(len(passages))
        model = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        model.index(tokens, show_progress=False)
        self._model, self.passages, self.path = model, list(passages), None
        return self

    def scores(self, query: str) -> Any:
        """BM25 score of every passage for ``query`` (a numpy array)."""
        if self._model is None:
            raise RetrievalError("this BM25 retriever has no index yet: BM25(corpus) or BM25.load(folder)")
        terms = self._tokenize([query], ids=False)[0]
        return self._model.get_scores(terms) if terms else None

    def retrieve(self, query: str, k: int = 5) -> list[Passage]:
        scores = self.scores(query)
        if scores is None:
            return []
        return [self.passages[i].with_score(float(scores[i])) for i in top_k(scores, k, positive_only=True)]

    # -- persistence --------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        return {"k1": self.k1, "b": self.b, "method": self.method, "stopwords": self.stopwords, "include_titles": self.include_titles}

    def _write_files(self, folder: Path) -> None:
        if self._model is None:
            raise RetrievalError("this BM25 retriever has no index to save")
        self._model.save(str(folder / _SUBFOLDER), show_progress=False)

    @classmethod
    def _from_files(cls, folder: Path, settings: dict[str, Any], passages: list[Passage]) -> BM25:
        bm25s = _bm25s()
        retriever = cls(k1=settings["k1"], b=settings["b"], method=settings["method"], stopwords=settings.get("stopwords"),
                        include_titles=settings.get("include_titles", True))  # fmt: skip
        model = bm25s.BM25.load(str(folder / _SUBFOLDER), show_progress=False)
        documents = int(model.scores["num_docs"]) if isinstance(getattr(model, "scores", None), dict) else len(passages)
        if documents != len(passages):
            raise RetrievalIndexError(f"index {folder} is damaged: its BM25 matrix covers {documents} passages, not {len(passages)}")
        retriever._model, retriever.passages = model, passages
        return retriever
