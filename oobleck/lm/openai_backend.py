"""Any OpenAI-compatible chat server through the official ``openai`` SDK.

OpenAI itself, vLLM, Ollama, llama.cpp's server and TGI all speak this protocol; only
``base_url`` and the key differ. The SDK's own retries are switched off so that ``BaseLM``'s
single retry policy (with jitter and usage accounting) applies to every backend alike.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from oobleck.errors import ConfigurationError, LMConnectionError, LMResponseError
from oobleck.lm.base import Completion, Message
from oobleck.lm.lm import LM

__all__ = ["OpenAICompatibleLM"]

_RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAICompatibleLM(LM):
    """``LM("openai/<model>", base_url=..., api_key=...)``.

    ``api_key`` falls back to ``OPENAI_API_KEY`` and ``base_url`` to ``OPENAI_BASE_URL``; a
    local server given by ``base_url`` needs no key. The key is kept out of settings, so it
    never reaches the cache key, the history or an artifact. ``http_client`` (an
    ``httpx.Client``, e.g. ``openai.DefaultHttpxClient(...)``) and ``async_http_client`` (an
    ``httpx.AsyncClient``) go to the SDK clients as their ``http_client``; by default a plain
    ``http://`` server is reached through ``oobleck.lm.http_transport``, anything else through
    the SDK's own httpx client. A given ``async_http_client`` serves every event loop, so it
    must not be used across ``asyncio.run`` calls; with an ``http_client`` and no
    ``async_http_client``, async calls run the sync client in a worker thread, so what it
    configures (proxies, certificates, headers) applies to them too.
    """

    provider = "openai"

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None, timeout: float = 60.0,
                 http_client: Any = None, async_http_client: Any = None, **kwargs: Any):  # fmt: skip
        _, _, name = model.partition("/")
        if not name:
            raise ConfigurationError(f"LM id {model!r} names no model; write 'openai/<model>'")
        super().__init__(name, **kwargs)
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or ("EMPTY" if self.base_url else None)
        self.timeout = timeout
        # The SDK's ``http_client`` for the sync and the async clients (proxies, certificates,
        # event hooks, ...), as ``openai.OpenAI`` and ``openai.AsyncOpenAI`` take them.
        self.http_client = http_client
        self.async_http_client = async_http_client
        self._clients: _Shards | None = None
        # Async clients per event loop: their pooled connections belong to the loop that opened
        # them, so reusing one under a later ``asyncio.run`` fails with "Event loop is closed".
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Shards] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def cache_identity(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model, "base_url": self.base_url}

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        if self.base_url:
            described["base_url"] = self.base_url
        return described

    def _client_kwargs(self) -> dict[str, Any]:
        if self._api_key is None:
            raise ConfigurationError(
                f"no API key for openai/{self.model}: set OPENAI_API_KEY, pass api_key=..., or pass base_url=... for a local server"
            )
        return {"api_key": self._api_key, "base_url": self.base_url, "max_retries": 0, "timeout": self.timeout}

    def _sync_shards(self) -> _Shards:
        with self._lock:
            if self._clients is None:
                self._clients = self._shards(asynchronous=False)
            return self._clients

    def _async_shards(self) -> _Shards:
        loop = asyncio.get_running_loop()
        with self._lock:
            shards = self._async_clients.get(loop)
            if shards is None:
                shards = self._async_clients[loop] = self._shards(asynchronous=True)
            return shards

    def _shards(self, *, asynchronous: bool) -> _Shards:
        """SDK clients for one side (sync, or async on one event loop), with their http client.

        A user's ``http_client`` is used as given, by one SDK client. Otherwise an ``http://``
        server with no proxy in the way gets oobleck's keep-alive transport
        (``oobleck.lm.http_transport``: about half the client CPU per request of httpx's own,
        which bounds throughput with many requests in flight), shared by one SDK client; other
        servers (https, proxied) get the SDK's default httpx client, spread over shards.
        """
        import openai

        kwargs = self._client_kwargs()
        sdk = openai.AsyncOpenAI if asynchronous else openai.OpenAI
        given = self.async_http_client if asynchronous else self.http_client
        if given is not None:
            client = sdk(**kwargs, http_client=given)
            return _Shards(lambda: client, per_client=_UNLIMITED)
        from oobleck.lm import http_transport

        if http_transport.use_for(self.base_url):
            client = sdk(**kwargs, http_client=http_transport.http_client(asynchronous=asynchronous))
            return _Shards(lambda: client, per_client=_UNLIMITED)
        return _Shards(lambda: sdk(**kwargs))

    def client(self) -> Any:
        """An ``openai.OpenAI`` client for this LM's server (the first of its shards)."""
        return self._sync_shards().first()

    def async_client(self) -> Any:
        """An ``openai.AsyncOpenAI`` client for the running event loop (the first of its shards)."""
        return self._async_shards().first()

    def _request(self, messages: list[Message], settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The JSON body and the SDK request options that ``chat.completions.create`` would send.

        The request goes through the SDK's own ``post`` (auth, headers, timeouts, connection
        pool, status errors) with ``cast_to=bytes``: ``create`` would also run its typed-param
        transform and build pydantic models of the response, the two largest client-side costs
        per call, which bound throughput once many calls are in flight in one process. Settings
        ``create`` would refuse still fail here, before any request is sent.
        """
        unknown = [key for key in settings if key not in _create_parameters()]
        if unknown:
            raise TypeError(f"chat.completions.create() got unexpected setting(s) {unknown}")
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        options: dict[str, Any] = {}
        for key, value in settings.items():
            if key in _REQUEST_OPTIONS:
                if value is not None or key == "timeout":  # timeout=None means none, as in ``create``
                    options[_REQUEST_OPTIONS[key]] = value
            else:
                body[key] = value
        return body, options

    def generate(self, messages: list[Message], **settings: Any) -> Sequence[Completion]:
        import openai

        body, options = self._request(messages, settings)
        shards = self._sync_shards()
        index, client = shards.acquire()
        try:
            raw = _post(client, body, options)
        except openai.OpenAIError as exc:
            raise self._translate(exc) from exc
        finally:
            shards.release(index)
        return self._completions(raw)

    @property
    def native_async(self) -> bool:
        # A user's sync ``http_client`` alone (proxies, certificates, headers) is honoured on the
        # async path too, by running ``generate`` in a worker thread.
        return super().native_async and not self._sync_client_only()

    def _sync_client_only(self) -> bool:
        return self.http_client is not None and self.async_http_client is None

    async def agenerate(self, messages: list[Message], **settings: Any) -> Sequence[Completion]:
        import openai

        if self._sync_client_only():
            return await asyncio.to_thread(self.generate, messages, **settings)
        body, options = self._request(messages, settings)
        shards = self._async_shards()
        index, client = shards.acquire()
        try:
            raw = await _post(client, body, options)
        except openai.OpenAIError as exc:
            raise self._translate(exc) from exc
        finally:
            shards.release(index)
        return self._completions(raw)

    def _where(self) -> str:
        return self.base_url or "api.openai.com"

    def _translate(self, exc: Exception) -> Exception:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return TimeoutError(f"openai/{self.model} at {self._where()}: request timed out")
        if isinstance(exc, openai.APIConnectionError):
            return LMConnectionError(f"cannot reach the LM server at {self._where()} for openai/{self.model}: {exc.__cause__ or exc}")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            body = str(getattr(exc, "message", exc))[:300]
            retryable = status in _RETRYABLE_STATUS or status >= 500
            return LMResponseError(f"openai/{self.model} at {self._where()} answered HTTP {status}: {body}", status=status, retryable=retryable)
        # A body that is not JSON (truncated, a proxy's error page) is usually transient, like a
        # 5xx, so it is retried.
        if isinstance(exc, (openai.APIResponseValidationError, ValueError)):
            return LMResponseError(f"openai/{self.model} at {self._where()} sent a malformed response body: {exc}", retryable=True)
        return LMResponseError(f"openai/{self.model} at {self._where()}: {type(exc).__name__}: {exc}", retryable=False)

    def _completions(self, raw: bytes) -> list[Completion]:
        """Texts and token counts from a response body, read as plain JSON.

        Field for field what the SDK's ``ChatCompletion`` would give (``choices[i].message
        .content``, ``usage.prompt_tokens`` / ``completion_tokens``), and the same errors.
        """
        try:
            response = json.loads(raw)
        except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
            raise self._translate(exc) from exc
        choices = response.get("choices") if isinstance(response, dict) else None
        if not isinstance(choices, list) or not choices:
            raise LMResponseError(f"openai/{self.model} at {self._where()} sent a response without choices", retryable=True)
        usage = response.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        texts = []
        for choice in choices:
            message = choice.get("message") if isinstance(choice, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, str):
                raise LMResponseError(f"openai/{self.model} at {self._where()} sent a choice without text content", retryable=True)
            texts.append(content)
        # Usage is per response; split it over the choices so the sum stays exact.
        share, extra = divmod(completion, len(texts))
        return [Completion(t, prompt, share + (1 if i < extra else 0)) for i, t in enumerate(texts)]


def _endpoint(client: Any) -> str:
    """The chat completions URL in full where that is plain, so the SDK need not parse and join it per request.

    The SDK appends ``"chat/completions"`` to its base URL's path (kept with a trailing slash)
    and passes an absolute URL through as is. Where the base URL prints as ending in ``/``
    with no query or fragment, that sum is this string; otherwise (a bare host, which httpx
    prints without its ``/``, a query, a fragment) the SDK is left to join it itself.
    """
    base = str(client.base_url)
    if base.endswith("/") and "?" not in base and "#" not in base:
        return base + "chat/completions"
    return "/chat/completions"


def _post(client: Any, body: dict[str, Any], options: dict[str, Any]) -> Any:
    """POST ``body`` to the chat completions endpoint: the raw bytes (sync client) or an awaitable of them (async)."""
    prepared = _prepared_post(client, body, options)
    if prepared is None:
        return client.post(_endpoint(client), body=body, options=options, cast_to=bytes)
    return client.request(bytes, prepared)


def _prepared_post(client: Any, body: dict[str, Any], options: dict[str, Any]) -> Any:
    """What ``client.post`` would hand to ``client.request`` for this body, made cheaply; None to use ``post`` itself."""
    if options:  # per-call headers, query or timeout: left to ``post``
        return None
    template = _post_template(_endpoint(client))
    return None if template is None else template.model_copy(update={"json_data": body})


@functools.lru_cache(maxsize=64)
def _post_template(url: str) -> Any:
    """The SDK's request options for a plain ``post`` of JSON to ``url``, made once; None if the SDK has no such type.

    ``client.post`` builds these per call with pydantic's ``model_construct``, which deep-copies
    each field's default (the SDK's ``NotGiven`` markers, its security settings): about a tenth
    of the client CPU per request. A shallow copy of this template with the request's body,
    handed to the SDK's own ``request`` (which ``post`` calls), sends the same request.
    """
    try:
        from openai._models import FinalRequestOptions
    except ImportError:  # pragma: no cover - a future SDK that moved it: ``post`` still works
        return None
    return FinalRequestOptions.construct(method="post", url=url, json_data=None, content=None, files=None)


_UNLIMITED = 1 << 30  # per_client for a single client that carries every request


class _Shards:
    """SDK clients sharing the requests in flight, so that each carries only a few at a time.

    For servers that keep httpx's own transport (https, proxies). Each client has its own httpx
    connection pool, and httpcore's pool does work per request that grows with the requests
    and connections it holds (quadratically in httpcore 1.x): at 64 requests in flight on one
    pool that alone cost ~10 ms of CPU per request with asyncio and ~3 ms with threads, against
    ~1.2 ms in all on pools of two. So a request goes to the least loaded client, and a new
    client is made (once, ~20 ms: its TLS context) only when every client already carries
    ``per_client``, up to ``max_clients``; one request at a time needs just one client.
    """

    def __init__(self, make: Callable[[], Any], per_client: int = 2, max_clients: int = 32):
        self._make = make
        self.per_client = per_client
        self.max_clients = max_clients
        self._clients: list[Any] = []
        self._load: list[int] = []
        self._lock = threading.Lock()

    def first(self) -> Any:
        with self._lock:
            if not self._clients:
                self._add()
            return self._clients[0]

    def acquire(self) -> tuple[int, Any]:
        """The index and client for one request; pass the index to ``release`` when it is done."""
        with self._lock:
            load = self._load
            best = min(range(len(load)), key=load.__getitem__) if load else -1
            if best < 0 or (load[best] >= self.per_client and len(load) < self.max_clients):
                best = self._add()
            load[best] += 1
            return best, self._clients[best]

    def release(self, index: int) -> None:
        with self._lock:
            self._load[index] -= 1

    def _add(self) -> int:
        self._clients.append(self._make())
        self._load.append(0)
        return len(self._clients) - 1


# ``create``'s keyword arguments that are request options rather than body fields, and the
# ``post`` option each one becomes (as ``create`` itself maps them).
_REQUEST_OPTIONS = {"extra_headers": "headers", "extra_query": "params", "extra_body": "extra_json", "timeout": "timeout"}


@functools.lru_cache(maxsize=1)
def _create_parameters() -> frozenset[str]:
    """The keyword arguments the installed SDK's ``chat.completions.create`` accepts."""
    from openai.resources.chat import Completions

    names = inspect.signature(Completions.create).parameters
    return frozenset(name for name in names if name not in ("self", "model", "messages"))
