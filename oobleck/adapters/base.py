"""The adapter contract: (signature, demos, inputs) -> messages, and completion -> typed fields.

An adapter owns the prompt format end to end, so the same program runs on a chat API, a JSON
mode server or a tiny local model just by changing the adapter. ``Adapter.__call__`` also owns
the one re-ask on a parse failure, so no predictor ever returns a silently empty field.
"""

from __future__ import annotations

import enum
import json
import logging
import types
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from oobleck.errors import ParseError
from oobleck.signatures.types import choices_of, coerce

if TYPE_CHECKING:
    from oobleck.lm.base import BaseLM
    from oobleck.signatures.signature import Signature

__all__ = ["Adapter", "Message", "format_value"]

Message = dict[str, str]
logger = logging.getLogger("oobleck.adapters")


def format_value(value: Any) -> str:
    """Text for a value: strings as they are, everything else as compact JSON."""
    if isinstance(value, str):
        return value
    if hasattr(value, "model_dump_json"):
        return value.model_dump_json()
    if isinstance(value, enum.Enum):
        return str(value.value)
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def allows_empty(annotation: Any) -> bool:
    """Whether a blank or null answer is a real value of this type (``Optional``, ``Any``, ``Literal['']``)."""
    if annotation is Any or annotation is type(None):
        return True
    args = get_args(annotation)
    if get_origin(annotation) is Literal:
        return "" in args or None in args
    return type(None) in args and (get_origin(annotation) is Union or isinstance(annotation, types.UnionType))


class Adapter(ABC):
    """Base class of prompt formats; subclasses implement ``format`` and ``parse``."""

    name: str = "adapter"

    @abstractmethod
    def format(self, signature: type[Signature], demos: Sequence[Mapping[str, Any]], inputs: Mapping[str, Any]) -> list[Message]:
        """Build the chat messages for one call."""

    @abstractmethod
    def parse_fields(self, signature: type[Signature], completion: str) -> dict[str, str]:
        """Split a completion into raw text per output field (missing fields simply absent)."""

    def lm_settings(self, signature: type[Signature]) -> dict[str, Any]:
        """Extra LM settings this format needs (e.g. stop sequences)."""
        return {}

    def completion_text(self, signature: type[Signature], outputs: Mapping[str, Any]) -> str | None:
        """The completion this format expects for ``outputs``: the target when training on a prompt
        (soft prompts); None where the format cannot write one."""
        return None

    def choice_completions(self, signature: type[Signature]) -> list[str] | None:
        """Completions answering each allowed label of a one-output classification signature, in label order.

        An LM that can score choices (in-process models) then picks one of these instead of
        generating freely; None where this format cannot write such a completion.
        """
        outputs = list(signature.output_fields.values())
        labels = choices_of(outputs[0].annotation) if len(outputs) == 1 else None
        if not labels:
            return None
        texts = [self.completion_text(signature, {outputs[0].name: label}) for label in labels]
        return None if any(t is None for t in texts) else [str(t) for t in texts]

    def retry_messages(self, messages: list[Message], completion: str, error: ParseError) -> tuple[list[Message], dict[str, Any]]:
        """Messages and settings for the single re-ask after a parse failure."""
        feedback = (
            f"Your reply could not be read: {error}. "
            "Reply again with every output field, in exactly the format described."
        )
        return [*messages, {"role": "assistant", "content": completion}, {"role": "user", "content": feedback}], {}

    def parse(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        """Typed output values; ``ParseError`` (with the raw text) if a field is missing or bad."""
        raw = self.parse_fields(signature, completion)
        values: dict[str, Any] = {}
        for name, field in signature.output_fields.items():
            if name not in raw:
                found = ", ".join(raw) or "none"
                raise ParseError(f"output field {name!r} is missing (found: {found})", raw=completion, field=name)
            value = raw[name]
            if (value is None or (isinstance(value, str) and not value.strip())) and not allows_empty(field.annotation):
                raise ParseError(f"output field {name!r} is empty", raw=completion, field=name)
            values[name] = coerce(value, field.annotation, field=name, raw=completion)
        return values

    def _prepare(self, signature: type[Signature], demos: Sequence[Mapping[str, Any]], inputs: Mapping[str, Any],
                 settings: dict[str, Any]) -> tuple[list[Message], dict[str, Any]]:  # fmt: skip
        return self.format(signature, demos, inputs), {**self.lm_settings(signature), **settings}

    def _first_outcome(self, signature: type[Signature], messages: list[Message], settings: dict[str, Any],
                       completions: list[str]) -> tuple[list[dict[str, Any]] | None, tuple[list[Message], dict[str, Any]]]:  # fmt: skip
        """Parsed outputs, or None and the (messages, settings) of the single re-ask."""
        parsed, error, bad = self._parse_all(signature, completions)
        if parsed:
            return parsed, (messages, settings)
        assert error is not None
        logger.debug("re-asking after parse failure: %s", error)
        retry, retry_settings = self.retry_messages(messages, bad, error)
        return None, (retry, {**settings, **retry_settings})

    def _final_outcome(self, signature: type[Signature], completions: list[str]) -> list[dict[str, Any]]:
        parsed, error, _ = self._parse_all(signature, completions)
        if parsed:
            return parsed
        assert error is not None
        raise error

    def __call__(self, lm: BaseLM, signature: type[Signature], demos: Sequence[Mapping[str, Any]], inputs: Mapping[str, Any],
                 **settings: Any) -> list[dict[str, Any]]:  # fmt: skip
        """Format, call the LM, parse; re-ask once on a parse failure, then raise ``ParseError``."""
        messages, settings = self._prepare(signature, demos, inputs, settings)
        parsed, (retry, retry_settings) = self._first_outcome(signature, messages, settings, lm(messages, **settings))
        if parsed is not None:
            return parsed
        return self._final_outcome(signature, lm(retry, **retry_settings))

    async def acall(self, lm: BaseLM, signature: type[Signature], demos: Sequence[Mapping[str, Any]], inputs: Mapping[str, Any],
                    **settings: Any) -> list[dict[str, Any]]:  # fmt: skip
        """``__call__`` for asyncio code."""
        messages, settings = self._prepare(signature, demos, inputs, settings)
        completions = await lm.acall(messages, **settings)
        parsed, (retry, retry_settings) = self._first_outcome(signature, messages, settings, completions)
        if parsed is not None:
            return parsed
        return self._final_outcome(signature, await lm.acall(retry, **retry_settings))

    def _parse_all(self, signature: type[Signature], completions: list[str]) -> tuple[list[dict[str, Any]], ParseError | None, str]:
        parsed: list[dict[str, Any]] = []
        first_error: ParseError | None = None
        bad = ""
        for text in completions:
            try:
                parsed.append(self.parse(signature, text))
            except ParseError as exc:
                if first_error is None:
                    first_error, bad = exc, text
        if not completions:
            first_error = ParseError("the LM returned no completion", raw="")
        return parsed, first_error, bad

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

