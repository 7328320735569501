"""COPRO and Reflective against an LM whose answers depend on the instruction it is given."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest

import oobleck as ob
from oobleck.lm.base import BaseLM, Completion
from oobleck.optimizers.reflective import _Member, merge_instructions, pareto_front


class InstructionLM(BaseLM):
    """A task model that needs the right instruction, and a prompt/reflection model that writes them.

    Task: "double N" is answered 2N only when the instruction says "twice", and for N >= 15
    only when it says "exactly twice" (else N+2); the label is right only when the instruction
    says "even or odd" (else always "odd"). Proposals depend on the writing tip, and build on
    an earlier "twice" instruction once the history shows it. A reflection gives a better
    instruction only when the feedback says what was expected.
    """

    provider = "test"

    def __init__(self) -> None:
        super().__init__("instruction-lm", cache=False, adapter="chat")
        self.calls = 0
        self.requests: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def generate(self, messages: list[dict[str, str]], **settings: Any) -> list[Completion]:
        system = messages[0]["content"]
        instruction = system.split("Task:\n", 1)[1]
        last = messages[-1]["content"].split("\n\nReply with ")[0]
        parts = re.split(r"\[\[ ## (\w+) ## \]\]\n", last)
        fields = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
        with self._lock:
            self.calls += 1
            self.requests.append(fields)
        if "new_instruction" in system:
            out = {"new_instruction": self.reflect(fields["current_instruction"], fields["examples_with_feedback"])}
        elif "earlier_observations" in fields:
            out = {"observations": "Questions name a number."}
        elif "previous_instructions" in fields:
            out = {"instruction": self.propose(fields)}
        elif "`label`" in system:
            n = int(fields["question"].split()[-1])
            out = {"label": ("even" if n % 2 == 0 else "odd") if "even or odd" in instruction else "odd"}
        else:
            out = {"answer": self.answer(instruction, fields["question"])}
        text = "\n\n".join(f"[[ ## {k} ## ]]\n{v}" for k, v in out.items()) + "\n\n[[ ## completed ## ]]"
        return [Completion(text, prompt_tokens=len(last) // 4, completion_tokens=len(text) // 4)]

    @staticmethod
    def answer(instruction: str, question: str) -> str:
        n = int(question.split()[-1])
        good = "twice" in instruction and (n < 15 or "exactly twice" in instruction)
        return str(2 * n) if good else str(n + 2)

    @staticmethod
    def propose(fields: dict[str, str]) -> str:
        tip = "" if fields["tip"] == "none" else " " + fields["tip"]
        if "-> label" in fields["program_step"]:
            return "Say whether the number is even or odd." if "specific" in tip else f"Label the number.{tip}"
        if ": Reply with twice" in fields["previous_instructions"]:
            return f"Reply with exactly twice the number.{tip}"
        return "Reply with twice the number given." if "specific" in tip else f"Answer the question.{tip}"

    @staticmethod
    def reflect(current: str, examples: str) -> str:
        if ("inputs: question='parity" in examples or "outputs: label=" in examples) and "expected " in examples:
            return "Say whether the number is even or odd."
        if "outputs: answer=" in examples and "expected answer=" in examples:
            return "Answer with exactly twice the number." if "twice" in current else "Answer with twice the number."
        return "Answer the question well."


class DoubleAndParity(ob.Module):
    def __init__(self) -> None:
        self.double = ob.Predict("question -> answer")
        self.parity = ob.Predict("question -> label")

    def forward(self, question: str) -> ob.Prediction:
        return ob.Prediction(answer=self.double(question=question).answer, label=self.parity(question=question).label)


def doubling(numbers: list[int]) -> list[ob.Example]:
    return [ob.Example(question=f"double {n}", answer=str(2 * n)).with_inputs("question") for n in numbers]


def both(numbers: list[int]) -> list[ob.Example]:
    return [ob.Example(question=f"double {n}", answer=str(2 * n), label="even" if n % 2 == 0 else "odd").with_inputs("question")
            for n in numbers]  # fmt: skip


def half_and_half(example: ob.Example, prediction: Any, trace: Any = None) -> float:
    return 0.5 * (prediction.answer == example.answer) + 0.5 * (prediction.label == example.label)


TRAIN = [3, 4, 5, 7, 9, 16, 19, 12]
DEV = [6, 8, 13, 14, 15, 17]
TWICE = "Reply with twice the number given."  # right on the dev set but for 15 and 17
EXACTLY = "Reply with exactly twice the number."


def program(lm: BaseLM) -> ob.Predict:
    return ob.Predict("question -> answer", lm=lm)


def score(compiled: ob.Module, dev: list[ob.Example], metric: Any = "exact_match") -> float:
    return ob.Evaluate(devset=dev, metric=metric, num_threads=2, display_progress=False)(compiled).score


# -- COPRO -------------------------------------------------------------------------------------


def copro(**kwargs: Any) -> ob.optimizers.COPRO:
    kwargs.setdefault("depth", 3)
    return ob.optimizers.COPRO("exact_match", breadth=3, num_threads=2, **kwargs)


def test_copro_finds_the_instruction_building_on_what_worked():
    lm = InstructionLM()
    compiled = copro().compile(program(lm), trainset=doubling(TRAIN), valset=doubling(DEV))
    info = compiled.compile_info
    assert compiled.signature.instructions == EXACTLY
    assert info["scores"]["baseline"] == 0.0 and info["scores"]["best"] == 1.0
    assert info["history"]["self"][3] == [TWICE, pytest.approx(4 / 6)]
    # round 2's proposals were shown round 1's winner with its score
    shown = [r["previous_instructions"] for r in lm.requests if "previous_instructions" in r]
    assert len(shown) == 6 and all(f"0.667: {TWICE}" in text for text in shown[3:])
    # a perfect candidate ends the search: baseline, 3 + 1 scorings, no round 3
    assert len(info["trials"]) == 5 and info["stopped"] is None
    assert lm.calls == info["spend"]["calls"] == 6 + 1 + (3 + 3 * 6) + (3 + 6)  # baseline, one data observation, two rounds
    assert score(compiled, doubling(DEV)) == 1.0


def test_copro_ascends_each_predictor_in_turn():
    lm = InstructionLM()
    student = DoubleAndParity()
    student.set_lm(lm)
    optimizer = ob.optimizers.COPRO(half_and_half, breadth=3, depth=2, num_threads=2)
    compiled = optimizer.compile(student, trainset=both(TRAIN), valset=both(DEV))
    assert compiled.double.signature.instructions == EXACTLY
    assert compiled.parity.signature.instructions == "Say whether the number is even or odd."
    assert compiled.compile_info["scores"]["baseline"] == pytest.approx(0.25)  # "odd" is right on half the dev set
    assert score(compiled, both(DEV), half_and_half) == 1.0


def test_copro_stops_at_the_budget_with_the_best_so_far():
    lm = InstructionLM()
    compiled = copro(budget=ob.Budget(max_lm_calls=31)).compile(program(lm), trainset=doubling(TRAIN), valset=doubling(DEV))
    info = compiled.compile_info
    # round 1 (6 + 1 + 3 + 18 calls, with the data observation) and round 2's proposals (3) fit; its first scoring call does not
    assert lm.calls == 31 and info["spend"]["calls"] == 31
    assert info["stopped"] and "max_lm_calls" in info["stopped"]
    assert compiled.signature.instructions == TWICE and info["scores"]["best"] == pytest.approx(4 / 6)


def test_copro_resumes_from_sqlite_without_repeating_finished_trials(tmp_path):
    train, dev = doubling(TRAIN), doubling(DEV)
    reference_lm = InstructionLM()
    reference = copro().compile(program(reference_lm), trainset=train, valset=dev)

    storage = tmp_path / "copro.db"
    first_lm = InstructionLM()
    first = copro(budget=ob.Budget(max_lm_calls=31), storage=storage).compile(program(first_lm), trainset=train, valset=dev)
    assert first.compile_info["stopped"] and first_lm.calls == 31

    resumed_lm = InstructionLM()
    resuming = copro(storage=storage)
    resumed = resuming.compile(program(resumed_lm), trainset=train, valset=dev)
    assert resumed_lm.calls == reference_lm.calls - 31 == 6  # one scoring; round 1 and round 2's proposals were replayed
    assert resuming.report_extras["replayed_trials"] == 4 and resumed.compile_info["stopped"] is None
    assert resumed.compile_info == reference.compile_info  # same history, trials and logical spend as the uninterrupted run
    assert resumed.signature.instructions == reference.signature.instructions == EXACTLY

    again_lm = InstructionLM()
    repeating = copro(storage=storage)
    again = repeating.compile(program(again_lm), trainset=train, valset=dev)
    assert again_lm.calls == 0 and repeating.report_extras["replayed_trials"] == 5
    assert again.compile_info == reference.compile_info  # provenance: the same for a replayed and an uninterrupted run
    assert again.compile_info["spend"]["calls"] == reference.compile_info["spend"]["calls"]  # replayed spend counts as spent
    assert again.compile_info["scores"] == reference.compile_info["scores"]


def test_copro_dry_run_estimate_is_close_to_the_spend():
    from oobleck.optimizers.estimate import estimate_compile

    lm = InstructionLM()
    optimizer = copro(depth=1)
    estimate = estimate_compile(optimizer, program(lm), doubling(TRAIN), doubling(DEV))
    compiled = optimizer.compile(program(lm), trainset=doubling(TRAIN), valset=doubling(DEV))
    spent = compiled.compile_info["spend"]["calls"]
    assert spent == 6 + 1 + 3 + 3 * 6 and abs(estimate.calls - spent) <= 0.2 * spent


def test_copro_rejects_bad_settings():
    with pytest.raises(ob.ConfigurationError, match="breadth"):
        ob.optimizers.COPRO("exact_match", breadth=0)


# -- Reflective --------------------------------------------------------------------------------


def reflective(**kwargs: Any) -> ob.optimizers.Reflective:
    kwargs.setdefault("max_iterations", 6)
    return ob.optimizers.Reflective("exact_match", minibatch_size=4, num_threads=2, **kwargs)


def test_reflective_learns_from_the_expected_answers():
    lm = InstructionLM()
    compiled = reflective().compile(program(lm), trainset=doubling(TRAIN), valset=doubling(DEV))
    info = compiled.compile_info
    assert compiled.signature.instructions == "Answer with exactly twice the number."
    assert info["scores"]["baseline"] == 0.0 and info["scores"]["best"] == 1.0
    assert [m["origin"] for m in info["pool"]] == ["program as is", "reflection on self of #0", "reflection on self of #1"]
    assert [m["score"] for m in info["pool"]] == [0.0, pytest.approx(4 / 6), 1.0]
    assert info["pareto_front"] == [{"index": 2, "wins": 6}]
    # the reflection read the step's own calls with the default feedback, failures first
    shown = next(r["examples_with_feedback"] for r in lm.requests if "examples_with_feedback" in r)
    assert shown.startswith("## Example 1 (score 0.00)\ninputs: question='double ") and "expected answer=" in shown
    assert info["stopped"] is None and lm.calls == info["spend"]["calls"]
    assert score(compiled, doubling(DEV)) == 1.0


def test_reflective_passes_traces_to_user_feedback_and_keeps_only_improvements():
    lm = InstructionLM()
    seen: list[tuple[str, list[Any]]] = []

    def vague(example: ob.Example, prediction: Any, trace: list[Any]) -> str:
        seen.append((example.question, trace))
        return "not quite"

    compiled = reflective(feedback=vague, max_iterations=3).compile(program(lm), trainset=doubling(TRAIN), valset=doubling(DEV))
    info = compiled.compile_info
    assert seen and all(len(calls) == 1 and calls[0].inputs == {"question": q} for q, calls in seen)
    # without the expected answers the reflection cannot find the rule: no child beats its parent
    assert [m["origin"] for m in info["pool"]] == ["program as is"]
    assert compiled.signature.instructions == program(lm).signature.instructions
    assert info["scores"]["best"] == info["scores"]["baseline"] == 0.0
    assert info["settings"]["feedback"] == "vague"


def test_reflective_names_a_failing_feedback_function():
    def broken(example: ob.Example, prediction: Any, trace: list[Any]) -> str:
        raise KeyError("score")

    lm = InstructionLM()
    with pytest.raises(ob.MetricError, match="feedback function failed: KeyError"):
        reflective(feedback=broken).compile(program(lm), trainset=doubling(TRAIN), valset=doubling(DEV))


def test_reflective_stops_at_the_budget_with_the_best_so_far():
    reference_lm = InstructionLM()
    reference = reflective().compile(program(reference_lm), trainset=doubling(TRAIN), valset=doubling(DEV))
    first_child = next(t for t in reference.compile_info["trials"] if t["label"].startswith("#1 "))
    cap = sum(t["calls"] for t in reference.compile_info["trials"] if t["index"] <= first_child["index"]) + 2

    lm = InstructionLM()
    compiled = reflective(budget=ob.Budget(max_lm_calls=cap)).compile(program(lm), trainset=doubling(TRAIN), valset=doubling(DEV))
    info = compiled.compile_info
    assert lm.calls == cap and info["spend"]["calls"] == cap
    assert info["stopped"] and "max_lm_calls" in info["stopped"]
    assert compiled.signature.instructions == "Answer with twice the number." and info["scores"]["best"] == pytest.approx(4 / 6)


def test_reflective_resumes_from_sqlite_without_repeating_finished_trials(tmp_path):
    train, dev = doubling(TRAIN), doubling(DEV)
    reference_lm = InstructionLM()
    reference = reflective().compile(program(reference_lm), trainset=train, valset=dev)
    trials = reference.compile_info["trials"]
    cap = trials[0]["calls"] + trials[1]["calls"] + 2  # the program's and the first reflection's trials, 2 calls into the next

    storage = tmp_path / "reflective.db"
    first_lm = InstructionLM()
    first = reflective(budget=ob.Budget(max_lm_calls=cap), storage=storage).compile(program(first_lm), trainset=train, valset=dev)
    assert first.compile_info["stopped"] and first_lm.calls == cap

    resumed_lm = InstructionLM()
    resuming = reflective(storage=storage)
    resumed = resuming.compile(program(resumed_lm), trainset=train, valset=dev)
    assert resumed_lm.calls == reference_lm.calls - (cap - 2)  # the 2 calls of the interrupted trial are redone
    assert resuming.report_extras["replayed_trials"] == 2
    assert resumed.compile_info == reference.compile_info
    assert resumed.signature.instructions == reference.signature.instructions

    again_lm = InstructionLM()
    repeating = reflective(storage=storage)
    again = repeating.compile(program(again_lm), trainset=train, valset=dev)
    assert again_lm.calls == 0 and repeating.report_extras["replayed_trials"] == len(trials)
    assert again.compile_info == reference.compile_info
    assert again.compile_info["scores"] == reference.compile_info["scores"]


def test_reflective_improves_each_predictor_of_a_program():
    lm = InstructionLM()
    student = DoubleAndParity()
    student.set_lm(lm)
    optimizer = ob.optimizers.Reflective(half_and_half, max_iterations=6, minibatch_size=4, num_threads=2)
    compiled = optimizer.compile(student, trainset=both(TRAIN), valset=both(DEV))
    info = compiled.compile_info
    assert compiled.parity.signature.instructions == "Say whether the number is even or odd."
    assert compiled.double.signature.instructions == "Answer with exactly twice the number."
    assert [m["origin"] for m in info["pool"]][1:] == ["reflection on double of #0", "reflection on parity of #1", "reflection on double of #2"]
    assert info["scores"]["baseline"] == pytest.approx(0.25) and info["scores"]["best"] == 1.0


class BranchingLM(InstructionLM):
    """Each instruction is right on part of the data: only a merge of two branches gets both parts.

    "double N" is right for N < 5 with the plain instruction and for N >= 5 with "twice";
    "parity of N" is right with "even or odd", else always "odd".
    """

    @staticmethod
    def answer(instruction: str, question: str) -> str:
        n = int(question.split()[-1])
        if question.startswith("parity"):
            return ("even" if n % 2 == 0 else "odd") if "even or odd" in instruction else "odd"
        good = n >= 5 if "twice" in instruction else n < 5
        return str(2 * n) if good else "?"


class Router(ob.Module):
    def __init__(self) -> None:
        self.double = ob.Predict("question -> answer")
        self.parity = ob.Predict("question -> answer")

    def forward(self, question: str) -> ob.Prediction:
        return (self.double if question.startswith("double") else self.parity)(question=question)


def routed(questions: list[str]) -> list[ob.Example]:
    def answer(question: str) -> str:
        n = int(question.split()[-1])
        return str(2 * n) if question.startswith("double") else "even" if n % 2 == 0 else "odd"

    return [ob.Example(question=q, answer=answer(q)).with_inputs("question") for q in questions]


def test_reflective_merges_two_branches_that_fixed_different_predictors():
    lm = BranchingLM()
    student = Router()
    student.set_lm(lm)
    train = routed(["double 7", "double 10", "double 12", "double 2", "parity of 4", "parity of 10", "parity of 12", "parity of 3"])
    dev = routed(["double 2", "double 3", "double 6", "double 8", "double 9", "double 11", "parity of 6", "parity of 8", "parity of 7",
                  "parity of 5"])  # fmt: skip
    optimizer = ob.optimizers.Reflective("exact_match", max_iterations=4, minibatch_size=8, merge_every=2, num_threads=2, seed=2)
    compiled = optimizer.compile(student, trainset=train, valset=dev)
    info = compiled.compile_info
    pool = {m["origin"]: m for m in info["pool"]}
    assert list(pool)[:3] == ["program as is", "reflection on double of #0", "reflection on parity of #0"]
    merged = pool["merge of #1 and #2"]
    assert merged["instructions"] == {"double": "Answer with twice the number.", "parity": "Say whether the number is even or odd."}
    assert merged["score"] == pytest.approx(0.8) and max(pool[k]["score"] for k in list(pool)[:3]) == pytest.approx(0.6)
    assert info["scores"]["chosen"].startswith("#3 merge") and score(compiled, dev) == pytest.approx(0.8)
    # the merge was checked on 8 dev examples, then scored on the other 2 only
    calls = {t["label"]: t["calls"] for t in info["trials"]}
    assert calls["iteration 3: merge #1 and #2 (dev subsample)"] == 8 and calls["#3 merge of #1 and #2 (dev set)"] == 2


def test_pareto_front_keeps_undominated_winners():
    # #0 wins example 0 but #2 is as good everywhere and better on example 1
    assert pareto_front([[1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 0, 0]]) == [(1, 2), (2, 2)]
    assert pareto_front([[1, 0], [1, 0]]) == [(0, 1)]  # of identical candidates, the earliest
    assert pareto_front([[0, 0], [0, 0]]) == [(0, 1)]


def test_merge_takes_each_predictor_from_the_parent_that_changed_it():
    base = _Member({"a": "a0", "b": "b0", "c": "c0"}, [0, 0, 0, 0], (), "program")
    left = _Member({"a": "a1", "b": "b0", "c": "c1"}, [1, 0, 1, 0], (0,), "left")
    right = _Member({"a": "a0", "b": "b2", "c": "c2"}, [0, 1, 0, 0], (0,), "right")
    pool = [base, left, right]
    # a: only left changed it; b: only right; c: both, and left did better where they differ
    assert merge_instructions(pool, 1, 2) == {"a": "a1", "b": "b2", "c": "c1"}
    child = _Member({"a": "a1", "b": "b3", "c": "c1"}, [1, 1, 1, 0], (1,), "child of left")
    assert merge_instructions([*pool, child], 1, 3) is None  # one descends from the other


# -- on the demo model -------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_reflective_on_the_demo_model_rewrites_a_vague_instruction():
    """The demo model reads no reflection prompt; it induces the instruction from the step's expected outputs."""
    from oobleck.tiny.tasks import task_examples

    rows = [ob.Example(r).with_inputs("word") for r in task_examples("first_letter", 50, seed=21)]
    train, dev = rows[:20], rows[20:]
    lm = ob.LM("hf/oobleck-tiny")
    student = ob.Predict("word -> answer", lm=lm)  # default instruction: does not say which word task
    optimizer = ob.optimizers.Reflective("exact_match", max_iterations=3, minibatch_size=6, num_threads=8)
    compiled = optimizer.compile(student, trainset=train, valset=dev)
    info = compiled.compile_info
    assert info["scores"]["best"] - info["scores"]["baseline"] >= 0.3, info["scores"]
    assert compiled.signature.instructions != student.signature.instructions
    assert score(compiled, dev) == pytest.approx(info["scores"]["best"])
