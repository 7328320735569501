"""A terse ``field: value`` format for small local models (the demo model is trained on it).

Layout, as plain text once a chat template joins the two messages::

    <instructions>                 (system message)
    word: plane                    (user message: demos, then the query)
    answer: enalp
    word: stone
    answer:

The model continues after the last ``answer:``. Field descriptions are left out on purpose:
small models have short contexts and were never trained to read them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from oobleck.adapters.base import Adapter, Message, format_value
from oobleck.errors import ParseError

if TYPE_CHECKING:
    from oobleck.signatures.signature import Signature

__all__ = ["CompactAdapter"]


def _one_line(value: Any) -> str:
    return format_value(value).replace("\n", " ")


class CompactAdapter(Adapter):
    """``field: value`` lines; ``demo_separator`` sits between demos (a blank line or none)."""

    name = "compact"

    def __init__(self, demo_separator: str = "\n"):
        self.demo_separator = demo_separator

    def format(self, signature: type[Signature], demos: Sequence[Mapping[str, Any]], inputs: Mapping[str, Any]) -> list[Message]:
        blocks = []
        fields = list(signature.fields.values())
        outputs = list(signature.output_fields.values())
        for demo in demos:
            if not any(f.name in demo for f in outputs):
                continue
            lines = [f"{f.label}: {_one_line(demo[f.name])}" for f in fields if f.name in demo]
            blocks.append("\n".join(lines))
        query = [f"{f.label}: {_one_line(inputs[f.name])}" for f in signature.input_fields.values() if f.name in inputs]
        query.append(f"{outputs[0].label}:")
        blocks.append("\n".join(query))
        return [
            {"role": "system", "content": signature.instructions},
            {"role": "user", "content": self.demo_separator.join(blocks)},
        ]

    def parse_fields(self, signature: type[Signature], completion: str) -> dict[str, str]:
        outputs = list(signature.output_fields.values())
        labels = {f.label: f.name for f in signature.fields.values()}
        pattern = re.compile(r"^(" + "|".join(re.escape(label) for label in labels) + r"):(.*)$")
        text = f"{outputs[0].label}:{completion}"
        found: dict[str, str] = {}
        current: str | None = None
        for line in text.split("\n"):
            match = pattern.match(line)
            if match:
                name = labels[match.group(1)]
                if name in found or signature.fields[name].is_input:
                    break  # the model went on to invent another example: stop here
                current = name
                found[name] = match.group(2).strip()
            elif current is not None:
                found[current] = (found[current] + "\n" + line).strip()
        return found

    def completion_text(self, signature: type[Signature], outputs: Mapping[str, Any]) -> str | None:
        fields = list(signature.output_fields.values())
        if any(f.name not in outputs for f in fields):
            return None
        first, *rest = fields
        return " " + "\n".join([_one_line(outputs[first.name]), *(f"{f.label}: {_one_line(outputs[f.name])}" for f in rest)])

    def retry_messages(self, messages: list[Message], completion: str, error: ParseError) -> tuple[list[Message], dict[str, Any]]:
        # Small models cannot read feedback; a second, sampled attempt is the useful re-ask.
        return messages, {"temperature": 0.7, "rollout_id": "reask"}
