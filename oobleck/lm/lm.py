"""``LM("provider/model")``: one front for every backend, chosen by the id's prefix.

``ob.LM("openai/gpt-4o-mini")`` returns an ``OpenAICompatibleLM``, ``ob.LM("hf/oobleck-tiny")``
a ``HuggingFaceLM``; each is also an ``LM`` and a ``BaseLM``. Backends are imported only when
used, so ``import oobleck`` never pays for torch or the openai SDK.
"""

from __future__ import annotations

import importlib
from typing import Any

from oobleck.errors import UnknownLMError
from oobleck.lm.base import BaseLM

__all__ = ["LM", "PROVIDERS"]

PROVIDERS: dict[str, str] = {
    "openai": "oobleck.lm.openai_backend:OpenAICompatibleLM",
    "hf": "oobleck.lm.hf_backend:HuggingFaceLM",
    "huggingface": "oobleck.lm.hf_backend:HuggingFaceLM",
    "litellm": "oobleck.lm.litellm_backend:LiteLLMLM",
}


def _backend(model: str) -> type[LM]:
    if not isinstance(model, str) or "/" not in model:
        raise UnknownLMError(
            f"LM id {model!r} has no provider prefix; write 'openai/<model>', 'hf/<path or hub id>' or 'litellm/<model>'"
        )
    provider = model.split("/", 1)[0]
    target = PROVIDERS.get(provider)
    if target is None:
        raise UnknownLMError(f"unknown LM provider {provider!r} in {model!r}; known: {sorted(PROVIDERS)}")
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


class LM(BaseLM):
    """Construct with an id such as ``"openai/gpt-4o-mini"`` or ``"hf/oobleck-tiny"``."""

    def __new__(cls, model: str, *args: Any, **kwargs: Any) -> LM:  # noqa: PYI034 - ``LM(...)`` returns a backend subclass
        backend = _backend(model) if cls is LM else cls
        return super().__new__(backend)
