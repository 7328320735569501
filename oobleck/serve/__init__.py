"""Serve compiled programs over HTTP: ``oobleck serve qa.oobleck`` or ``create_app(...)``.

Needs the ``serve`` extra (``pip install 'oobleck[serve]'``: FastAPI and uvicorn). Modules:
``registry`` (programs, names, interfaces), ``schema`` (request/response models from
signatures), ``app`` (the FastAPI app), ``openai_compat`` (``/v1`` for in-process models),
``metrics`` (Prometheus text), ``server`` (uvicorn in the foreground or a background thread).
"""

from __future__ import annotations

from typing import Any

__all__ = ["BackgroundServer", "ServedProgram", "create_app"]

_EXPORTS = {
    "BackgroundServer": "oobleck.serve.server",
    "ServedProgram": "oobleck.serve.registry",
    "create_app": "oobleck.serve.app",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        try:
            module = importlib.import_module(_EXPORTS[name])
        except ImportError as exc:
            if exc.name in ("fastapi", "uvicorn", "starlette", "pydantic"):
                from oobleck.errors import ConfigurationError

                raise ConfigurationError("serving needs FastAPI and uvicorn: pip install 'oobleck[serve]'") from None
            raise
        return getattr(module, name)
    raise AttributeError(f"module 'oobleck.serve' has no attribute {name!r}")
