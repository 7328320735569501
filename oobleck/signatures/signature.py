"""``Signature``: the typed interface of one LM step, declared as a class or a string.

A signature is a class (like DSPy's) so users can subclass it with annotated fields and a
docstring. Every signature, however declared, ends up as an ordered set of ``Field`` objects
plus instructions; derived signatures (new instructions, an extra reasoning field) are new
classes, so a signature never changes under a module that holds it.
"""

from __future__ import annotations

import enum
import inspect
import keyword
import sys
import typing
from typing import Any, Literal

from oobleck.errors import SignatureError
from oobleck.signatures.field import Field, FieldSpec
from oobleck.signatures.parse import parse_signature_string
from oobleck.signatures.types import choices_of, is_pydantic_model, parse_type, type_to_str

__all__ = ["Signature", "default_instructions", "ensure_signature", "make_signature"]


def default_instructions(inputs: list[str], outputs: list[str]) -> str:
    """The instruction a signature gets when nobody wrote one (DSPy users know this line)."""
    ins = ", ".join(f"`{n}`" for n in inputs)
    outs = ", ".join(f"`{n}`" for n in outputs)
    return f"Given the fields {ins}, produce the fields {outs}."


class _Views:
    """Read-side tables of one signature class; see ``SignatureMeta._views``."""

    __slots__ = ("fields", "inputs", "instructions", "instructions_source", "outputs", "source")

    def __init__(self, fields: dict[str, Field], instructions: str | None):
        self.source = fields
        self.instructions_source = instructions
        self.inputs = {n: f for n, f in fields.items() if f.is_input}
        self.outputs = {n: f for n, f in fields.items() if not f.is_input}
        self.fields = {f.name: f for f in [*self.inputs.values(), *self.outputs.values()]}
        self.instructions = instructions if instructions else default_instructions(list(self.inputs), list(self.outputs))


