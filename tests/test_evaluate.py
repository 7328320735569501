"""Evaluate and the built-in metrics."""

from __future__ import annotations

from typing import Any

import pytest
from support import doubling_dataset as dataset
from support import doubling_respond as respond

import oobleck as ob
from oobleck.evaluate import Evaluate, TooManyErrors
from oobleck.evaluate.metrics import contains, exact_match, f1, get_metric, normalize_text
from oobleck.testing import FieldScriptedLM

# question -> answer, where the "model" is right on even numbers and wrong on odd ones,
# and fails outright (an LM error) on questions containing "crash".


def program() -> ob.Predict:
    return ob.Predict("question -> answer", lm=FieldScriptedLM(respond))


def test_score_is_a_fraction_with_percent_and_ordered_results() -> None:
    devset = dataset([0, 1, 2, 3, 4, 5, 6, 7])
    result = Evaluate(devset=devset, metric=exact_match, num_threads=1, display_progress=False)(program())
    assert result.score == 0.5
    assert result.percent == 50.0
    assert float(result) == 0.5
    assert [r.example for r in result.results] == devset
    assert result.scores == [1.0, 0.0] * 4
    assert [r.prediction.answer for r in result.results][:3] == ["0", "wrong", "4"]
    assert result.errors == 0
    assert result.usage.calls == 8
    summary = result.summary()
    assert summary["n"] == 8 and summary["score"] == 0.5 and summary["usage"]["calls"] == 8
    assert "score=0.5000" in repr(result)


def test_percent_rounds() -> None:
    result = Evaluate(devset=dataset([0, 1, 2]), metric="em", num_threads=1, display_progress=False)(program())
    assert result.score == pytest.approx(2 / 3)
    assert result.percent == 66.67


def test_one_failing_example_is_counted_and_scored_zero() -> None:
    devset = dataset([0, "crash", 2])
    result = Evaluate(devset=devset, metric=exact_match, num_threads=1, display_progress=False)(program())
    assert result.scores == [1.0, 0.0, 1.0]
    assert result.errors == 1
    failed = result.results[1]
    assert failed.prediction is None
    assert failed.error is not None and "LMError" in failed.error and "backend down for double crash" in failed.error
    assert result.score == pytest.approx(2 / 3)


def test_failure_score_is_configurable() -> None:
    result = Evaluate(devset=dataset(["crash"]), metric=exact_match, display_progress=False, failure_score=0.25)(program())
    assert result.scores == [0.25]


def test_max_errors_aborts_with_the_partial_result() -> None:
    devset = dataset([0, "crash", "crash", 2, 4, 6])
    evaluate = Evaluate(devset=devset, metric=exact_match, num_threads=1, display_progress=False, max_errors=1)
    with pytest.raises(TooManyErrors) as info:
        evaluate(program())
    partial = info.value.result
    assert isinstance(info.value, ob.OobleckError)
    assert "max_errors=1" in str(info.value)
    assert [r.example for r in partial.results] == devset[:3]
    assert partial.errors == 2
    assert partial.scores == [1.0, 0.0, 0.0]


def test_max_errors_aborts_a_threaded_run_too() -> None:
    devset = dataset(["crash"] * 12)
    evaluate = Evaluate(devset=devset, metric=exact_match, num_threads=3, display_progress=False, max_errors=2)
    with pytest.raises(TooManyErrors) as info:
        evaluate(program())
    partial = info.value.result
    assert 3 <= partial.errors == len(partial.results) <= len(devset)
    positions = [next(i for i, e in enumerate(devset) if e is r.example) for r in partial.results]
    assert positions == sorted(positions)  # finished examples keep their devset order
    assert partial.score == 0.0


def test_max_errors_not_reached_finishes() -> None:
    devset = dataset([0, "crash", 2])
    result = Evaluate(devset=devset, metric=exact_match, num_threads=1, display_progress=False, max_errors=1)(program())
    assert len(result.results) == 3 and result.errors == 1


