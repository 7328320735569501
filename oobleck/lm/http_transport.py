"""A lean HTTP/1.1 keep-alive transport for the openai SDK's httpx client, for plain-http servers.

Why: with many requests in flight from one process, client CPU caps throughput, and httpx's
default stack (httpcore's pool, h11's parser, several socket calls per request, each handing
the GIL to another thread) cost ~0.5 ms of CPU per request here, as much as the SDK's own
request building. This transport costs under 0.1 ms: one ``sendall`` and usually one
``recv`` per request, and just enough HTTP/1.1: keep-alive, ``Content-Length``, chunked and
close-delimited bodies, 1xx interim responses skipped, connect/read/write timeouts from the
request, errors raised as httpx's own exception types (so the SDK turns them into
``APIConnectionError`` / ``APITimeoutError`` as usual). Bodies stream as they arrive, so SDK
streaming works through it. A request whose pooled connection turns out closed by the server
(it ends before any byte of a response) is sent again on a new connection: a stale keep-alive
connection is no failure of the request (a server that dropped it after reading the request
sees it twice, as after a retry). A new connection's failure is left to the caller to retry.

Scope: ``http://`` only: no TLS, no proxies, no HTTP/2. ``OpenAICompatibleLM`` installs it
only for an ``http://`` base URL that no proxy environment variable applies to
(``use_for``); any other request that reaches it (an ``https://`` redirect, say) is passed to
httpx's own transport. The classes subclass the httpx module the installed SDK uses (``httpx``
for openai 1.x/2.x, ``httpx2`` for 3.x), since httpx checks the stream types it gets back.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import select
import socket
import struct
import sys
import threading
import time
import urllib.request
import weakref
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import Any, NoReturn

__all__ = ["AsyncKeepAliveTransport", "KeepAliveTransport", "http_client", "sdk_httpx", "use_for"]

_BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")  # a header name is an RFC 9110 token
_MAX_HEAD = 64 * 1024  # response status line and headers
_MAX_CHUNK_LINE = 4096
_RECV = 64 * 1024  # below malloc's mmap threshold: a larger read buffer costs mmap/munmap per call
_KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is kept; servers commonly drop them after 5-75 s
_MAX_IDLE = 256  # idle connections kept per origin


def sdk_httpx() -> ModuleType:
    """The httpx module the installed openai SDK builds its clients on (``httpx`` or ``httpx2``)."""
    import openai

    for cls in openai.DefaultHttpxClient.__mro__:
        root = cls.__module__.partition(".")[0]
        if root in ("httpx", "httpx2"):
            return importlib.import_module(root)
    return importlib.import_module("httpx")


httpx = sdk_httpx()


def use_for(base_url: str | None) -> bool:
    """Whether requests to ``base_url`` may take this transport: plain http and no proxy for the host.

    httpx reads proxies from the environment only when it builds its own transport, so a URL
    that ``HTTP_PROXY``/``ALL_PROXY`` would send through a proxy (unless ``NO_PROXY`` exempts
    its host) keeps httpx's transport, which honours them.
    """
    if not base_url:
        return False
    try:
        url = httpx.URL(base_url)
    except Exception:  # noqa: BLE001 - a URL httpx cannot parse is left to the SDK to report
        return False
    if url.scheme != "http" or not url.host:
        return False
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get("http") or proxies.get("all")):
        return True
    return bool(urllib.request.proxy_bypass_environment(url.host, proxies))


# -- what goes wrong, by phase; the transports raise them as httpx exceptions ----------------


class _Failure(Exception):
    """A transport failure; ``kind`` names the httpx exception it becomes."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _timeout_failure(phase: str, seconds: float | None) -> _Failure:
    return _Failure(f"{phase.capitalize()}Timeout", f"{phase} timed out after {seconds} s")


def _os_failure(phase: str, exc: OSError) -> _Failure:
    kind = {"connect": "ConnectError", "write": "WriteError"}.get(phase, "ReadError")
    return _Failure(kind, f"{phase} failed: {exc}")


def _as_httpx(exc: _Failure, request: Any) -> Exception:
    return getattr(httpx, exc.kind)(str(exc), request=request)


