"""An on-disk LM response cache, shared by threads and processes.

Responses are stored as JSON in one SQLite file (WAL mode, one connection per thread), keyed
by the sha256 of the full request minus secrets. Re-running an evaluation or resuming a
compile then costs nothing for calls already made. ``OOBLECK_CACHE_DIR`` moves the cache,
``OOBLECK_CACHE=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

__all__ = ["SECRET_KEYS", "ResponseCache", "default_cache", "request_key"]

logger = logging.getLogger("oobleck.lm.cache")
SECRET_KEYS = frozenset({"api_key", "authorization", "headers", "default_headers", "organization", "project"})
_CACHE_VERSION = 1


def request_key(request: dict[str, Any]) -> str:
    """A stable hash of a request; secrets never enter it."""
    clean = {k: v for k, v in request.items() if k.lower() not in SECRET_KEYS}
    blob = json.dumps({"v": _CACHE_VERSION, **clean}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class SQLiteStore:
    """One SQLite file shared by threads and processes: WAL mode, one connection per thread.

    A store that cannot be opened must not stop the user's run: it warns once, naming ``what``,
    and ``connection()`` then returns None so callers carry on uncached.
    """

    def __init__(self, path: Path, schema: str, what: str):
        self.path = path
        self.schema = schema
        self.what = what
        self._local = threading.local()
        self._disabled_reason: str | None = None

    def connection(self) -> sqlite3.Connection | None:
        if self._disabled_reason:
            return None
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(self.schema)
            except (OSError, sqlite3.Error) as exc:
                self._disabled_reason = str(exc)
                logger.warning("%s at %s is unusable (%s); continuing without it", self.what, self.path, exc)
                return None
            self._local.conn = conn
        return conn


class ResponseCache:
    """Maps request keys to JSON values in ``<directory>/responses.sqlite``."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self.path = self.directory / "responses.sqlite"
        self._store = SQLiteStore(self.path, "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)", "LM cache")
        self._memory: dict[str, Any] = {}
        self._memory_lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection | None:
        return self._store.connection()

    def get(self, key: str) -> Any | None:
        with self._memory_lock:
            if key in self._memory:
                return self._memory[key]
        conn = self._conn()
        if conn is None:
            return None
        try:
            row = conn.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            logger.warning("LM cache read failed (%s)", exc)
            return None
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except json.JSONDecodeError:
            return None
        with self._memory_lock:
            self._memory[key] = value
        return value

    def put(self, key: str, value: Any) -> None:
        with self._memory_lock:
            self._memory[key] = value
        conn = self._conn()
        if conn is None:
            return
        try:
            conn.execute("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", (key, json.dumps(value, ensure_ascii=False)))
        except sqlite3.Error as exc:
            logger.warning("LM cache write failed (%s)", exc)

    def __len__(self) -> int:
        conn = self._conn()
        if conn is None:
            return len(self._memory)
        return int(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def clear(self) -> None:
        with self._memory_lock:
            self._memory.clear()
        conn = self._conn()
        if conn is not None:
            conn.execute("DELETE FROM responses")


_default: ResponseCache | None = None
_default_lock = threading.Lock()


def cache_directory() -> Path:
    env = os.environ.get("OOBLECK_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("oobleck")) / "lm"


def default_cache() -> ResponseCache | None:
    """The process-wide cache, or None when ``OOBLECK_CACHE`` is 0/false/off."""
    global _default
    if os.environ.get("OOBLECK_CACHE", "1").strip().lower() in ("0", "false", "off", "no"):
        return None
    directory = cache_directory()
    with _default_lock:
        if _default is None or _default.directory != directory:
            _default = ResponseCache(directory)
        return _default
