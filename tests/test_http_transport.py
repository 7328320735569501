"""oobleck's keep-alive HTTP transport under the openai SDK, against real loopback servers.

``OpenAITestServer`` covers what an LM server does (latency, keep-alive, faults, restarts);
a small scripted socket server covers the HTTP framings it never sends (chunked and
close-delimited bodies, 1xx interim responses, malformed heads, streams).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import oobleck as ob
from oobleck.lm import RetryPolicy, http_transport
from oobleck.lm.http_transport import AsyncKeepAliveTransport, KeepAliveTransport, use_for
from oobleck.testing.server import OpenAITestServer

pytestmark = pytest.mark.integration

httpx = http_transport.httpx  # the httpx module the installed SDK uses (httpx or httpx2)
NO_RETRY = RetryPolicy(retries=0, base_delay=0.0, max_delay=0.0)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def make_lm(server: OpenAITestServer, **kwargs: Any) -> Any:
    kwargs.setdefault("retry", NO_RETRY)
    kwargs.setdefault("cache", False)
    kwargs.setdefault("timeout", 10.0)
    return ob.LM("openai/test-model", base_url=server.base_url + "/v1", api_key="k", **kwargs)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the requests each transport of this module handles (LMs made after this fixture)."""
    counts = {"sync": 0, "async": 0}
    sync_handle, async_handle = KeepAliveTransport.handle_request, AsyncKeepAliveTransport.handle_async_request

    def handle(self: Any, request: Any) -> Any:
        counts["sync"] += 1
        return sync_handle(self, request)

    async def handle_async(self: Any, request: Any) -> Any:
        counts["async"] += 1
        return await async_handle(self, request)

    monkeypatch.setattr(KeepAliveTransport, "handle_request", handle)
    monkeypatch.setattr(AsyncKeepAliveTransport, "handle_async_request", handle_async)
    return counts


# -- a scripted HTTP/1.1 server for framings the test LM server never sends ------------------


CLOSE = b""  # ends a scripted reply: the server closes the connection after writing it


class ScriptedHTTP:
    """Answers each request with the next scripted reply.

    A reply is a list of byte strings written with a short pause between them, so the client
    sees them arrive in pieces; a reply ending in ``CLOSE`` closes its connection afterwards,
    as does every reply once ``close_after`` replies were written on one connection.
    """

    def __init__(self, replies: list[Any], close_after: int | None = None):
        self.replies = list(replies)
        self.close_after = close_after
        self.requests: list[bytes] = []
        self.bodies: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        buffer, served = b"", 0
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                self.bodies.append(buffer[:length])
                buffer = buffer[length:]
                self.requests.append(head)
                reply = self.replies.pop(0) if self.replies else [CLOSE]
                for i, piece in enumerate(reply):
                    if i:
                        time.sleep(0.02)
                    conn.sendall(piece)
                served += 1
                if reply[-1:] == [CLOSE] or (self.close_after is not None and served >= self.close_after):
                    return

    def close(self) -> None:
        self.listener.close()


@contextlib.contextmanager
def scripted(replies: list[list[bytes]], close_after: int | None = None) -> Iterator[ScriptedHTTP]:
    server = ScriptedHTTP(replies, close_after)
    try:
        yield server
    finally:
        server.close()


def ok_json(payload: dict[str, Any], extra: bytes = b"") -> bytes:
    body = json.dumps(payload).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def chat_body(text: str) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }


def chunked(*pieces: bytes) -> list[bytes]:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    return [head, *(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces), b"0\r\nX-Trailer: t\r\n\r\n"]


# -- choosing the transport ------------------------------------------------------------------


def test_used_for_plain_http_without_a_proxy_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert use_for("http://127.0.0.1:8000/v1") and use_for("http://[::1]:8000/v1")
    assert not use_for("https://api.openai.com/v1") and not use_for(None) and not use_for("")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    assert not use_for("http://gpu-box:8000/v1")  # httpx would route it through the proxy: it keeps httpx
    monkeypatch.setenv("NO_PROXY", "gpu-box,localhost")
    assert use_for("http://gpu-box:8000/v1") and not use_for("http://other-box:8000/v1")


