"""``Evaluate``: run a program over a dev set in parallel and score it.

Scores are always fractions in [0, 1] (``result.percent`` gives 0-100 for display). A failure
on one example (LM error, unparsable output, a bug in the program) is recorded with its
message and scored as a failure; it ends the run only past ``max_errors``.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import math
import numbers
import os
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from oobleck._twins import async_twin_is_current
from oobleck.errors import BudgetExceeded, ConfigurationError, DataError, MetricError, OobleckError
from oobleck.evaluate.metrics import get_metric
from oobleck.example import Example, Prediction
from oobleck.lm.usage import Usage, track_usage
from oobleck.modules.module import Module

__all__ = ["Evaluate", "EvaluationResult", "ExampleResult", "TooManyErrors"]

logger = logging.getLogger("oobleck.evaluate")
T = TypeVar("T")


class TooManyErrors(OobleckError):
    """More examples failed than ``max_errors`` allows; ``result`` holds what finished."""

    def __init__(self, message: str, result: EvaluationResult):
        self.result = result
        super().__init__(message)


@dataclass
class ExampleResult:
    example: Example
    prediction: Any
    score: float
    error: str | None = None


@dataclass
class EvaluationResult:
    """Per-example results and the mean score (a fraction in [0, 1])."""

    score: float
    results: list[ExampleResult]
    usage: Usage = field(default_factory=Usage)
    seconds: float = 0.0
    mode: str = "threads"  # how the examples ran: "threads" or "async"

    @property
    def percent(self) -> float:
        return round(self.score * 100, 2)

    @property
    def errors(self) -> int:
        return sum(1 for r in self.results if r.error is not None)

    @property
    def scores(self) -> list[float]:
        return [r.score for r in self.results]

    def __float__(self) -> float:
        return self.score

    def __repr__(self) -> str:
        return f"EvaluationResult(score={self.score:.4f}, n={len(self.results)}, errors={self.errors})"

    def summary(self) -> dict[str, Any]:
        return {"score": self.score, "n": len(self.results), "errors": self.errors, "seconds": round(self.seconds, 3), "usage": self.usage.to_dict()}

    def table(self, limit: int = 10) -> Any:
        """A rich table of the first ``limit`` examples: inputs, outputs, score, error."""
        from rich.table import Table
        from rich.text import Text

        table = Table(title=f"score {self.percent:.1f}% on {len(self.results)} examples ({self.errors} errors)")
        table.add_column("#", justify="right")
        table.add_column("inputs")
        table.add_column("expected")
        table.add_column("predicted")
        table.add_column("score", justify="right")
        for i, r in enumerate(self.results[:limit]):
            ex = r.example
            inputs = ex.inputs() if ex.input_keys is not None else ex
            predicted = r.error or (", ".join(f"{k}={v!r}" for k, v in r.prediction.items()) if isinstance(r.prediction, Prediction) else repr(r.prediction))
            table.add_row(  # Text, not str: data and LM outputs may hold "[...]", which rich would read as markup
                str(i),
                Text(_short(", ".join(f"{k}={v!r}" for k, v in inputs.items()))),
                Text(_short(", ".join(f"{k}={v!r}" for k, v in ex.labels().items()))),
                Text(_short(predicted)),
                f"{r.score:.2f}",
            )
        return table


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _as_score(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Real) and not math.isnan(float(value)):  # numbers.Real: numpy scalars too
        if not 0.0 <= float(value) <= 1.0:
            # Scores are fractions; a 0-100 metric would otherwise report 5000%.
            raise MetricError(f"the metric returned {value!r}; scores must lie in [0, 1]")
        return float(value)
    if hasattr(value, "score"):  # metrics that return feedback objects carry a score
        return _as_score(value.score)
    raise MetricError(f"the metric returned {value!r}; it must return a number or a bool")


Mode = Literal["auto", "threads", "async"]
_MODES = ("auto", "threads", "async")
# A metric call slower than this (an LM judge, say) would stall every example in flight if run
# on the event loop, so from then on the async path runs the metric in a worker thread.
_SLOW_METRIC_S = 0.002


class Evaluate:
    """``Evaluate(devset=dev, metric=ob.metrics.exact_match, num_threads=16)(program)``.

    ``num_threads`` is the number of examples in flight. ``mode`` says how they are run:
    ``"threads"`` calls the program from a pool of that many threads; ``"async"`` awaits
    ``program.acall`` for each example on one event loop (in a background thread, so this
    call stays synchronous and works inside a running loop too); ``"auto"`` (the default)
    takes the event loop for a program that exists only as async code (an ``async def``
    function, a module with ``aforward`` and no ``forward``) and, with 32 or more examples in
    flight, for one that is async all the way down (a ``Predict`` on an OpenAI-compatible
    server, say), where it costs less CPU per request; otherwise threads. Both give the same
    results, in devset order.
    """

    def __init__(self, *, devset: Sequence[Example], metric: Callable[..., Any] | str, num_threads: int = 8,
                 display_progress: bool = True, display_table: int = 0, max_errors: int | None = None,
                 failure_score: float = 0.0, mode: Mode = "auto"):  # fmt: skip
        self.devset = list(devset)
        self.metric = get_metric(metric)
        self.num_threads = max(1, int(num_threads))
        self.display_progress = display_progress
        self.display_table = display_table
        self.max_errors = max_errors
        self.failure_score = failure_score
        self.mode = _check_mode(mode)

    def __call__(self, program: Callable[..., Any], *, devset: Sequence[Example] | None = None, metric: Any = None,
                 num_threads: int | None = None, display_progress: bool | None = None,
                 mode: Mode | None = None) -> EvaluationResult:  # fmt: skip
        examples = list(devset) if devset is not None else self.devset
        metric_fn = get_metric(metric) if metric is not None else self.metric
        threads = num_threads or self.num_threads
        show = self.display_progress if display_progress is None else display_progress
        chosen = _choose_mode(program, _check_mode(mode or self.mode), threads)
        _check_devset(examples)
        started = time.perf_counter()
        run = _Run(examples, metric_fn, self.failure_score, self.max_errors)

        with track_usage() as usage, _progress(show, len(examples)) as advance:
            if chosen == "async":
                _loop_thread().run(_run_async(run, program, threads, advance))
            elif threads == 1:
                for i in range(len(examples)):
                    run.run_one(program, i)
                    advance(run.results[i])
            else:
                _run_threads(run, program, threads, advance)
        done = [r for r in run.results if r is not None]
        score = sum(r.score for r in done) / len(done) if done else 0.0
        result = EvaluationResult(score, done, usage, time.perf_counter() - started, chosen)
        if run.aborted:
            raise TooManyErrors(f"stopped after {run.failures} failed examples (max_errors={self.max_errors}); last: {done[-1].error if done else ''}", result)
        if self.display_table:
            from rich.console import Console

            Console(stderr=True).print(result.table(self.display_table))
        return result


class _Run:
    """One evaluation's shared state: results by devset position, failures, the abort flag.

    Both execution paths score and record examples through it, so they report identically.
    """

    def __init__(self, examples: list[Example], metric: Callable[..., Any], failure_score: float, max_errors: int | None):
        self.examples = examples
        self.metric = metric
        self.failure_score = failure_score
        self.max_errors = max_errors
        self.results: list[ExampleResult | None] = [None] * len(examples)
        self.failures = 0
        self.aborted = False
        self._lock = threading.Lock()

    def failed(self, index: int, exc: Exception) -> ExampleResult:
        return ExampleResult(self.examples[index], None, self.failure_score, f"{type(exc).__name__}: {exc}")

    def scored(self, index: int, prediction: Any, *, on_loop: bool = False) -> ExampleResult:
        example = self.examples[index]
        try:
            return ExampleResult(example, prediction, _as_score(self.metric(example, prediction)))
        except MetricError:
            raise
        except Exception as exc:
            if on_loop and _wants_its_own_loop(exc):
                raise _MetricNeedsThread from exc
            return ExampleResult(example, prediction, self.failure_score, f"metric failed: {type(exc).__name__}: {exc}")

    def record(self, index: int, result: ExampleResult) -> None:
        with self._lock:
            self.results[index] = result
            if result.error is not None:
                self.failures += 1
                logger.debug("example %d failed: %s", index, result.error)
                if self.max_errors is not None and self.failures > self.max_errors:
                    self.aborted = True

    def run_one(self, program: Callable[..., Any], index: int) -> None:
        """The thread path: call, score and record one example (nothing once aborted)."""
        if self.aborted:
            return
        try:
            prediction = program(**self.examples[index].inputs())
        except BudgetExceeded:
            self.aborted = True  # the run's budget is spent: stop, do not score it as a failure
            raise
        except Exception as exc:  # noqa: BLE001 - one example's failure is data, not a crash
            result = self.failed(index, exc)
        else:
            result = self.scored(index, prediction)
        self.record(index, result)


def _run_threads(run: _Run, program: Callable[..., Any], threads: int, advance: Callable[[ExampleResult | None], None]) -> None:
    """The thread path: ``threads`` workers take examples in devset order until done or aborted.

    Each example runs in its own copy of the caller's context (``ob.context`` settings, the
    ``track_usage`` scopes, an active trace). Workers pull the next example themselves rather
    than a pool taking one future per example and the calling thread waking for each result:
    with many examples in flight and the GIL shared, those handovers cost client CPU that
    bounds throughput. The first exception a worker hits (BudgetExceeded, MetricError,
    Ctrl-C) stops the others from taking new examples and is raised here.
    """
    context = contextvars.copy_context()
    indices = iter(range(len(run.examples)))
    lock = threading.Lock()
    failure: list[BaseException] = []

    def work() -> None:
        for index in indices:  # shared by the workers: each example is taken once, in order
            if run.aborted:
                return
            try:
                context.copy().run(run.run_one, program, index)
                with lock:  # the progress bar's running score is not thread-safe
                    advance(run.results[index])
            except BaseException as exc:  # noqa: BLE001 - raised again by the calling thread
                run.aborted = True
                failure.append(exc)
                return

    workers = [threading.Thread(target=work, name=f"oobleck-eval-{i}") for i in range(min(threads, len(run.examples)))]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join()
    except BaseException:  # Ctrl-C while waiting: let the workers finish what they hold, then stop
        run.aborted = True
        raise
    if failure:
        raise failure[0]


async def _run_async(run: _Run, program: Callable[..., Any], concurrency: int, advance: Callable[[ExampleResult | None], None]) -> None:
    """The async path: ``concurrency`` workers take examples in devset order until done or aborted.

    Each example runs in a task of its own, which copies the caller's context (``ob.context``
    settings, the ``track_usage`` scopes, an active trace) as a thread of the pool would.
    """
    import asyncio

    if isinstance(program, Module):
        call = program.acall
    elif inspect.iscoroutinefunction(program):
        call = program
    else:  # a plain function: run it in a thread, like the thread path does
        def call(**inputs: Any) -> Any:
            return asyncio.to_thread(program, **inputs)

    metric_inline = True

    async def one(index: int) -> None:
        nonlocal metric_inline
        try:
            prediction = await call(**run.examples[index].inputs())
        except BudgetExceeded:
            run.aborted = True
            raise
        except Exception as exc:  # noqa: BLE001 - one example's failure is data, not a crash
            result = run.failed(index, exc)
        else:
            result = None
            if metric_inline:
                began = time.perf_counter()
                try:
                    result = run.scored(index, prediction, on_loop=True)
                except _MetricNeedsThread:  # it runs an event loop of its own (asyncio.run): not on this one
                    metric_inline = False
                if time.perf_counter() - began > _SLOW_METRIC_S:
                    metric_inline = False
            if result is None:
                result = await asyncio.to_thread(run.scored, index, prediction)
        run.record(index, result)
        advance(result)

    indices = iter(range(len(run.examples)))
    failure: list[BaseException] = []

    async def worker() -> None:
        for index in indices:  # shared by the workers: each example is taken once, in order
            if run.aborted:
                return
            try:
                await asyncio.create_task(one(index))
            except Exception as exc:  # noqa: BLE001 - BudgetExceeded, MetricError: raised again below
                run.aborted = True
                failure.append(exc)
                return

    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(run.examples)))]
    try:
        # As on the thread path, a failure stops new examples but lets those in flight finish:
        # their LM requests are already sent, and the budget must count what they spend.
        await asyncio.gather(*workers)
    finally:  # cancelled (Ctrl-C): stop the examples still in flight
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    if failure:
        raise failure[0]


class _MetricNeedsThread(Exception):
    """The metric cannot run on the evaluation's event loop thread; run it in a worker thread."""


