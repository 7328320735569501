"""The LM layer over real HTTP: the official openai SDK against ``OpenAITestServer`` on loopback.

Everything between ``Predict`` and the socket is real here (SDK, keep-alive connections,
timeouts, error translation, retries, the SQLite cache); only the model is scripted.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import oobleck as ob
from oobleck.lm import ResponseCache, RetryPolicy
from oobleck.testing.server import OpenAITestServer

pytestmark = pytest.mark.integration

KEY = "sk-test-KEY-7d41c09e"
FAST = RetryPolicy(retries=4, base_delay=0.001, max_delay=0.005)
SIGNATURE = "question -> answer: int, label: Literal['short', 'long'], ok: bool"


def make_lm(server: OpenAITestServer, **kwargs: Any) -> Any:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("timeout", 10.0)
    kwargs.setdefault("cache", False)  # a port can be reused by a later test's server; opt in per test
    return ob.LM("openai/test-model", base_url=server.base_url + "/v1", **kwargs)


def length_responder(messages: list[dict[str, Any]]) -> str:
    """``answer`` is the question's length; ``label`` says whether it is over 8 characters."""
    question = messages[-1]["content"].split("[[ ## question ## ]]\n", 1)[-1].split("\n\n", 1)[0]
    label = "long" if len(question) > 8 else "short"
    return f"[[ ## answer ## ]]\n{len(question)}\n\n[[ ## label ## ]]\n{label}\n\n[[ ## ok ## ]]\nTrue\n\n[[ ## completed ## ]]"


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    with OpenAITestServer(responder=length_responder) as s:
        yield s


# -- end to end ------------------------------------------------------------------------------


def test_predict_end_to_end_typed_usage_and_history(server: OpenAITestServer) -> None:
    lm = make_lm(server)
    predict = ob.Predict(SIGNATURE, lm=lm)
    with ob.track_usage() as run:
        first = predict(question="what is oobleck?")
        second = predict(question="hi")
    assert (first.answer, first.label, first.ok) == (16, "long", True)
    assert (second.answer, second.label) == (2, "short")
    assert server.requests == 2
    for usage in (lm.usage, run):
        assert usage.calls == 2 and usage.cache_hits == 0
        assert usage.prompt_tokens == server.prompt_tokens > 0
        assert usage.completion_tokens == server.completion_tokens > 0
    # the key reaches the server, but never the history or the LM's description
    assert server.recent[-1]["headers"]["authorization"] == f"Bearer {KEY}"
    history = lm.inspect_history(2)
    assert [h["outputs"] for h in history] == [[length_responder(h["messages"])] for h in history]
    assert KEY not in json.dumps(list(lm.history), default=str) + json.dumps(lm.describe(), default=str)


def test_default_responder_answers_any_signature() -> None:
    with OpenAITestServer() as server:
        lm = make_lm(server)
        chat = ob.Predict("question, context -> answer: int, label: Literal['x y', 'z'], ok: bool, tags: list[str], echo", lm=lm)
        assert dict(chat(question="hello", context="c")) == {"answer": 5, "label": "x y", "ok": True, "tags": ["hello"], "echo": "hello"}
        json_mode = ob.Predict("question -> answer: int, label: Literal['x y', 'z']", lm=lm, adapter="json")
        assert dict(json_mode(question="hello")) == {"answer": 5, "label": "x y"}
        assert lm(user("plain prompt")) == ["plain prompt"]  # not an oobleck prompt: echoed


def test_n_choices_and_exact_completion_tokens() -> None:
    lengths = itertools.cycle([1, 1, 5])  # 1 + 1 + 2 tokens: not divisible by n=3
    with OpenAITestServer(responder=lambda messages: "x" * next(lengths)) as server:
        lm = make_lm(server)
        assert lm(user("three please"), n=3) == ["x", "x", "xxxxx"]
        assert lm.usage.completion_tokens == server.completion_tokens == 4
        assert lm.usage.prompt_tokens == server.prompt_tokens


