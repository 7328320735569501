"""Adapters turn a signature, demos and inputs into messages, and completions into fields."""

from __future__ import annotations

from oobleck.adapters.base import Adapter, Message, format_value
from oobleck.adapters.chat import ChatAdapter
from oobleck.adapters.compact import CompactAdapter
from oobleck.adapters.json_adapter import JSONAdapter
from oobleck.errors import ConfigurationError

__all__ = ["Adapter", "ChatAdapter", "CompactAdapter", "JSONAdapter", "Message", "format_value", "get_adapter"]

_BY_NAME: dict[str, type[Adapter]] = {"chat": ChatAdapter, "json": JSONAdapter, "compact": CompactAdapter}


def get_adapter(spec: str | Adapter | None) -> Adapter:
    """An adapter from a name (``"chat"``, ``"json"``, ``"compact"``) or an instance."""
    if spec is None:
        return ChatAdapter()
    if isinstance(spec, Adapter):
        return spec
    if isinstance(spec, str) and spec in _BY_NAME:
        return _BY_NAME[spec]()
    raise ConfigurationError(f"unknown adapter {spec!r}; known: {sorted(_BY_NAME)} or an Adapter instance")
