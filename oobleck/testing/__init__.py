"""Test doubles and test servers for oobleck programs.

``ScriptedLM`` and ``FieldScriptedLM`` fake the model in unit tests. ``oobleck.testing.server``
holds ``OpenAITestServer``, a real OpenAI-compatible HTTP server on loopback for testing the
HTTP path (retries, timeouts, cache, concurrency); it is imported only when asked for, so
importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oobleck.testing.scripted import FieldScriptedLM, ScriptedLM

if TYPE_CHECKING:
    from oobleck.testing.server import OpenAITestServer

__all__ = ["FieldScriptedLM", "OpenAITestServer", "ScriptedLM"]


def __getattr__(name: str) -> Any:
    if name == "OpenAITestServer":
        from oobleck.testing.server import OpenAITestServer

        return OpenAITestServer
    raise AttributeError(f"module 'oobleck.testing' has no attribute {name!r}")