def _raise_mapped(exc: BaseException, phase: str, timeouts: dict[str, Any], request: Any) -> NoReturn:
    """Re-raise ``exc`` as the httpx exception for ``phase`` (connect, write or read).

    Cancellation, KeyboardInterrupt and the like pass through untouched.
    """
    if isinstance(exc, _Failure):
        raise _as_httpx(exc, request) from exc
    # socket.timeout is TimeoutError, asyncio.TimeoutError too from 3.11; a kernel timeout
    # (SO_RCVTIMEO) on a blocking socket fails with EAGAIN: BlockingIOError.
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, BlockingIOError)):
        raise _as_httpx(_timeout_failure(phase, timeouts.get(phase)), request) from exc
    if isinstance(exc, OSError):
        raise _as_httpx(_os_failure(phase, exc), request) from exc
    raise exc


# -- HTTP/1.1 framing, shared by both transports ---------------------------------------------


def _request_bytes(request: Any, body: bytes) -> bytes:
    """The request head and body in one buffer (httpx has already set Host and Content-Length)."""
    raw = request.headers.raw
    names = b"".join(name for name, _ in raw)
    values = b"".join(value for _, value in raw)
    # Header names are RFC 9110 tokens and values hold no line breaks: a CR or LF from a user's
    # header would otherwise end the head early and smuggle in a request of its own.
    if _BAD_NAME.search(names) or b"\r" in values or b"\n" in values or b"\0" in values or not all(name for name, _ in raw):
        bad = next(((n, v) for n, v in raw if not n or _BAD_NAME.search(n) or any(c in v for c in (b"\r", b"\n", b"\0"))), raw[0])
        raise httpx.LocalProtocolError(f"illegal header {bad[0][:40]!r}: {bad[1][:40]!r}", request=request)
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path or b"/", b" HTTP/1.1\r\n"]
    chunked = False
    for name, value in raw:
        if name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        parts += [name, b": ", value, b"\r\n"]
    parts.append(b"\r\n")
    if chunked:  # a body httpx could not size: it is read already, so send it as one chunk
        parts += [b"%x\r\n" % len(body), body, b"\r\n0\r\n\r\n"] if body else [b"0\r\n\r\n"]
    else:
        parts.append(body)
    return b"".join(parts)


class _Head:
    """A parsed response head and how its body is framed."""

    __slots__ = ("chunked", "headers", "keep_alive", "length", "reason", "status", "version")

    def __init__(self, raw: bytes, method: bytes):
        lines = raw.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code, _, reason = rest.partition(b" ")
        if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
            raise _Failure("RemoteProtocolError", f"malformed status line {lines[0][:100]!r}")
        self.version, self.status, self.reason = version, int(code), reason.strip()
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        chunked = False
        connection = b""
        for line in lines[1:]:
            if line[:1] in (b" ", b"\t") and headers:  # obsolete line folding: continues the last value
                name, value = headers[-1]
                headers[-1] = (name, value + b" " + line.strip())
                continue
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise _Failure("RemoteProtocolError", f"malformed header line {line[:100]!r}")
            value = value.strip()
            headers.append((name, value))
            lower = name.lower()
            if lower == b"content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise _Failure("RemoteProtocolError", f"bad Content-Length {value[:40]!r}")
                length = int(value)
            elif lower == b"transfer-encoding":
                if value.lower() != b"chunked":  # as h11: other transfer codings are not decoded here
                    raise _Failure("RemoteProtocolError", f"unsupported Transfer-Encoding {value[:40]!r}")
                chunked = True
            elif lower == b"connection":
                connection = value.lower()
        self.headers = headers
        if method == b"HEAD" or self.status in (204, 304) or self.status < 200:
            length, chunked = 0, False
        elif chunked:
            length = None  # Transfer-Encoding wins over Content-Length (RFC 9112 6.3)
        self.length, self.chunked = length, chunked
        tokens = {t.strip() for t in connection.split(b",")}
        if version == b"HTTP/1.1":
            self.keep_alive = b"close" not in tokens
        else:
            self.keep_alive = b"keep-alive" in tokens
        if length is None and not chunked:
            self.keep_alive = False  # the body ends when the server closes

    def extensions(self) -> dict[str, Any]:
        return {"http_version": self.version, "reason_phrase": self.reason}


