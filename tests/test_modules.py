"""Modules and predictors: input checks, structure, copies, ChainOfThought, traces, context."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from support import Hop

import oobleck as ob
from oobleck.modules.trace import tracing_active
from oobleck.testing import FieldScriptedLM, ScriptedLM


def upper_lm(**kwargs: Any) -> FieldScriptedLM:
    """Answers every field-marker prompt with the question upper-cased."""
    return FieldScriptedLM(lambda inputs: {"answer": inputs.get("question", "").upper() or "EMPTY"}, **kwargs)




class Pipeline(ob.Module):
    def __init__(self) -> None:
        self.first = ob.Predict("question -> answer")
        self.hop = Hop()
        self.steps = [ob.Predict("a -> b"), ob.ChainOfThought("b -> c")]
        self.by_role = {"critic": ob.Predict("draft -> critique"), 3: ob.Predict("x -> y")}
        self.pair = (ob.Predict("p -> q"),)
        self.alias = self.first  # the same predictor twice is listed once
        self._private = ob.Predict("hidden -> never")
        self.number = 5

    def forward(self, question: str) -> Any:
        return self.first(question=question)


# -- inputs ----------------------------------------------------------------------------------


def test_missing_and_extra_inputs_are_named() -> None:
    predictor = ob.Predict("question, context -> answer", lm=upper_lm())
    with pytest.raises(ob.InputError) as info:
        predictor(question="q", contxt="typo")
    message = str(info.value)
    assert "missing ['context']" in message and "unexpected ['contxt']" in message
    with pytest.raises(ob.InputError, match=r"missing \['question', 'context'\]"):
        predictor()


def test_mistyped_inputs_are_named() -> None:
    predictor = ob.Predict("count: int, tags: list[str] -> answer", lm=upper_lm())
    with pytest.raises(ob.InputError, match="input 'count' should be int, got str"):
        predictor(count="many", tags=[])
    with pytest.raises(ob.InputError, match="input 'tags' should be list"):
        predictor(count=1, tags={"a": 1})


def test_input_error_is_a_type_error_and_an_oobleck_error() -> None:
    with pytest.raises(TypeError):
        ob.Predict("question -> answer", lm=upper_lm())(nope=1)
    assert issubclass(ob.InputError, ob.OobleckError)


def test_positional_arguments_are_rejected() -> None:
    lm = upper_lm()
    with pytest.raises(ob.InputError, match="keyword inputs only, e.g. question="):
        ob.Predict("question -> answer", lm=lm)("what?")
    assert lm.calls == 0


def test_input_checks_happen_before_any_lm_call() -> None:
    lm = ScriptedLM([])
    with pytest.raises(ob.InputError):
        ob.Predict("question -> answer", lm=lm)(question="q", extra=1)
    assert lm.calls == []


def test_input_field_named_like_a_call_option() -> None:
    lm = FieldScriptedLM(lambda inputs: {"summary": "about " + inputs["config"]})
    assert ob.Predict("config -> summary", lm=lm)(config="yaml").summary == "about yaml"


def test_call_options_override_lm_demos_and_config() -> None:
    default, other = upper_lm(), upper_lm()
    predictor = ob.Predict("question -> answer", lm=default, demos=[{"question": "d", "answer": "D"}], temperature=0.1)
    predictor(question="x", lm=other, demos=[], config={"temperature": 0.9})
    assert (default.calls, other.calls) == (0, 1)
    entry = other.inspect_history()[0]
    assert entry["settings"]["temperature"] == 0.9
    assert len(entry["messages"]) == 2  # system + query: the demos were overridden


def test_no_lm_configured() -> None:
    with pytest.raises(ob.ConfigurationError, match="no LM configured"):
        ob.Predict("question -> answer")(question="q")
    ob.configure(lm="not an lm")
    with pytest.raises(ob.ConfigurationError, match="must be an ob.BaseLM"):
        ob.Predict("question -> answer")(question="q")


def test_unknown_setting_is_rejected() -> None:
    with pytest.raises(ob.ConfigurationError, match="unknown setting"):
        ob.configure(model="gpt")
    with pytest.raises(ob.ConfigurationError), ob.context(temperature=1):
        pass


def test_configured_and_context_lm() -> None:
    configured, scoped = upper_lm(), upper_lm()
    predictor = ob.Predict("question -> answer")
    ob.configure(lm=configured)
    assert predictor(question="a").answer == "A"
    with ob.context(lm=scoped):
        assert predictor(question="b").answer == "B"
    predictor(question="c")
    assert (configured.calls, scoped.calls) == (2, 1)
    own = upper_lm()
    predictor.lm = own
    with ob.context(lm=scoped):
        predictor(question="d")
    assert own.calls == 1 and scoped.calls == 1


# -- structure -------------------------------------------------------------------------------


def test_named_predictors_dotted_paths() -> None:
    program = Pipeline()
    names = [name for name, _ in program.named_predictors()]
    assert names == [
        "first",
        "hop.generate_query",
        "hop.answer",
        "steps.0",
        "steps.1",
        "by_role.critic",
        "pair.0",
    ]
    assert program.predictor("hop.answer") is program.hop.answer
    assert program.predictor("steps.1") is program.steps[1]
    assert len(program.predictors()) == 7
    with pytest.raises(ob.ConfigurationError, match="no predictor named 'hop.nope'"):
        program.predictor("hop.nope")


def test_a_predictor_names_itself_self() -> None:
    predictor = ob.Predict("a -> b")
    assert predictor.named_predictors() == [("self", predictor)]


def test_set_lm_reaches_every_predictor() -> None:
    program = Pipeline()
    lm = upper_lm()
    program.set_lm(lm)
    assert all(p.lm is lm for p in program.predictors())


def test_cyclic_modules_terminate() -> None:
    program = Hop()
    program.parent = program  # type: ignore[attr-defined]
    child = Hop()
    child.back = program  # type: ignore[attr-defined]
    program.child = child  # type: ignore[attr-defined]
    names = [n for n, _ in program.named_predictors()]
    assert names == ["generate_query", "answer", "child.generate_query", "child.answer"]


def test_module_without_forward() -> None:
    class Empty(ob.Module):
        pass

    with pytest.raises(NotImplementedError, match="Empty must define forward"):
        Empty()()


# -- copies ----------------------------------------------------------------------------------


def test_deepcopy_shares_the_lm_but_not_demos_or_signatures() -> None:
    lm = upper_lm()
    program = Hop()
    program.set_lm(lm)
    program.answer.demos = [{"question": "q", "query": "x", "answer": "A"}]
    clone = program.deepcopy()
    assert clone is not program and clone.answer is not program.answer
    assert clone.answer.lm is lm and clone.generate_query.lm is lm
    assert clone.answer.demos == program.answer.demos
    clone.answer.demos.append({"question": "other"})
    clone.answer.demos[0]["answer"] = "changed"
    clone.generate_query.signature = clone.generate_query.signature.with_instructions("New.")
    assert program.answer.demos == [{"question": "q", "query": "x", "answer": "A"}]
    assert program.generate_query.signature.instructions != "New."


def test_deepcopy_falls_back_when_something_cannot_be_copied() -> None:
    program = Hop()
    program.lock = threading.Lock()  # type: ignore[attr-defined]  # locks cannot be deep-copied
    program.answer.demos = [{"question": "q", "query": "x", "answer": "A"}]
    clone = program.deepcopy()
    assert clone.lock is program.lock  # type: ignore[attr-defined]
    assert clone.answer is not program.answer
    clone.answer.demos.clear()
    assert len(program.answer.demos) == 1


def test_deepcopy_fallback_separates_predictors_in_any_container() -> None:
    program = Pipeline()
    program.lock = threading.Lock()  # type: ignore[attr-defined]
    program.nested = [{"deep": (ob.Predict("m -> n"),)}]  # type: ignore[attr-defined]
    clone = program.deepcopy()
    originals = dict(program.named_predictors())
    copies = dict(clone.named_predictors())
    assert list(copies) == list(originals)
    assert "nested.0.deep.0" in copies
    for name, predictor in copies.items():
        assert predictor is not originals[name], name
        predictor.demos.append({"x": 1})
    assert all(p.demos == [] for p in program.predictors())


def test_reset_copy_clears_demos_only_in_the_copy() -> None:
    program = Pipeline()
    for p in program.predictors():
        p.demos = [{"x": 1}]
    fresh = program.reset_copy()
    assert all(p.demos == [] for p in fresh.predictors())
    assert all(p.demos == [{"x": 1}] for p in program.predictors())
    assert [n for n, _ in fresh.named_predictors()] == [n for n, _ in program.named_predictors()]


# -- ChainOfThought --------------------------------------------------------------------------


def test_chain_of_thought_adds_reasoning_first() -> None:
    cot = ob.ChainOfThought("question -> answer: int, confidence: float")
    assert list(cot.signature.output_fields) == ["reasoning", "answer", "confidence"]
    assert cot.signature.output_fields["reasoning"].desc == "Think step by step to reach the answer."
    custom = ob.ChainOfThought("question -> answer", rationale_desc="Explain.")
    assert custom.signature.output_fields["reasoning"].desc == "Explain."
    already = ob.ChainOfThought("question -> reasoning, answer")
    assert list(already.signature.output_fields) == ["reasoning", "answer"]


def test_chain_of_thought_call_returns_reasoning() -> None:
    lm = FieldScriptedLM(lambda inputs: {"reasoning": "2 plus 2", "answer": 4})
    prediction = ob.ChainOfThought("question -> answer: int", lm=lm)(question="2+2?")
    assert prediction.reasoning == "2 plus 2"
    assert prediction.answer == 4
    assert isinstance(prediction, ob.Prediction)


def test_chain_of_thought_keeps_instructions() -> None:
    base = ob.Signature("question -> answer", "Answer carefully.")
    assert ob.ChainOfThought(base).signature.instructions == "Answer carefully."


# -- traces ----------------------------------------------------------------------------------


def test_trace_records_each_call_in_order() -> None:
    def respond(inputs: dict[str, str]) -> dict[str, str]:
        return {"query": "Q:" + inputs["question"]} if "query" not in inputs else {"answer": inputs["query"] + "!"}

    lm = FieldScriptedLM(respond)
    program = Hop()
    program.set_lm(lm)
    assert not tracing_active()
    with ob.trace() as entries:
        assert tracing_active()
        prediction = program(question="why")
    assert not tracing_active()
    assert prediction.answer == "Q:why!"
    assert [(e.predictor, e.inputs, e.outputs) for e in entries] == [
        (program.generate_query, {"question": "why"}, {"query": "Q:why"}),
        (program.answer, {"question": "why", "query": "Q:why"}, {"answer": "Q:why!"}),
    ]


def test_no_trace_outside_a_block_and_nested_blocks_are_separate() -> None:
    predictor = ob.Predict("question -> answer", lm=upper_lm())
    predictor(question="untraced")
    with ob.trace() as outer:
        predictor(question="a")
        with ob.trace() as inner:
            predictor(question="b")
        predictor(question="c")
    assert [e.inputs["question"] for e in outer] == ["a", "c"]
    assert [e.inputs["question"] for e in inner] == ["b"]


def test_trace_is_per_thread() -> None:
    predictor = ob.Predict("question -> answer", lm=upper_lm())
    barrier = threading.Barrier(2, timeout=30)
    seen: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            with ob.trace() as entries:
                for i in range(5):
                    barrier.wait()  # both threads call in lock step, so their calls interleave
                    predictor(question=f"{name}{i}")
            seen[name] = [e.inputs["question"] for e in entries]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert seen == {"a": [f"a{i}" for i in range(5)], "b": [f"b{i}" for i in range(5)]}


def test_trace_is_per_async_task() -> None:
    predictor = ob.Predict("question -> answer", lm=upper_lm())

    async def task(name: str) -> list[tuple[str, str]]:
        with ob.trace() as entries:
            for i in range(4):
                await predictor.acall(question=f"{name}{i}")
        return [(e.inputs["question"], e.outputs["answer"]) for e in entries]

    async def main() -> list[list[tuple[str, str]]]:
        return await asyncio.gather(task("x"), task("y"))

    x, y = asyncio.run(main())
    assert x == [(f"x{i}", f"X{i}") for i in range(4)]
    assert y == [(f"y{i}", f"Y{i}") for i in range(4)]


def test_module_acall_runs_forward_with_the_callers_trace() -> None:
    lm = FieldScriptedLM(lambda inputs: {"query": "q"} if "query" not in inputs else {"answer": "done"})
    program = Hop()
    program.set_lm(lm)

    async def main() -> tuple[Any, int]:
        with ob.trace() as entries:
            prediction = await program.acall(question="x")
        return prediction, len(entries)

    prediction, count = asyncio.run(main())
    assert prediction.answer == "done" and count == 2


def test_context_is_per_thread() -> None:
    lm_a, lm_b = upper_lm(), upper_lm()
    predictor = ob.Predict("question -> answer")
    barrier = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def worker(lm: ob.BaseLM) -> None:
        try:
            with ob.context(lm=lm):
                for i in range(3):
                    barrier.wait()
                    predictor(question=str(i))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(lm,)) for lm in (lm_a, lm_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert (lm_a.calls, lm_b.calls) == (3, 3)
    with pytest.raises(ob.ConfigurationError):  # nothing leaked into this thread
        predictor(question="q")


def test_context_is_per_async_task() -> None:
    lm_a, lm_b = upper_lm(), upper_lm()
    predictor = ob.Predict("question -> answer")

    async def task(lm: ob.BaseLM, n: int) -> None:
        with ob.context(lm=lm):
            for i in range(n):
                await predictor.acall(question=str(i))

    async def main() -> None:
        await asyncio.gather(task(lm_a, 2), task(lm_b, 3))

    asyncio.run(main())
    assert (lm_a.calls, lm_b.calls) == (2, 3)


def test_repr_mentions_signatures() -> None:
    assert repr(ob.Predict("a -> b", demos=[{"a": 1, "b": 2}])) == "Predict('a: str -> b: str', demos=1)"
    assert "generate_query='question: str -> query: str'" in repr(Hop())


def test_import_oobleck_leaves_heavy_and_slow_modules_unimported() -> None:
    """``import oobleck`` stays fast: each of these is imported only by the code that uses it."""
    import subprocess
    import sys

    lazy = ["torch", "transformers", "peft", "optuna", "datasets", "numpy", "openai", "httpx", "pydantic", "asyncio",
            "sentence_transformers", "bm25s", "fastapi", "uvicorn", "dspy", "rich", "matplotlib"]  # fmt: skip
    code = f"import sys, oobleck; print([m for m in {lazy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