class SignatureMeta(type):
    """Collects annotated fields from a class body into an ordered field table."""

    _fields: dict[str, Field]
    _instructions: str | None

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any):
        preset = namespace.pop("__oobleck_fields__", None)
        specs = {k: v for k, v in namespace.items() if isinstance(v, FieldSpec)}
        for key in specs:
            del namespace[key]
        cls = super().__new__(mcs, name, bases, namespace, **kwargs)
        inherited: dict[str, Field] = {}
        for base in reversed(cls.__mro__[1:]):
            inherited.update(getattr(base, "_fields", {}) or {})
        if preset is not None:
            cls._fields = dict(preset)
        else:
            # The class statement's own frame, so string annotations may name local classes.
            caller = sys._getframe(1).f_locals if namespace.get("__annotations__") else {}
            cls._fields = {**inherited, **mcs._collect(cls, namespace, specs, caller)}
        doc = namespace.get("__doc__")
        if "_instructions" in namespace:
            cls._instructions = namespace["_instructions"]
        else:
            cls._instructions = inspect.cleandoc(doc) if doc else None
        mcs._validate(cls)
        return cls

    @staticmethod
    def _collect(cls: type, namespace: dict[str, Any], specs: dict[str, FieldSpec], caller: dict[str, Any]) -> dict[str, Field]:  # noqa: PLW0211 - the class being built
        own_annotations: dict[str, Any] = namespace.get("__annotations__", {})
        try:
            hints = typing.get_type_hints(cls, localns={**caller, **vars(cls)}) if own_annotations else {}
        except Exception:  # noqa: BLE001 - unresolvable forward refs (any error): fall back to our own safe parser below
            hints = {}
        fields: dict[str, Field] = {}
        order = list(own_annotations) + [k for k in specs if k not in own_annotations]
        for key in order:
            if key.startswith("_"):
                continue
            spec = specs.get(key)
            if spec is None:
                raise SignatureError(
                    f"{cls.__name__}.{key} is annotated but not declared: write "
                    f"`{key}: ... = ob.InputField()` or `= ob.OutputField()`"
                )
            if key in hints:
                annotation = hints[key]
            elif key in own_annotations:
                annotation = own_annotations[key]
                if isinstance(annotation, str):
                    annotation = parse_type(annotation)
            else:
                annotation = str
            fields[key] = Field(key, spec.kind, annotation, spec.desc, spec.prefix)
        return fields

    @staticmethod
    def _validate(cls: SignatureMeta) -> None:  # noqa: PLW0211 - the class being built
        if cls.__name__ == "Signature" and not cls._fields:
            return
        for name in cls._fields:
            if not _is_field_name(name):
                raise SignatureError(f"field name {name!r} is not a valid identifier")

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        # ``ob.Signature("question -> answer", "instructions")`` builds a signature class (as in DSPy).
        if cls.__name__ == "Signature" and not cls._fields and args and isinstance(args[0], (str, dict)):
            return make_signature(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    # -- read side ---------------------------------------------------------------------------

    def _views(cls) -> _Views:
        """The field tables derived from ``_fields``, computed once per class.

        Signature classes never change (derivations make new classes), so predictors can read
        these on every call for the cost of a dict copy. The cache lives in the class's own
        ``__dict__`` (never inherited) and is rebuilt if ``_fields`` or ``_instructions`` is
        ever rebound.
        """
        views = cls.__dict__.get("_oobleck_views")
        if views is None or views.source is not cls._fields or views.instructions_source is not cls._instructions:
            views = _Views(cls._fields, cls._instructions)
            type.__setattr__(cls, "_oobleck_views", views)
        return views

    @property
    def fields(cls) -> dict[str, Field]:
        """All fields, inputs first, each group in declaration order."""
        return dict(cls._views().fields)

    @property
    def input_fields(cls) -> dict[str, Field]:
        return dict(cls._views().inputs)

    @property
    def output_fields(cls) -> dict[str, Field]:
        return dict(cls._views().outputs)

    @property
    def instructions(cls) -> str:
        return cls._views().instructions

    @property
    def has_custom_instructions(cls) -> bool:
        return bool(cls._instructions)

    @property
    def signature(cls) -> str:
        """The string form, e.g. ``"context: list[str], question: str -> answer: str"``."""

        def side(fields: dict[str, Field]) -> str:
            return ", ".join(f"{f.name}: {type_to_str(f.annotation)}" for f in fields.values())

        return f"{side(cls.input_fields)} -> {side(cls.output_fields)}"

    def __repr__(cls) -> str:
        return f"{cls.__name__}({cls.signature!r}, instructions={cls.instructions!r})"

    # -- derive new signatures ---------------------------------------------------------------

    def _derive(cls, fields: dict[str, Field], instructions: str | None) -> type[Signature]:
        return SignatureMeta(
            cls.__name__,
            (Signature,),
            {"__oobleck_fields__": fields, "_instructions": instructions, "__module__": cls.__module__},
        )

    def with_instructions(cls, instructions: str) -> type[Signature]:
        """A copy with other instructions (what instruction optimizers produce)."""
        return cls._derive(dict(cls._fields), instructions)

    def prepend(cls, name: str, field: Any, annotation: Any = str) -> type[Signature]:
        """A copy with a new field first among its kind (ChainOfThought prepends ``reasoning``)."""
        return cls._insert(name, field, annotation, first=True)

    def append(cls, name: str, field: Any, annotation: Any = str) -> type[Signature]:
        return cls._insert(name, field, annotation, first=False)

    def _insert(cls, name: str, spec: Any, annotation: Any, *, first: bool) -> type[Signature]:
        if not isinstance(spec, FieldSpec):
            raise SignatureError("pass ob.InputField(...) or ob.OutputField(...)")
        if name in cls._fields:
            raise SignatureError(f"{cls.__name__} already has a field named {name!r}")
        new = Field(name, spec.kind, annotation, spec.desc, spec.prefix)
        same = [f for f in cls._fields.values() if f.kind == spec.kind]
        other = [f for f in cls._fields.values() if f.kind != spec.kind]
        same = [new, *same] if first else [*same, new]
        ordered = [*same, *other] if spec.kind == "input" else [*other, *same]
        return cls._derive({f.name: f for f in ordered}, cls._instructions)

    def delete(cls, name: str) -> type[Signature]:
        if name not in cls._fields:
            raise SignatureError(f"{cls.__name__} has no field named {name!r}")
        return cls._derive({k: v for k, v in cls._fields.items() if k != name}, cls._instructions)

    # -- serialization -----------------------------------------------------------------------

    def to_dict(cls) -> dict[str, Any]:
        """A JSON-ready description; types as text so loading never imports anything."""
        fields = []
        for f in cls.fields.values():
            entry: dict[str, Any] = {"name": f.name, "kind": f.kind, "type": type_to_str(f.annotation)}
            if f.desc:
                entry["desc"] = f.desc
            if f.prefix:
                entry["prefix"] = f.prefix
            choices = choices_of(f.annotation)
            if isinstance(f.annotation, type) and issubclass(f.annotation, enum.Enum) and choices:
                entry["choices"] = choices
            if is_pydantic_model(f.annotation):
                entry["json_schema"] = f.annotation.model_json_schema()
            nested = _nested_classes(f.annotation)
            if nested:
                entry["classes"] = nested
            fields.append(entry)
        return {"name": cls.__name__, "instructions": cls.instructions, "fields": fields}

    def from_dict(cls, data: dict[str, Any]) -> type[Signature]:
        """Rebuild a signature from ``to_dict`` output; unknown class types degrade safely.

        An enum becomes a ``Literal`` of its values and a pydantic model ``dict[str, Any]``,
        also inside ``list[...]`` and the like, so an artifact loads without the user's classes.
        """
        try:
            if not isinstance(data, dict) or not isinstance(data["fields"], list):
                raise SignatureError("malformed signature description: 'fields' must be a list")
            fields: dict[str, Field] = {}
            for entry in data["fields"]:
                text = entry["type"]
                try:
                    annotation = parse_type(text, names=_degraded_classes(entry.get("classes")))
                except SignatureError:
                    if _is_text_list(entry.get("choices")) and entry["choices"]:
                        annotation = Literal[tuple(entry["choices"])]
                    elif entry.get("json_schema") is not None:
                        annotation = dict[str, Any]
                    else:
                        raise
                kind = entry["kind"]
                if kind not in ("input", "output"):
                    raise SignatureError(f"field {entry['name']!r} has unknown kind {kind!r}")
                name = entry["name"]
                if not _is_field_name(name):
                    raise SignatureError(f"field name {name!r} is not a valid identifier")
                if name in fields:
                    raise SignatureError(f"field {name!r} appears twice")
                desc, prefix = entry.get("desc", ""), entry.get("prefix")
                if not isinstance(desc, str) or not (prefix is None or isinstance(prefix, str)):
                    raise SignatureError(f"field {name!r}: desc and prefix must be text")
                fields[name] = Field(name, kind, annotation, desc, prefix)
            instructions = data.get("instructions")
            if instructions is not None and not isinstance(instructions, str):
                raise SignatureError("instructions must be text")
            name = str(data.get("name") or "Signature")
            if not name.isidentifier():
                name = "Signature"
            return SignatureMeta(name, (Signature,), {"__oobleck_fields__": fields, "_instructions": instructions})
        except (KeyError, TypeError) as exc:
            raise SignatureError(f"malformed signature description: missing or bad {exc}") from None


def _is_field_name(name: Any) -> bool:
    """Identifiers that are not keywords: what a string signature accepts and ``field=...`` can pass."""
    return isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)