class _Framing:
    """Pulls a response (head, then body pieces) out of a connection's receive buffer.

    Pure parsing, no I/O: each transport feeds it bytes and asks for the next piece, so the
    sync and async paths share one implementation of the framing rules.
    """

    __slots__ = ("buffer", "done", "head", "method", "remaining", "state")

    def __init__(self, buffer: bytearray, method: bytes):
        self.buffer = buffer
        self.method = method
        self.head: _Head | None = None
        self.remaining = 0  # body bytes left in the current chunk or Content-Length body
        self.state = "head"  # head, body, chunk-size, chunk-data, chunk-end, trailer, until-close
        self.done = False

    def parse_head(self) -> _Head | None:
        """The final (non-1xx) response head once it is in the buffer, else None."""
        buffer = self.buffer
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEAD:
                    raise _Failure("RemoteProtocolError", "response head too large")
                return None
            head = _Head(bytes(buffer[:end]), self.method)
            del buffer[: end + 4]
            if head.status == 101:
                raise _Failure("RemoteProtocolError", "the server switched protocols (101), which this transport does not support")
            if head.status >= 200:
                break  # 1xx interim responses (100 Continue, 103 Early Hints) are skipped
        self.head = head
        if head.chunked:
            self.state = "chunk-size"
        elif head.length is None:
            self.state = "until-close"
        else:
            self.state, self.remaining = "body", head.length
            self.done = head.length == 0
        return head

    def next_piece(self) -> bytes | None:
        """Body bytes available now (b"" when the body is complete), or None when more are needed."""
        buffer = self.buffer
        while not self.done:
            state = self.state
            if state in ("body", "chunk-data"):
                if not buffer:
                    return None
                take = min(self.remaining, len(buffer))
                piece = bytes(buffer[:take])
                del buffer[:take]
                self.remaining -= take
                if not self.remaining:
                    if state == "body":
                        self.done = True
                    else:
                        self.state = "chunk-end"
                return piece
            if state == "until-close":
                if not buffer:
                    return None
                piece = bytes(buffer)
                buffer.clear()
                return piece
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > _MAX_CHUNK_LINE and state != "chunk-end":
                    raise _Failure("RemoteProtocolError", "chunk size line too long")
                if state == "chunk-end" and len(buffer) >= 2:
                    raise _Failure("RemoteProtocolError", "chunk data not followed by CRLF")
                return None
            line = bytes(buffer[:end])
            del buffer[: end + 2]
            if state == "chunk-size":
                size = line.partition(b";")[0].strip()
                try:
                    self.remaining = int(size, 16)
                except ValueError:
                    raise _Failure("RemoteProtocolError", f"bad chunk size {size[:20]!r}") from None
                if self.remaining < 0:
                    raise _Failure("RemoteProtocolError", f"bad chunk size {size[:20]!r}")
                self.state = "chunk-data" if self.remaining else "trailer"
            elif state == "chunk-end":
                if line:
                    raise _Failure("RemoteProtocolError", "chunk data not followed by CRLF")
                self.state = "chunk-size"
            elif not line:  # state == "trailer": an empty line ends the trailer section
                self.done = True
        return b""

    def end_of_stream(self) -> None:
        """The connection closed: the body ends here if it is close-delimited, else it was cut short."""
        if self.state == "until-close":
            self.done = True
            return
        if self.head is None:
            message = "the server closed the connection without sending a response"
        else:
            message = "the server closed the connection before the end of the response body"
        raise _Failure("RemoteProtocolError", message)

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry another request once this body is read."""
        return self.done and self.head is not None and self.head.keep_alive and not self.buffer


# -- the sync transport -----------------------------------------------------------------------

# Python's socket timeouts poll before every send and recv: a second syscall, and with many
# threads in flight each syscall hands the GIL to another thread and waits to get it back. On
# 64-bit Linux the kernel enforces the timeouts instead (SO_RCVTIMEO/SO_SNDTIMEO on a blocking
# socket: a call that times out fails with EAGAIN); elsewhere Python's own timeouts are used.
_KERNEL_TIMEOUTS = sys.platform == "linux" and struct.calcsize("P") == 8 and hasattr(socket, "SO_RCVTIMEO")
# A connection idle for less than this is reused without checking that the server kept it
# open (a poll, which costs a GIL handover too): servers' keep-alive timeouts are seconds, and
# a connection that turns out closed is replaced transparently (see ``_Stale``).
_TRUST_IDLE = 1.0
_DROPPED = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class _Stale(Exception):
    """A reused connection ended before any byte of a response: the server had closed it."""


class _Connection:
    __slots__ = ("buffer", "idle_since", "kernel_timeouts", "sock", "timeout")

    def __init__(self, sock: socket.socket, kernel_timeouts: bool):
        self.sock = sock
        self.kernel_timeouts = kernel_timeouts
        self.buffer = bytearray()
        self.timeout: float | None = -1.0  # unknown: the first settimeout always applies
        self.idle_since = 0.0  # 0: a new connection, never used

    def settimeout(self, seconds: float | None) -> None:
        if seconds == self.timeout:  # each change costs syscalls, and most requests reuse one value
            return
        if self.kernel_timeouts:
            value = 0.0 if seconds is None else max(float(seconds), 1e-6)  # 0 means no timeout to the kernel
            whole = int(value)
            timeval = struct.pack("@ll", whole, int((value - whole) * 1_000_000))
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
            except OSError:  # a kernel (or sandbox) without them: Python's timeouts then
                self.kernel_timeouts = False
        if not self.kernel_timeouts:
            self.sock.settimeout(seconds)
        self.timeout = seconds

    def alive(self) -> bool:
        """An idle connection is usable while nothing is readable: readable means closed (or junk)."""
        try:
            if _poll is not None:
                poller = _poll()
                poller.register(self.sock, select.POLLIN)
                return not poller.poll(0)
            return not select.select([self.sock], [], [], 0)[0]
        except (OSError, ValueError):
            return False

    def receive(self) -> bool:
        """Read what the server sent into the buffer; False at the end of the stream."""
        received = self.sock.recv(_RECV)
        self.buffer += received
        return bool(received)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


_poll = getattr(select, "poll", None)
_transports: weakref.WeakSet[Any] = weakref.WeakSet()


def _forget_connections_after_fork() -> None:
    # A forked child shares its parent's sockets; using them from both would mix responses.
    for transport in list(_transports):
        transport._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_connections_after_fork)


class KeepAliveTransport(httpx.BaseTransport):  # type: ignore[name-defined,misc]
    """A sync httpx transport over a pool of keep-alive sockets (plain http only; see the module doc).

    Thread-safe: idle connections sit in a per-origin stack under a lock; a request takes one
    (or connects) and gives it back once its response body has been read to the end. There is
    no cap on connections in use: the callers' concurrency bounds it. A request whose reused
    connection turns out closed by the server (it ends before any byte of a response) is sent
    again on another connection: a stale keep-alive connection is no failure of the request.
    """

    def __init__(self, *, keepalive_expiry: float = _KEEPALIVE_EXPIRY, max_idle: int = _MAX_IDLE):
        self.keepalive_expiry = keepalive_expiry
        self.max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._lock = threading.Lock()
        self._fallback: Any = None
        self._closed = False
        _transports.add(self)

    def handle_request(self, request: Any) -> Any:
        url = request.url
        if url.scheme != "http":
            return self._other(request)
        timeouts = request.extensions.get("timeout") or {}
        key = (url.host, url.port or 80)
        data = _request_bytes(request, request.read())
        method = request.method.encode("ascii")
        while True:  # once more for each stale pooled connection; a new one is never stale
            connection = self._connection(key, timeouts.get("connect"), request)
            reused, answered, phase = connection.idle_since > 0, False, "write"
            try:
                connection.settimeout(timeouts.get("write"))
                connection.sock.sendall(data)
                phase = "read"
                connection.settimeout(timeouts.get("read"))
                framing = _Framing(connection.buffer, method)
                head = framing.parse_head()
                while head is None:
                    if not connection.receive():
                        if reused and not answered:
                            raise _Stale()
                        framing.end_of_stream()
                    answered = True
                    head = framing.parse_head()
            except _Stale:
                connection.close()
                continue
            except _DROPPED as exc:
                connection.close()
                if reused and not answered:
                    continue
                _raise_mapped(exc, phase, timeouts, request)
            except BaseException as exc:  # noqa: BLE001 - always raised again, as httpx's error for the phase
                connection.close()
                _raise_mapped(exc, phase, timeouts, request)
            stream = _SyncBody(self, key, connection, framing, timeouts, request)
            return httpx.Response(head.status, headers=head.headers, stream=stream, extensions=head.extensions())

    def _connection(self, key: tuple[str, int], timeout: float | None, request: Any) -> _Connection:
        """A pooled connection to ``key`` that is still open, or a new one."""
        now = time.monotonic()
        while True:
            with self._lock:
                idle = self._idle.get(key)
                connection = idle.pop() if idle else None
            if connection is None:
                break
            idle_for = now - connection.idle_since
            if idle_for < self.keepalive_expiry and (idle_for < _TRUST_IDLE or connection.alive()):
                return connection
            connection.close()
        try:
            sock = socket.create_connection(key, timeout=timeout)
        except BaseException as exc:  # noqa: BLE001 - always raised again, as httpx's ConnectError/ConnectTimeout
            _raise_mapped(exc, "connect", {"connect": timeout}, request)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request is one write: send it now
        except OSError:
            pass
        if _KERNEL_TIMEOUTS:
            sock.settimeout(None)  # blocking; _Connection.settimeout sets the kernel's timeouts
        return _Connection(sock, _KERNEL_TIMEOUTS)

    def _release(self, key: tuple[str, int], connection: _Connection, reusable: bool) -> None:
        closing = [connection]
        if reusable and not self._closed:
            connection.idle_since = now = time.monotonic()
            with self._lock:
                idle = self._idle.setdefault(key, [])
                if len(idle) < self.max_idle:
                    idle.append(connection)
                    closing.pop()
                # The stack is used from the top, so the oldest idle connection sits at the
                # bottom: drop it once expired rather than hold its socket until load reaches it.
                if now - idle[0].idle_since >= self.keepalive_expiry:
                    closing.append(idle.pop(0))
        for stale in closing:
            stale.close()

    def _other(self, request: Any) -> Any:
        """httpx's own transport, for requests this one does not serve (https)."""
        with self._lock:
            if self._fallback is None:
                self._fallback = httpx.HTTPTransport()
            fallback = self._fallback
        return fallback.handle_request(request)

    def _forget(self) -> None:
        with self._lock:
            self._idle = {}  # the parent's sockets stay open for the parent

    def close(self) -> None:
        self._closed = True
        with self._lock:
            idle, self._idle = self._idle, {}
            fallback, self._fallback = self._fallback, None
        for connections in idle.values():
            for connection in connections:
                connection.close()
        if fallback is not None:
            fallback.close()

    def __del__(self) -> None:  # a client dropped unclosed: close its idle sockets quietly
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - at interpreter shutdown anything may be gone
            pass


