"""LM usage accounting: per LM, and per run through ``track_usage()``.

Counters are plain ints behind a lock so evaluation threads can add to them concurrently. A
run (an evaluation, a compile) opens a ``track_usage`` scope; every LM call made inside it,
in any thread that inherited the context, is added to that scope as well.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["Usage", "record_usage", "track_usage"]


@dataclass
class Usage:
    """Calls, tokens in/out and cache hits; ``+`` adds two."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, calls: int = 0, prompt_tokens: int = 0, completion_tokens: int = 0, cache_hits: int = 0) -> None:
        with self._lock:
            self.calls += calls
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.cache_hits += cache_hits

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {"calls": self.calls, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "cache_hits": self.cache_hits}

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.calls + other.calls,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cache_hits + other.cache_hits,
        )


_active: contextvars.ContextVar[tuple[Usage, ...]] = contextvars.ContextVar("oobleck_usage", default=())


@contextmanager
def track_usage() -> Iterator[Usage]:
    """Count every LM call made inside the block (nested scopes all count)."""
    usage = Usage()
    token = _active.set((*_active.get(), usage))
    try:
        yield usage
    finally:
        _active.reset(token)


def record_usage(calls: int, prompt_tokens: int, completion_tokens: int, cache_hits: int) -> None:
    for usage in _active.get():
        usage.add(calls, prompt_tokens, completion_tokens, cache_hits)