def _wants_its_own_loop(exc: BaseException) -> bool:
    """asyncio's refusal to start or run a loop inside a running one (a metric calling ``asyncio.run``)."""
    message = str(exc)
    return isinstance(exc, RuntimeError) and "loop" in message and "running" in message


def _check_mode(mode: str) -> Mode:
    if mode not in _MODES:
        raise ConfigurationError(f"Evaluate mode must be one of {list(_MODES)}, not {mode!r}")
    return mode  # type: ignore[return-value]


def _choose_mode(program: Callable[..., Any], mode: Mode, num_threads: int) -> Literal["threads", "async"]:
    """The path to run ``program`` on: ``mode``, or for ``"auto"`` the one that suits it.

    ``auto`` takes the event loop for a program that exists only as async code, and for one
    that is async all the way down (its own ``aforward`` and LMs with a real async client)
    once ``num_threads`` (the examples allowed in flight) is ``_ASYNC_FROM`` or more; otherwise
    threads. The setting decides, not the devset's size, so one compile's evaluations (small
    minibatches, full dev sets) all take the same path. Measured with
    ``benchmarks/_throughput_worker.py`` (``Predict`` over the openai SDK, a 50 ms server, 2
    cores, three interleaved runs each): at 64 in flight the event loop reached 0.92-0.94 of
    the latency limit at 510-560 µs of client CPU per request, threads 0.90-0.91 at 640-700 µs
    (each thread's turn at the GIL costs a hand-over); at 32 the two were level (0.91-0.93);
    at 8 threads answered sooner (0.94-0.95 against 0.92), since a loop with few events to
    serve pays its own wake-ups per request.
    """
    if mode == "auto":
        wants_loop = _async_only(program) or (num_threads >= _ASYNC_FROM and _async_all_the_way(program))
        mode = "async" if wants_loop else "threads"
    if mode == "async" and _loop_thread().is_current():
        # Evaluate called from a program already running on the shared loop: waiting on that
        # loop from itself would deadlock, so this nested evaluation uses threads.
        logger.debug("nested Evaluate on the event loop thread: using threads")
        return "threads"
    return mode