def test_models_endpoint_and_bad_requests(server: OpenAITestServer) -> None:
    import openai

    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list().data] == ["test-model"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="test-model", messages=[])
    with pytest.raises(openai.NotFoundError):
        client.get("/nowhere", cast_to=object)


# -- cache -----------------------------------------------------------------------------------


def test_disk_cache_hits_persists_and_never_stores_the_key(server: OpenAITestServer, tmp_path: Path) -> None:
    predict = ob.Predict(SIGNATURE)
    lm = make_lm(server, cache=ResponseCache(tmp_path))
    assert predict(question="cached?", lm=lm).answer == 7
    with ob.track_usage() as run:
        assert predict(question="cached?", lm=lm).answer == 7
    assert server.requests == 1
    assert (lm.usage.calls, lm.usage.cache_hits) == (1, 1)
    assert (run.calls, run.cache_hits) == (0, 1)
    assert lm.inspect_history()[0]["cached"] is True

    # a new LM with a fresh cache object on the same directory reads the file, whatever its key
    for api_key in (KEY, "sk-another-key-0000"):
        again = make_lm(server, api_key=api_key, cache=ResponseCache(tmp_path))
        assert predict(question="cached?", lm=again).answer == 7
        assert (again.usage.calls, again.usage.cache_hits) == (0, 1)
    assert server.requests == 1

    # cache=False bypasses it, per call and per LM
    assert predict(question="cached?", lm=lm, config={"cache": False}).answer == 7
    assert predict(question="cached?", lm=make_lm(server, cache=False)).answer == 7
    assert server.requests == 3

    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"[[ ## answer ## ]]\\n7" in stored  # the response is there (we read the right files) ...
    assert KEY.encode() not in stored  # ... and the key is not
    assert b"Bearer" not in stored


# -- retries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordingPolicy(RetryPolicy):
    """Tiny delays, and a record of each wait so a test can see the backoff happen."""

    waits: list[tuple[int, float]] = field(default_factory=list, compare=False)

    def delay(self, attempt: int, rng: Any) -> float:
        wait = super().delay(attempt, rng)
        self.waits.append((attempt, wait))
        return wait


@pytest.mark.parametrize("fault", [429, 500, 503, "malformed", "disconnect"])
def test_transient_faults_are_retried_with_backoff(fault: Any) -> None:
    policy = RecordingPolicy(retries=3, base_delay=0.002, max_delay=0.003)
    with OpenAITestServer(responder=length_responder, faults=[fault, fault]) as server:
        lm = make_lm(server, retry=policy)
        assert ob.Predict(SIGNATURE, lm=lm)(question="retry me").answer == 8
        assert server.requests == 3
        assert server.fault_counts == {str(fault): 2}
        assert lm.usage.calls == 1
        assert (lm.usage.prompt_tokens, lm.usage.completion_tokens) == (server.prompt_tokens, server.completion_tokens)
    assert [attempt for attempt, _ in policy.waits] == [0, 1]
    assert all(0 <= wait <= min(0.003, 0.002 * 2**attempt) for attempt, wait in policy.waits)


@pytest.mark.parametrize("fault", [429, 500, "malformed"])
def test_exhausted_retries_raise_a_clear_error(fault: Any) -> None:
    with OpenAITestServer(faults=[fault] * 10) as server:
        lm = make_lm(server, retry=RetryPolicy(retries=2, base_delay=0.001, max_delay=0.002))
        with pytest.raises(ob.LMResponseError) as caught:
            lm(user("never works"))
        assert server.requests == 3
    error = caught.value
    assert error.retryable
    assert error.status == (fault if isinstance(fault, int) else None)
    assert "after 3 attempts" in str(error) and server.base_url in str(error)
    assert (str(fault) if isinstance(fault, int) else "malformed") in str(error)
    assert error.__cause__ is not None and error.__cause__ is not error  # the SDK's exception is kept
    assert lm.usage.calls == 0


