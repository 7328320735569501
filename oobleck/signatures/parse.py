"""Parse signature strings such as ``"context: list[str], question -> answer: int"``."""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterator
from typing import Any

from oobleck.errors import SignatureError
from oobleck.signatures.field import Field
from oobleck.signatures.types import parse_type

__all__ = ["parse_signature_string"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _unquoted(text: str, offset: int, source: str) -> Iterator[tuple[int, str]]:
    """(index, character) for every character outside quoted strings (a Literal value may hold
    commas, brackets or an arrow); an unterminated quote is a ``SignatureError``."""
    quote: str | None = None
    quote_at = 0
    escaped = False
    for i, char in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "'\"":
            quote, quote_at = char, i
        else:
            yield i, char
    if quote:
        raise SignatureError("unterminated quote", source=source, position=offset + quote_at)


def _split_top_level(text: str, offset: int, source: str) -> list[tuple[str, int]]:
    """Split on commas outside brackets and quotes; keep each part's offset into ``source``."""
    parts: list[tuple[str, int]] = []
    opened: list[int] = []  # positions of the '[' not yet closed, so an error can point at one
    start = 0
    for i, char in _unquoted(text, offset, source):
        if char == "[":
            opened.append(i)
        elif char == "]":
            if not opened:
                raise SignatureError("unbalanced ']'", source=source, position=offset + i)
            opened.pop()
        elif char == "," and not opened:
            parts.append((text[start:i], offset + start))
            start = i + 1
    if opened:
        raise SignatureError("unbalanced '[' (never closed)", source=source, position=offset + opened[-1])
    parts.append((text[start:], offset + start))
    return parts


def _arrows(source: str) -> list[int]:
    """Positions of ``->`` outside quoted strings."""
    return [i for i, char in _unquoted(source, 0, source) if char == "-" and source.startswith("->", i)]


def _parse_side(text: str, offset: int, source: str, kind: str) -> list[tuple[Field, int]]:
    fields: list[tuple[Field, int]] = []
    if not text.strip():
        raise SignatureError(f"no {kind} fields", source=source, position=offset)
    for part, at in _split_top_level(text, offset, source):
        lead = len(part) - len(part.lstrip())
        body = part.strip()
        at += lead
        if not body:
            raise SignatureError(f"empty {kind} field (stray comma?)", source=source, position=at)
        name_match = _NAME.match(body)
        if not name_match:
            raise SignatureError(f"expected a field name, found {body[0]!r}", source=source, position=at)
        name = name_match.group(0)
        if keyword.iskeyword(name):
            raise SignatureError(f"{name!r} is a Python keyword and cannot be a field name", source=source, position=at)
        rest = body[name_match.end() :]
        annotation: Any = str
        if rest.strip():
            colon = rest.lstrip()
            if not colon.startswith(":"):
                bad = at + name_match.end() + (len(rest) - len(colon))
                raise SignatureError(f"expected ':' or ',' after field {name!r}", source=source, position=bad)
            type_text = colon[1:]
            type_at = at + name_match.end() + (len(rest) - len(colon)) + 1
            annotation = parse_type(type_text, source=source, offset=type_at)
        fields.append((Field(name=name, kind="input" if kind == "input" else "output", annotation=annotation), at))
    return fields


def parse_signature_string(source: str) -> tuple[list[Field], list[Field]]:
    """Return (inputs, outputs); a malformed string raises ``SignatureError`` with a caret."""
    if not isinstance(source, str):
        raise SignatureError(f"a signature string must be str, not {type(source).__name__}")
    arrows = _arrows(source)
    if not arrows:
        raise SignatureError("a signature needs '->' between inputs and outputs", source=source, position=len(source))
    if len(arrows) > 1:
        raise SignatureError("a signature has exactly one '->'", source=source, position=arrows[1])
    arrow = arrows[0]
    inputs = _parse_side(source[:arrow], 0, source, "input")
    outputs = _parse_side(source[arrow + 2 :], arrow + 2, source, "output")
    seen: set[str] = set()
    for f, at in [*inputs, *outputs]:
        if f.name in seen:
            raise SignatureError(f"field {f.name!r} appears twice", source=source, position=at)
        seen.add(f.name)
    return [f for f, _ in inputs], [f for f, _ in outputs]
