"""Serving compiled programs: typed routes, errors, metrics, concurrency and the OpenAI endpoint.

Servers here are real: uvicorn on a loopback port, in a thread (``BackgroundServer``) or as an
`oobleck serve` child process, driven with httpx and the official openai client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Literal

import httpx
import pytest
from serve_support import EchoHF
from support import Hop

import oobleck as ob
from oobleck.errors import LMConnectionError
from oobleck.serve import BackgroundServer, ServedProgram, create_app
from oobleck.testing import FieldScriptedLM, ScriptedLM
from oobleck.testing.server import OpenAITestServer


class Classify(ob.Signature):
    """Label the ticket and list its keywords."""

    ticket: str = ob.InputField(desc="the customer's message")
    priority: int = ob.InputField()
    label: Literal["bug", "question"] = ob.OutputField()
    keywords: list[str] = ob.OutputField()
    score: float = ob.OutputField()


def classify_program() -> ob.Predict:
    def respond(inputs: dict[str, str]) -> dict[str, object]:
        words = inputs["ticket"].split()
        return {"label": "bug" if "crash" in words else "question", "keywords": words[:2], "score": float(inputs["priority"])}

    return ob.Predict(Classify, lm=FieldScriptedLM(respond))


@pytest.fixture
def classify_server():
    with BackgroundServer(create_app({"classify": classify_program()})) as server:
        yield server


def test_program_route_returns_typed_outputs_and_request_id(classify_server: BackgroundServer) -> None:
    response = httpx.post(classify_server.url + "/programs/classify", json={"ticket": "app crash on start", "priority": 2})
    assert response.status_code == 200
    assert response.json() == {"label": "bug", "keywords": ["app", "crash"], "score": 2.0}
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    given = httpx.post(classify_server.url + "/programs/classify", json={"ticket": "how?", "priority": 1}, headers={"X-Request-ID": "abc-1"})
    assert given.headers["x-request-id"] == "abc-1"
    assert given.json()["label"] == "question"


def test_openapi_spec_shows_the_signature_fields(classify_server: BackgroundServer) -> None:
    spec = httpx.get(classify_server.url + "/openapi.json").json()
    operation = spec["paths"]["/programs/classify"]["post"]
    request_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    response_ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    schemas = spec["components"]["schemas"]
    request = schemas[request_ref.rsplit("/", 1)[1]]
    response = schemas[response_ref.rsplit("/", 1)[1]]
    assert request["properties"]["ticket"] == {"type": "string", "title": "ticket", "description": "the customer's message"}
    assert request["properties"]["priority"]["type"] == "integer"
    assert sorted(request["required"]) == ["priority", "ticket"]
    assert request["additionalProperties"] is False
    assert response["properties"]["label"]["enum"] == ["bug", "question"]
    assert response["properties"]["keywords"] == {"type": "array", "items": {"type": "string"}, "title": "keywords"}
    assert response["properties"]["score"]["type"] == "number"
    assert operation["description"] == "Label the ticket and list its keywords."
    for status in ("422", "502", "500"):
        assert "ErrorBody" in json.dumps(operation["responses"][status])


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"ticket": "x"}, "priority", "Field required"),
        ({"ticket": "x", "priority": "high"}, "priority", "valid integer"),
        ({"ticket": 5, "priority": 1}, "ticket", "valid string"),
        ({"ticket": "x", "priority": 1, "urgent": True}, "urgent", "Extra inputs"),
    ],
)
def test_bad_requests_get_422_naming_the_field(classify_server: BackgroundServer, body: dict, field: str, message: str) -> None:
    response = httpx.post(classify_server.url + "/programs/classify", json=body)
    assert response.status_code == 422
    payload = response.json()
    assert payload["error"]["type"] == "invalid_request"
    assert f"field {field!r}" in payload["error"]["message"] and message in payload["error"]["message"]
    assert ["body", field] in [entry["loc"] for entry in payload["detail"]]
    assert payload["request_id"] == response.headers["x-request-id"]


def test_body_that_is_not_json_or_not_an_object_is_422(classify_server: BackgroundServer) -> None:
    url = classify_server.url + "/programs/classify"
    broken = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422 and "not valid JSON" in broken.json()["error"]["message"]
    listed = httpx.post(url, json=["ticket"])
    assert listed.status_code == 422 and listed.json()["error"]["message"].startswith("request body:")


def test_freeze_heap_freezes_start_up_objects_and_is_off_by_default() -> None:
    """Full collections skip what start-up made in a serving process; an app in a test or notebook leaves gc alone."""
    import gc

    program = ob.Predict("question -> answer", lm=FieldScriptedLM(lambda i: {"answer": "a"}))
    assert gc.get_freeze_count() == 0
    with BackgroundServer(create_app({"qa": program})) as server:
        assert httpx.post(server.url + "/programs/qa", json={"question": "q"}).status_code == 200
        assert gc.get_freeze_count() == 0
    try:
        with BackgroundServer(create_app({"qa": program}, freeze_heap=True)) as server:
            assert httpx.post(server.url + "/programs/qa", json={"question": "q"}).status_code == 200
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_oversized_body_is_413_without_being_read() -> None:
    program = ob.Predict("question -> answer", lm=FieldScriptedLM(lambda i: {"answer": "a"}))
    with BackgroundServer(create_app({"qa": program}, max_body_bytes=1000)) as server:
        small = httpx.post(server.url + "/programs/qa", json={"question": "x" * 900})
        large = httpx.post(server.url + "/programs/qa", json={"question": "x" * 1001})

        def chunks():
            yield b'{"question": "'
            for _ in range(20):
                yield b"x" * 100
            yield b'"}'

        streamed = httpx.post(server.url + "/programs/qa", content=chunks())  # chunked: no content-length to check up front
    assert small.status_code == 200
    assert large.status_code == 413 and "larger than 1000 bytes" in large.json()["error"]["message"]
    assert streamed.status_code == 413


def test_lm_failure_is_502_with_request_id_and_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    def down(messages: list, settings: dict) -> str:
        raise LMConnectionError("cannot reach the LM server at http://10.0.0.9:1 for openai/x")

    unparseable = ob.Predict("question -> answer", lm=ScriptedLM(["no markers here"], cycle=True))
    failing = ob.Predict("question -> answer", lm=ScriptedLM(down, num_retries=0))
    with BackgroundServer(create_app({"down": failing, "garbled": unparseable})) as server, caplog.at_level(logging.WARNING, "oobleck.serve"):
        for name, told, logged in (("down", "could not be reached", "10.0.0.9"), ("garbled", "could not be parsed", "ParseError")):
            response = httpx.post(f"{server.url}/programs/{name}", json={"question": "hi"})
            assert response.status_code == 502
            payload = response.json()
            assert payload["error"]["type"] == "lm_error" and told in payload["error"]["message"]
            assert payload["request_id"] == response.headers["x-request-id"]
            assert "Traceback" not in response.text and "10.0.0.9" not in response.text  # the LM's address stays in the log
            line = next(r.getMessage() for r in caplog.records if payload["request_id"] in r.getMessage())
            assert logged in line  # the id finds the failure, with its details, in the log
        metrics = httpx.get(server.url + "/metrics").text
    assert 'oobleck_errors_total{endpoint="/programs/down",type="lm_error"} 1' in metrics
    assert 'oobleck_requests_total{method="POST",endpoint="/programs/garbled",status="502"} 1' in metrics


class Flaky(ob.Module):
    """A user program with a bug for one input."""

    def __init__(self) -> None:
        self.step = ob.Predict("question -> answer", lm=FieldScriptedLM(lambda i: {"answer": i["question"]}))

    def forward(self, question: str, times: int = 1) -> ob.Prediction:
        if question == "bug":
            raise KeyError("secret internal detail")
        return ob.Prediction(answer=self.step(question=question).answer * times, times=times)


def test_unexpected_exception_is_500_json_logged_with_request_id(caplog: pytest.LogCaptureFixture) -> None:
    with BackgroundServer(create_app({"flaky": Flaky()})) as server, caplog.at_level(logging.ERROR, "oobleck.serve"):
        ok = httpx.post(server.url + "/programs/flaky", json={"question": "ab", "times": 2})
        assert ok.status_code == 200 and ok.json() == {"answer": "abab", "times": 2}
        response = httpx.post(server.url + "/programs/flaky", json={"question": "bug", "times": 1})
    assert response.status_code == 500
    payload = response.json()
    assert payload["error"]["type"] == "internal_error"
    assert "secret internal detail" not in response.text and "Traceback" not in response.text
    assert payload["request_id"] in caplog.text and "KeyError" in caplog.text


async def _asgi_answers(app: object, root_path: str) -> list[tuple[int, dict, str, str]]:
    """Status, body, content type and request id of a good, a bad and a crashing request, under ``root_path``."""
    cases = [{"question": "ab", "times": 2}, {"question": "ab", "times": "many"}, {"question": "bug", "times": 1}]
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answers = []
        for number, body in enumerate(cases):
            response = await client.post(f"{root_path}/programs/flaky", json=body, headers={"X-Request-ID": f"r{number}"})
            answers.append((response.status_code, response.json(), response.headers["content-type"], response.headers["x-request-id"]))
        return answers


def test_program_requests_answer_the_same_with_and_without_routing(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # A plain path goes straight to the program's handler; under a root path the request is
    # routed by FastAPI. The answers (200, 422 naming the field, 500) and the metrics must agree.
    from oobleck.serve.app import _ProgramRoute

    routed_calls = []
    route_handle = _ProgramRoute.handle

    async def counted(self: _ProgramRoute, scope: dict, receive: object, send: object) -> None:
        routed_calls.append(scope["path"])
        await route_handle(self, scope, receive, send)

    monkeypatch.setattr(_ProgramRoute, "handle", counted)
    app = create_app({"flaky": Flaky()}, openai_compat=False)
    with caplog.at_level(logging.CRITICAL):
        direct = asyncio.run(_asgi_answers(app, ""))
        assert routed_calls == []
        routed = asyncio.run(_asgi_answers(app, "/api"))
    assert routed_calls == ["/api/programs/flaky"] * 3
    assert direct == routed
    assert [status for status, *_ in direct] == [200, 422, 500]
    assert direct[0][1] == {"answer": "abab", "times": 2} and "times" in direct[1][1]["error"]["message"]
    assert [rid for *_, rid in direct] == ["r0", "r1", "r2"] and all(body.get("request_id", rid) == rid for _, body, _, rid in direct)
    metrics = app.state.metrics.render()
    for status in (200, 422, 500):
        assert f'oobleck_requests_total{{method="POST",endpoint="/programs/flaky",status="{status}"}} 2' in metrics


def test_writes_of_one_event_loop_step_leave_as_one_send_in_order() -> None:
    from oobleck.serve.protocol import _StepWrites

    class Recording:
        def __init__(self) -> None:
            self.sent: list[bytes] = []
            self.closed = False

        def write(self, data: bytes) -> None:
            self.sent.append(data)

        def close(self) -> None:
            self.closed = True

        def get_extra_info(self, name: str, default: object = None) -> object:
            return ("127.0.0.1", 9) if name == "peername" else default

    async def scenario() -> Recording:
        wire = Recording()
        transport = _StepWrites(wire, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(b"ok")
        assert wire.sent == []  # held until this step of the loop ends
        await asyncio.sleep(0)
        assert wire.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
        transport.write(b"chunk 1")  # a streamed body: each step's chunk leaves when its step ends
        await asyncio.sleep(0)
        transport.write(b"chunk 2")
        transport.close()  # sends what is held before closing
        assert wire.closed and transport.get_extra_info("peername") == ("127.0.0.1", 9)
        return wire

    assert asyncio.run(scenario()).sent[1:] == [b"chunk 1", b"chunk 2"]


def test_served_connections_use_the_one_write_transport(classify_server: BackgroundServer) -> None:
    from oobleck.serve.protocol import _StepWrites

    with httpx.Client() as client:  # keep-alive: the connection is still open when inspected
        assert client.post(classify_server.url + "/programs/classify", json={"ticket": "x", "priority": 1}).status_code == 200
        connections = list(classify_server._server.server_state.connections)
        assert connections and all(isinstance(c.transport, _StepWrites) for c in connections)


def test_user_module_interface_comes_from_forward() -> None:
    served = ServedProgram("flaky", Flaky())
    assert [(f.name, f.annotation) for f in served.inputs] == [("question", str), ("times", int)]
    assert served.outputs is None
    with BackgroundServer(create_app([served])) as server:
        spec = httpx.get(server.url + "/openapi.json").json()
        missing = httpx.post(server.url + "/programs/flaky", json={"times": 1})
    request = spec["components"]["schemas"]["FlakyRequest"]
    assert request["properties"]["times"]["type"] == "integer"
    assert spec["components"]["schemas"]["FlakyResponse"]["additionalProperties"] is True
    assert missing.status_code == 422 and "field 'question'" in missing.json()["error"]["message"]


def test_listing_health_and_names() -> None:
    hop = Hop()
    hop.set_lm(FieldScriptedLM(lambda i: {"query": "q", "answer": "a"}))
    with BackgroundServer(create_app({"hop": hop, "classify": classify_program()})) as server:
        health = httpx.get(server.url + "/healthz").json()
        listing = httpx.get(server.url + "/programs").json()["programs"]
        one = httpx.get(server.url + "/programs/hop").json()
        unknown = httpx.post(server.url + "/programs/nope", json={})
    assert health == {"status": "ok", "programs": 2}
    by_name = {p["name"]: p for p in listing}
    assert by_name["classify"]["inputs"] == [{"name": "ticket", "type": "str", "desc": "the customer's message"},
                                             {"name": "priority", "type": "int", "desc": ""}]  # fmt: skip
    assert by_name["classify"]["outputs"][0] == {"name": "label", "type": "Literal['bug', 'question']", "desc": ""}
    assert one["predictors"] == ["generate_query", "answer"] and one["outputs"] is None
    assert unknown.status_code == 404 and unknown.json()["request_id"]
    with pytest.raises(ob.OobleckError, match="named 'a'"):
        create_app([ServedProgram("a", classify_program()), ServedProgram("a", classify_program())])
    with pytest.raises(ob.OobleckError, match="program name"):
        ServedProgram("bad name/", classify_program())


def test_64_concurrent_requests_over_http_each_matched_to_its_request() -> None:
    """The program's LM is a real HTTP server with 50 ms latency; 64 requests overlap."""
    with OpenAITestServer(latency=0.05) as lm_server:
        lm = ob.LM("openai/test-model", base_url=lm_server.base_url + "/v1", cache=False)
        program = ob.Predict("question -> answer", lm=lm)
        with BackgroundServer(create_app({"echo": program})) as server:

            async def load() -> tuple[list[httpx.Response], float]:
                limits = httpx.Limits(max_connections=64)
                async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:
                    await asyncio.gather(*(client.post("/programs/echo", json={"question": "warm-up"}) for _ in range(8)))
                    loop = asyncio.get_running_loop()
                    started = loop.time()
                    responses = await asyncio.gather(*(client.post("/programs/echo", json={"question": f"q-{i}"}) for i in range(64)))
                    return list(responses), loop.time() - started

            responses, elapsed = asyncio.run(load())
            metrics = httpx.get(server.url + "/metrics").text
    assert [r.status_code for r in responses] == [200] * 64
    assert [r.json()["answer"] for r in responses] == [f"q-{i}" for i in range(64)]  # the test server echoes the question
    assert len({r.headers["x-request-id"] for r in responses}) == 64
    assert lm_server.requests == 8 + 64
    assert elapsed < 0.6 * 64 * 0.05, f"64 requests took {elapsed:.2f}s: they did not overlap (one at a time takes 3.2 s)"
    assert 'oobleck_requests_total{method="POST",endpoint="/programs/echo",status="200"} 72' in metrics
    assert 'oobleck_lm_calls_total{program="echo",via="program"} 72' in metrics
    assert 'oobleck_request_duration_seconds_count{endpoint="/programs/echo"} 72' in metrics