def test_client_errors_are_not_retried() -> None:
    with OpenAITestServer(faults=[400, 400]) as server:
        lm = make_lm(server)
        with pytest.raises(ob.LMResponseError) as caught:
            lm(user("bad request"))
        assert server.requests == 1
    assert caught.value.status == 400 and not caught.value.retryable
    assert "HTTP 400" in str(caught.value) and "attempts" not in str(caught.value)


def test_unreachable_server_raises_connection_error_naming_the_url() -> None:
    port = free_port()
    lm = ob.LM("openai/test-model", base_url=f"http://127.0.0.1:{port}/v1", retry=RetryPolicy(1, 0.001, 0.002), cache=False)
    with pytest.raises(ob.LMConnectionError) as caught:
        lm(user("anyone there?"))
    assert f"http://127.0.0.1:{port}/v1" in str(caught.value)
    assert "after 2 attempts" in str(caught.value)


def test_timeouts_are_retried_then_reported() -> None:
    with OpenAITestServer(responder=length_responder, faults=["hang"], hang_seconds=5) as server:
        lm = make_lm(server, timeout=0.3)
        started = time.perf_counter()
        assert ob.Predict(SIGNATURE, lm=lm)(question="slow").answer == 4
        assert server.requests == 2
        assert time.perf_counter() - started < 3  # one timeout, not the whole hang
        assert lm.usage.completion_tokens == server.completion_tokens  # the abandoned answer is not counted

        server.reset_counts()
        server.faults = ["hang"] * 2
        lm = make_lm(server, timeout=0.2, retry=RetryPolicy(1, 0.001, 0.002))
        with pytest.raises(ob.LMError, match=r"timed out.*after 2 attempts"):
            lm(user("slower"))
        assert server.requests == 2
    # stopping the server did not wait for the hung answers


# -- concurrency -----------------------------------------------------------------------------


def test_acall_runs_concurrently_under_asyncio() -> None:
    import openai  # noqa: F401 - imported before the clock starts
    with OpenAITestServer(responder=length_responder, latency=0.1) as server:
        lm = make_lm(server)
        predict = ob.Predict(SIGNATURE, lm=lm)
        questions = [f"q{'x' * i}" for i in range(16)]

        async def ask_all() -> list[Any]:
            return await asyncio.gather(*(predict.aforward(question=q) for q in questions))

        started = time.perf_counter()
        predictions = asyncio.run(ask_all())
        elapsed = time.perf_counter() - started
        assert [p.answer for p in predictions] == [len(q) for q in questions]
        assert elapsed < 1.2, f"16 calls of 0.1 s took {elapsed:.2f} s: not concurrent"  # serial would be 1.6 s
        # a second event loop gets a working client (the first loop's pooled connections are dead)
        assert asyncio.run(asyncio.wait_for(predict.aforward(question="again"), 5)).answer == 5
        assert server.requests == 17
        assert lm.usage.calls == 17 and lm.usage.completion_tokens == server.completion_tokens


def test_acall_retries_faults() -> None:
    with OpenAITestServer(responder=length_responder, faults=[429, "malformed", 500]) as server:
        lm = make_lm(server)

        async def ask() -> Any:
            return await ob.Predict(SIGNATURE, lm=lm).aforward(question="async")

        assert asyncio.run(ask()).answer == 5
        assert server.requests == 4