def _is_text_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _nested_classes(annotation: Any) -> dict[str, dict[str, Any]]:
    """Enums and pydantic models used inside a generic type (``list[Item]``), by name."""
    found: dict[str, dict[str, Any]] = {}

    def walk(tp: Any) -> None:
        if typing.get_origin(tp) is Literal:
            return
        for arg in typing.get_args(tp):
            if isinstance(arg, type) and issubclass(arg, enum.Enum):
                found[arg.__name__] = {"choices": choices_of(arg)}
            elif is_pydantic_model(arg):
                found[arg.__name__] = {"json_schema": arg.model_json_schema()}
            walk(arg)

    walk(annotation)
    return found


def _degraded_classes(classes: Any) -> dict[str, Any]:
    """Safe stand-ins for the classes ``_nested_classes`` recorded: Literal or a plain dict."""
    if not isinstance(classes, dict):
        return {}
    names: dict[str, Any] = {}
    for name, info in classes.items():
        if not isinstance(info, dict):
            continue
        choices = info.get("choices")
        if _is_text_list(choices) and choices:
            names[name] = Literal[tuple(choices)]
        elif info.get("json_schema") is not None:
            names[name] = dict[str, Any]
    return names


class Signature(metaclass=SignatureMeta):
    """Base class of class-declared signatures; the docstring is the instruction."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a Signature is used as a class; pass it to ob.Predict(...) rather than instantiating it")


def make_signature(spec: str | dict[str, Any], instructions: str | None = None, name: str = "StringSignature") -> type[Signature]:
    """Build a signature from a string (``"question -> answer"``) or a dict of name -> field spec."""
    if isinstance(spec, str):
        inputs, outputs = parse_signature_string(spec)
        fields = {f.name: f for f in [*inputs, *outputs]}
    elif isinstance(spec, dict):
        fields = {}
        for key, value in spec.items():
            if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], FieldSpec):
                annotation, field_spec = value
            elif isinstance(value, FieldSpec):
                annotation, field_spec = str, value
            else:
                raise SignatureError(f"field {key!r}: expected (type, ob.InputField()) or ob.OutputField(), got {value!r}")
            fields[key] = Field(key, field_spec.kind, annotation, field_spec.desc, field_spec.prefix)
    else:
        raise SignatureError(f"a signature is a string, a dict or a Signature class, not {type(spec).__name__}")
    if not any(f.is_input for f in fields.values()) or not any(not f.is_input for f in fields.values()):
        raise SignatureError("a signature needs at least one input and one output field")
    return SignatureMeta(name, (Signature,), {"__oobleck_fields__": fields, "_instructions": instructions})


def ensure_signature(spec: Any, instructions: str | None = None) -> type[Signature]:
    """Accept a Signature class or a string and return a Signature class."""
    if isinstance(spec, type) and issubclass(spec, Signature):
        if not spec.output_fields or not spec.input_fields:
            raise SignatureError(f"{spec.__name__} needs at least one input and one output field")
        return spec.with_instructions(instructions) if instructions else spec
    return make_signature(spec, instructions)
