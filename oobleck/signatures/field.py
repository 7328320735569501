"""Input and output fields of a signature."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = ["Field", "FieldSpec", "InputField", "OutputField"]


@dataclass(frozen=True)
class FieldSpec:
    """What ``InputField()``/``OutputField()`` return inside a class body, before a name is known."""

    kind: Literal["input", "output"]
    desc: str = ""
    prefix: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def InputField(desc: str = "", *, prefix: str | None = None, **extra: Any) -> Any:
    """Declare an input field; ``desc`` is shown to the LM."""
    return FieldSpec("input", desc, prefix, extra)


def OutputField(desc: str = "", *, prefix: str | None = None, **extra: Any) -> Any:
    """Declare an output field; the LM's answer is coerced to the annotated type."""
    return FieldSpec("output", desc, prefix, extra)


@dataclass(frozen=True)
class Field:
    """One named, typed field of a signature."""

    name: str
    kind: Literal["input", "output"]
    annotation: Any = str
    desc: str = ""
    prefix: str | None = None

    @property
    def is_input(self) -> bool:
        return self.kind == "input"

    @property
    def label(self) -> str:
        """The name shown to an LM: the explicit prefix, else the field name."""
        return self.prefix or self.name

    def with_(self, **changes: Any) -> Field:
        return replace(self, **changes)
