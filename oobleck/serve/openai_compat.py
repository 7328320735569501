"""An OpenAI-compatible ``/v1`` for the in-process Hugging Face models the served programs use.

Any OpenAI client (the ``openai`` SDK, DSPy through litellm, curl) can then call a model that
oobleck tuned. Each model is named ``<program>`` or, for a program of several predictors,
``<program>/<predictor>``, and is the predictor's effective LM (``resolve_lm()``): a predictor
carrying a soft prompt resolves to a soft-prompted model, which is what gets served. Requests
from many clients reach the model's batcher from worker threads, so they share ``generate``
calls. ``stream=true`` is answered as server-sent events once the completion is ready (one
content chunk per choice), which every streaming client accepts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from oobleck.errors import BudgetExceeded, ConfigurationError, LMError
from oobleck.lm.base import Completion
from oobleck.lm.budget import charge_tokens, release_call, reserve_call
from oobleck.lm.usage import record_usage
from oobleck.serve.metrics import Metrics

__all__ = ["ChatCompletionRequest", "add_openai_routes", "openai_error"]

logger = logging.getLogger("oobleck.serve.openai")

_DEFAULT_MAX_TOKENS = 128  # what the Hugging Face backend generates when no max_tokens is set


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"] = "text"
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None


class ChatCompletionRequest(BaseModel):
    """The OpenAI chat-completion parameters this server honours; others are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1, le=16)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32768)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None


def openai_error(request: Request, status: int, kind: str, message: str, *, param: str | None = None, code: str | None = None) -> JSONResponse:
    """An error in OpenAI's shape (``{"error": {...}}``), with the request id beside it."""
    rid = getattr(request.state, "request_id", None) or "-"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}, "request_id": rid}
    return JSONResponse(body, status_code=status)


def _messages(request: ChatCompletionRequest) -> list[dict[str, str]]:
    out = []
    for message in request.messages:
        content = message.content
        text = content if isinstance(content, str) else "".join(p.text for p in content or [])
        out.append({"role": "system" if message.role == "developer" else message.role, "content": text})
    return out


def _settings(lm: Any, request: ChatCompletionRequest) -> dict[str, Any]:
    """The LM's own defaults, overridden by the request's parameters."""
    settings = dict(getattr(lm, "settings", {}) or {})
    given = {"temperature": request.temperature, "top_p": request.top_p, "n": request.n, "seed": request.seed,
             "max_tokens": request.max_completion_tokens or request.max_tokens,
             "stop": [request.stop] if isinstance(request.stop, str) else request.stop}  # fmt: skip
    settings.update({k: v for k, v in given.items() if v is not None})
    if given["max_tokens"] is not None:
        settings.pop("max_new_tokens", None)
    return settings


def _generate(lm: Any, messages: list[dict[str, str]], settings: dict[str, Any]) -> list[Completion]:
    """One direct ``generate`` call, counted in the LM's usage and any open budget or usage scope."""
    reserve_call(lm.budget_id)
    try:
        raw = lm.generate(messages, **settings)
    except BaseException:
        release_call()
        raise
    completions = [c if isinstance(c, Completion) else Completion(str(c)) for c in raw]
    if not completions:
        raise LMError(f"{lm.budget_id}: the model returned no completions")
    prompt_tokens = max(c.prompt_tokens for c in completions)
    completion_tokens = sum(c.completion_tokens for c in completions)
    lm.usage.add(1, prompt_tokens, completion_tokens, 0)
    record_usage(1, prompt_tokens, completion_tokens, 0)
    charge_tokens(lm.budget_id, prompt_tokens, completion_tokens, billed=True)
    return completions


def _too_long(lm: Any, messages: list[dict[str, str]]) -> str | None:
    """A message when the prompt does not fit the model's context (a client error, so a 400)."""
    try:
        length, limit = len(lm.prompt_ids(messages)), lm.context_length
    except Exception:  # noqa: BLE001 - a backend without these is checked by generate itself
        return None
    if length >= limit:
        return f"the prompt is {length} tokens but this model reads at most {limit}"
    return None