class _SyncBody(httpx.SyncByteStream):  # type: ignore[name-defined,misc]
    """A response body read from the socket as the consumer iterates.

    The connection goes back to the pool once the body has been read to its end, and is
    closed if the consumer stops early or anything fails.
    """

    def __init__(self, transport: KeepAliveTransport, key: tuple[str, int], connection: _Connection,
                 framing: _Framing, timeouts: dict[str, Any], request: Any):  # fmt: skip
        self._transport = transport
        self._key = key
        self._connection: _Connection | None = connection
        self._framing = framing
        self._timeouts = timeouts
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        connection, framing = self._connection, self._framing
        if connection is None:
            raise httpx.StreamClosed()
        try:
            while True:
                piece = framing.next_piece()
                if piece:
                    yield piece
                elif piece is not None:  # b"": the body is complete
                    break
                elif not connection.receive():
                    framing.end_of_stream()
        except BaseException as exc:  # noqa: BLE001 - always raised again (GeneratorExit too)
            self._connection = None
            connection.close()
            _raise_mapped(exc, "read", self._timeouts, self._request)
        self.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._transport._release(self._key, connection, self._framing.reusable)


# -- the asyncio transport --------------------------------------------------------------------


class _Protocol(asyncio.Protocol):
    """One connection's receiving side: bytes go to the buffer and wake whoever waits for them."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[bool] | None = None
        self.closed = False
        self.error: BaseException | None = None
        self.paused = False
        self.drained: asyncio.Future[None] | None = None
        self.idle_since = 0.0  # 0: a new connection, never used

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake(True)

    def eof_received(self) -> bool:
        self.closed = True
        self._wake(False)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._wake(False)
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def _wake(self, data: bool) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(data)

    async def _wait(self, future: asyncio.Future[Any], seconds: float | None, phase: str) -> Any:
        """Await ``future`` (set by the callbacks above) for at most ``seconds``."""
        timer = asyncio.get_running_loop().call_later(seconds, _expire, future) if seconds is not None else None
        try:
            return await future
        except asyncio.TimeoutError:
            raise _timeout_failure(phase, seconds) from None
        finally:
            if timer is not None:
                timer.cancel()

    async def receive(self, seconds: float | None) -> bool:
        """Wait for more bytes: True once some arrived, False if the connection closed instead."""
        if self.closed:
            return False
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            return bool(await self._wait(self.waiter, seconds, "read"))
        finally:
            self.waiter = None

    async def write(self, data: bytes, seconds: float | None) -> None:
        if self.closed or self.transport is None:
            raise ConnectionResetError(f"the connection is closed ({self.error or 'by the server'})")
        self.transport.write(data)
        if self.paused:  # more is buffered than the transport's high-water mark: wait until it drains
            self.drained = asyncio.get_running_loop().create_future()
            try:
                await self._wait(self.drained, seconds, "write")
            finally:
                self.drained = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(asyncio.TimeoutError())


class AsyncKeepAliveTransport(httpx.AsyncBaseTransport):  # type: ignore[name-defined,misc]
    """The asyncio twin of ``KeepAliveTransport``: connections are asyncio protocols.

    Not thread-safe, as asyncio code is not: use one per event loop (``OpenAICompatibleLM``
    makes one per loop). A pooled connection opened on another loop is dropped, not reused.
    Outside asyncio (trio), and for non-http URLs, requests go to httpx's own async transport.
    """

    def __init__(self, *, keepalive_expiry: float = _KEEPALIVE_EXPIRY, max_idle: int = _MAX_IDLE):
        self.keepalive_expiry = keepalive_expiry
        self.max_idle = max_idle
        self._idle: dict[tuple[str, int], list[tuple[asyncio.AbstractEventLoop, _Protocol]]] = {}
        self._fallback: Any = None
        self._closed = False
        _transports.add(self)

    async def handle_async_request(self, request: Any) -> Any:
        url = request.url
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another async library (trio): httpx knows how
            return await self._other(request)
        if url.scheme != "http":
            return await self._other(request)
        timeouts = request.extensions.get("timeout") or {}
        key = (url.host, url.port or 80)
        data = _request_bytes(request, await request.aread())
        method = request.method.encode("ascii")
        while True:  # once more for each stale pooled connection; a new one is never stale
            protocol = await self._connection(loop, key, timeouts.get("connect"), request)
            reused, answered, phase = protocol.idle_since > 0, False, "write"
            try:
                await protocol.write(data, timeouts.get("write"))
                phase = "read"
                framing = _Framing(protocol.buffer, method)
                head = framing.parse_head()
                while head is None:
                    if not await protocol.receive(timeouts.get("read")):
                        if reused and not answered:
                            raise _Stale()
                        framing.end_of_stream()
                    answered = True
                    head = framing.parse_head()
            except _Stale:
                protocol.close()
                continue
            except _DROPPED as exc:
                protocol.close()
                if reused and not answered:
                    continue
                _raise_mapped(exc, phase, timeouts, request)
            except BaseException as exc:  # noqa: BLE001 - always raised again (cancellation too)
                protocol.close()
                _raise_mapped(exc, phase, timeouts, request)
            stream = _AsyncBody(self, loop, key, protocol, framing, timeouts, request)
            return httpx.Response(head.status, headers=head.headers, stream=stream, extensions=head.extensions())

    async def _connection(self, loop: asyncio.AbstractEventLoop, key: tuple[str, int], timeout: float | None, request: Any) -> _Protocol:
        """A pooled connection to ``key`` on this loop that is still open, or a new one."""
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            owner, protocol = idle.pop()
            # Closed, holding unexpected bytes, idle too long or from another loop: not reusable.
            if owner is loop and not protocol.closed and not protocol.buffer and now - protocol.idle_since < self.keepalive_expiry:
                return protocol
            if owner is loop:
                protocol.close()
            elif not owner.is_closed():
                owner.call_soon_threadsafe(protocol.close)
        try:
            transport, protocol = await asyncio.wait_for(loop.create_connection(_Protocol, key[0], key[1]), timeout)
        except BaseException as exc:  # noqa: BLE001 - always raised again, as httpx's ConnectError/ConnectTimeout
            _raise_mapped(exc, "connect", {"connect": timeout}, request)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        return protocol

    def _release(self, loop: asyncio.AbstractEventLoop, key: tuple[str, int], protocol: _Protocol, reusable: bool) -> None:
        if reusable and not self._closed and not protocol.closed:
            idle = self._idle.setdefault(key, [])
            now = time.monotonic()
            while idle and now - idle[0][1].idle_since >= self.keepalive_expiry:  # the oldest sit at the bottom
                owner, stale = idle.pop(0)
                if owner is loop:
                    stale.close()
            if len(idle) < self.max_idle:
                protocol.idle_since = now
                idle.append((loop, protocol))
                return
        protocol.close()

    async def _other(self, request: Any) -> Any:
        """httpx's own transport, for requests this one does not serve (https, trio)."""
        if self._fallback is None:
            self._fallback = httpx.AsyncHTTPTransport()
        return await self._fallback.handle_async_request(request)

    def _forget(self) -> None:
        self._idle = {}

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for _, protocol in connections:
                protocol.close()
        fallback, self._fallback = self._fallback, None
        if fallback is not None:
            await fallback.aclose()


