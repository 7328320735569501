"""``Passage``: one retrieved text, with its id, title and score.

A passage *is* its text (a ``str`` subclass), so ``retrieve(q).passages`` can be handed to
any ``list[str]`` input field, joined, or compared as plain text, while ``.id``, ``.title``
and ``.score`` stay available for metrics (passage recall) and traces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["Passage", "as_passage"]


class Passage(str):
    """Text of a passage plus ``id``, ``title`` and ``score`` (``None`` when unscored)."""

    id: str
    title: str
    score: float | None

    def __new__(cls, text: str, *, id: str = "", title: str = "", score: float | None = None) -> Passage:  # noqa: PYI034
        self = super().__new__(cls, text)
        self.id = str(id)
        self.title = str(title or "")
        self.score = None if score is None else float(score)
        return self

    @property
    def text(self) -> str:
        return str.__str__(self)

    def with_score(self, score: float | None) -> Passage:
        return Passage(self.text, id=self.id, title=self.title, score=score)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as written to index folders and traces."""
        return {"id": self.id, "title": self.title, "text": self.text, "score": self.score}

    def __reduce__(self) -> Any:  # copy/deepcopy keep the attributes; never used for artifacts
        return (_rebuild, (self.text, self.id, self.title, self.score))

    def __repr__(self) -> str:
        shown = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        score = "" if self.score is None else f", score={self.score:.4g}"
        return f"Passage({shown!r}, id={self.id!r}, title={self.title!r}{score})"


def _rebuild(text: str, id: str, title: str, score: float | None) -> Passage:
    return Passage(text, id=id, title=title, score=score)


def as_passage(value: Any, *, default_id: str = "", score: float | None = None) -> Passage:
    """A ``Passage`` from a passage, a string or a mapping with ``text`` (and ``id``/``title``/``score``).

    ``ValueError`` for anything else; callers turn it into the error of their layer.
    """
    if isinstance(value, Passage):
        return value if score is None else value.with_score(score)
    if isinstance(value, str):
        return Passage(value, id=default_id, score=score)
    if isinstance(value, Mapping):
        text = value.get("text", value.get("long_text"))
        if not isinstance(text, str):
            raise ValueError(f"a passage mapping needs a 'text' string; it has keys {sorted(map(str, value))}")  # noqa: TRY004 - callers turn ValueError into their own errors
        pid = value.get("id", value.get("pid", default_id))
        own_score = value.get("score")
        if score is None and isinstance(own_score, (int, float)) and not isinstance(own_score, bool):
            score = float(own_score)
        return Passage(text, id="" if pid is None else str(pid), title=str(value.get("title") or ""), score=score)
    raise ValueError(f"a passage must be a str or a mapping with 'text', not {type(value).__name__}")