_ASYNC_FROM = 32  # num_threads from which ``auto`` prefers the event loop (see _choose_mode)


def _async_all_the_way(program: Callable[..., Any]) -> bool:
    """A module whose ``aforward``, and every predictor's, and every predictor's LM, are real async code.

    An LM without a real async client (an in-process model, a test double, a user's sync
    ``http_client``) would run each call in a worker thread from the loop, which only adds
    hand-overs to the thread path; an ``aforward`` inherited past a subclass's own
    ``forward`` would skip that override. Such programs, and any whose LM is not configured
    yet, stay on threads.
    """
    if not isinstance(program, Module) or type(program).aforward is Module.aforward:
        return False
    predictors = [predictor for _, predictor in program.named_predictors()]
    if not predictors or not all(async_twin_is_current(type(m), "aforward", "forward") for m in [program, *predictors]):
        return False
    try:
        lms = [predictor.resolve_lm() for predictor in predictors]
    except OobleckError:
        return False
    return all(lm.native_async for lm in lms)


def _async_only(program: Callable[..., Any]) -> bool:
    """An ``async def`` function, or a module that implements ``aforward`` but not ``forward``."""
    if isinstance(program, Module):
        return type(program).forward is Module.forward and type(program).aforward is not Module.aforward
    return inspect.iscoroutinefunction(program)


