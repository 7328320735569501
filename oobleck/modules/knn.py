"""Per-query demos: ``KNNDemos`` picks, for each call, the pool demos nearest to its inputs.

A predictor whose ``demo_selector`` is set asks it for the demos of every call instead of
using its fixed ``demos``. ``KNNDemos`` embeds the chosen input fields of the query and of
every pool demo with one embedder and returns the ``k`` most cosine-similar demos, nearest
first; equal similarities go to the demo earlier in the pool, so selection is deterministic.
Its whole state (pool, ``k``, fields, embedder id) is plain JSON, which is how an artifact
makes a loaded program select demos exactly as the compiled one did.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from oobleck._json import to_jsonable
from oobleck.adapters.base import format_value
from oobleck.errors import ArtifactError, ConfigurationError
from oobleck.lm.embedder import DEFAULT_EMBEDDER_ID, Embedder, get_embedder

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DemoSelector", "KNNDemos", "selector_from_dict", "selector_to_dict"]

_SIMILARITY_DECIMALS = 6  # similarities equal to this many places are ties: float noise must not reorder demos
_DEFAULT_NAMES = ("minilm", "all-MiniLM-L6-v2")


@runtime_checkable
class DemoSelector(Protocol):
    """Chooses the demos of one call from its inputs; ``to_dict`` makes it savable."""

    def select(self, inputs: Mapping[str, Any]) -> list[dict[str, Any]]: ...

    def to_dict(self) -> dict[str, Any]: ...


class KNNDemos:
    """The ``k`` pool demos nearest to the call's inputs, by cosine similarity of embeddings.

    ``fields`` are the input fields embedded (of the query and of each demo). ``embedder`` is
    an ``Embedder``, an embedder id, or None for MiniLM; an id is resolved on first use, so a
    program can be loaded (and inspected) without the embedding model installed. Pool vectors
    are computed once per selector and reused for every call.
    """

    kind = "knn"

    def __init__(self, pool: Sequence[Mapping[str, Any]], *, fields: Sequence[str], k: int = 4, embedder: Embedder | str | None = None):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigurationError(f"KNNDemos k must be an integer >= 1, not {k!r}")
        names = list(fields) if not isinstance(fields, str) else [fields]
        if not names or not all(isinstance(f, str) and f for f in names) or len(set(names)) != len(names):
            raise ConfigurationError(f"KNNDemos fields must be distinct input field names, not {fields!r}")
        for i, demo in enumerate(pool):
            if not isinstance(demo, Mapping):
                raise ConfigurationError(f"KNNDemos pool item {i} is a {type(demo).__name__}, not a dict of field values")
        self.pool: tuple[dict[str, Any], ...] = tuple({str(k): to_jsonable(v) for k, v in demo.items()} for demo in pool)
        self.fields = names
        self.k = k
        if isinstance(embedder, Embedder):
            self._embedder: Embedder | None = embedder
            self.embedder_id = embedder.id
        elif embedder is None or isinstance(embedder, str):
            self._embedder = None
            self.embedder_id = DEFAULT_EMBEDDER_ID if embedder is None or embedder in _DEFAULT_NAMES else embedder
        else:
            raise ConfigurationError(f"KNNDemos embedder must be an Embedder, an embedder id or None, not {type(embedder).__name__}")
        self._vectors: np.ndarray | None = None
        self._lock = threading.Lock()

    # -- selection -----------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder(self.embedder_id)
        return self._embedder

    def text(self, values: Mapping[str, Any]) -> str:
        """What is embedded for a query or a demo: its ``fields``, one per line when several."""
        if len(self.fields) == 1:
            value = values.get(self.fields[0], "")
            return format_value(to_jsonable(value))
        return "\n".join(f"{name}: {format_value(to_jsonable(values[name]))}" for name in self.fields if name in values)

    def pool_vectors(self) -> np.ndarray:
        """The pool's embeddings, computed on first use and then kept."""
        with self._lock:
            if self._vectors is None:
                self._vectors = self.embedder.embed([self.text(d) for d in self.pool])
            return self._vectors

    def select(self, inputs: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The ``k`` nearest pool demos to ``inputs``, nearest first (ties: earlier in the pool)."""
        import numpy as np

        if not self.pool:
            return []
        vectors = self.pool_vectors()
        query = self.embedder.embed([self.text(inputs)])[0]
        if query.shape[0] != vectors.shape[1]:
            raise ConfigurationError(
                f"embedder {self.embedder_id!r} gave the query {query.shape[0]} dimensions but the pool {vectors.shape[1]}"
            )
        similarity = np.round(vectors @ query, _SIMILARITY_DECIMALS)
        order = np.lexsort((np.arange(len(self.pool)), -similarity))[: self.k]
        return [dict(self.pool[i]) for i in order]

    def warm(self) -> KNNDemos:
        """Embed the pool now (at compile time) rather than on the first call."""
        self.pool_vectors()
        return self

    # -- state ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "k": self.k, "embedder": self.embedder_id, "fields": list(self.fields),
                "pool": [dict(d) for d in self.pool]}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KNNDemos:
        """Rebuild from ``to_dict`` output, strictly: ``ArtifactError`` names the first problem."""
        expected = {"kind", "k", "embedder", "fields", "pool"}
        missing, extra = sorted(expected - set(data)), sorted(set(data) - expected)
        if missing or extra:
            problems = ([f"missing {missing}"] if missing else []) + ([f"unexpected {extra}"] if extra else [])
            raise ArtifactError(f"knn demo_selector has {' and '.join(problems)} keys")
        k, embedder, fields, pool = data["k"], data["embedder"], data["fields"], data["pool"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ArtifactError(f"knn demo_selector k must be an integer >= 1, not {k!r}")
        if not isinstance(embedder, str) or not embedder.strip():
            raise ArtifactError(f"knn demo_selector embedder must be an embedder id, not {embedder!r}")
        if (
            not isinstance(fields, list)
            or not fields
            or not all(isinstance(f, str) and f for f in fields)
            or len(set(fields)) != len(fields)
        ):
            raise ArtifactError(f"knn demo_selector fields must be a non-empty list of distinct names, not {fields!r}")
        if not isinstance(pool, list) or not all(isinstance(d, dict) for d in pool):
            raise ArtifactError("knn demo_selector pool must be a list of objects")
        return cls(pool, fields=fields, k=k, embedder=embedder)

    def __deepcopy__(self, memo: dict[int, Any]) -> KNNDemos:
        """Copies share the embedder and the pool's vectors (both immutable here), not the lock."""
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        clone.__dict__.update(self.__dict__)
        clone.fields = list(self.fields)
        clone._lock = threading.Lock()
        return clone

    def __repr__(self) -> str:
        return f"KNNDemos(k={self.k}, fields={self.fields}, pool={len(self.pool)}, embedder={self.embedder_id!r})"


_SELECTORS: dict[str, type[KNNDemos]] = {"knn": KNNDemos}


def selector_to_dict(selector: Any) -> dict[str, Any]:
    """The JSON state of a demo selector; ``ArtifactError`` for one artifacts cannot hold."""
    if type(selector) not in _SELECTORS.values():
        raise ArtifactError(f"a demo selector of type {type(selector).__name__} cannot be saved; known kinds: {sorted(_SELECTORS)}")
    return selector.to_dict()


def selector_from_dict(data: Any, input_fields: Sequence[str] | None = None) -> KNNDemos:
    """A demo selector from its saved state; ``ArtifactError`` if it is malformed or foreign.

    ``input_fields`` (the predictor's) must include every field the selector embeds.
    """
    if not isinstance(data, dict):
        raise ArtifactError(f"demo_selector must be an object, not {type(data).__name__}")
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in _SELECTORS:
        raise ArtifactError(f"demo_selector has unknown kind {kind!r}; known: {sorted(_SELECTORS)}")
    selector = _SELECTORS[kind].from_dict(data)
    if input_fields is not None:
        unknown = [f for f in selector.fields if f not in input_fields]
        if unknown:
            raise ArtifactError(f"demo_selector embeds {unknown}, which are not input fields of the predictor ({list(input_fields)})")
    return selector
