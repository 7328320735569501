"""Optimizers: LabeledFewShot, BootstrapFewShot, RandomSearch and the Candidate they share."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from support import Hop

import oobleck as ob
from oobleck.evaluate.metrics import exact_match
from oobleck.optimizers import BootstrapFewShot, Candidate, LabeledFewShot, RandomSearch
from oobleck.optimizers.base import check_trainset, data_fingerprint
from oobleck.testing import FieldScriptedLM, ScriptedLM


def reply(**fields: Any) -> str:
    return "\n\n".join(f"[[ ## {k} ## ]]\n{v}" for k, v in fields.items()) + "\n\n[[ ## completed ## ]]"


def fields_in(content: str) -> dict[str, str]:
    """Field values of one chat-adapter user/assistant message."""
    text = content.split("\n\nReply with ")[0]
    parts = re.split(r"\[\[ ## (\w+) ## \]\]\n", text)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def demo_words(messages: list[dict[str, str]]) -> list[str]:
    return [fields_in(m["content"])["word"] for m in messages[1:-1] if m["role"] == "user"]


def words(*items: str) -> list[ob.Example]:
    return [ob.Example(word=w, answer=w[::-1]).with_inputs("word") for w in items]


TRAIN = words("abc", "hello", "xy", "oobleck", "four", "six666", "q", "zz")
VAL = words("dev", "tests", "pq", "water")




# -- Candidate -------------------------------------------------------------------------------


def test_candidate_apply_returns_a_changed_copy() -> None:
    program = Hop()
    program.answer.demos = [{"question": "old", "query": "q", "answer": "a"}]
    candidate = Candidate(instructions={"answer": "Answer well."}, demos={"generate_query": [{"question": "x", "query": "y"}]})
    compiled = candidate.apply(program)
    assert compiled is not program
    assert compiled.answer.signature.instructions == "Answer well."
    assert compiled.generate_query.demos == [{"question": "x", "query": "y"}]
    assert compiled.answer.demos == [{"question": "old", "query": "q", "answer": "a"}]
    # The original is untouched.
    assert program.answer.signature.instructions != "Answer well."
    assert program.generate_query.demos == []
    candidate.demos["generate_query"][0]["query"] = "mutated later"
    assert compiled.generate_query.demos == [{"question": "x", "query": "y"}]


def test_candidate_from_program_round_trips() -> None:
    program = Hop()
    program.answer.demos = [{"question": "q", "query": "r", "answer": "a"}]
    candidate = Candidate.from_program(program, source="start")
    assert candidate.demos == {"generate_query": [], "answer": [{"question": "q", "query": "r", "answer": "a"}]}
    assert candidate.instructions["answer"] == program.answer.signature.instructions
    again = candidate.apply(program)
    assert again.answer.signature is program.answer.signature  # unchanged instructions keep the class
    assert candidate.summary() == {"source": "start", "score": None, "cost": {}, "instructions": candidate.instructions,
                                   "demos": {"generate_query": 0, "answer": 1}}  # fmt: skip
    assert candidate.to_dict()["demos"]["answer"] == [{"question": "q", "query": "r", "answer": "a"}]


def test_candidate_naming_an_unknown_predictor() -> None:
    with pytest.raises(ob.ConfigurationError, match="'nope'"):
        Candidate(demos={"nope": []}).apply(Hop())


def test_trainset_checks_and_fingerprint() -> None:
    with pytest.raises(ob.DataError, match="empty"):
        check_trainset([])
    with pytest.raises(ob.DataError, match="item 1 is a dict"):
        check_trainset([TRAIN[0], {"word": "x"}])
    with pytest.raises(ob.DataError, match="no inputs marked"):
        check_trainset([ob.Example(word="x")])
    assert data_fingerprint(TRAIN) == data_fingerprint(list(TRAIN))
    assert data_fingerprint(TRAIN) != data_fingerprint(TRAIN[::-1])
    assert data_fingerprint(words("a")) != data_fingerprint([ob.Example(word="a", answer="a").with_inputs("word", "answer")])


# -- LabeledFewShot --------------------------------------------------------------------------


def test_labeled_few_shot_is_seeded_and_leaves_the_program_alone() -> None:
    program = Hop()
    compiled = LabeledFewShot(k=3, seed=1).compile(program, trainset=TRAIN)
    again = LabeledFewShot(k=3, seed=1).compile(program, trainset=TRAIN)
    assert program.answer.demos == [] and program.generate_query.demos == []
    demos = compiled.answer.demos
    assert len(demos) == 3
    assert demos == again.answer.demos == compiled.generate_query.demos
    assert all(d in [dict(e) for e in TRAIN] for d in demos)
    assert len({d["word"] for d in demos}) == 3
    others = [LabeledFewShot(k=3, seed=s).compile(program, trainset=TRAIN).answer.demos for s in range(2, 6)]
    assert any(o != demos for o in others)
    assert compiled.compile_info["optimizer"] == "LabeledFewShot"
    assert compiled.compile_info["seed"] == 1
    assert compiled.compile_info["data"]["train_size"] == len(TRAIN)


def test_labeled_few_shot_without_sampling_takes_the_first_k() -> None:
    compiled = LabeledFewShot(k=2, sample=False).compile(ob.Predict("word -> answer"), trainset=TRAIN)
    assert compiled.demos == [dict(TRAIN[0]), dict(TRAIN[1])]
    small = LabeledFewShot(k=50).compile(ob.Predict("word -> answer"), trainset=TRAIN)
    assert len(small.demos) == len(TRAIN)


# -- BootstrapFewShot ------------------------------------------------------------------------


def reverser(right: Any = lambda word: True) -> FieldScriptedLM:
    """Reverses the word, upper-cased (still an exact match), when ``right(word)``; else says 'nope'."""
    return FieldScriptedLM(lambda inputs: {"answer": inputs["word"][::-1].upper() if right(inputs["word"]) else "nope"})


def test_bootstrap_keeps_only_traces_that_pass_the_metric() -> None:
    lm = reverser(lambda word: len(word) % 2 == 0)  # right on even-length words only
    student = ob.Predict("word -> answer", lm=lm)
    compiled = BootstrapFewShot(exact_match, max_demos=3, teacher_demos=0, num_threads=1).compile(student, trainset=TRAIN)
    demos = compiled.demos
    assert len(demos) == 3
    for demo in demos:
        assert len(demo["word"]) % 2 == 0
        assert demo["answer"] == demo["word"][::-1].upper()  # the teacher's output, not the label
        assert set(demo) == {"word", "answer"}
    assert student.demos == []
    info = compiled.compile_info
    assert info["optimizer"] == "BootstrapFewShot" and info["metric"] == "exact_match"
    assert info["candidates"][0]["demos"] == {"self": 3}
    assert info["usage"]["calls"] >= 3


def test_bootstrap_fills_no_demos_when_nothing_passes() -> None:
    compiled = BootstrapFewShot(exact_match, max_demos=2, teacher_demos=0).compile(
        ob.Predict("word -> answer", lm=reverser(lambda word: False)), trainset=TRAIN
    )
    assert compiled.demos == []


def test_bootstrap_labeled_demos_come_from_unused_examples() -> None:
    lm = reverser(lambda word: word in ("abc", "xy"))
    compiled = BootstrapFewShot(exact_match, max_demos=4, max_labeled_demos=2, teacher_demos=0, seed=None).compile(
        ob.Predict("word -> answer", lm=lm), trainset=TRAIN
    )
    assert compiled.demos[:2] == [{"word": "abc", "answer": "CBA"}, {"word": "xy", "answer": "YX"}]
    assert compiled.demos[2:] == [dict(TRAIN[1]), dict(TRAIN[3])]  # raw labels, never a bootstrapped one


def test_bootstrap_metric_threshold() -> None:
    def half(example: Any, prediction: Any, trace: Any = None) -> float:
        return 0.5

    program = ob.Predict("word -> answer", lm=reverser())
    assert BootstrapFewShot(half, max_demos=2, teacher_demos=0).compile(program, trainset=TRAIN).demos != []
    assert BootstrapFewShot(half, max_demos=2, teacher_demos=0, metric_threshold=0.9).compile(program, trainset=TRAIN).demos == []


def test_bootstrap_metric_sees_the_trace() -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        with lock:
            seen.append(len(trace))
        return True

    BootstrapFewShot(metric, max_demos=2, teacher_demos=0).compile(ob.Predict("word -> answer", lm=reverser()), trainset=TRAIN)
    assert seen and all(n == 1 for n in seen)


def hop_lm() -> FieldScriptedLM:
    def respond(inputs: dict[str, str]) -> dict[str, str]:
        if "query" in inputs:
            return {"answer": inputs["query"].replace("find ", "")}
        return {"query": "find " + inputs["question"]}

    return FieldScriptedLM(respond)


def test_bootstrap_two_predictors_get_their_own_demos_by_name() -> None:
    program = Hop()
    program.set_lm(hop_lm())
    trainset = [ob.Example(question=q, answer=q if q != "bad" else "other").with_inputs("question") for q in ["a", "bad", "b", "c"]]
    compiled = BootstrapFewShot(exact_match, max_demos=2, teacher_demos=0, seed=None).compile(program, trainset=trainset)
    assert compiled.generate_query.demos == [{"question": "a", "query": "find a"}, {"question": "b", "query": "find b"}]
    assert compiled.answer.demos == [
        {"question": "a", "query": "find a", "answer": "a"},
        {"question": "b", "query": "find b", "answer": "b"},
    ]
    assert compiled.compile_info["candidates"][0]["demos"] == {"generate_query": 2, "answer": 2}
    assert program.answer.demos == []


def test_bootstrap_is_deterministic_under_a_seed_and_thread_count() -> None:
    def run(seed: int, threads: int) -> list[dict[str, Any]]:
        program = ob.Predict("word -> answer", lm=reverser(lambda word: word != "q"))
        return BootstrapFewShot(exact_match, max_demos=3, teacher_demos=2, seed=seed, num_threads=threads).compile(
            program, trainset=TRAIN
        ).demos

    first = run(7, 1)
    assert len(first) == 3
    assert run(7, 1) == first
    assert run(7, 4) == first
    assert any(run(seed, 2) != first for seed in (8, 9, 10))


def test_bootstrap_never_shows_an_example_its_own_demo() -> None:
    calls: list[tuple[str, list[str]]] = []

    def respond(messages: list[dict[str, str]], settings: dict[str, Any]) -> str:
        word = fields_in(messages[-1]["content"])["word"]
        calls.append((word, demo_words(messages)))
        return reply(answer=word[::-1])

    small = words("abc", "xyz", "pqr")  # fewer examples than demos: all of them teach
    student = ob.Predict("word -> answer", lm=ScriptedLM(respond))
    compiled = BootstrapFewShot(exact_match, max_demos=4, num_threads=1).compile(student, trainset=small)
    assert len(compiled.demos) == 3
    assert len(calls) == 3
    for word, shown in calls:
        assert word not in shown
        assert sorted([*shown, word]) == ["abc", "pqr", "xyz"]


def test_bootstrap_explicit_teacher_never_shows_an_example_its_own_demo() -> None:
    calls: list[tuple[str, list[str]]] = []

    def respond(messages: list[dict[str, str]], settings: dict[str, Any]) -> str:
        word = fields_in(messages[-1]["content"])["word"]
        calls.append((word, demo_words(messages)))
        return reply(answer=word[::-1])

    lm = ScriptedLM(respond)
    teacher = LabeledFewShot(k=len(TRAIN), sample=False).compile(ob.Predict("word -> answer", lm=lm), trainset=TRAIN)
    compiled = BootstrapFewShot(exact_match, max_demos=3, teacher=teacher, num_threads=2).compile(
        ob.Predict("word -> answer", lm=lm), trainset=TRAIN
    )
    assert len(compiled.demos) == 3
    assert calls
    for word, shown in calls:
        assert word not in shown
        assert len(shown) == len(TRAIN) - 1
    assert len(teacher.demos) == len(TRAIN)  # the teacher itself is not changed


def test_bootstrap_teacher_must_match_the_student() -> None:
    with pytest.raises(ob.OobleckError, match="teacher's predictors"):
        BootstrapFewShot(exact_match, teacher=Hop()).compile(ob.Predict("word -> answer", lm=reverser()), trainset=TRAIN)


def test_bootstrap_later_rounds_sample_at_a_higher_temperature() -> None:
    temperatures: list[Any] = []

    def respond(messages: list[dict[str, str]], settings: dict[str, Any]) -> str:
        temperatures.append(settings.get("temperature"))
        word = fields_in(messages[-1]["content"])["word"]
        return reply(answer=word[::-1] if settings.get("temperature") == 0.7 else "nope")

    def compile_with(rounds: int) -> list[dict[str, Any]]:
        student = ob.Predict("word -> answer", lm=ScriptedLM(respond), temperature=0.0)
        compiled = BootstrapFewShot(exact_match, max_demos=2, teacher_demos=0, max_rounds=rounds, num_threads=1).compile(
            student, trainset=TRAIN[:3]
        )
        assert compiled.config == {"temperature": 0.0}  # round settings never leak into the result
        return compiled.demos

    assert compile_with(1) == []
    temperatures.clear()
    assert len(compile_with(2)) == 2
    assert temperatures[:3] == [0.0, 0.0, 0.0] and set(temperatures[3:]) == {0.7}


def test_bootstrap_teacher_failures_yield_no_demo() -> None:
    def respond(inputs: dict[str, str]) -> dict[str, str]:
        if inputs["word"] == "abc":
            raise RuntimeError("down")
        return {"answer": inputs["word"][::-1]}

    compiled = BootstrapFewShot(exact_match, max_demos=8, teacher_demos=0).compile(
        ob.Predict("word -> answer", lm=FieldScriptedLM(respond)), trainset=TRAIN
    )
    assert sorted(d["word"] for d in compiled.demos) == sorted(e.word for e in TRAIN if e.word != "abc")


def test_bootstrap_metric_error_propagates() -> None:
    with pytest.raises(ob.MetricError):
        BootstrapFewShot(lambda e, p, t=None: "yes", teacher_demos=0).compile(ob.Predict("word -> answer", lm=reverser()), trainset=TRAIN)


# -- RandomSearch ----------------------------------------------------------------------------


def demo_count_lm(good: int) -> ScriptedLM:
    """Right (reverses the word) exactly when the prompt holds ``good`` demos."""

    def respond(messages: list[dict[str, str]], settings: dict[str, Any]) -> str:
        word = fields_in(messages[-1]["content"])["word"]
        return reply(answer=word[::-1] if len(demo_words(messages)) == good else "nope")

    return ScriptedLM(respond)


def test_random_search_picks_the_best_candidate_on_the_valset() -> None:
    program = ob.Predict("word -> answer", lm=demo_count_lm(good=2))
    optimizer = RandomSearch(exact_match, num_candidates=6, max_demos=3, teacher_demos=2, num_threads=2, seed=0, display_progress=False)
    compiled = optimizer.compile(program, trainset=TRAIN, valset=VAL)
    info = compiled.compile_info
    rows = info["candidates"]
    assert [r["source"] for r in rows[:3]] == ["zero-shot", "labeled k=3", "bootstrap (train order)"]
    assert [r["source"] for r in rows[3:]] == [f"bootstrap #{i}" for i in range(6)]
    scores = [r["score"] for r in rows]
    assert all(s in (0.0, 1.0) for s in scores)
    assert scores[0] == 0.0 and scores[1] == 0.0  # no demos, three demos: both wrong
    assert max(scores) == 1.0
    best = scores.index(max(scores))
    assert info["scores"] == {"baseline": 0.0, "best": 1.0, "chosen": rows[best]["source"]}
    assert rows[best]["demos"] == {"self": 2}
    assert len(compiled.demos) == 2
    assert all(r["cost"]["calls"] >= len(VAL) for r in rows)
    assert info["usage"]["calls"] == sum(r["cost"]["calls"] for r in rows)
    assert info["data"]["dev_size"] == len(VAL)
    assert program.demos == []
    # Scoring the compiled program again gives the recorded best score.
    assert ob.Evaluate(devset=VAL, metric=exact_match, display_progress=False)(compiled).score == 1.0


def test_random_search_is_deterministic() -> None:
    def run() -> tuple[list[Any], list[dict[str, Any]]]:
        program = ob.Predict("word -> answer", lm=demo_count_lm(good=2))
        compiled = RandomSearch(exact_match, num_candidates=4, max_demos=3, teacher_demos=2, seed=5, display_progress=False).compile(
            program, trainset=TRAIN, valset=VAL
        )
        return [(r["source"], r["score"], r["demos"]) for r in compiled.compile_info["candidates"]], compiled.demos

    assert run() == run()


def test_random_search_ties_go_to_the_earlier_candidate() -> None:
    program = ob.Predict("word -> answer", lm=reverser())  # always right: every candidate scores 1.0
    compiled = RandomSearch(exact_match, num_candidates=2, max_demos=2, display_progress=False).compile(program, trainset=TRAIN, valset=VAL)
    assert compiled.compile_info["scores"]["chosen"] == "zero-shot"
    assert compiled.demos == []


def test_random_search_without_valset_scores_on_the_trainset(caplog: pytest.LogCaptureFixture) -> None:
    program = ob.Predict("word -> answer", lm=reverser())
    with caplog.at_level("WARNING"):
        compiled = RandomSearch(exact_match, num_candidates=1, max_demos=1, display_progress=False).compile(program, trainset=TRAIN[:3])
    assert "no valset" in caplog.text
    assert compiled.compile_info["data"]["dev_sha256"] == compiled.compile_info["data"]["train_sha256"]


def test_optimizer_settings_are_json_ready() -> None:
    settings = RandomSearch(exact_match, num_candidates=3).settings()
    assert settings["num_candidates"] == 3 and "metric" not in settings