def test_threads_share_one_lm_safely() -> None:
    with OpenAITestServer(responder=length_responder, latency=0.02) as server:
        lm = make_lm(server)
        predict = ob.Predict(SIGNATURE, lm=lm)
        questions = ["t" * (i + 1) for i in range(32)]
        answers: dict[int, Any] = {}
        errors: list[BaseException] = []
        barrier = threading.Barrier(len(questions))

        def work(i: int) -> None:
            try:
                barrier.wait()
                answers[i] = predict(question=questions[i]).answer
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        with ob.track_usage() as run:
            threads = [threading.Thread(target=contextvars.copy_context().run, args=(work, i)) for i in range(len(questions))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        assert not errors, errors[:3]
        assert answers == {i: len(q) for i, q in enumerate(questions)}
        assert server.requests == 32
        for usage in (lm.usage, run):
            assert usage.calls == 32
            assert usage.prompt_tokens == server.prompt_tokens
            assert usage.completion_tokens == server.completion_tokens


def test_evaluate_scores_the_same_with_seeded_faults() -> None:
    def metric(example: ob.Example, prediction: Any, trace: Any = None) -> bool:
        return prediction.answer == example.answer

    # every fourth label is off by one, so a perfect run scores 0.75, not a trivial 1.0
    questions = [f"item {'#' * (i % 13)} {i}" for i in range(40)]
    devset = [ob.Example(question=q, answer=len(q) + (i % 4 == 0)).with_inputs("question") for i, q in enumerate(questions)]
    patient = RetryPolicy(retries=8, base_delay=0.001, max_delay=0.004)
    scores, faults = [], []
    for rate in (0.0, 0.2):
        with OpenAITestServer(responder=length_responder, latency=0.005, fault_rate=rate, seed=7) as server:
            lm = make_lm(server, retry=patient)
            result = ob.Evaluate(devset=devset, metric=metric, num_threads=8, display_progress=False)(ob.Predict(SIGNATURE, lm=lm))
            assert result.errors == 0, [r.error for r in result.results if r.error][:3]
            assert result.usage.calls == 40
            assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (server.prompt_tokens, server.completion_tokens)
            scores.append(result.score)
            faults.append(sum(server.fault_counts.values()))
            assert server.requests == 40 + faults[-1]
    assert scores == [0.75, 0.75]
    assert faults[0] == 0 and faults[1] >= 4  # about 20% of ~50 requests


# -- the server itself -----------------------------------------------------------------------


def test_fault_schedule_is_seeded_and_independent_of_arrival_order() -> None:
    bodies = [f"request {i}" for i in range(60)]

    def run(order: list[str]) -> dict[str, list[Any]]:
        with OpenAITestServer(fault_rate=0.3, fault_kinds=(429, 500), seed=3, keep_recent=200) as server:
            lm = make_lm(server, retry=RetryPolicy(0, 0.0, 0.0))
            for text in order:
                try:
                    lm(user(text))
                except ob.LMError:
                    pass
            seen: dict[str, list[Any]] = {}
            for record in server.recent:
                seen.setdefault(record["body"]["messages"][0]["content"], []).append(record["fault"])
            return seen

    forward = run(bodies + bodies)
    backward = run(list(reversed(bodies)) * 2)
    assert forward == backward
    assert 0.15 < sum(f is not None for fs in forward.values() for f in fs) / 120 < 0.45


def test_server_stops_cleanly_with_requests_in_flight() -> None:
    server = OpenAITestServer(latency=5).start()
    lm = make_lm(server, retry=RetryPolicy(0, 0.0, 0.0), timeout=10)
    failure: list[BaseException] = []

    def wait_for_answer() -> None:
        try:
            lm(user("waiting"))
        except BaseException as exc:  # noqa: BLE001 - inspected by the main thread
            failure.append(exc)

    thread = threading.Thread(target=wait_for_answer)
    thread.start()
    deadline = time.monotonic() + 5
    while server.requests == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.perf_counter()
    server.stop()
    thread.join(5)
    assert time.perf_counter() - started < 2
    assert failure and isinstance(failure[0], ob.LMError)
    server.stop()  # idempotent


def test_cli_serves_in_another_process() -> None:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "oobleck.testing.server", "--port", "0", "--latency", "0.01"],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        lm = ob.LM("openai/test-model", base_url=url + "/v1", retry=FAST, cache=False)
        assert ob.Predict("question -> answer: int", lm=lm)(question="four").answer == 4
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
