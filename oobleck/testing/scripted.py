"""Test doubles for unit tests: LMs that answer from a script, with no model behind them.

They are ``BaseLM`` subclasses, so the real cache, retry and usage code runs around them;
only the model is fake. Integration tests use real servers and real models instead.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from oobleck.lm.base import BaseLM, Completion

__all__ = ["FieldScriptedLM", "ScriptedLM"]


class ScriptedLM(BaseLM):
    """Answers with scripted completion texts.

    ``script`` is either a list of texts (returned in order; ``cycle=True`` repeats them) or a
    function ``(messages, settings) -> str | list[str]``. Caching is off by default so every
    call reaches the script.
    """

    provider = "scripted"

    def __init__(self, script: Sequence[str] | Callable[[list[dict[str, str]], dict[str, Any]], str | list[str]],
                 *, cycle: bool = False, adapter: str | None = None, **kwargs: Any):  # fmt: skip
        kwargs.setdefault("cache", False)
        super().__init__(kwargs.pop("model", "scripted"), adapter=adapter, **kwargs)
        self._lock = threading.Lock()
        if callable(script):
            self._fn = script
            self._texts: Iterable[str] | None = None
        else:
            self._fn = None
            texts = list(script)
            self._texts = itertools.cycle(texts) if cycle else iter(texts)
        self.calls: list[list[dict[str, str]]] = []

    def generate(self, messages: list[dict[str, str]], **settings: Any) -> list[Completion]:
        with self._lock:
            self.calls.append(messages)
            if self._fn is not None:
                out = self._fn(messages, settings)
            else:
                assert self._texts is not None
                try:
                    out = next(iter(self._texts))  # type: ignore[call-overload]
                except StopIteration:
                    raise AssertionError(f"ScriptedLM ran out of scripted answers after {len(self.calls) - 1} calls") from None
        texts = [out] if isinstance(out, str) else list(out)
        return [Completion(t, prompt_tokens=sum(len(m["content"]) for m in messages) // 4, completion_tokens=len(t) // 4) for t in texts]


class FieldScriptedLM(BaseLM):
    """Answers in the chat adapter's field-marker format from a function of the input fields.

    ``respond(inputs) -> {output_field: value}`` sees the query's input values (parsed back out of
    the last user message), so tests can script field values without writing prompt text.
    """

    provider = "scripted"

    def __init__(self, respond: Callable[[dict[str, str]], Mapping[str, Any]], **kwargs: Any):
        kwargs.setdefault("cache", False)
        super().__init__(kwargs.pop("model", "field-scripted"), adapter="chat", **kwargs)
        self.respond = respond
        self.calls = 0
        self._lock = threading.Lock()

    def generate(self, messages: list[dict[str, str]], **settings: Any) -> list[Completion]:
        import re

        from oobleck.adapters.base import format_value

        with self._lock:
            self.calls += 1
        last = messages[-1]["content"].split("\n\nReply with ")[0]
        parts = re.split(r"\[\[ ## (\w+) ## \]\]\n", last)
        inputs = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
        outputs = self.respond(inputs)
        text = "\n\n".join(f"[[ ## {k} ## ]]\n{format_value(v)}" for k, v in outputs.items()) + "\n\n[[ ## completed ## ]]"
        return [Completion(text, prompt_tokens=len(last) // 4, completion_tokens=len(text) // 4)]
