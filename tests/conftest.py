"""Shared test set-up: an isolated LM cache per session, offline hub, clean global settings."""

from __future__ import annotations

import os

import pytest
from pg_server import postgres_server, postgres_url  # noqa: F401  (fixtures: a real PostgreSQL server)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never read or write the user's real LM cache."""
    os.environ["OOBLECK_CACHE_DIR"] = str(tmp_path_factory.mktemp("oobleck-cache"))


@pytest.fixture(autouse=True)
def _reset_settings():
    """Each test starts with no configured LM or adapter."""
    import oobleck as ob

    ob.configure(lm=None, adapter=None)
    yield
    ob.configure(lm=None, adapter=None)