def test_unrouted_paths_share_one_metrics_label(classify_server: BackgroundServer) -> None:
    for i in range(3):  # trailing slashes get redirects, other paths 404s: neither may mint a label per path
        httpx.get(classify_server.url + f"/programs/made-up-{i}/")
        httpx.get(classify_server.url + f"/nowhere-{i}")
    metrics = httpx.get(classify_server.url + "/metrics").text
    assert "made-up" not in metrics and "nowhere" not in metrics
    assert 'endpoint="unmatched"' in metrics


def test_metrics_histogram_is_cumulative_and_well_formed(classify_server: BackgroundServer) -> None:
    for i in range(3):
        httpx.post(classify_server.url + "/programs/classify", json={"ticket": f"t{i}", "priority": i})
    response = httpx.get(classify_server.url + "/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = response.text.splitlines()
    buckets = [int(line.rsplit(" ", 1)[1]) for line in lines if line.startswith('oobleck_request_duration_seconds_bucket{endpoint="/programs/classify"')]
    assert buckets == sorted(buckets) and buckets[-1] == 3
    assert 'oobleck_lm_prompt_tokens_total{program="classify",via="program"}' in response.text
    for line in lines:
        assert line.startswith("#") or re.fullmatch(r'[a-z_]+(\{[^}]*\})? [0-9.e+-]+', line), line


# -- the OpenAI-compatible endpoint ------------------------------------------------------------


@pytest.fixture
def openai_server():
    single = ob.Predict("question -> answer", lm=EchoHF())
    hop = Hop()
    hop.generate_query.lm = EchoHF()
    hop.answer.lm = FieldScriptedLM(lambda i: {"answer": "a"})  # not an in-process model: not exposed
    with BackgroundServer(create_app({"single": single, "hop": hop})) as server:
        yield server, single.lm, hop.generate_query.lm


def test_openai_models_lists_in_process_models_by_program_and_predictor(openai_server) -> None:
    import openai

    server, _, _ = openai_server
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    assert sorted(m.id for m in client.models.list()) == ["hop/generate_query", "single"]
    assert client.models.retrieve("hop/generate_query").id == "hop/generate_query"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="hop/answer", messages=[{"role": "user", "content": "x"}])


