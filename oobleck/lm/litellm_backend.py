"""``LM("litellm/<model>")``: any provider litellm supports, when litellm is installed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from oobleck.errors import ConfigurationError, LMConnectionError, LMResponseError
from oobleck.lm.base import Completion, Message
from oobleck.lm.lm import LM

__all__ = ["LiteLLMLM"]


class LiteLLMLM(LM):
    provider = "litellm"

    def __init__(self, model: str, **kwargs: Any):
        _, _, name = model.partition("/")
        try:
            import litellm  # noqa: F401
        except ImportError:
            raise ConfigurationError("LM ids 'litellm/...' need litellm: pip install litellm") from None
        super().__init__(name, **kwargs)

    def generate(self, messages: list[Message], **settings: Any) -> Sequence[Completion]:
        import litellm

        try:
            response = litellm.completion(model=self.model, messages=messages, num_retries=0, **settings)
        except litellm.exceptions.APIConnectionError as exc:
            raise LMConnectionError(f"litellm/{self.model}: {exc}") from exc
        except litellm.exceptions.RateLimitError as exc:
            raise LMResponseError(f"litellm/{self.model}: rate limited", status=429, retryable=True) from exc
        except litellm.exceptions.APIError as exc:
            status = getattr(exc, "status_code", None)
            raise LMResponseError(f"litellm/{self.model}: {exc}", status=status, retryable=bool(status and status >= 500)) from exc
        usage = getattr(response, "usage", None)
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        return [Completion(c.message.content or "", prompt, completion // max(1, len(response.choices))) for c in response.choices]
