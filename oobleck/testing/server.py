"""``OpenAITestServer``: a real OpenAI-compatible chat server on loopback, for tests and benchmarks.

``ScriptedLM`` fakes the model inside the process; this server fakes only the model *behind a
real socket*, so the openai SDK, HTTP keep-alive, timeouts, error translation and the retry
loop all run for real. It speaks just enough of the protocol (``POST /v1/chat/completions``,
``GET /v1/models``) and can add latency and faults (HTTP errors, malformed bodies, hangs,
dropped connections) on a seeded, reproducible schedule::

    with OpenAITestServer(latency=0.01, fault_rate=0.2, seed=1) as server:
        lm = ob.LM("openai/test-model", base_url=server.base_url + "/v1")

It is one asyncio event loop with a small HTTP/1.1 parser rather than ``http.server``: latency
is a timer, not a sleeping thread, so thousands of requests can wait at once and each costs
tens of microseconds of CPU. Benchmarks run it in its own process so it does not compete with
the client for the GIL::

    python -m oobleck.testing.server --port 8123 --latency 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import hashlib
import json
import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["FAULTS", "OpenAITestServer", "Responder", "default_responder"]

logger = logging.getLogger("oobleck.testing.server")

#: A responder maps a request's messages to one completion text; it is called once per choice.
Responder = Callable[[list[dict[str, Any]]], str]
#: Named faults; any HTTP status code (an int such as 429 or 500) is a fault as well.
FAULTS = ("malformed", "hang", "disconnect")

_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 413: "Payload Too Large", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable"}  # fmt: skip
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}


def _fault(kind: Any) -> int | str | None:
    """Normalize a fault spec: None/"ok" (no fault), a status code, or one of ``FAULTS``."""
    if kind is None or kind == "ok":
        return None
    if isinstance(kind, bool):
        raise ValueError(f"unknown fault {kind!r}")  # noqa: TRY004 - one error type for every bad fault spec
    if isinstance(kind, int) or (isinstance(kind, str) and kind.isdigit()):
        status = int(kind)
        if not 400 <= status <= 599:
            raise ValueError(f"a fault status must be an HTTP error code (400-599), not {status}")
        return status
    if kind in FAULTS:
        return kind
    raise ValueError(f"unknown fault {kind!r}; use an HTTP status (429, 500, ...) or one of {FAULTS}")


def _tokens(text: str) -> int:
    """A cheap, deterministic token count (about four characters a token)."""
    return max(1, (len(text) + 3) // 4)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


# -- the default responder: answers any oobleck ChatAdapter / JSONAdapter prompt --------------

_MARKER = re.compile(r"\[\[ ## (\w+) ## \]\]\n?")
_FIELD_LINE = re.compile(r"^\d+\. `(\w+)` \(")
_CHOICES = re.compile(r"^- [`\"](\w+)[`\"]: exactly one of: (.*)$", re.MULTILINE)  # ChatAdapter and JSONAdapter hints


def _section(text: str, title: str) -> str:
    start = text.find(title + "\n")
    if start < 0:
        return ""
    start += len(title) + 1
    end = text.find("\n\n", start)
    return text[start:] if end < 0 else text[start:end]


def _field_types(section: str) -> dict[str, str]:
    """``{name: type}`` from lines like ``2. `label` (Literal['a', 'b']): desc``."""
    fields: dict[str, str] = {}
    for line in section.splitlines():
        match = _FIELD_LINE.match(line)
        if not match:
            continue
        depth, quote, i = 0, "", match.end()
        while i < len(line):  # the type ends at the ')' that closes it, outside brackets and quotes
            ch = line[i]
            if quote:
                quote = "" if ch == quote and line[i - 1] != "\\" else quote
            elif ch in "'\"":
                quote = ch
            elif ch == "[":
                depth += 1
            elif ch == "]":
                depth -= 1
            elif ch == ")" and depth == 0:
                break
            i += 1
        fields[match.group(1)] = line[match.end() : i]
    return fields


def _value(type_str: str, choices: list[str] | None, echo: str) -> Any:
    """A value of the declared type, derived from the first input so answers differ per query."""
    if choices:
        return choices[0]
    if type_str.startswith("Optional[") and type_str.endswith("]"):
        type_str = type_str[len("Optional[") : -1]
    if type_str == "bool":
        return True
    if type_str == "int":
        return len(echo)
    if type_str == "float":
        return float(len(echo))
    if type_str in ("str", "Any", ""):
        return echo or "(empty)"  # an empty answer would not parse
    if type_str == "list[str]":
        return [echo]
    if type_str.startswith("list"):
        return []
    return {}


@functools.lru_cache(maxsize=256)
def _prompt_format(system: str) -> tuple[dict[str, str], dict[str, list[str]], bool]:
    """Output field types, choices and whether JSON is wanted; cached, as one program sends one system prompt."""
    outputs = _field_types(_section(system, "Output fields:"))
    choices = {name: options.split("; ") for name, options in _CHOICES.findall(system)}
    return outputs, choices, "Reply with one JSON object" in system


def default_responder(messages: list[dict[str, Any]]) -> str:
    """Answer an oobleck prompt in its own format, so ``Predict`` works against the server as is.

    Every output field the system message lists gets a value of its declared type: ``str``
    fields echo the first input's value, ``int``/``float`` fields its length, choices their
    first option, ``bool`` True, ``list[str]`` the echo in a list, other JSON types an empty
    list or object. Prompts oobleck did not write get their last message echoed.
    """
    system = next((_text(m.get("content")) for m in messages if m.get("role") == "system"), "")
    last = _text(messages[-1].get("content")) if messages else ""
    outputs, choices, wants_json = _prompt_format(system)
    if not outputs:
        return last
    if wants_json:
        try:
            given = json.loads(last)
        except ValueError:
            given = {}
        inputs = {k: v if isinstance(v, str) else json.dumps(v) for k, v in given.items()} if isinstance(given, dict) else {}
        echo = next(iter(inputs.values()), "")
        return json.dumps({n: _value(t, choices.get(n), echo) for n, t in outputs.items()}, ensure_ascii=False)
    parts = _MARKER.split(last.split("\n\nReply with ")[0])
    inputs = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    echo = next(iter(inputs.values()), "")
    blocks = []
    for name, type_str in outputs.items():
        value = _value(type_str, choices.get(name), echo)
        blocks.append(f"[[ ## {name} ## ]]\n{value if isinstance(value, (str, bool)) else json.dumps(value, ensure_ascii=False)}")
    return "\n\n".join(blocks) + "\n\n[[ ## completed ## ]]"


# -- HTTP ------------------------------------------------------------------------------------


class _Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "path")

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes, keep_alive: bool):
        self.method, self.path, self.headers, self.body, self.keep_alive = method, path, headers, body, keep_alive


class _Connection(asyncio.Protocol):
    """One client connection: parses requests one at a time (keep-alive, no pipelining overlap)."""

    def __init__(self, server: OpenAITestServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False  # a request is being answered; later bytes wait in the buffer
        self.processing = False
        self.closed = False
        self.pending: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server._connections.discard(self)
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.process()

    def process(self) -> None:
        if self.processing:  # re-entered from send(); the loop below picks the next request up
            return
        self.processing = True
        try:
            while not self.busy and not self.closed:
                request = self.parse_one()
                if request is None:
                    break
                self.busy = True
                self.server._dispatch(self, request)
        finally:
            self.processing = False

    def parse_one(self) -> _Request | None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > _MAX_HEAD:
                self.fail(431, "request head too large")
            return None
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        request_line = lines[0].split(" ")
        if len(request_line) != 3:
            self.fail(400, "malformed request line")
            return None
        method, target, version = request_line
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                self.fail(400, "malformed header line")
                return None
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.fail(501, "chunked request bodies are not supported; send Content-Length")
            return None
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            self.fail(400, "bad Content-Length")
            return None
        if length < 0 or length > _MAX_BODY:
            self.fail(413, "request body too large")
            return None
        total = end + 4 + length
        if len(self.buffer) < total:
            return None
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        return _Request(method, target.split("?", 1)[0], headers, body, keep_alive)

    def fail(self, status: int, message: str) -> None:
        self.busy = True
        self.send(status, _error_body(status, message), keep_alive=False)

    def send(self, status: int, body: bytes, *, keep_alive: bool) -> None:
        self.pending = None
        if self.closed or self.transport is None:
            return
        head = f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        if not keep_alive:
            head += "Connection: close\r\n"
        self.transport.write(head.encode("latin-1") + b"\r\n" + body)
        if not keep_alive:
            self.closed = True
            self.transport.close()
            return
        self.busy = False
        if self.buffer:
            self.process()

    def drop(self) -> None:
        """Close without answering: the client sees the connection reset mid-request."""
        self.pending = None
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()


def _error_body(status: int, message: str) -> bytes:
    error = {"message": message, "type": _ERROR_TYPES.get(status, "server_error"), "param": None, "code": str(status)}
    return json.dumps({"error": error}).encode()


class OpenAITestServer:
    """An OpenAI-compatible chat server on ``127.0.0.1`` with injectable latency and faults.

    ``responder(messages) -> str`` writes each completion (default: ``default_responder``).
    ``latency`` adds seconds before every answer. Faults come from ``faults``, applied to the
    1st, 2nd, ... chat request in arrival order (``None`` entries mean a normal answer), and
    after that from ``fault_rate``: each request faults with that probability, drawing a kind
    from ``fault_kinds``. The draw hashes ``seed``, the request body and how many times that
    body was seen before, so which attempt of which request fails does not depend on thread
    timing: an evaluation run twice sees the same faults. A fault is an HTTP status (429,
    500, ...), ``"malformed"`` (200 with truncated JSON), ``"hang"`` (answers only after
    ``hang_seconds``, to trip client timeouts) or ``"disconnect"`` (closes without answering).

    ``requests`` counts chat requests received (faulted ones too), ``fault_counts`` the faults
    injected, ``prompt_tokens``/``completion_tokens`` the usage reported in good answers and
    ``recent`` keeps the last ``keep_recent`` requests (path, headers, parsed body). Use as a
    context manager or call ``start()``/``stop()``; the loop runs in a daemon thread.
    """

    def __init__(self, *, responder: Responder | None = None, latency: float = 0.0, faults: Iterable[Any] = (),
                 fault_rate: float = 0.0, fault_kinds: Sequence[Any] = (429, 500, "malformed"), seed: int = 0,
                 hang_seconds: float = 30.0, models: Sequence[str] = ("test-model",), host: str = "127.0.0.1",
                 port: int = 0, keep_recent: int = 100):  # fmt: skip
        if latency < 0 or hang_seconds < 0:
            raise ValueError("latency and hang_seconds must be >= 0")
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be in [0, 1], not {fault_rate}")
        self.responder: Responder = responder or default_responder
        self.latency = float(latency)
        self.faults: list[int | str | None] = [_fault(f) for f in faults]
        self.fault_rate = float(fault_rate)
        self.fault_kinds: list[int | str] = [k for k in (_fault(f) for f in fault_kinds) if k is not None]
        if self.fault_rate > 0 and not self.fault_kinds:
            raise ValueError("fault_rate > 0 needs at least one fault kind")
        self.seed = seed
        self.hang_seconds = float(hang_seconds)
        self.models = list(models)
        self.host = host
        self.port = port
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep_recent)
        self.requests = 0
        self.fault_counts: collections.Counter[str] = collections.Counter()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._seen: dict[bytes, int] = {}
        self._connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._created = int(time.time())

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``; the OpenAI API lives under ``/v1``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> OpenAITestServer:
        """Bind (port 0 picks a free one) and serve from a background thread; returns self."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                failure.append(exc)
                loop.close()
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._close())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"oobleck-test-server-{id(self):x}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close the listener and every open connection, cancel pending answers, join the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if thread.is_alive():
            logger.warning("test server thread did not stop within 10 s")
        self._thread = None

    def __enter__(self) -> OpenAITestServer:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve in the calling thread until SIGINT/SIGTERM; ``on_ready(base_url)`` once bound."""

        async def main() -> None:
            await self._open()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, stop.set)
                except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                    pass
            if on_ready is not None:
                on_ready(self.base_url)
            try:
                await stop.wait()
            finally:
                await self._close()

        asyncio.run(main())

    async def _open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(lambda: _Connection(self), self.host, self.port, backlog=2048)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.debug("test server listening on %s", self.base_url)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            if conn.pending is not None:
                conn.pending.cancel()
            conn.closed = True
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # -- counters ----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters."""
        return {"requests": self.requests, "faults": dict(self.fault_counts), "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "open_connections": len(self._connections)}  # fmt: skip

    def reset_counts(self) -> None:
        """Zero the counters and the fault history (call while no request is in flight)."""
        self.requests = 0
        self.fault_counts.clear()
        self.prompt_tokens = self.completion_tokens = 0
        self._seen.clear()
        self.recent.clear()

    # -- request handling (event-loop thread only) -------------------------------------------

    def _dispatch(self, conn: _Connection, request: _Request) -> None:
        path = request.path.rstrip("/")
        if path in ("/v1/chat/completions", "/chat/completions"):
            if request.method != "POST":
                conn.send(405, _error_body(405, "use POST"), keep_alive=request.keep_alive)
            else:
                self._chat(conn, request)
        elif path in ("/v1/models", "/models"):
            data = [{"id": m, "object": "model", "created": self._created, "owned_by": "oobleck"} for m in self.models]
            conn.send(200, json.dumps({"object": "list", "data": data}).encode(), keep_alive=request.keep_alive)
        elif path == "/health":
            conn.send(200, b'{"status":"ok"}', keep_alive=request.keep_alive)
        else:
            conn.send(404, _error_body(404, f"no route {request.method} {request.path}"), keep_alive=request.keep_alive)

    def _next_fault(self, index: int, body: bytes) -> int | str | None:
        if index <= len(self.faults):
            return self.faults[index - 1]
        if self.fault_rate <= 0:
            return None
        digest = hashlib.blake2b(body, digest_size=16).digest()
        seen = self._seen.get(digest, 0)
        self._seen[digest] = seen + 1
        draw = hashlib.blake2b(f"{self.seed}:{seen}:".encode() + digest, digest_size=16).digest()
        if int.from_bytes(draw[:8], "big") / 2**64 >= self.fault_rate:
            return None
        return self.fault_kinds[int.from_bytes(draw[8:], "big") % len(self.fault_kinds)]

    def _chat(self, conn: _Connection, request: _Request) -> None:
        self.requests += 1
        fault = self._next_fault(self.requests, request.body)
        try:
            payload = json.loads(request.body)
        except ValueError:
            payload = None
        if self.recent.maxlen:
            self.recent.append({"path": request.path, "headers": request.headers, "body": payload, "fault": fault})
        if fault is not None:
            self.fault_counts[str(fault)] += 1
            logger.debug("request %d: injecting fault %s", self.requests, fault)
        usage = (0, 0)
        if isinstance(fault, int):
            status, body = fault, _error_body(fault, f"injected fault: HTTP {fault}")
        elif fault != "disconnect":
            status, body, usage = self._complete(payload)
            if fault == "malformed" and status == 200:
                body, usage = body[: len(body) // 2], (0, 0)
        delay = self.latency + (self.hang_seconds if fault == "hang" else 0.0)
        keep_alive = request.keep_alive
        if fault == "disconnect":
            reply: Callable[[], None] = conn.drop
        else:

            def reply() -> None:
                # Usage counts only answers that reach the client (not a hang it gave up on), and
                # before the write, so a client that asserts on it right after never races it.
                if not conn.closed:
                    self.prompt_tokens += usage[0]
                    self.completion_tokens += usage[1]
                conn.send(status, body, keep_alive=keep_alive)

        if delay > 0:
            assert self._loop is not None
            conn.pending = self._loop.call_later(delay, reply)
        else:
            reply()

    def _complete(self, payload: Any) -> tuple[int, bytes, tuple[int, int]]:
        """Status, body and (prompt, completion) usage for a chat request."""
        none = (0, 0)
        if not isinstance(payload, dict):
            return 400, _error_body(400, "the request body is not a JSON object"), none
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
            return 400, _error_body(400, "'messages' must be a non-empty list of {role, content} objects"), none
        if payload.get("stream"):
            return 400, _error_body(400, "the test server does not stream; send stream=false"), none
        n = payload.get("n") or 1
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
            return 400, _error_body(400, f"'n' must be an integer in [1, 128], not {n!r}"), none
        try:
            texts = [self.responder(messages) for _ in range(n)]
        except Exception as exc:
            logger.exception("test server responder failed")
            return 500, _error_body(500, f"responder failed: {type(exc).__name__}: {exc}"), none
        if not all(isinstance(t, str) for t in texts):
            return 500, _error_body(500, "responder must return a str"), none
        prompt = _tokens("".join(_text(m.get("content")) for m in messages))
        completion = sum(_tokens(t) for t in texts)
        choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop", "logprobs": None}
                   for i, t in enumerate(texts)]  # fmt: skip
        response = {
            "id": f"chatcmpl-{self.requests}", "object": "chat.completion", "created": int(time.time()),
            "model": payload.get("model") or (self.models[0] if self.models else "test-model"), "choices": choices,
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }  # fmt: skip
        return 200, json.dumps(response, ensure_ascii=False, separators=(",", ":")).encode(), (prompt, completion)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m oobleck.testing.server``: serve until interrupted, printing the bound URL."""
    parser = argparse.ArgumentParser(prog="python -m oobleck.testing.server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added before every answer")
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--fault-kinds", default="429,500,malformed", help="comma-separated: HTTP codes, malformed, hang, disconnect")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--model", action="append", dest="models", help="model id listed by /v1/models (repeatable)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = OpenAITestServer(
        latency=args.latency, fault_rate=args.fault_rate, fault_kinds=[k.strip() for k in args.fault_kinds.split(",") if k.strip()],
        seed=args.seed, hang_seconds=args.hang_seconds, models=args.models or ["test-model"], host=args.host, port=args.port,
        keep_recent=0,
    )  # fmt: skip
    server.serve_forever(lambda url: print(url, flush=True))  # the CLI's one line of output: where to connect


if __name__ == "__main__":
    main()
