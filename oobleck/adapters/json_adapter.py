"""Ask for one JSON object with the output fields as keys; for models with a JSON mode."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from oobleck.adapters.base import Adapter, Message
from oobleck.adapters.chat import describe_fields, type_hint
from oobleck.errors import ParseError
from oobleck.signatures.types import type_to_str

if TYPE_CHECKING:
    from oobleck.signatures.signature import Signature

__all__ = ["JSONAdapter"]

_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "value") and not isinstance(value, (str, int, float, bool, list, dict)):
        return value.value
    return value


class JSONAdapter(Adapter):
    """Inputs as a JSON object in, outputs as a JSON object out."""

    name = "json"

    def __init__(self, json_mode: bool = False):
        #: ask the server for ``response_format={"type": "json_object"}`` (OpenAI, vLLM, llama.cpp)
        self.json_mode = json_mode

    def lm_settings(self, signature: type[Signature]) -> dict[str, Any]:
        return {"response_format": {"type": "json_object"}} if self.json_mode else {}

    def system_message(self, signature: type[Signature]) -> str:
        keys = []
        for name, f in signature.output_fields.items():
            hint = type_hint(f) or type_to_str(f.annotation)
            keys.append(f'- "{name}": {hint}')
        return "\n\n".join(
            [
                "Input fields:\n" + describe_fields(signature.input_fields),
                "Output fields:\n" + describe_fields(signature.output_fields),
                "Reply with one JSON object and nothing else. Its keys:\n" + "\n".join(keys),
                "Task:\n" + signature.instructions,
            ]
        )

    def _dump(self, names: Sequence[str], values: Mapping[str, Any]) -> str:
        return json.dumps({n: _jsonable(values[n]) for n in names if n in values}, ensure_ascii=False, default=str)

    def format(self, signature: type[Signature], demos: Sequence[Mapping[str, Any]], inputs: Mapping[str, Any]) -> list[Message]:
        messages: list[Message] = [{"role": "system", "content": self.system_message(signature)}]
        ins, outs = list(signature.input_fields), list(signature.output_fields)
        for demo in demos:
            if not any(n in demo for n in outs):
                continue
            messages.append({"role": "user", "content": self._dump(ins, demo)})
            messages.append({"role": "assistant", "content": self._dump(outs, demo)})
        messages.append({"role": "user", "content": self._dump(ins, inputs)})
        return messages

    def parse_fields(self, signature: type[Signature], completion: str) -> dict[str, Any]:  # type: ignore[override]
        match = _OBJECT.search(completion)
        if not match:
            raise ParseError("no JSON object in the reply", raw=completion)
        try:
            data = json.loads(match.group(0))
        except json.JSONDecodeError as exc:
            data = _first_object(completion)
            if data is None:
                raise ParseError(f"the reply is not valid JSON: {exc.msg} at character {exc.pos}", raw=completion) from None
        except (ValueError, RecursionError) as exc:  # a huge number or absurd nesting
            raise ParseError(f"the reply is not usable JSON: {exc}", raw=completion) from None
        if not isinstance(data, dict):
            raise ParseError("the reply's JSON is not an object", raw=completion)
        return {k: v for k, v in data.items() if k in signature.output_fields}


def _first_object(text: str, tries: int = 32) -> dict[str, Any] | None:
    """The first JSON object that decodes, for replies with braces around it ("{...} See {note}")."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1 and tries > 0:
        try:
            data, _ = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict):
            return data
        start = text.find("{", start + 1)
        tries -= 1
    return None