def test_lm_requests_go_through_one_client_and_reused_connections(counted: dict[str, int]) -> None:
    with OpenAITestServer(latency=0.01) as server:
        lm = make_lm(server)
        for i in range(20):
            assert lm(user(f"call {i}")) == [f"call {i}"]
        assert server.stats()["open_connections"] == 1  # keep-alive: one connection for 20 calls
        results: dict[int, list[str]] = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, lm(user(f"t{i}")))) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results == {i: [f"t{i}"] for i in range(16)}
        assert 1 < server.stats()["open_connections"] <= 16
    assert counted["sync"] == 36 and server.requests == 36
    assert len(lm._sync_shards()._clients) == 1  # one SDK client carries every request


def test_a_users_http_client_is_used_as_given(counted: dict[str, int]) -> None:
    import openai

    seen: list[str] = []
    http = openai.DefaultHttpxClient(event_hooks={"request": [lambda request: seen.append(str(request.url))]})
    with OpenAITestServer() as server:
        lm = make_lm(server, http_client=http)
        assert lm(user("mine")) == ["mine"]
    assert seen == [server.base_url + "/v1/chat/completions"]
    assert counted["sync"] == 0
    assert lm.describe()["model"] == "openai/test-model" and "http_client" not in json.dumps(lm.describe())


def test_a_users_sync_http_client_alone_serves_async_calls_too() -> None:
    """Its proxies, certificates and headers apply to acall as well: no default async client behind the user's back."""
    import openai

    seen: list[str] = []
    http = openai.DefaultHttpxClient(event_hooks={"request": [lambda request: seen.append(request.headers.get("x-corp", ""))]},
                                     headers={"x-corp": "token"})  # fmt: skip
    with OpenAITestServer() as server:
        lm = make_lm(server, http_client=http)
        assert not lm.native_async and make_lm(server).native_async
        assert asyncio.run(lm.acall(user("async"))) == ["async"]
        program = ob.Predict("question -> answer", lm=lm)
        devset = [ob.Example(question=f"q{i}", answer="").with_inputs("question") for i in range(40)]
        result = ob.Evaluate(devset=devset, metric=lambda e, p, t=None: 1.0, num_threads=32, display_progress=False)(program)
    assert result.mode == "threads" and result.errors == 0
    assert seen == ["token"] * 41


# -- faults through the SDK: translated as before ----------------------------------------------


@pytest.mark.parametrize("fault", [429, 500, "malformed", "disconnect"])
def test_faults_become_the_same_oobleck_errors(fault: Any, counted: dict[str, int]) -> None:
    with OpenAITestServer(faults=[fault]) as server:
        lm = make_lm(server)
        error = ob.LMConnectionError if fault == "disconnect" else ob.LMResponseError
        with pytest.raises(error) as caught:
            lm(user("x"))
        assert lm(user("and then fine")) == ["and then fine"]  # the connection pool recovers
    assert server.base_url in str(caught.value)
    if isinstance(fault, int):
        assert caught.value.status == fault and f"HTTP {fault}" in str(caught.value)  # type: ignore[attr-defined]
    assert getattr(caught.value, "retryable", True)
    assert counted["sync"] == 2


@pytest.mark.parametrize("kernel_timeouts", [True, False])  # SO_RCVTIMEO on Linux, Python's timeouts elsewhere
def test_read_timeout_is_a_timeout_and_the_next_call_works(
    kernel_timeouts: bool, counted: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_transport, "_KERNEL_TIMEOUTS", kernel_timeouts and http_transport._KERNEL_TIMEOUTS)
    with OpenAITestServer(faults=["hang"], hang_seconds=3) as server:
        lm = make_lm(server, timeout=0.2)
        started = time.perf_counter()
        with pytest.raises(ob.LMError, match="timed out"):
            lm(user("slow"))
        assert time.perf_counter() - started < 1.5
        assert lm(user("quick")) == ["quick"]
    assert counted["sync"] == 2