def test_openai_chat_maps_parameters_and_reports_usage(openai_server) -> None:
    import openai

    server, single_lm, hop_lm = openai_server
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    result = client.chat.completions.create(
        model="single", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}],
        temperature=0.7, top_p=0.9, n=2, max_tokens=8, stop=["o"], seed=3,
    )  # fmt: skip
    assert [c.message.content for c in result.choices] == ["dlr", "dlr"]  # reversed, cut at the stop, within max_tokens
    assert [c.finish_reason for c in result.choices] == ["stop", "stop"]
    assert single_lm.seen[-1] == {"temperature": 0.7, "top_p": 0.9, "n": 2, "max_tokens": 8, "stop": ["o"], "seed": 3}
    assert result.usage.prompt_tokens == len("be brief") + len("hello world") and result.usage.completion_tokens == 6
    assert result.model == "single"
    short = client.chat.completions.create(model="hop/generate_query", messages=[{"role": "user", "content": "abcdef"}], max_tokens=3)
    assert short.choices[0].message.content == "fed" and short.choices[0].finish_reason == "length"
    assert hop_lm.seen[-1]["max_tokens"] == 3 and hop_lm.seen[-1]["temperature"] == 0.0  # the model's own default
    stream = client.chat.completions.create(model="single", messages=[{"role": "user", "content": "stream me"}], stream=True,
                                            stream_options={"include_usage": True})  # fmt: skip
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "em maerts"
    assert chunks[-1].usage.total_tokens == len("stream me") * 2
    metrics = httpx.get(server.url + "/metrics").text
    assert 'oobleck_lm_calls_total{program="single",via="openai"} 2' in metrics