def test_threads_give_the_same_results_as_one_thread() -> None:
    devset = dataset([*range(20), "crash"])
    one = Evaluate(devset=devset, metric=exact_match, num_threads=1, display_progress=False)(program())
    many = Evaluate(devset=devset, metric=exact_match, num_threads=4, display_progress=False)(program())
    assert many.score == one.score
    assert many.scores == one.scores
    assert [r.example for r in many.results] == [r.example for r in one.results]
    assert [dict(r.prediction) if r.prediction else None for r in many.results] == [
        dict(r.prediction) if r.prediction else None for r in one.results
    ]
    assert many.usage.calls == one.usage.calls == 20


def test_threads_inherit_the_callers_context() -> None:
    lm = FieldScriptedLM(respond)
    with ob.context(lm=lm), ob.trace() as entries:
        result = Evaluate(devset=dataset([0, 2, 4, 6]), metric=exact_match, num_threads=3, display_progress=False)(
            ob.Predict("question -> answer")
        )
    assert result.score == 1.0
    assert lm.calls == 4
    assert sorted(e.inputs["question"] for e in entries) == [f"double {n}" for n in (0, 2, 4, 6)]


@pytest.mark.parametrize("bad", [None, "high", float("nan"), [1], 2, -0.5])
def test_metric_returning_a_non_score_is_a_metric_error(bad: Any) -> None:
    def metric(example: Any, prediction: Any, trace: Any = None) -> Any:
        return bad

    with pytest.raises(ob.MetricError, match="the metric returned"):
        Evaluate(devset=dataset([0, 2]), metric=metric, num_threads=1, display_progress=False)(program())


def test_metric_error_stops_a_threaded_run_too() -> None:
    with pytest.raises(ob.MetricError):
        Evaluate(devset=dataset(list(range(6))), metric=lambda e, p, t=None: "x", num_threads=3, display_progress=False)(program())


def test_a_threaded_run_stops_taking_examples_after_an_error() -> None:
    lm = FieldScriptedLM(respond)
    with pytest.raises(ob.MetricError):
        Evaluate(devset=dataset(list(range(60))), metric=lambda e, p, t=None: "x", num_threads=3, display_progress=False)(
            ob.Predict("question -> answer", lm=lm)
        )
    assert 1 <= lm.calls <= 6  # the examples already in flight, not the other 50-odd


def test_each_threaded_example_gets_its_own_copy_of_the_context() -> None:
    import contextvars

    seen: contextvars.ContextVar[int] = contextvars.ContextVar("seen", default=0)
    inner = program()

    def leaky(question: str) -> Any:
        before = seen.get()
        seen.set(before + 1)  # a set without reset must not leak into the worker's next example
        prediction = inner(question=question)
        return ob.Prediction(answer=prediction.answer if not before else "leaked")

    result = Evaluate(devset=dataset([0, 2, 4, 6, 8, 10, 12, 14]), metric=exact_match, num_threads=2, display_progress=False)(leaky)
    assert result.mode == "threads" and result.score == 1.0
    assert seen.get() == 0


def test_metric_returning_bool_int_and_score_objects() -> None:
    class Feedback:
        score = 0.75

    for value, expected in [(True, 1.0), (0, 0.0), (1, 1.0), (Feedback(), 0.75)]:
        result = Evaluate(devset=dataset([0]), metric=lambda e, p, t=None, v=value: v, display_progress=False)(program())
        assert result.score == expected


def test_metric_crash_is_recorded_per_example() -> None:
    def metric(example: Any, prediction: Any, trace: Any = None) -> float:
        raise KeyError("oops")

    result = Evaluate(devset=dataset([0, 2]), metric=metric, num_threads=1, display_progress=False)(program())
    assert result.score == 0.0 and result.errors == 2
    assert result.results[0].error is not None and result.results[0].error.startswith("metric failed: KeyError")
    assert result.results[0].prediction is not None