@pytest.mark.parametrize("trust_idle", [1.0, 0.0])  # reused as is (then resent), or checked before reuse
def test_a_restarted_server_is_reached_again_without_an_error(
    trust_idle: float, counted: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pooled connection dies with the first server; the request goes out on a new
    # connection instead of failing (no LM-level retries here).
    monkeypatch.setattr(http_transport, "_TRUST_IDLE", trust_idle)
    first = OpenAITestServer().start()
    lm = make_lm(first)
    assert lm(user("before")) == ["before"]
    port = first.port
    first.stop()
    with OpenAITestServer(port=port) as second:
        assert lm(user("after")) == ["after"]
        assert second.requests == 1
    assert counted["sync"] == 2


def test_connection_refused_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lm = ob.LM("openai/m", base_url=f"http://127.0.0.1:{port}/v1", retry=NO_RETRY, cache=False)
    with pytest.raises(ob.LMConnectionError, match=f"127.0.0.1:{port}"):
        lm(user("anyone?"))


# -- HTTP framing ------------------------------------------------------------------------------


def sync_client() -> Any:
    return httpx.Client(transport=KeepAliveTransport())


def test_chunked_close_delimited_and_interim_responses() -> None:
    replies = [
        chunked(b'{"a": ', b'"chunked"}'),
        [b"HTTP/1.1 100 Continue\r\n\r\n", ok_json({"a": "after 100"})],
        [b"HTTP/1.1 204 No Content\r\n\r\n"],
        [b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ", b"close", CLOSE],
        [ok_json({"n": 2})],
    ]
    with scripted(replies) as server, sync_client() as client:
        assert client.get(server.url + "/c").json() == {"a": "chunked"}
        assert client.post(server.url + "/i", content=b"{}").json() == {"a": "after 100"}
        assert client.get(server.url + "/n").status_code == 204
        response = client.get(server.url + "/h10")
        assert (response.text, response.http_version) == ("until close", "HTTP/1.0")
        assert server.connections == 1  # one keep-alive connection until the close-delimited body
        assert client.get(server.url + "/again").json() == {"n": 2}
        assert server.connections == 2  # a close-delimited body ends its connection


def test_idle_connections_expire() -> None:
    with scripted([[ok_json({"n": 1})], [ok_json({"n": 2})], [ok_json({"n": 3})]]) as server:
        with httpx.Client(transport=KeepAliveTransport(keepalive_expiry=0.2)) as client:
            assert client.get(server.url + "/").json() == {"n": 1}
            assert client.get(server.url + "/").json() == {"n": 2}
            assert server.connections == 1
            time.sleep(0.3)
            assert client.get(server.url + "/").json() == {"n": 3}
        assert server.connections == 2


def test_connection_close_is_honoured_and_bodies_stream() -> None:
    replies = [
        [ok_json({"n": 1}, b"Connection: close\r\n")],
        chunked(b"data: one\n\n", b"data: two\n\n", b"data: three\n\n"),
    ]
    with scripted(replies, close_after=1) as server, sync_client() as client:
        assert client.get(server.url + "/").json() == {"n": 1}
        arrivals = []
        with client.stream("GET", server.url + "/events") as response:
            for piece in response.iter_bytes():
                arrivals.append((time.perf_counter(), piece))
        assert b"".join(p for _, p in arrivals) == b"data: one\n\ndata: two\n\ndata: three\n\n"
        assert len(arrivals) == 3 and arrivals[-1][0] - arrivals[0][0] > 0.02  # pieces as they came
        assert server.connections == 2


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ([b"SPDY/3 200 OK\r\n\r\n"], "malformed status line"),
        ([b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n"], "malformed header"),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"], "before the end of the response body"),
        ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"], "bad chunk size"),
        ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"], "unsupported Transfer-Encoding"),
    ],
)
def test_broken_responses_are_protocol_errors(reply: list[bytes], message: str) -> None:
    with scripted([reply], close_after=1) as server, sync_client() as client, pytest.raises(httpx.RemoteProtocolError, match=message):
        client.get(server.url + "/").read()


