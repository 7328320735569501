"""``Evaluate``: run a program over a dev set in parallel and score it.

Scores are always fractions in [0, 1] (``result.percent`` gives 0-100 for display). A failure
on one example (LM error, unparsable output, a bug in the program) is recorded with its
message and scored as a failure; it ends the run only past ``max_errors``.
"""

from __future__ import annotations

import contextvars
import logging
import math
import numbers
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from oobleck.errors import DataError, MetricError, OobleckError
from oobleck.evaluate.metrics import get_metric
from oobleck.example import Example, Prediction
from oobleck.lm.usage import Usage, track_usage

__all__ = ["Evaluate", "EvaluationResult", "ExampleResult", "TooManyErrors"]

logger = logging.getLogger("oobleck.evaluate")


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
            table.add_row(
                str(i),
                _short(", ".join(f"{k}={v!r}" for k, v in inputs.items())),
                _short(", ".join(f"{k}={v!r}" for k, v in ex.labels().items())),
                _short(predicted),
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


class Evaluate:
    """``Evaluate(devset=dev, metric=ob.metrics.exact_match, num_threads=16)(program)``."""

    def __init__(self, *, devset: Sequence[Example], metric: Callable[..., Any] | str, num_threads: int = 8,
                 display_progress: bool = True, display_table: int = 0, max_errors: int | None = None,
                 failure_score: float = 0.0):  # fmt: skip
        self.devset = list(devset)
        self.metric = get_metric(metric)
        self.num_threads = max(1, int(num_threads))
        self.display_progress = display_progress
        self.display_table = display_table
        self.max_errors = max_errors
        self.failure_score = failure_score

    def __call__(self, program: Callable[..., Any], *, devset: Sequence[Example] | None = None, metric: Any = None,
                 num_threads: int | None = None, display_progress: bool | None = None) -> EvaluationResult:  # fmt: skip
        examples = list(devset) if devset is not None else self.devset
        metric_fn = get_metric(metric) if metric is not None else self.metric
        threads = num_threads or self.num_threads
        show = self.display_progress if display_progress is None else display_progress
        _check_devset(examples)
        started = time.perf_counter()
        results: list[ExampleResult | None] = [None] * len(examples)
        failures = 0
        lock = threading.Lock()
        abort = threading.Event()

        def run_one(index: int) -> None:
            nonlocal failures
            if abort.is_set():
                return
            example = examples[index]
            try:
                prediction = program(**example.inputs())
            except Exception as exc:  # noqa: BLE001 - one example's failure is data, not a crash
                result = ExampleResult(example, None, self.failure_score, f"{type(exc).__name__}: {exc}")
            else:
                try:
                    score = _as_score(metric_fn(example, prediction))
                    result = ExampleResult(example, prediction, score)
                except MetricError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    result = ExampleResult(example, prediction, self.failure_score, f"metric failed: {type(exc).__name__}: {exc}")
            with lock:
                results[index] = result
                if result.error is not None:
                    failures += 1
                    logger.debug("example %d failed: %s", index, result.error)
                    if self.max_errors is not None and failures > self.max_errors:
                        abort.set()

        with track_usage() as usage, _progress(show, len(examples)) as advance:
            if threads == 1:
                for i in range(len(examples)):
                    run_one(i)
                    advance(results[i])
            else:
                with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="oobleck-eval") as pool:
                    futures = [pool.submit(contextvars.copy_context().run, run_one, i) for i in range(len(examples))]
                    for i, future in enumerate(futures):
                        future.result()
                        advance(results[i])
        done = [r for r in results if r is not None]
        score = sum(r.score for r in done) / len(done) if done else 0.0
        result = EvaluationResult(score, done, usage, time.perf_counter() - started)
        if abort.is_set():
            raise TooManyErrors(f"stopped after {failures} failed examples (max_errors={self.max_errors}); last: {done[-1].error if done else ''}", result)
        if self.display_table:
            from rich.console import Console

            Console(stderr=True).print(result.table(self.display_table))
        return result


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

    def __exit__(self, *exc: Any) -> None:
        if self.show:
            self.bar.__exit__(*exc)
