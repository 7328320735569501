"""``BaseLM``: one method to implement, and caching, retries, usage and history for free.

A backend (or a user's own LM) implements ``generate(messages, **settings)``. Everything that
should behave the same for every LM lives here: the response cache, exponential backoff with
jitter on transient failures, usage counting per LM and per run, and a short call history.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from oobleck.errors import LMConnectionError, LMError, LMResponseError, OobleckError
from oobleck.lm.budget import charge_tokens, release_call, reserve_call
from oobleck.lm.cache import ResponseCache, default_cache, request_key
from oobleck.lm.usage import Usage, record_usage

__all__ = ["BaseLM", "Completion", "RetryPolicy"]

logger = logging.getLogger("oobleck.lm")
Message = dict[str, str]
T = TypeVar("T")


@dataclass(frozen=True)
class Completion:
    """One completion with the token counts the backend reported (0 when unknown)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: sleep ~U(0, min(max_delay, base * 2**attempt))."""

    retries: int = 4
    base_delay: float = 0.5
    max_delay: float = 20.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, LMResponseError):
        return exc.retryable
    return isinstance(exc, (LMConnectionError, TimeoutError, ConnectionError))


def _check_messages(messages: Sequence[Message]) -> list[Message]:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise LMError("an LM call needs a non-empty list of messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise LMError(f"message {i} must be a dict with 'role' and 'content'")
    return [dict(m) for m in messages]


class BaseLM(ABC):
    """Subclass and implement ``generate`` to plug in any LM.

    ``adapter`` names the prompt format the model prefers (``"chat"``, ``"json"``,
    ``"compact"``); settings given here (temperature, max_tokens, ...) are defaults that each
    call may override.
    """

    provider: str = "custom"

    def __init__(
        self,
        model: str,
        *,
        cache: bool | ResponseCache = True,
        retry: RetryPolicy | None = None,
        num_retries: int | None = None,
        adapter: str | None = None,
        history_size: int = 100,
        **settings: Any,
    ):
        self.model = model
        self.settings = settings
        self.adapter = adapter
        self.retry = retry or RetryPolicy()
        if num_retries is not None:
            self.retry = RetryPolicy(num_retries, self.retry.base_delay, self.retry.max_delay)
        self._cache_option = cache
        self.usage = Usage()
        self.history: deque[dict[str, Any]] = deque(maxlen=history_size)
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    # -- what a backend implements -----------------------------------------------------------

    @abstractmethod
    def generate(self, messages: list[Message], **settings: Any) -> Sequence[Completion | str]:
        """Return one completion per requested sample (``n``, default 1)."""

    async def agenerate(self, messages: list[Message], **settings: Any) -> Sequence[Completion | str]:
        """Async variant; the default runs ``generate`` in a worker thread."""
        import asyncio  # imported on use: asyncio costs ~20 ms of ``import oobleck``

        return await asyncio.to_thread(self.generate, messages, **settings)

    @property
    def native_async(self) -> bool:
        """Whether ``agenerate`` is real async code for this LM, not ``generate`` in a worker thread.

        False for the default ``agenerate``, and for one inherited from a parent class when a
        subclass overrides ``generate`` alone (it would skip that override).
        """
        from oobleck._twins import async_twin_is_current

        return type(self).agenerate is not BaseLM.agenerate and async_twin_is_current(type(self), "agenerate", "generate")

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text``, for estimates (dry runs); ~4 characters a token unless a backend knows better."""
        return (len(text) + 3) // 4

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return sum(self.count_tokens(m["content"]) + 4 for m in messages)

    def cache_identity(self) -> dict[str, Any]:
        """What, besides messages and settings, makes two requests different."""
        return {"provider": self.provider, "model": self.model}

    def public_settings(self) -> dict[str, Any]:
        """Settings safe to write into artifacts and logs (no secrets)."""
        from oobleck.lm.cache import SECRET_KEYS

        return {k: v for k, v in self.settings.items() if k.lower() not in SECRET_KEYS}

    # -- the front every caller uses ---------------------------------------------------------

    @property
    def cache(self) -> ResponseCache | None:
        if self._cache_option is False:
            return None
        if isinstance(self._cache_option, ResponseCache):
            return self._cache_option
        return default_cache()

    def _prepare(self, messages: Sequence[Message], overrides: dict[str, Any]) -> tuple[list[Message], dict[str, Any], bool, str | None]:
        messages = _check_messages(messages)
        settings = {**self.settings, **overrides}
        use_cache = bool(settings.pop("cache", True))
        rollout = settings.pop("rollout_id", None)
        cache = self.cache if use_cache else None
        key = None
        if cache is not None:
            key = request_key({**self.cache_identity(), "messages": messages, "settings": settings, "rollout_id": rollout})
        return messages, settings, cache is not None, key

    def _finish(self, messages: list[Message], settings: dict[str, Any], raw: Sequence[Completion | str], key: str | None, started: float) -> list[str]:
        completions = [c if isinstance(c, Completion) else Completion(str(c)) for c in raw]
        if not completions:
            raise LMResponseError(f"{self.model}: the LM returned no completions")
        prompt_tokens = max((c.prompt_tokens for c in completions), default=0)
        completion_tokens = sum(c.completion_tokens for c in completions)
        texts = [c.text for c in completions]
        self.usage.add(1, prompt_tokens, completion_tokens, 0)
        record_usage(1, prompt_tokens, completion_tokens, 0)
        charge_tokens(self.budget_id, prompt_tokens, completion_tokens, billed=True)
        entry = {"messages": messages, "settings": settings, "outputs": texts, "cached": False, "seconds": round(time.perf_counter() - started, 4)}
        entry["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        self.history.append(entry)
        if key is not None:
            cache = self.cache
            if cache is not None:
                cache.put(key, {"outputs": texts, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens})
        return texts

    def _cached(self, messages: list[Message], settings: dict[str, Any], key: str | None) -> list[str] | None:
        if key is None:
            return None
        cache = self.cache
        hit = cache.get(key) if cache is not None else None
        if not isinstance(hit, dict) or not isinstance(hit.get("outputs"), list):
            return None
        self.usage.add(0, 0, 0, 1)
        record_usage(0, 0, 0, 1)
        # A budget counts a hit like the call it replays, so a re-run stops where the first run did.
        charge_tokens(self.budget_id, int(hit.get("prompt_tokens", 0) or 0), int(hit.get("completion_tokens", 0) or 0), billed=False)
        self.history.append({"messages": messages, "settings": settings, "outputs": hit["outputs"], "cached": True, "seconds": 0.0})
        return list(hit["outputs"])

    def __call__(self, messages: Sequence[Message], **overrides: Any) -> list[str]:
        """Completion texts for ``messages``, from the cache when the same request was made."""
        messages, settings, _, key = self._prepare(messages, overrides)
        reserve_call(self.budget_id)
        hit = self._cached(messages, settings, key)
        if hit is not None:
            return hit
        started = time.perf_counter()
        try:
            raw = self._with_retries(lambda: self.generate(messages, **settings))
        except BaseException:
            release_call()
            raise
        return self._finish(messages, settings, raw, key, started)

    async def acall(self, messages: Sequence[Message], **overrides: Any) -> list[str]:
        """``__call__`` for asyncio code."""
        messages, settings, _, key = self._prepare(messages, overrides)
        reserve_call(self.budget_id)
        hit = self._cached(messages, settings, key)
        if hit is not None:
            return hit
        started = time.perf_counter()
        try:
            raw = await self._with_retries_async(lambda: self.agenerate(messages, **settings))
        except BaseException:
            release_call()
            raise
        return self._finish(messages, settings, raw, key, started)

    def _delay(self, attempt: int) -> float:
        with self._rng_lock:
            return self.retry.delay(attempt, self._rng)

    def _give_up(self, exc: BaseException, attempts: int) -> OobleckError:
        tried = f" (after {attempts} attempts)" if attempts > 1 else ""
        if isinstance(exc, OobleckError):
            if tried and isinstance(exc, LMError):
                exc.args = (f"{exc.args[0] if exc.args else exc}{tried}",)
            return exc
        # A retried timeout must say it was retried, as the LMError subclasses above do.
        return LMError(f"{self.model}: {type(exc).__name__}: {exc}{tried}")

    def _retry_wait(self, exc: Exception, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``, or raise the final error."""
        if not _is_retryable(exc) or attempt >= self.retry.retries:
            error = self._give_up(exc, attempt + 1)
            if error is exc:  # ``raise exc from exc`` would hide the backend's own cause
                raise exc
            raise error from exc
        wait = self._delay(attempt)
        logger.info("%s: %s; retrying in %.2fs (attempt %d/%d)", self.model, exc, wait, attempt + 1, self.retry.retries)
        return wait

    def _with_retries(self, call: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return call()
            except Exception as exc:  # noqa: BLE001 - classified by _retry_wait
                time.sleep(self._retry_wait(exc, attempt))
            attempt += 1

    async def _with_retries_async(self, call: Callable[[], Any]) -> Any:
        import asyncio  # imported where used: ``import oobleck`` stays fast

        attempt = 0
        while True:
            try:
                return await call()
            except Exception as exc:  # noqa: BLE001 - classified by _retry_wait
                await asyncio.sleep(self._retry_wait(exc, attempt))
            attempt += 1

    def inspect_history(self, n: int = 1) -> list[dict[str, Any]]:
        """The last ``n`` calls: messages, settings, outputs, whether cached, usage."""
        return list(self.history)[-n:]

    @property
    def budget_id(self) -> str:
        """The id prices are looked up by: ``provider/model``."""
        return f"{self.provider}/{self.model}" if self.provider != "custom" else self.model

    def describe(self) -> dict[str, Any]:
        """What an artifact records about this LM: id and settings, never secrets."""
        return {"model": self.budget_id, "settings": self.public_settings()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"