class _LoopThread:
    """An event loop running forever in a daemon thread: where async evaluations run.

    One loop for the process rather than one per evaluation, because async clients and their
    keep-alive connections belong to the loop that opened them: a fresh loop per call would
    reconnect every time and leave the old clients to be closed on a dead loop. Its default
    executor is large (threads are started only when needed) so that ``asyncio.to_thread``
    fallbacks (an LM without real async, in mode="async") get as many threads as examples in
    flight, as on the thread path, and an in-process model still sees its calls together.
    """

    def __init__(self) -> None:
        import asyncio

        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(ThreadPoolExecutor(max_workers=_MAX_FALLBACK_THREADS, thread_name_prefix="oobleck-async-worker"))
        self.thread = threading.Thread(target=self.loop.run_forever, name="oobleck-async", daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.thread.is_alive()  # a forked child has no such thread

    def is_current(self) -> bool:
        return threading.current_thread() is self.thread

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop, in a copy of the caller's context, and wait for it."""
        import asyncio

        future = asyncio.run_coroutine_threadsafe(coro, self.loop)  # the loop copies the caller's context
        try:
            return future.result()
        except BaseException:  # Ctrl-C while waiting: stop the run instead of leaving it going
            future.cancel()
            raise


_MAX_FALLBACK_THREADS = 512
_loop_lock = threading.Lock()
_loop: _LoopThread | None = None


def _loop_thread() -> _LoopThread:
    global _loop
    with _loop_lock:
        if _loop is None or not _loop.alive():
            _loop = _LoopThread()
        return _loop


def _check_devset(examples: Sequence[Any]) -> None:
    for i, example in enumerate(examples):
        if not isinstance(example, Example):
            raise DataError(f"devset item {i} is a {type(example).__name__}; use ob.Example(...).with_inputs(...)")
        if example.input_keys is None:
            raise DataError(f"devset item {i} has no inputs marked; call .with_inputs('field', ...) on each example")


class _progress:
    """A rich progress bar on stderr showing the running score, or nothing."""

    def __init__(self, show: bool, total: int):
        self.show = show and total > 0
        self.total = total
        self.sum = 0.0
        self.count = 0

    def __enter__(self) -> Callable[[ExampleResult | None], None]:
        if not self.show:
            return lambda result: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TextColumn("score {task.fields[score]}"), TimeElapsedColumn(),
            console=Console(stderr=True), transient=False,
        )  # fmt: skip
        self.bar.__enter__()
        self.task = self.bar.add_task("eval", total=self.total, score="-")

        def advance(result: ExampleResult | None) -> None:
            if result is not None:
                self.sum += result.score
                self.count += 1
            shown = f"{100 * self.sum / self.count:.1f}%" if self.count else "-"
            self.bar.update(self.task, advance=1, score=shown)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.show:
            self.bar.__exit__(*exc)  # type: ignore[arg-type]