def test_header_injection_is_refused_before_sending() -> None:
    with scripted([]) as server, sync_client() as client:
        with pytest.raises(httpx.LocalProtocolError, match="illegal header"):
            client.get(server.url + "/", headers={"X-Evil": "a\r\nX-Smuggled: 1"})
        assert server.requests == []


def test_chat_through_the_sdk_over_a_chunked_server() -> None:
    body = json.dumps(chat_body("[[ ## answer ## ]]\nchunky\n\n[[ ## completed ## ]]")).encode()
    with scripted([chunked(body[:40], body[40:])]) as server:
        lm = ob.LM("openai/m", base_url=server.url + "/v1", retry=NO_RETRY, cache=False)
        assert ob.Predict("question -> answer", lm=lm)(question="q").answer == "chunky"
        assert lm.usage.completion_tokens == 2
        assert server.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:8000", "http://h", "https://api.example.com", "http://h/v1", "http://h/v1/", "http://h/v1#frag",
     "http://h/v1?x=a/", "http://[::1]:8000/v1", "http://user:pw@h:1/x/y/"],
)  # fmt: skip
def test_the_endpoint_url_is_the_one_the_sdk_would_build(base_url: str) -> None:
    import openai

    from oobleck.lm.openai_backend import _endpoint

    client = openai.OpenAI(api_key="k", base_url=base_url)
    assert str(client._prepare_url(_endpoint(client))) == str(client._prepare_url("/chat/completions"))