def test_devset_must_be_examples_with_inputs() -> None:
    evaluate = Evaluate(devset=[], metric="em", display_progress=False)
    with pytest.raises(ob.DataError, match="item 0 is a dict"):
        evaluate(program(), devset=[{"question": "q"}])
    with pytest.raises(ob.DataError, match="no inputs marked"):
        evaluate(program(), devset=[ob.Example(question="q", answer="a")])
    assert evaluate(program()).score == 0.0


def test_call_time_overrides() -> None:
    evaluate = Evaluate(devset=dataset([1]), metric=exact_match, num_threads=2, display_progress=False)
    assert evaluate(program()).score == 0.0
    assert evaluate(program(), devset=dataset([2])).score == 1.0
    assert evaluate(program(), metric=lambda e, p, t=None: 0.5).score == 0.5


def test_progress_and_table_display(capsys: pytest.CaptureFixture[str]) -> None:
    result = Evaluate(devset=dataset([0, 1]), metric=exact_match, num_threads=1, display_progress=True, display_table=2)(program())
    assert result.score == 0.5
    err = capsys.readouterr().err
    assert "score 50.0% on 2 examples" in err


# -- metrics ---------------------------------------------------------------------------------


def ex(**labels: Any) -> ob.Example:
    return ob.Example(question="q", **labels).with_inputs("question")


def test_normalize_text() -> None:
    assert normalize_text("  The Café, is OPEN!  ") == "cafe is open"
    assert normalize_text(42) == "42"


@pytest.mark.parametrize(
    ("gold", "predicted", "expected"),
    [
        ("Paris", "paris.", True),
        ("The Eiffel Tower", "eiffel tower", True),
        ("Paris", "Paris, France", False),
        (["Paris", "Lutetia"], "lutetia", True),
        (["a", "b"], "c", False),
        (4, "4", True),
    ],
)
def test_exact_match(gold: Any, predicted: Any, expected: bool) -> None:
    assert exact_match(ex(answer=gold), ob.Prediction(answer=predicted)) is expected


def test_exact_match_needs_every_label_field() -> None:
    example = ex(answer="a", unit="m")
    assert exact_match(example, ob.Prediction(answer="a", unit="m"))
    assert not exact_match(example, ob.Prediction(answer="a", unit="km"))
    assert exact_match(example, ob.Prediction(answer="a"))  # only shared fields are compared


def test_metrics_with_no_shared_field_raise() -> None:
    for metric in (exact_match, f1, contains):
        with pytest.raises(ob.MetricError, match="no label field"):
            metric(ex(answer="a"), ob.Prediction(output="a"))


@pytest.mark.parametrize(
    ("gold", "predicted", "expected"),
    [
        ("new york city", "new york city", 1.0),
        ("new york city", "new york", 0.8),
        ("new york", "boston", 0.0),
        ("", "", 1.0),
        ("", "something", 0.0),
        (["boston", "new york"], "new york", 1.0),
    ],
)
def test_f1(gold: Any, predicted: str, expected: float) -> None:
    assert f1(ex(answer=gold), ob.Prediction(answer=predicted)) == pytest.approx(expected)


def test_f1_averages_over_fields() -> None:
    assert f1(ex(a="x y", b="z"), ob.Prediction(a="x y", b="w")) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("gold", "predicted", "expected"),
    [
        ("Paris", "The answer is Paris.", True),
        ("Paris", "London", False),
        (["Rome", "Paris"], "it is paris", True),
    ],
)
def test_contains(gold: Any, predicted: str, expected: bool) -> None:
    assert contains(ex(answer=gold), ob.Prediction(answer=predicted)) is expected


def test_get_metric() -> None:
    assert get_metric("em") is exact_match and get_metric("f1") is f1 and get_metric("contains") is contains
    assert ob.metrics.exact_match is exact_match
    custom = lambda e, p, t=None: 1.0
    assert get_metric(custom) is custom
    with pytest.raises(ob.MetricError, match="unknown metric 'bleu'"):
        get_metric("bleu")
    with pytest.raises(ob.MetricError, match="a metric is required"):
        get_metric(None)