def add_openai_routes(app: FastAPI, models: Mapping[str, Any], metrics: Metrics) -> None:
    """``GET /v1/models``, ``GET /v1/models/{id}`` and ``POST /v1/chat/completions`` for ``models`` (id -> LM)."""
    created = int(time.time())

    def card(model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": created, "owned_by": "oobleck"}

    @app.get("/v1/models", tags=["openai"])
    async def list_models() -> dict[str, Any]:
        """The in-process models of the served programs, by program (and predictor) name."""
        return {"object": "list", "data": [card(m) for m in models]}

    @app.get("/v1/models/{model_id:path}", tags=["openai"])
    async def get_model(model_id: str, request: Request) -> Any:
        if model_id not in models:
            return openai_error(request, 404, "invalid_request_error", f"no model {model_id!r}; serving {sorted(models)}",
                                param="model", code="model_not_found")  # fmt: skip
        return card(model_id)

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        """OpenAI chat completions against a served program's in-process model."""
        lm = models.get(body.model)
        if lm is None:
            metrics.error("/v1/chat/completions", "model_not_found")
            return openai_error(request, 404, "invalid_request_error", f"no model {body.model!r}; serving {sorted(models)}",
                                param="model", code="model_not_found")  # fmt: skip
        messages = _messages(body)
        settings = _settings(lm, body)
        rid = getattr(request.state, "request_id", "-")
        try:
            problem = await asyncio.to_thread(_too_long, lm, messages)
            if problem:
                metrics.error("/v1/chat/completions", "invalid_request")
                return openai_error(request, 400, "invalid_request_error", problem, param="messages", code="context_length_exceeded")
            completions = await asyncio.to_thread(_generate, lm, messages, settings)
        except ConfigurationError as exc:
            metrics.error("/v1/chat/completions", "invalid_request")
            return openai_error(request, 400, "invalid_request_error", str(exc))
        except LMError as exc:
            metrics.error("/v1/chat/completions", "lm_error")
            logger.warning("request %s to model %s failed: %s: %s", rid, body.model, type(exc).__name__, exc)
            from oobleck.serve.app import lm_failure

            return openai_error(request, 502, "server_error", lm_failure(exc))
        except BudgetExceeded as exc:
            metrics.error("/v1/chat/completions", "budget_exceeded")
            logger.warning("request %s to model %s: %s", rid, body.model, exc)
            return openai_error(request, 503, "server_error", "the LM budget is spent")
        except Exception:
            metrics.error("/v1/chat/completions", "internal_error")
            logger.exception("request %s to model %s failed", rid, body.model)
            return openai_error(request, 500, "server_error", "internal server error; the server log has the details under this request id")
        prompt_tokens = max(c.prompt_tokens for c in completions)
        completion_tokens = sum(c.completion_tokens for c in completions)
        metrics.lm_usage(body.model, 1, prompt_tokens, completion_tokens, 0, via="openai")
        limit = settings.get("max_tokens") or settings.get("max_new_tokens") or _DEFAULT_MAX_TOKENS
        finish = ["length" if c.completion_tokens >= int(limit) else "stop" for c in completions]
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
        completion_id = f"chatcmpl-{rid}"
        if body.stream:
            with_usage = bool((body.stream_options or {}).get("include_usage"))
            events = _stream(completion_id, body.model, completions, finish, usage if with_usage else None)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        choices = [{"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": finish[i], "logprobs": None}
                   for i, c in enumerate(completions)]  # fmt: skip
        return JSONResponse({"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": body.model,
                             "choices": choices, "usage": usage})  # fmt: skip


def _stream(completion_id: str, model: str, completions: list[Completion], finish: list[str], usage: dict[str, int] | None) -> Iterator[str]:
    """Server-sent events of a finished completion: role, content and finish chunks per choice, then ``[DONE]``."""
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices, **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    for i, c in enumerate(completions):
        yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        yield chunk([{"index": i, "delta": {"content": c.text}, "finish_reason": None}])
        yield chunk([{"index": i, "delta": {}, "finish_reason": finish[i]}])
    if usage is not None:
        yield chunk([], usage=usage)
    yield "data: [DONE]\n\n"