def test_openai_errors_are_openai_shaped(openai_server) -> None:
    import openai

    server, _, _ = openai_server
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="single", messages=[{"role": "user", "content": "x"}], temperature=5)
    assert bad.value.body["param"] == "temperature" and bad.value.status_code == 400
    with pytest.raises(openai.BadRequestError) as long:
        client.chat.completions.create(model="single", messages=[{"role": "user", "content": "x" * 500}])
    assert long.value.body["code"] == "context_length_exceeded"
    empty = httpx.post(server.url + "/v1/chat/completions", json={"model": "single", "messages": []})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "messages"


def test_dspy_calls_a_served_model_through_its_openai_provider(openai_server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: no model-metadata download
    dspy = pytest.importorskip("dspy")
    server, single_lm, _ = openai_server
    lm = dspy.LM("openai/single", api_base=server.url + "/v1", api_key="unused", cache=False, max_tokens=50)
    assert lm("hello there") == ["ereht olleh"]
    assert single_lm.seen[-1]["max_tokens"] == 50
    with pytest.raises(Exception, match="reads at most 200"):  # our context_length_exceeded reaches DSPy's own error
        lm("x" * 300)


def test_a_program_whose_retrieve_has_no_retriever_is_refused_at_start() -> None:
    class Lookup(ob.Module):
        def __init__(self) -> None:
            self.search = ob.Retrieve(k=2)
            self.answer = ob.Predict("context: list[str], question -> answer", lm=ScriptedLM(["answer: x"]))

        def forward(self, question: str) -> ob.Prediction:
            return self.answer(context=list(self.search(question).passages), question=question)

    with pytest.raises(ob.ConfigurationError, match="Retrieve 'search' cannot run: no retriever configured"):
        ServedProgram("lookup", Lookup())
