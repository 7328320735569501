"""The default format for chat models: each field between explicit ``[[ ## name ## ]]`` markers.

Markers make parsing unambiguous whatever the field text contains, and the system message
spells out every field's type, so the model knows when a JSON list or a fixed label is wanted.
Demos are shown as earlier user/assistant turns, which chat models follow well.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from oobleck.adapters.base import Adapter, Message, format_value
from oobleck.signatures.field import Field
from oobleck.signatures.types import choices_of, is_pydantic_model, type_to_str

if TYPE_CHECKING:
    from oobleck.signatures.signature import Signature

__all__ = ["ChatAdapter", "describe_fields", "type_hint"]

_MARKER = re.compile(r"\[\[ ## (\w+) ## \]\]")


def marker(name: str) -> str:
    return f"[[ ## {name} ## ]]"


def type_hint(field: Field) -> str:
    """A short phrase telling the model what shape of value a field takes."""
    choices = choices_of(field.annotation)
    if choices:
        return "exactly one of: " + "; ".join(choices)
    if field.annotation is str:
        return ""
    if is_pydantic_model(field.annotation):
        import json

        return "a JSON object following this schema: " + json.dumps(field.annotation.model_json_schema(), separators=(",", ":"))
    if field.annotation in (int, float):
        return f"a single {type_to_str(field.annotation)}"
    return f"JSON of type {type_to_str(field.annotation)}"


def describe_fields(fields: Mapping[str, Field]) -> str:
    lines = []
    for i, f in enumerate(fields.values(), 1):
        line = f"{i}. `{f.name}` ({type_to_str(f.annotation)})"
        if f.desc:
            line += f": {f.desc}"
        lines.append(line)
    return "\n".join(lines)


def _render_value(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(f"[{i}] {v}" for i, v in enumerate(value, 1)) if value else "(empty list)"
    return format_value(value)


class ChatAdapter(Adapter):
    """Field-marker format for instruction-following chat models."""

    name = "chat"

    def system_message(self, signature: type[Signature]) -> str:
        return _prompt_parts(signature)[0]

    @staticmethod
    def _build_system_message(signature: type[Signature]) -> str:
        outputs = signature.output_fields
        layout = [f"{marker(n)}\n{{{n}}}" for n in signature.fields]
        hints = [f"- `{n}`: {type_hint(f)}" for n, f in outputs.items() if type_hint(f)]
        parts = [
            "Input fields:\n" + describe_fields(signature.input_fields),
            "Output fields:\n" + describe_fields(outputs),
            "Every message uses this layout, one marker line per field:\n\n" + "\n\n".join(layout) + f"\n\n{marker('completed')}",
        ]
        if hints:
            parts.append("Output values must be:\n" + "\n".join(hints))
        parts.append("Task:\n" + signature.instructions)
        return "\n\n".join(parts)

    def _block(self, fields: Mapping[str, Field], values: Mapping[str, Any], *, outputs: bool = False) -> str:
        # Outputs are shown exactly as ``parse`` reads them (lists as JSON), so demos teach a parsable reply.
        render = format_value if outputs else _render_value
        return "\n\n".join(f"{marker(n)}\n{render(values[n])}" for n in fields if n in values)

    def format(self, signature: type[Signature], demos: Sequence[Mapping[str, Any]], inputs: Mapping[str, Any]) -> list[Message]:
        messages: list[Message] = [{"role": "system", "content": self.system_message(signature)}]
        input_fields, outputs = signature.input_fields, signature.output_fields
        for demo in demos:
            if not any(n in demo for n in outputs):
                continue
            messages.append({"role": "user", "content": self._block(input_fields, demo)})
            messages.append({"role": "assistant", "content": self._block(outputs, demo, outputs=True) + f"\n\n{marker('completed')}"})
        closing = _prompt_parts(signature)[1]
        messages.append({"role": "user", "content": self._block(input_fields, inputs) + "\n\n" + closing})
        return messages

    def completion_text(self, signature: type[Signature], outputs: Mapping[str, Any]) -> str | None:
        if any(n not in outputs for n in signature.output_fields):
            return None
        return self._block(signature.output_fields, outputs, outputs=True) + f"\n\n{marker('completed')}"

    def parse_fields(self, signature: type[Signature], completion: str) -> dict[str, str]:
        sections: dict[str, str] = {}
        outputs = signature.output_fields
        matches = list(_MARKER.finditer(completion))
        for i, match in enumerate(matches):
            name = match.group(1)
            end = matches[i + 1].start() if i + 1 < len(matches) else len(completion)
            if name in outputs and name not in sections:
                sections[name] = completion[match.end() : end].strip()
        return sections


# Signature classes are immutable (derivations make new classes), so the parts of a prompt
# that depend only on the signature are built once per class. Weak keys let the many
# signatures an optimizer derives be collected.
_PROMPT_PARTS: weakref.WeakKeyDictionary[type, tuple[str, str]] = weakref.WeakKeyDictionary()


def _prompt_parts(signature: type[Signature]) -> tuple[str, str]:
    """(system message, closing line of the last user turn) for ``signature``."""
    parts = _PROMPT_PARTS.get(signature)
    if parts is None:
        closing = "Reply with " + ", then ".join(marker(n) for n in signature.output_fields) + f", and end with {marker('completed')}."
        parts = (ChatAdapter._build_system_message(signature), closing)
        _PROMPT_PARTS[signature] = parts
    return parts
