"""Field types: parse them from text without ``eval``, print them back, and coerce LM output.

Signature strings and artifacts name types as text (``list[str]``, ``Literal['a', 'b']``).
The parser here accepts exactly the supported grammar and nothing else, so a type name in a
file can never run code. Coercion turns an LM's text into the declared Python type, or raises
``ParseError`` saying which field and why.
"""

from __future__ import annotations

import enum
import json
import re
import types
from collections.abc import Mapping
from typing import Any, Literal, Optional, Union, get_args, get_origin

from oobleck.errors import ParseError, SignatureError

__all__ = ["choices_of", "coerce", "is_pydantic_model", "parse_type", "type_to_str"]

_SIMPLE: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool, "Any": Any}
_GENERIC = {"list", "dict", "Optional", "Literal", "List", "Dict", "Union"}
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
      | (?P<punct>[\[\],|])
    )""",
    re.VERBOSE,
)


_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.))", re.DOTALL)
_SIMPLE_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r", "0": "\0"}


def _unescape(body: str) -> str:
    """Decode the escapes ``type_to_str`` and hand-written strings use, without ``eval``."""

    def replace(match: re.Match[str]) -> str:
        digits = match.group(1) or match.group(2) or match.group(3)
        if digits:
            code = int(digits, 16)
            if code > 0x10FFFF:
                raise ValueError(f"escape \\{match.group(0)[1]}{digits} is not a character")
            return chr(code)
        char = match.group(4)
        if char in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[char]
        raise ValueError(f"unknown escape \\{char}")

    return _ESCAPE.sub(replace, body)


class _TypeParser:
    """Recursive descent over the small type grammar of signature strings."""

    def __init__(self, text: str, source: str | None = None, offset: int = 0, names: Mapping[str, Any] | None = None):
        self.text = text
        self.source = source if source is not None else text
        self.offset = offset
        self.names = names or {}
        self.pos = 0

    def error(self, message: str, pos: int | None = None) -> SignatureError:
        at = self.offset + (self.pos if pos is None else pos)
        return SignatureError(message, source=self.source, position=at)

    def peek(self) -> tuple[str, str, int] | None:
        match = _TOKEN.match(self.text, self.pos)
        if not match or match.end() == match.start() or match.lastgroup is None:
            rest = self.text[self.pos :]
            if rest.strip():
                raise self.error(f"unexpected character {rest.strip()[0]!r} in type")
            return None
        start = match.start(match.lastgroup)
        return match.lastgroup, match.group(match.lastgroup), start

    def next(self) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise self.error("type ends too early", len(self.text))
        match = _TOKEN.match(self.text, self.pos)
        assert match is not None
        self.pos = match.end()
        return token

    def expect(self, punct: str) -> None:
        kind, value, start = self.next()
        if kind != "punct" or value != punct:
            raise self.error(f"expected {punct!r} but found {value!r}", start)

    def parse(self) -> Any:
        result = self.union()
        if self.peek() is not None:
            _, value, start = self.next()
            raise self.error(f"unexpected {value!r} after the type", start)
        return result

    def union(self) -> Any:
        members = [self.atom()]
        while (token := self.peek()) is not None and token[1] == "|":
            self.next()
            members.append(self.atom())
        if len(members) == 1:
            return members[0]
        return Union[tuple(members)]

    def atom(self) -> Any:
        kind, value, start = self.next()
        if kind != "name":
            raise self.error(f"expected a type name but found {value!r}", start)
        if value == "None":
            return type(None)
        if value in _SIMPLE:
            return _SIMPLE[value]
        if value in self.names and value not in _GENERIC:
            return self.names[value]
        if value not in _GENERIC:
            known = ", ".join([*_SIMPLE, "list[T]", "dict[str, T]", "Optional[T]", "Literal[...]"])
            raise self.error(f"unknown type {value!r}; known types: {known}", start)
        token = self.peek()
        if token is None or token[1] != "[":
            if value in ("list", "List"):
                return list
            if value in ("dict", "Dict"):
                return dict
            raise self.error(f"{value} needs parameters in [...]", start)
        self.next()
        if value == "Literal":
            choices = [self.literal_value()]
            while (token := self.peek()) is not None and token[1] == ",":
                self.next()
                choices.append(self.literal_value())
            self.expect("]")
            return Literal[tuple(choices)]
        params = [self.union()]
        while (token := self.peek()) is not None and token[1] == ",":
            self.next()
            params.append(self.union())
        self.expect("]")
        if value in ("list", "List"):
            if len(params) != 1:
                raise self.error("list takes one parameter", start)
            return list[params[0]]  # type: ignore[valid-type]
        if value in ("dict", "Dict"):
            if len(params) != 2:
                raise self.error("dict takes two parameters: dict[str, T]", start)
            return dict[params[0], params[1]]  # type: ignore[valid-type]
        if value == "Optional":
            if len(params) != 1:
                raise self.error("Optional takes one parameter", start)
            return Optional[params[0]]
        return Union[tuple(params)]

    def literal_value(self) -> Any:
        kind, value, start = self.next()
        if kind == "string":
            try:
                return _unescape(value[1:-1])
            except ValueError as exc:
                raise self.error(f"bad string in Literal: {exc}", start) from None
        if kind == "number":
            try:
                return float(value) if "." in value or "e" in value.lower() else int(value)
            except ValueError as exc:  # e.g. an integer with more digits than Python converts
                raise self.error(f"bad number in Literal: {exc}", start) from None
        if kind == "name" and value in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[value]
        raise self.error(f"Literal values must be strings, numbers, True, False or None, not {value!r}", start)


def parse_type(text: str, *, source: str | None = None, offset: int = 0, names: Mapping[str, Any] | None = None) -> Any:
    """Parse a type annotation written as text; ``SignatureError`` names the bad position.

    ``names`` maps extra type names (e.g. classes an artifact described) to the types to use.
    """
    if not isinstance(text, str):
        raise SignatureError(f"a type must be given as text, not {type(text).__name__}")
    if not text.strip():
        raise SignatureError("empty type", source=source or text, position=offset)
    try:
        return _TypeParser(text, source, offset, names).parse()
    except RecursionError:
        raise SignatureError("type is nested too deeply", source=source if source is not None else text, position=offset) from None


def _is_union(tp: Any) -> bool:
    return get_origin(tp) is Union or isinstance(tp, types.UnionType)


def is_pydantic_model(tp: Any) -> bool:
    """True for pydantic models, checked without importing pydantic."""
    return isinstance(tp, type) and hasattr(tp, "model_validate") and hasattr(tp, "model_json_schema")


def type_to_str(tp: Any) -> str:
    """Print a type the way ``parse_type`` reads it (pydantic models and enums by name)."""
    if tp is type(None):
        return "None"
    if tp is Any:
        return "Any"
    if tp in (str, int, float, bool, list, dict):
        return tp.__name__
    origin = get_origin(tp)
    if origin is Literal:
        return "Literal[" + ", ".join(_literal_repr(v) for v in get_args(tp)) + "]"
    if _is_union(tp):
        args = get_args(tp)
        if len(args) == 2 and type(None) in args:
            inner = args[0] if args[1] is type(None) else args[1]
            return f"Optional[{type_to_str(inner)}]"
        return " | ".join(type_to_str(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__}[" + ", ".join(type_to_str(a) for a in get_args(tp)) + "]"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp)


def _literal_repr(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(value)


def choices_of(tp: Any) -> list[str] | None:
    """The allowed answers of a classification type (Literal, enum, bool), as text."""
    if get_origin(tp) is Literal:
        return [str(v) for v in get_args(tp)]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return [str(member.value) for member in tp]
    if tp is bool:
        return ["True", "False"]
    return None


_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)


def _strip_fence(text: str) -> str:
    match = _FENCE.match(text.strip())
    return match.group(1).strip() if match else text.strip()


def _loads(text: str, what: str) -> Any:
    try:
        return json.loads(_strip_fence(text))
    except json.JSONDecodeError as exc:
        raise ValueError(f"expected {what} as JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # huge integers, absurdly deep nesting
        raise ValueError(f"expected {what} as JSON: {exc}") from None


_TRUE = {"true", "yes", "y", "1", "correct", "t"}
_FALSE = {"false", "no", "n", "0", "incorrect", "f"}


def _norm_choice(text: str) -> str:
    return text.strip().strip("\"'`*.").strip().lower()


def _coerce(value: Any, tp: Any) -> Any:
    if tp is Any or tp is None:
        return value
    if tp is type(None):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            return None
        raise ValueError("expected None")
    if _is_union(tp):
        args = get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", ""))):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except (ValueError, TypeError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors) or "no union member matched")
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        for choice in choices:
            if value == choice:
                return choice
        text = _norm_choice(str(value))
        for choice in choices:
            if _norm_choice(str(choice)) == text:
                return choice
        raise ValueError(f"expected one of {', '.join(map(repr, choices))}, got {str(value)[:80]!r}")
    if tp is str:
        if isinstance(value, str):
            return value.strip()
        return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = _norm_choice(str(value))
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {str(value)[:80]!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError("expected an integer, got a boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        text = str(value).strip().rstrip(".").replace(",", "")
        if re.fullmatch(r"[-+]?\d+", text):
            return int(text)
        raise ValueError(f"expected an integer, got {str(value)[:80]!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        text = str(value).strip().rstrip(".").replace(",", "")
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {str(value)[:80]!r}") from None
    if tp is list or origin is list:
        items = value if isinstance(value, list) else _loads(str(value), "a list")
        if not isinstance(items, list):
            raise ValueError(f"expected a list, got {type(items).__name__}")
        (item_type,) = get_args(tp) or (Any,)
        return [_coerce(item, item_type) for item in items]
    if tp is dict or origin is dict:
        mapping = value if isinstance(value, dict) else _loads(str(value), "an object")
        if not isinstance(mapping, dict):
            raise ValueError(f"expected an object, got {type(mapping).__name__}")
        key_type, value_type = get_args(tp) or (str, Any)
        return {_coerce(k, key_type): _coerce(v, value_type) for k, v in mapping.items()}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        text = _norm_choice(str(value))
        for member in tp:
            if _norm_choice(str(member.value)) == text or member.name.lower() == text:
                return member
        raise ValueError(f"expected one of {', '.join(str(m.value) for m in tp)}, got {str(value)[:80]!r}")
    if is_pydantic_model(tp):
        if isinstance(value, tp):
            return value
        data = value if isinstance(value, dict) else _loads(str(value), f"a {tp.__name__} object")
        try:
            return tp.model_validate(data)
        except Exception as exc:  # noqa: BLE001 - pydantic.ValidationError, without importing pydantic here
            raise ValueError(f"does not match {tp.__name__}: {exc}") from None
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ValueError(f"cannot coerce to {type_to_str(tp)}")


def coerce(value: Any, tp: Any, *, field: str = "value", raw: str | None = None) -> Any:
    """Convert an LM value to the declared type; ``ParseError`` names the field on failure."""
    try:
        return _coerce(value, tp)
    except (ValueError, TypeError) as exc:
        raise ParseError(
            f"field {field!r} ({type_to_str(tp)}): {exc}",
            raw=raw if raw is not None else str(value),
            field=field,
        ) from None


def check_input(value: Any, tp: Any) -> bool:
    """Loose runtime check that an input value fits its declared type (for clear input errors)."""
    if tp is Any or tp is str:
        return True  # any value can be shown to an LM as text
    try:
        _coerce(value, tp)
    except (ValueError, TypeError):
        return False
    return True