class _AsyncBody(httpx.AsyncByteStream):  # type: ignore[name-defined,misc]
    """The async response body; as ``_SyncBody``, it hands a fully read connection back."""

    def __init__(self, transport: AsyncKeepAliveTransport, loop: asyncio.AbstractEventLoop, key: tuple[str, int],
                 protocol: _Protocol, framing: _Framing, timeouts: dict[str, Any], request: Any):  # fmt: skip
        self._transport = transport
        self._loop = loop
        self._key = key
        self._protocol: _Protocol | None = protocol
        self._framing = framing
        self._timeouts = timeouts
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        protocol, framing = self._protocol, self._framing
        if protocol is None:
            raise httpx.StreamClosed()
        try:
            while True:
                piece = framing.next_piece()
                if piece:
                    yield piece
                elif piece is not None:  # b"": the body is complete
                    break
                elif not await protocol.receive(self._timeouts.get("read")):
                    framing.end_of_stream()
        except BaseException as exc:  # noqa: BLE001 - always raised again (cancellation too)
            self._protocol = None
            protocol.close()
            _raise_mapped(exc, "read", self._timeouts, self._request)
        await self.aclose()

    async def aclose(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            self._transport._release(self._loop, self._key, protocol, self._framing.reusable)


# -- the SDK's httpx clients over these transports -------------------------------------------


_SET_COOKIE = (b"set-cookie", b"set-cookie2")


class _SetCookieOnlyCookies(httpx.Cookies):  # type: ignore[name-defined,misc]
    """A client's cookie store that reads a response's headers only when they set a cookie.

    Why: httpx passes every response to ``http.cookiejar``, which builds urllib request and
    response stand-ins and copies every header each time (about a tenth of the client CPU per
    request here) only to find no ``Set-Cookie`` on an LM server's reply. Skipping that call
    stores exactly what it would have stored: nothing.
    """

    def extract_cookies(self, response: Any) -> None:
        if any(name.lower() in _SET_COOKIE for name, _ in response.headers.raw):
            super().extract_cookies(response)


def http_client(*, asynchronous: bool) -> Any:
    """The SDK's default httpx client (``openai.DefaultHttpxClient`` or its async twin) on this transport."""
    import openai

    if asynchronous:
        client = openai.DefaultAsyncHttpxClient(transport=AsyncKeepAliveTransport())
    else:
        client = openai.DefaultHttpxClient(transport=KeepAliveTransport())
    # httpx keeps the store in ``_cookies`` (its ``cookies`` setter would wrap a new one in a
    # plain ``Cookies``); where a future httpx differs, the client keeps its own store.
    if type(getattr(client, "_cookies", None)) is httpx.Cookies:
        client._cookies = _SetCookieOnlyCookies(client._cookies.jar)
    return client
