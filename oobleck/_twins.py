"""Whether a class's async method still matches its sync twin (``aforward``/``forward``, ``agenerate``/``generate``).

A subclass that overrides only the sync method inherits an async one written for its parent,
which would skip the override: code choosing between the two paths asks this first.
"""

from __future__ import annotations

__all__ = ["async_twin_is_current"]


def _owner(cls: type, name: str) -> type:
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass
    return object


def async_twin_is_current(cls: type, async_name: str, sync_name: str) -> bool:
    """True when ``async_name`` is defined in ``cls`` no higher up its hierarchy than ``sync_name``."""
    return issubclass(_owner(cls, async_name), _owner(cls, sync_name))
