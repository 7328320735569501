"""Process-wide defaults (``ob.configure``) and scoped overrides (``ob.context``).

Defaults live in one locked dict; ``context`` layers overrides in a ``ContextVar`` so
threads and asyncio tasks each see their own, and evaluation threads inherit the caller's.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from oobleck.errors import ConfigurationError

__all__ = ["configure", "context", "current_settings", "get_setting"]

_KNOWN = {"lm", "adapter", "lm_settings", "retriever"}
_lock = threading.Lock()
_global: dict[str, Any] = {"lm": None, "adapter": None, "lm_settings": {}, "retriever": None}
_overrides: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("oobleck_settings", default=None)


def _check(kwargs: dict[str, Any]) -> None:
    unknown = set(kwargs) - _KNOWN
    if unknown:
        raise ConfigurationError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(_KNOWN)}")


def configure(**kwargs: Any) -> None:
    """Set process-wide defaults, e.g. ``ob.configure(lm=ob.LM("openai/gpt-4o-mini"))``."""
    _check(kwargs)
    with _lock:
        _global.update(kwargs)


@contextmanager
def context(**kwargs: Any) -> Iterator[None]:
    """Override settings inside a ``with`` block, for this thread or task only."""
    _check(kwargs)
    merged = {**(_overrides.get() or {}), **kwargs}
    token = _overrides.set(merged)
    try:
        yield
    finally:
        _overrides.reset(token)


def get_setting(name: str) -> Any:
    overrides = _overrides.get()
    if overrides and name in overrides:
        return overrides[name]
    return _global.get(name)


def current_settings() -> dict[str, Any]:
    return {**_global, **(_overrides.get() or {})}
