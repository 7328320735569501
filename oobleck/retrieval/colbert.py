"""``ColBERTv2``: a client for a ColBERTv2 retrieval server (the public server protocol).

The protocol is the one DSPy and the ColBERT repository's server speak: ``GET
<url>?query=<text>&k=<n>`` (or a POST of ``{"query", "k"}`` with ``post=True``) answers
``{"topk": [{"text", "pid", "rank", "score", ...}, ...]}``. A passage's title is the
response's ``title`` when given, else the part of its text before " | " (how the Wikipedia
abstract servers write "Title | text"). Answers are kept in memory per (query, k).
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from oobleck.errors import ConfigurationError, RetrievalError
from oobleck.retrieval.base import Retriever, register_retriever_kind
from oobleck.retrieval.passage import Passage

__all__ = ["ColBERTv2"]

_CACHE_LIMIT = 10_000


@register_retriever_kind
class ColBERTv2(Retriever):
    """``ColBERTv2("http://host:8893/api/search")``; ``retries`` on unreachable servers, 429 and 5xx."""

    kind = "colbertv2"

    def __init__(self, url: str, *, post: bool = False, timeout: float = 10.0, retries: int = 2):
        parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigurationError(f"ColBERTv2 needs an http(s) URL, not {url!r}")
        self.url = urllib.parse.urlunsplit(parsed)
        self.post, self.timeout, self.retries = bool(post), float(timeout), int(retries)
        self._cache: dict[tuple[str, int], list[Passage]] = {}
        self._lock = threading.Lock()

    def _request(self, query: str, k: int) -> Any:
        if self.post:
            body = json.dumps({"query": query, "k": k}).encode("utf-8")
            request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        else:
            separator = "&" if urllib.parse.urlsplit(self.url).query else "?"
            request = urllib.request.Request(f"{self.url}{separator}{urllib.parse.urlencode({'query': query, 'k': k})}")
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
                break
            except urllib.error.HTTPError as exc:
                if exc.code != 429 and exc.code < 500 or attempt == self.retries:
                    raise RetrievalError(f"ColBERTv2 server {self.url} answered HTTP {exc.code}: {exc.reason}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt == self.retries:
                    reason = getattr(exc, "reason", exc)
                    raise RetrievalError(f"cannot reach the ColBERTv2 server at {self.url}: {reason}") from None
            time.sleep(min(2.0, 0.2 * 2**attempt) * (0.5 + random.random()))
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise RetrievalError(f"ColBERTv2 server {self.url} answered something that is not JSON: {raw[:80]!r}") from None

    def retrieve(self, query: str, k: int = 5) -> list[Passage]:
        key = (query, k)
        with self._lock:
            if key in self._cache:
                return list(self._cache[key])
        document = self._request(query, k)
        topk = document.get("topk") if isinstance(document, Mapping) else None
        if not isinstance(topk, list):
            raise RetrievalError(f"ColBERTv2 server {self.url} answered without a 'topk' list: {str(document)[:120]}")
        passages = [self._passage(item, rank) for rank, item in enumerate(topk[:k])]
        with self._lock:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = passages
        return list(passages)

    def _passage(self, item: Any, rank: int) -> Passage:
        if not isinstance(item, Mapping):
            raise RetrievalError(f"ColBERTv2 server {self.url}: topk item {rank} is not an object")
        text = item.get("long_text", item.get("text"))
        if not isinstance(text, str):
            raise RetrievalError(f"ColBERTv2 server {self.url}: topk item {rank} has no text")
        title = item.get("title")
        if not isinstance(title, str):
            head, sep, _ = text.partition(" | ")
            title = head if sep else ""
        pid = item.get("pid", rank)
        score = item.get("score")
        number = float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None
        return Passage(text, id=str(pid), title=title, score=number)

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url, "post": self.post, "timeout": self.timeout, "retries": self.retries}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ColBERTv2:
        url = config.get("url")
        if not isinstance(url, str):
            raise RetrievalError(f"a colbertv2 retriever config needs a 'url', got {url!r}")
        return cls(url, post=bool(config.get("post", False)), timeout=float(config.get("timeout", 10.0)), retries=int(config.get("retries", 2)))

    def __deepcopy__(self, memo: dict[int, Any]) -> ColBERTv2:
        return self

    def __repr__(self) -> str:
        return f"ColBERTv2({self.url!r})"