@pytest.mark.parametrize("asynchronous", [False, True])
def test_lm_requests_are_the_ones_chat_completions_create_sends(asynchronous: bool) -> None:
    """The LM's prepared ``post`` and the SDK's own ``create`` put the same request on the wire."""
    reply = [ok_json(chat_body("[[ ## answer ## ]]\nyes\n\n[[ ## completed ## ]]"))]
    messages = user("hi")
    with scripted([reply, reply]) as server:
        lm = ob.LM("openai/m", base_url=server.url + "/v1/", retry=NO_RETRY, cache=False, temperature=0.5, max_tokens=7)
        if asynchronous:

            async def both() -> None:
                await lm.acall(messages=messages)
                await lm.async_client().chat.completions.create(model="m", messages=messages, temperature=0.5, max_tokens=7)

            asyncio.run(both())
        else:
            lm(messages=messages)
            lm.client().chat.completions.create(model="m", messages=messages, temperature=0.5, max_tokens=7)

    def head(raw: bytes) -> list[bytes]:  # an idempotency key, where the SDK sends one, is fresh per request by design
        return [line for line in raw.split(b"\r\n") if not line.lower().startswith(b"idempotency-key:")]

    ours, sdks = server.requests
    assert head(ours) == head(sdks) and head(ours)[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert json.loads(server.bodies[0]) == json.loads(server.bodies[1]) == {"model": "m", "messages": messages, "temperature": 0.5, "max_tokens": 7}
    from oobleck.lm.openai_backend import _prepared_post

    # the first request took the prepared path; per-call request options are left to ``post``
    assert _prepared_post(lm.client(), {"model": "m"}, {}) is not None
    assert _prepared_post(lm.client(), {"model": "m"}, {"timeout": 5}) is None


def test_a_base_url_without_a_path_reaches_chat_completions() -> None:
    reply = [ok_json(chat_body("[[ ## answer ## ]]\nyes\n\n[[ ## completed ## ]]"))]
    with scripted([reply]) as server:
        lm = ob.LM("openai/m", base_url=server.url, retry=NO_RETRY, cache=False)
        assert lm(messages=user("hi"))[0].startswith("[[ ## answer ## ]]")
        assert server.requests[0].startswith(b"POST /chat/completions HTTP/1.1\r\n")


def test_cookies_a_server_sets_are_kept_and_sent_back() -> None:
    """The SDK clients skip cookie parsing for replies without Set-Cookie, not for those with it."""
    reply = json.loads(json.dumps(chat_body("[[ ## answer ## ]]\nyes\n\n[[ ## completed ## ]]")))
    plain = [ok_json(reply)]
    sets = [ok_json(reply, b"Set-Cookie: session=abc123; Path=/\r\n")]
    with scripted([plain, sets, plain, sets, plain]) as server:
        lm = ob.LM("openai/m", base_url=server.url + "/v1", retry=NO_RETRY, cache=False)
        for text in ("one", "two", "three"):
            assert lm(messages=user(text))[0].startswith("[[ ## answer ## ]]")

        async def twice() -> None:
            for text in ("four", "five"):
                await lm.acall(messages=user(text))

        asyncio.run(twice())
        sent = [b"cookie: session=abc123" in r.lower() for r in server.requests]
        assert sent == [False, False, True, False, True]  # sync, then async: each client keeps what it was sent
        assert all(r.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") for r in server.requests)


# -- asyncio -----------------------------------------------------------------------------------


def test_async_calls_share_keep_alive_connections_and_translate_faults(counted: dict[str, int]) -> None:
    with OpenAITestServer(latency=0.02, faults=[500, "malformed", "disconnect"]) as server:
        lm = make_lm(server)

        async def run() -> list[Any]:
            # Three calls on three new connections meet the three faults, whatever their order.
            outcomes = await asyncio.gather(*(lm.acall(user(f"a{i}")) for i in range(3)), return_exceptions=True)
            many = await asyncio.gather(*(lm.acall(user(f"b{i}")) for i in range(24)))
            again = [await lm.acall(user(f"c{i}")) for i in range(5)]
            return [outcomes, many, again]

        started = time.perf_counter()
        outcomes, many, again = asyncio.run(run())
        assert time.perf_counter() - started < 2  # concurrent, not 32 x 20 ms in a row
        assert many == [[f"b{i}"] for i in range(24)] and again == [[f"c{i}"] for i in range(5)]
        assert sorted(type(o).__name__ for o in outcomes) == ["LMConnectionError", "LMResponseError", "LMResponseError"]
        assert server.stats()["open_connections"] <= 24
    assert counted["async"] == 32 and counted["sync"] == 0


def test_async_restart_timeout_and_streaming() -> None:
    first = OpenAITestServer().start()
    lm = make_lm(first, timeout=0.2)
    port = first.port

    async def before() -> list[str]:
        return await lm.acall(user("before"))

    async def after() -> tuple[list[str], BaseException | None]:
        answer = await lm.acall(user("after"))
        second.faults = ["hang"]
        second.reset_counts()
        try:
            await lm.acall(user("slow"))
        except ob.LMError as exc:
            return answer, exc
        return answer, None

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(before()) == ["before"]
        first.stop()
        with OpenAITestServer(port=port, hang_seconds=3) as second:
            answer, timeout = loop.run_until_complete(after())
        assert answer == ["after"]
        assert isinstance(timeout, ob.LMError) and "timed out" in str(timeout)
    finally:
        loop.close()

    async def stream(url: str) -> list[bytes]:
        async with httpx.AsyncClient(transport=AsyncKeepAliveTransport()) as client, client.stream("GET", url) as response:
            return [piece async for piece in response.aiter_bytes()]

    with scripted([chunked(b"x" * 10, b"y" * 5)]) as server:
        assert asyncio.run(stream(server.url + "/s")) == [b"x" * 10, b"y" * 5]


def test_transports_serve_https_through_httpx() -> None:
    # Anything but plain http (here: a redirect's target) is handed to httpx's own transport.
    calls: list[str] = []

    class Recording(httpx.BaseTransport):  # type: ignore[name-defined,misc]
        def handle_request(self, request: Any) -> Any:
            calls.append(str(request.url))
            return httpx.Response(200, content=b"tls")

    transport = KeepAliveTransport()
    transport._fallback = Recording()
    redirect = b"HTTP/1.1 302 Found\r\nLocation: https://example.invalid/x\r\nContent-Length: 0\r\n\r\n"
    with scripted([[redirect]]) as server, httpx.Client(transport=transport, follow_redirects=True) as client:
        assert client.get(server.url + "/").text == "tls"
    assert calls == ["https://example.invalid/x"]
