"""Evaluate's async path: the same results, order, errors and usage as the thread pool.

The async path runs examples with ``await program.acall(...)`` on one event loop (``mode="async"``;
``mode="auto"`` picks it for programs that exist only as async code, and for programs async all
the way down when ``num_threads`` is 32 or more). These tests hold it
to the thread path's contract, and check the fallbacks (LMs that block in threads, nested calls).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from support import doubling_dataset as dataset
from support import doubling_respond as respond

import oobleck as ob
from oobleck.evaluate import Evaluate, TooManyErrors
from oobleck.evaluate.metrics import exact_match
from oobleck.lm.base import Completion
from oobleck.testing import FieldScriptedLM

# question -> answer: right on even numbers, wrong on odd ones, an LM error on "crash".


class AsyncScriptedLM(FieldScriptedLM):
    """``FieldScriptedLM`` with a real ``agenerate``: it awaits a delay instead of blocking a thread.

    ``delay(inputs)`` gives each call's latency, so calls can finish out of order; the LM records
    how many calls were in flight at most and on which threads ``agenerate`` ran.
    """

    def __init__(self, delay: Any = 0.0, **kwargs: Any):
        super().__init__(respond, **kwargs)
        self.delay = delay if callable(delay) else (lambda inputs: delay)
        self.in_flight = 0
        self.max_in_flight = 0
        self.threads: set[str] = set()

    async def agenerate(self, messages: list[dict[str, str]], **settings: Any) -> list[Completion]:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.threads.add(threading.current_thread().name)
        try:
            question = messages[-1]["content"].split("[[ ## question ## ]]\n", 1)[-1].split("\n", 1)[0]
            await asyncio.sleep(self.delay({"question": question}))
            return self.generate(messages, **settings)
        finally:
            self.in_flight -= 1


class BatchingLM(FieldScriptedLM):
    """A blocking LM in the manner of the HF backend: calls that arrive together are served together.

    Each ``generate`` waits at a barrier for ``batch`` calls in all (``wait`` seconds at most, after
    which the call fails); ``batches`` counts the full batches served.
    """

    def __init__(self, batch: int, wait: float = 2.0):
        super().__init__(respond)
        self.batches = 0
        self._barrier = threading.Barrier(batch, action=self._served, timeout=wait)

    def _served(self) -> None:
        self.batches += 1

    def generate(self, messages: list[dict[str, str]], **settings: Any) -> list[Completion]:
        self._barrier.wait()
        return super().generate(messages, **settings)


def evaluate(devset: list[ob.Example], **kwargs: Any) -> Evaluate:
    """An Evaluate on the async path unless told otherwise."""
    kwargs.setdefault("num_threads", 4)
    kwargs.setdefault("mode", "async")
    return Evaluate(devset=devset, metric=kwargs.pop("metric", exact_match), display_progress=kwargs.pop("display_progress", False), **kwargs)


def outcome(result: ob.EvaluationResult) -> list[tuple[Any, ...]]:
    return [(r.example, dict(r.prediction) if r.prediction is not None else None, r.score, r.error) for r in result.results]


# -- mode selection --------------------------------------------------------------------------


def test_auto_picks_async_for_async_only_code_and_for_async_all_the_way_down_at_32_in_flight() -> None:
    devset = dataset([0, 2])

    class AsyncOnly(ob.Module):
        def __init__(self) -> None:
            self.step = ob.Predict("question -> answer", lm=AsyncScriptedLM())

        async def aforward(self, question: str) -> Any:
            return await self.step.acall(question=question)

    class Both(AsyncOnly):
        def forward(self, question: str) -> Any:
            return self.step(question=question)

    async def doubled(question: str) -> ob.Prediction:
        return ob.Prediction(answer=str(int(question.split()[-1]) * 2))

    auto = {"mode": "auto"}
    assert evaluate(devset, **auto)(AsyncOnly()).mode == "async"
    assert evaluate(devset, **auto)(doubled).mode == "async"
    assert evaluate(devset, **auto)(Both()).mode == "threads"
    assert evaluate(devset, **auto)(ob.Predict("question -> answer", lm=AsyncScriptedLM())).mode == "threads"
    assert evaluate(devset, **auto)(ob.Predict("question -> answer", lm=FieldScriptedLM(respond))).mode == "threads"
    assert Evaluate(devset=devset, metric=exact_match).mode == "auto"  # the default
    # 32 or more in flight: a module whose own aforward and LMs are async runs on the event loop
    many = dataset(list(range(0, 80, 2)))
    wide = {"mode": "auto", "num_threads": 32}
    assert evaluate(many, **wide)(ob.Predict("question -> answer", lm=AsyncScriptedLM())).mode == "async"
    assert evaluate(many, **wide)(Both()).mode == "threads"  # forward defined below the aforward it inherits

    class Twins(AsyncOnly):
        def forward(self, question: str) -> Any:
            return self.step(question=question)

        async def aforward(self, question: str) -> Any:
            return await self.step.acall(question=question)

    assert evaluate(many, **wide)(Twins()).mode == "async"
    assert evaluate(many, **wide)(ob.Predict("question -> answer", lm=FieldScriptedLM(respond))).mode == "threads"  # no real async
    assert evaluate(many, mode="auto", num_threads=8)(ob.Predict("question -> answer", lm=AsyncScriptedLM())).mode == "threads"
    assert evaluate(devset, **wide)(ob.Predict("question -> answer", lm=AsyncScriptedLM())).mode == "async"  # the setting decides

    class Shouting(ob.Predict):  # overrides forward only: its inherited aforward would skip that
        def forward(self, **kwargs: Any) -> ob.Prediction:
            return ob.Prediction(answer=super().forward(**kwargs).answer.upper())

    assert evaluate(many, **wide)(Shouting("question -> answer", lm=AsyncScriptedLM())).mode == "threads"

    class Wrapped(ob.Module):  # an async module around such a predictor
        def __init__(self) -> None:
            self.step = Shouting("question -> answer", lm=AsyncScriptedLM())

        def forward(self, question: str) -> Any:
            return self.step(question=question)

        async def aforward(self, question: str) -> Any:
            return await self.step.acall(question=question)

    assert evaluate(many, **wide)(Wrapped()).mode == "threads"

    class GenerateOnly(AsyncScriptedLM):  # overrides generate only: the inherited agenerate would skip that
        def generate(self, messages: list[dict[str, str]], **settings: Any) -> list[Completion]:
            return super().generate(messages, **settings)

    assert not GenerateOnly().native_async and AsyncScriptedLM().native_async
    assert evaluate(many, **wide)(ob.Predict("question -> answer", lm=GenerateOnly())).mode == "threads"
    with ob.context(lm=AsyncScriptedLM()):
        assert evaluate(many, **wide)(ob.Predict("question -> answer")).mode == "async"  # the configured LM counts
    assert evaluate(many, **wide)(ob.Predict("question -> answer")).mode == "threads"  # none configured: each example fails as before
    # forced either way, at construction or per call
    assert evaluate(devset, mode="threads")(ob.Predict("question -> answer", lm=AsyncScriptedLM())).mode == "threads"
    assert evaluate(devset, **auto)(ob.Predict("question -> answer", lm=FieldScriptedLM(respond)), mode="async").mode == "async"
    assert evaluate(devset, **auto)(AsyncOnly()).score == evaluate(devset, **auto)(Both(), mode="async").score == 1.0
    with pytest.raises(ob.ConfigurationError, match="mode"):
        evaluate(devset, mode="processes")
    with pytest.raises(ob.ConfigurationError, match="mode"):
        evaluate(devset)(AsyncOnly(), mode="fibers")  # type: ignore[arg-type]


# -- the same results as the thread pool -----------------------------------------------------


def test_async_gives_the_same_results_in_devset_order() -> None:
    devset = dataset([*range(24), "crash", 25, "crash"])
    # later examples answer sooner, so completion order is the reverse of devset order
    def delay(inputs: dict[str, str]) -> float:
        last = inputs["question"].split()[-1]
        return 0.0 if last == "crash" else 0.002 * (30 - int(last))

    lm = AsyncScriptedLM(delay=delay)
    program = ob.Predict("question -> answer", lm=lm)
    threads = evaluate(devset, num_threads=6, mode="threads")(program)
    on_loop = evaluate(devset, num_threads=6)(program)
    assert (threads.mode, on_loop.mode) == ("threads", "async")
    assert lm.threads == {"oobleck-async"}  # the async path really awaited agenerate on the loop
    assert outcome(on_loop) == outcome(threads)
    assert on_loop.score == threads.score == pytest.approx(12 / 27)
    assert on_loop.errors == threads.errors == 2
    assert "LMError" in (on_loop.results[24].error or "") and "backend down for double crash" in (on_loop.results[24].error or "")
    assert on_loop.usage.to_dict() == threads.usage.to_dict()
    assert on_loop.usage.calls == 25


def test_async_keeps_num_threads_requests_in_flight_on_one_thread() -> None:
    lm = AsyncScriptedLM(delay=0.05)
    started = time.perf_counter()
    result = evaluate(dataset(list(range(0, 64, 2))), num_threads=8)(ob.Predict("question -> answer", lm=lm))
    elapsed = time.perf_counter() - started
    assert result.score == 1.0 and result.mode == "async"
    assert lm.max_in_flight == 8
    assert len(lm.threads) == 1  # one event loop, no thread per request
    assert elapsed < 1.2, f"32 calls of 50 ms, 8 at a time, took {elapsed:.2f} s"  # 4 rounds: ~0.2 s


def test_failure_score_and_metric_crashes_are_recorded_alike() -> None:
    def metric(example: ob.Example, prediction: Any, trace: Any = None) -> bool:
        if prediction.answer == "wrong":
            raise KeyError("no gold")
        return exact_match(example, prediction)

    devset = dataset([0, 1, "crash", 2])
    program = ob.Predict("question -> answer", lm=AsyncScriptedLM())
    threads = evaluate(devset, metric=metric, failure_score=0.25, mode="threads")(program)
    on_loop = evaluate(devset, metric=metric, failure_score=0.25)(program)
    assert on_loop.mode == "async"
    assert outcome(on_loop) == outcome(threads)
    assert on_loop.scores == [1.0, 0.25, 0.25, 1.0]
    assert (on_loop.results[1].error or "").startswith("metric failed: KeyError")


def test_max_errors_aborts_the_async_run_with_the_partial_result() -> None:
    lm = AsyncScriptedLM(delay=0.01)
    devset = dataset(["crash"] * 40)
    with pytest.raises(TooManyErrors, match="max_errors=2") as info:
        evaluate(devset, num_threads=3, max_errors=2)(ob.Predict("question -> answer", lm=lm))
    partial = info.value.result
    assert partial.mode == "async"
    assert 3 <= partial.errors == len(partial.results) < len(devset)  # stopped well before the end
    positions = [next(i for i, e in enumerate(devset) if e is r.example) for r in partial.results]
    assert positions == sorted(positions)


def test_max_errors_counts_the_same_when_examples_run_one_at_a_time() -> None:
    devset = dataset([0, "crash", "crash", 2, 4, 6])
    program = ob.Predict("question -> answer", lm=AsyncScriptedLM())
    for mode in ("threads", "async"):
        with pytest.raises(TooManyErrors) as info:
            evaluate(devset, num_threads=1, max_errors=1, mode=mode)(program)
        assert [r.example for r in info.value.result.results] == devset[:3]
        assert info.value.result.scores == [1.0, 0.0, 0.0]


def test_a_metric_error_stops_the_async_run() -> None:
    lm = AsyncScriptedLM(delay=0.01)
    started = time.perf_counter()
    with pytest.raises(ob.MetricError, match="the metric returned"):
        evaluate(dataset(list(range(200))), metric=lambda e, p, t=None: "x", num_threads=4)(ob.Predict("question -> answer", lm=lm))
    assert time.perf_counter() - started < 1.0  # the other 199 examples were not all run
    assert lm.in_flight == 0  # nothing left running on the loop


def test_a_slow_metric_moves_off_the_event_loop() -> None:
    from oobleck.settings import get_setting

    judged: list[Any] = []

    def judge(example: ob.Example, prediction: Any, trace: Any = None) -> bool:  # e.g. an LM as judge
        time.sleep(0.05)
        judged.append(get_setting("adapter"))
        return exact_match(example, prediction)

    lm = AsyncScriptedLM()
    started = time.perf_counter()
    with ob.context(adapter="chat"):
        result = evaluate(dataset(list(range(0, 64, 2))), metric=judge, num_threads=16)(ob.Predict("question -> answer", lm=lm))
    elapsed = time.perf_counter() - started
    assert result.mode == "async" and result.score == 1.0
    assert judged == ["chat"] * 32  # the metric sees the caller's context in its thread too
    assert elapsed < 0.8, f"32 metric calls of 50 ms took {elapsed:.2f} s: they ran one at a time"  # inline: 1.6 s


# -- context: settings, usage, traces --------------------------------------------------------


def test_context_settings_usage_and_traces_reach_the_async_tasks() -> None:
    lm = AsyncScriptedLM()
    program = ob.Predict("question -> answer")  # no LM of its own: the configured one
    with ob.track_usage() as outer, ob.context(lm=lm), ob.trace() as entries:
        result = evaluate(dataset([0, 2, 4, 6]), num_threads=3)(program)
    assert result.mode == "async" and result.score == 1.0
    assert lm.calls == 4
    assert result.usage.calls == outer.calls == 4
    assert result.usage.completion_tokens == outer.completion_tokens > 0
    assert sorted(e.inputs["question"] for e in entries) == [f"double {n}" for n in (0, 2, 4, 6)]
    # outside the block there is no LM: the examples fail, they do not crash the run
    failed = evaluate(dataset([0]))(program)
    assert failed.errors == 1 and "no LM configured" in (failed.results[0].error or "")


def test_each_example_gets_its_own_copy_of_the_context() -> None:
    import contextvars

    seen: contextvars.ContextVar[list[int]] = contextvars.ContextVar("seen")

    class Leaky(ob.Module):
        def __init__(self) -> None:
            self.step = ob.Predict("question -> answer", lm=AsyncScriptedLM())

        def forward(self, question: str) -> Any:
            raise AssertionError("the async path must be used")

        async def aforward(self, question: str) -> Any:
            before = seen.get([])
            seen.set([*before, 1])  # a set without reset must not leak into the next example
            prediction = await self.step.acall(question=question)
            return ob.Prediction(answer=prediction.answer if not before else "leaked")

    result = evaluate(dataset([0, 2, 4, 6, 8, 10]), num_threads=2)(Leaky())
    assert result.mode == "async" and result.score == 1.0


# -- where Evaluate is called from -----------------------------------------------------------


def test_works_when_called_inside_a_running_event_loop() -> None:
    lm = AsyncScriptedLM(delay=0.01)

    async def main() -> ob.EvaluationResult:
        return evaluate(dataset([0, 2, 4]))(ob.Predict("question -> answer", lm=lm))

    result = asyncio.run(main())
    assert result.mode == "async" and result.score == 1.0
    assert "MainThread" not in lm.threads


def test_evaluate_nested_in_an_async_program_falls_back_to_threads() -> None:
    inner_modes: list[str] = []

    class Judge(ob.Module):
        def __init__(self) -> None:
            self.step = ob.Predict("question -> answer", lm=AsyncScriptedLM())

        def forward(self, question: str) -> Any:
            return self.step(question=question)

        async def aforward(self, question: str) -> Any:
            inner = evaluate(dataset([0, 2]))(self.step)  # a blocking call on the loop's own thread
            inner_modes.append(inner.mode)
            return await self.step.acall(question=question)

    result = evaluate(dataset([0, 2]), num_threads=2)(Judge())
    assert result.mode == "async" and result.score == 1.0
    assert inner_modes == ["threads", "threads"]


def test_plain_and_async_functions_as_programs() -> None:
    async def doubled(question: str) -> ob.Prediction:
        await asyncio.sleep(0)
        return ob.Prediction(answer=str(int(question.split()[-1]) * 2))

    def doubled_sync(question: str) -> ob.Prediction:
        return ob.Prediction(answer=str(int(question.split()[-1]) * 2))

    devset = dataset([1, 2, 3])
    assert evaluate(devset, mode="auto")(doubled).mode == "async"
    assert evaluate(devset, mode="auto")(doubled).score == 1.0
    forced = evaluate(devset, mode="async")(doubled_sync)
    assert forced.mode == "async" and forced.score == 1.0


def test_progress_bar_and_table_in_async_mode(capsys: pytest.CaptureFixture[str]) -> None:
    result = evaluate(dataset([0, 1]), display_progress=True, display_table=2)(ob.Predict("question -> answer", lm=AsyncScriptedLM()))
    assert result.mode == "async" and result.score == 0.5
    assert "score 50.0% on 2 examples" in capsys.readouterr().err


# -- LMs that block: the thread pool, and batching ---------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "async"])
def test_blocking_lms_still_see_their_calls_together(mode: str) -> None:
    lm = BatchingLM(batch=16)
    started = time.perf_counter()
    result = evaluate(dataset(list(range(0, 64, 2))), num_threads=16, mode=mode)(ob.Predict("question -> answer", lm=lm))
    assert result.score == 1.0 and result.usage.calls == 32
    assert result.mode == ("threads" if mode == "auto" else "async")
    assert lm.batches == 2  # num_threads calls arrived together, beyond asyncio's default pool size
    assert time.perf_counter() - started < 1.5


# -- the OpenAI-compatible backend end to end ------------------------------------------------


def test_openai_backend_evaluates_on_the_loop_with_faults_and_exact_usage() -> None:
    from oobleck.lm import RetryPolicy
    from oobleck.testing.server import OpenAITestServer

    def length_responder(messages: list[dict[str, Any]]) -> str:
        question = messages[-1]["content"].split("[[ ## question ## ]]\n", 1)[-1].split("\n\n", 1)[0]
        return f"[[ ## answer ## ]]\n{len(question)}\n\n[[ ## completed ## ]]"

    def metric(example: ob.Example, prediction: Any, trace: Any = None) -> bool:
        return prediction.answer == example.answer

    questions = [f"item {'#' * (i % 13)} {i}" for i in range(60)]
    devset = [ob.Example(question=q, answer=len(q) + (i % 4 == 0)).with_inputs("question") for i, q in enumerate(questions)]
    patient = RetryPolicy(retries=8, base_delay=0.001, max_delay=0.004)
    with OpenAITestServer(responder=length_responder, latency=0.005, fault_rate=0.2, seed=11) as server:
        lm = ob.LM("openai/test-model", base_url=server.base_url + "/v1", api_key="k", retry=patient, cache=False, timeout=10)
        program = ob.Predict("question -> answer: int", lm=lm)
        for mode in ("async", "threads"):
            server.reset_counts()
            result = evaluate(devset, metric=metric, num_threads=16, mode=mode)(program)
            assert result.mode == mode
            assert result.errors == 0, [r.error for r in result.results if r.error][:3]
            assert result.score == 0.75
            assert result.usage.calls == 60
            assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (server.prompt_tokens, server.completion_tokens)
            assert server.requests == 60 + sum(server.fault_counts.values()) > 60


def test_openai_backend_request_options_and_unknown_settings() -> None:
    from oobleck.testing.server import OpenAITestServer

    with OpenAITestServer(keep_recent=10) as server:
        lm = ob.LM("openai/test-model", base_url=server.base_url + "/v1", api_key="k", cache=False, num_retries=0)
        messages = [{"role": "user", "content": "hello"}]
        assert lm(messages, temperature=0.0, extra_body={"top_k": 3}, extra_headers={"X-Trace": "t1"}, timeout=5) == ["hello"]
        sent = server.recent[-1]
        assert sent["body"]["top_k"] == 3 and sent["body"]["temperature"] == 0.0 and sent["body"]["model"] == "test-model"
        assert "extra_body" not in sent["body"] and "timeout" not in sent["body"]
        assert sent["headers"]["x-trace"] == "t1"
        with pytest.raises(ob.LMError, match="unexpected setting"):
            lm(messages, not_a_create_argument=1)
        assert server.requests == 1  # refused before sending, as chat.completions.create would


def test_openai_backend_spreads_concurrent_requests_over_small_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    from oobleck.lm import http_transport
    from oobleck.testing.server import OpenAITestServer

    # Servers that keep httpx's own transport (https, proxied; here: told so) get sharded clients;
    # plain-http ones share one client over oobleck's keep-alive transport (test_http_transport.py).
    monkeypatch.setattr(http_transport, "use_for", lambda base_url: False)
    with OpenAITestServer(latency=0.05) as server:
        lm = ob.LM("openai/test-model", base_url=server.base_url + "/v1", api_key="k", cache=False)

        async def many() -> list[list[str]]:
            return await asyncio.gather(*(lm.acall([{"role": "user", "content": f"q{i}"}]) for i in range(32)))

        assert asyncio.run(many()) == [[f"q{i}"] for i in range(32)]
        assert lm([{"role": "user", "content": "sync"}]) == ["sync"]
    shards = list(lm._async_clients.values())
    assert len(shards) == 1 and len(shards[0]._clients) == 16  # 32 in flight, 2 per client
    assert lm._clients is not None and len(lm._clients._clients) == 1  # one call at a time: one client


def test_budget_stop_lets_requests_in_flight_finish_and_counts_them() -> None:
    """As on the thread path: the cap refuses new calls, but calls already sent are awaited and charged."""
    lm = AsyncScriptedLM(delay=lambda inputs: 0.05)
    program = ob.Predict("question -> answer", lm=lm)
    with ob.spending(ob.Budget(max_lm_calls=10)) as spend, pytest.raises(ob.BudgetExceeded):
        evaluate(dataset(list(range(0, 80, 2))), num_threads=8)(program)
    assert spend.calls == 10 == lm.calls  # every counted call was served, none cancelled half-way
    assert lm.in_flight == 0


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")  # the first call's coroutine, refused by asyncio.run
def test_a_metric_that_runs_its_own_event_loop_works_on_the_async_path() -> None:
    async def judge(prediction: ob.Prediction) -> float:
        await asyncio.sleep(0)
        return 1.0 if prediction.answer else 0.0

    def metric(example: ob.Example, prediction: ob.Prediction, trace: Any = None) -> float:
        return asyncio.run(judge(prediction))  # an async LM judge called from sync code

    result = evaluate(dataset(list(range(0, 20, 2))), metric=metric, num_threads=4)(ob.Predict("question -> answer", lm=AsyncScriptedLM()))
    assert result.mode == "async" and result.errors == 0 and result.score == 1.0
