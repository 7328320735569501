"""``Example`` and ``Prediction``: the records that flow through programs and data sets."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["Example", "Prediction"]


class Example(Mapping[str, Any]):
    """A dict with attribute access that knows which of its keys are inputs.

    ``ex.with_inputs("question")`` marks the keys a program receives; the rest are labels a
    metric compares against.
    """

    __slots__ = ("_input_keys", "_store")

    def __init__(self, base: Mapping[str, Any] | None = None, **fields: Any):
        store: dict[str, Any] = dict(base) if base is not None else {}
        store.update(fields)
        object.__setattr__(self, "_store", store)
        input_keys = base._input_keys if isinstance(base, Example) else None
        object.__setattr__(self, "_input_keys", input_keys)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        try:
            return self._store[key]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {key!r}; it has {sorted(self._store)}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self._store[key] = value

    def __getitem__(self, key: str) -> Any:
        return self._store[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._store[key] = value

    def __iter__(self) -> Iterator[str]:
        return iter(self._store)

    def __len__(self) -> int:
        return len(self._store)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Example):
            return self._store == other._store and self._input_keys == other._input_keys
        return isinstance(other, Mapping) and self._store == dict(other)

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self._store.items())))

    def __repr__(self) -> str:
        inputs = f", inputs={sorted(self._input_keys)}" if self._input_keys is not None else ""
        return f"{type(self).__name__}({self._store!r}{inputs})"

    def __getstate__(self) -> Any:  # copy/deepcopy support; never used for pickled artifacts
        return (self._store, self._input_keys)

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "_store", state[0])
        object.__setattr__(self, "_input_keys", state[1])

    def with_inputs(self, *keys: str) -> Example:
        """A copy whose ``inputs()`` are ``keys``."""
        copy = type(self)(self._store)
        object.__setattr__(copy, "_input_keys", frozenset(keys))
        return copy

    @property
    def input_keys(self) -> frozenset[str] | None:
        return self._input_keys

    def inputs(self) -> Example:
        if self._input_keys is None:
            from oobleck.errors import InputError

            raise InputError("this Example has no inputs marked; call .with_inputs('field', ...) first")
        return Example({k: v for k, v in self._store.items() if k in self._input_keys})

    def labels(self) -> Example:
        keys = self._input_keys or frozenset()
        return Example({k: v for k, v in self._store.items() if k not in keys})

    def toDict(self) -> dict[str, Any]:
        return dict(self._store)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._store)

    def get(self, key: str, default: Any = None) -> Any:
        return self._store.get(key, default)

    def copy(self, **changes: Any) -> Example:
        copy = type(self)(self._store, **changes)
        object.__setattr__(copy, "_input_keys", self._input_keys)
        return copy


class Prediction(Example):
    """The outputs of a module call; ``completions`` keeps every candidate when ``n > 1``."""

    __slots__ = ("_completions",)

    def __init__(self, base: Mapping[str, Any] | None = None, **fields: Any):
        super().__init__(base, **fields)
        object.__setattr__(self, "_completions", None)

    @classmethod
    def from_completions(cls, completions: list[dict[str, Any]]) -> Prediction:
        prediction = cls(completions[0])
        object.__setattr__(prediction, "_completions", [dict(c) for c in completions])
        return prediction

    @property
    def completions(self) -> list[dict[str, Any]]:
        return self._completions if self._completions is not None else [dict(self._store)]

    def __getstate__(self) -> Any:
        return (self._store, self._input_keys, self._completions)

    def __setstate__(self, state: Any) -> None:
        super().__setstate__(state)
        object.__setattr__(self, "_completions", state[2] if len(state) > 2 else None)
