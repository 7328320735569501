"""Ensembles: majority vote, the Ensemble optimizer, and saving/loading an EnsembleProgram."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

import oobleck as ob
from oobleck.modules.ensemble import vote_key
from oobleck.optimizers import Ensemble, EnsembleProgram, LabeledFewShot, majority_vote
from oobleck.testing import FieldScriptedLM, ScriptedLM

P = ob.Prediction


class Doubler(ob.Module):
    """One chain-of-thought step; the members differ only in their instructions."""

    def __init__(self) -> None:
        self.step = ob.ChainOfThought("question -> answer")

    def forward(self, question: str) -> ob.Prediction:
        return self.step(question=question)


def variant_lm() -> ScriptedLM:
    """Doubles N, except that the member told "Variant k." is wrong, in its own way, when N % 3 == k.

    So each member gets a different third wrong, and any two members outvote the third.
    """

    def respond(messages: list[dict[str, str]], settings: dict[str, Any]) -> str:
        variant = int(re.search(r"Variant (\d+)\.", messages[0]["content"]).group(1))  # type: ignore[union-attr]
        question = messages[-1]["content"].split("[[ ## question ## ]]\n")[1].split("\n")[0]
        n = int(question.split()[-1])
        answer = f"wrong {variant}" if n % 3 == variant else str(2 * n)
        reply = (
            {"reasoning": f"variant {variant} doubled {n}", "answer": answer}
            if "reasoning" in messages[-1]["content"]
            else {"answer": answer}
        )
        return "\n\n".join(f"[[ ## {k} ## ]]\n{v}" for k, v in reply.items()) + "\n\n[[ ## completed ## ]]"

    return ScriptedLM(respond)


def dataset(numbers: range) -> list[ob.Example]:
    return [ob.Example(question=f"double {n}", answer=str(2 * n)).with_inputs("question") for n in numbers]


TRAIN = dataset(range(20, 26))
DEV = dataset(range(9))


def variant(program: ob.Module, k: int) -> ob.Module:
    for _, predictor in program.named_predictors():
        predictor.signature = predictor.signature.with_instructions(f"Variant {k}.")
    return program


def compiled_members(lm: ob.BaseLM, n: int = 3) -> list[ob.Module]:
    """``n`` compiled copies of ``Doubler`` (labeled demos, each its own seed and instructions)."""
    members = [LabeledFewShot(k=2, seed=k).compile(variant(Doubler(), k), trainset=TRAIN) for k in range(n)]
    for member in members:
        member.set_lm(lm)
    return members


def answers(program: ob.Module, examples: list[ob.Example]) -> list[dict[str, Any]]:
    return [dict(program(**ex.inputs())) for ex in examples]


# -- majority vote ---------------------------------------------------------------------------


def test_majority_vote_counts_normalised_values() -> None:
    votes = [P(answer="Rome"), P(answer="Paris."), P(answer="  paris "), P(answer="Rome"), P(answer="PARÍS")]
    assert majority_vote(votes) == P(answer="Paris.")  # 3 Paris to 2 Rome; the earliest Paris as written
    assert vote_key("Paris.") == vote_key(" paris") == vote_key("PARÍS")
    assert vote_key(2) == vote_key(2.0) != vote_key("2")
    assert vote_key("") is None and vote_key(None) is None and vote_key("...") is None


def test_majority_vote_ties_go_to_the_earliest_member() -> None:
    assert majority_vote([P(answer="b"), P(answer="a"), P(answer="a"), P(answer="b")]) == P(answer="b")
    assert majority_vote([P(answer="a"), P(answer="b"), P(answer="b"), P(answer="a")]) == P(answer="a")
    assert majority_vote([P(answer="x"), P(answer="y"), P(answer="z")]) == P(answer="x")  # all different: the first
    assert majority_vote([P(answer="only")]) == P(answer="only")


def test_majority_vote_keeps_the_winning_members_full_prediction() -> None:
    sampled = P.from_completions([{"reasoning": "r2", "answer": "7"}, {"reasoning": "r2b", "answer": "8"}])
    votes = [P(reasoning="r0", answer="6"), sampled, P(reasoning="r1", answer="7")]
    result = majority_vote(votes)
    assert dict(result) == {"reasoning": "r2", "answer": "7"}  # reasoning is not voted on; it follows the winner
    assert result.completions == sampled.completions
    assert result is not sampled  # a copy: changing the result leaves the member's prediction alone
    result["answer"] = "changed"
    assert sampled.answer == "7"


def test_majority_vote_is_per_output_field() -> None:
    votes = [P(city="Rome", country="Italy"), P(city="Paris", country="France"), P(city="Paris", country="Italy"),
             P(city="Lyon", country="France")]  # fmt: skip
    # city: Paris (2); country: a tie Italy/France, to Italy (seen first). Member 2 agrees with both.
    assert majority_vote(votes) == P(city="Paris", country="Italy")
    # No member agrees with every winner: the one agreeing most is kept, the field it lost is replaced.
    votes = [P(a="1", b="x", note="m0"), P(a="2", b="y", note="m1"), P(a="2", b="z", note="m2"), P(a="3", b="y", note="m3")]
    result = majority_vote(votes)
    assert (result.a, result.b) == ("2", "y")
    assert result.note == "m1"  # member 1 holds both winners


def test_majority_vote_abstentions_and_plain_values() -> None:
    # A missing or empty field abstains; the others still decide.
    assert majority_vote([P(answer=""), P(other="q"), P(answer="yes"), P(answer="no"), P(answer="Yes")]).answer == "yes"
    assert majority_vote(["b", "a", "A"]) == "a"  # programs returning plain values are compared whole
    assert majority_vote([3, 4, 4.0]) == 4


# -- the ensemble program and optimizer ------------------------------------------------------


def test_ensemble_beats_its_members_under_threaded_evaluate() -> None:
    lm = variant_lm()
    members = compiled_members(lm)
    evaluate = ob.Evaluate(devset=DEV, metric=ob.metrics.exact_match, num_threads=4, display_progress=False, mode="threads")
    member_scores = [evaluate(m).score for m in members]
    assert member_scores == pytest.approx([2 / 3] * 3)

    ensemble = Ensemble().compile(members)
    result = evaluate(ensemble)
    assert result.mode == "threads"
    assert result.score == 1.0 and result.errors == 0
    assert result.usage.calls == 3 * len(DEV)  # every member answered every example
    assert ob.Evaluate(devset=DEV, metric="exact_match", num_threads=4, display_progress=False, mode="async")(ensemble).score == 1.0

    # The winning member's reasoning comes along with the answer.
    prediction = ensemble(question="double 3")  # member 0 is wrong on multiples of 3
    assert prediction.answer == "6" and prediction.reasoning == "variant 1 doubled 3"


def test_ensemble_compile_copies_members_and_records_where_they_came_from() -> None:
    lm = variant_lm()
    members = compiled_members(lm)
    ensemble = Ensemble(size=2, seed=4).compile(members)
    assert isinstance(ensemble, EnsembleProgram)
    assert [name for name, _ in ensemble.named_predictors()] == ["members.0.step", "members.1.step", "members.2.step"]
    assert all(copy is not original for copy, original in zip(ensemble.members, members))
    assert ensemble.members[0].step.lm is lm  # LMs are shared, not copied
    ensemble.members[0].step.demos = []
    assert len(members[0].step.demos) == 2

    info = ensemble.compile_info
    assert info["optimizer"] == "Ensemble"
    assert info["settings"] == {"reducer": "majority_vote", "reducer_saveable": True, "size": 2, "seed": 4}
    assert [m["optimizer"] for m in info["members"]] == ["LabeledFewShot"] * 3
    assert [m["seed"] for m in info["members"]] == [0, 1, 2]
    assert info["members"][0]["class"] == "Doubler" and "candidates" not in info["members"][0]
    assert info["usage"]["calls"] == 0
    json.dumps(info)  # JSON-ready

    # DSPy's spelling works too, and the data is fingerprinted when given.
    dspy_style = Ensemble(reduce_fn=majority_vote, size=3).compile(members, trainset=TRAIN)
    assert dspy_style.reducer_name == "majority_vote"
    assert dspy_style.compile_info["data"]["train_size"] == len(TRAIN)


def test_size_picks_members_from_the_seed_and_the_inputs() -> None:
    lm = variant_lm()
    ensemble = EnsembleProgram(compiled_members(lm, 5), size=2, seed=1)
    picks = {ex.question: ensemble.chosen(ex.inputs()) for ex in DEV}
    assert all(len(p) == 2 and p == sorted(p) for p in picks.values())
    assert len({tuple(p) for p in picks.values()}) > 1  # different inputs, different members
    assert picks == {ex.question: EnsembleProgram(compiled_members(lm, 5), size=2, seed=1).chosen(ex.inputs()) for ex in DEV}
    assert picks != {ex.question: EnsembleProgram(compiled_members(lm, 5), size=2, seed=2).chosen(ex.inputs()) for ex in DEV}

    before = len(lm.calls)
    ensemble(question="double 4")
    assert len(lm.calls) - before == 2  # only the chosen members ran
    seen = {m["content"].split("Task:\n")[1] for call in lm.calls[before:] for m in call if m["role"] == "system"}
    assert seen == {f"Variant {i}." for i in picks["double 4"]}


def test_a_failing_member_is_left_out_but_bad_calls_still_raise() -> None:
    def respond(inputs: dict[str, str]) -> dict[str, Any]:
        return {"answer": "42"}

    good = ob.Predict("question -> answer", lm=FieldScriptedLM(respond))
    broken = ob.Predict("question -> answer", lm=ScriptedLM(["no markers here"], cycle=True))
    ensemble = EnsembleProgram([broken, good.deepcopy(), broken.deepcopy()])
    assert ensemble(question="q").answer == "42"  # the unparsable members do not vote

    all_broken = EnsembleProgram([broken, broken.deepcopy()])
    with pytest.raises(ob.ParseError):
        all_broken(question="q")
    with pytest.raises(ob.InputError):  # the caller's mistake is not a member failure
        ensemble(query="q")
    with pytest.raises(ob.BudgetExceeded), ob.spending(ob.Budget(max_lm_calls=1)):
        EnsembleProgram([good.deepcopy(), good.deepcopy()])(question="q")


def test_async_call_matches_the_sync_call() -> None:
    ensemble = Ensemble().compile(compiled_members(variant_lm()))
    for ex in DEV[:4]:
        assert dict(asyncio.run(ensemble.acall(**ex.inputs()))) == dict(ensemble(**ex.inputs()))


def test_bad_ensembles_are_refused() -> None:
    one = Doubler()
    with pytest.raises(ob.ConfigurationError, match="non-empty list"):
        EnsembleProgram([])
    with pytest.raises(ob.ConfigurationError, match="same object"):
        EnsembleProgram([one, one])
    with pytest.raises(ob.ConfigurationError, match="size"):
        EnsembleProgram([one, Doubler()], size=3)
    with pytest.raises(ob.ConfigurationError, match="unknown reducer 'mean'"):
        EnsembleProgram([one], reducer="mean")
    with pytest.raises(ob.ConfigurationError, match="list of programs"):
        Ensemble().compile(one)  # type: ignore[arg-type]
    with pytest.raises(ob.ConfigurationError, match="not both"):
        Ensemble(lambda p: p[0], reduce_fn=majority_vote)


# -- saving and loading ----------------------------------------------------------------------


def test_save_and_load_round_trip_in_both_forms(tmp_path: Path) -> None:
    lm = variant_lm()
    ensemble = Ensemble(size=2, seed=7).compile(compiled_members(lm))
    expected = answers(ensemble, DEV)
    folder = ensemble.save(tmp_path / "vote.oobleck")

    document = json.loads((folder / "program.json").read_text())
    assert document["program"]["class"] == "EnsembleProgram"
    assert document["program"]["ensemble"] == {"reducer": "majority_vote", "members": 3, "size": 2, "seed": 7,
                                               "member_classes": ["Doubler"] * 3}  # fmt: skip
    assert sorted(document["program"]["predictors"]) == ["members.0.step", "members.1.step", "members.2.step"]
    assert document["provenance"]["optimizer"] == "Ensemble"

    into_ensemble = ob.load(folder, program=EnsembleProgram([Doubler() for _ in range(3)]), lm=lm)
    from_member = ob.load(folder, program=Doubler(), lm=lm)
    for loaded in (into_ensemble, from_member):
        assert isinstance(loaded, EnsembleProgram)
        assert (loaded.reducer, loaded.size, loaded.seed) == ("majority_vote", 2, 7)
        assert [m.step.signature.instructions for m in loaded.members] == ["Variant 0.", "Variant 1.", "Variant 2."]
        assert answers(loaded, DEV) == expected
        assert loaded.compile_info["members"][1]["seed"] == 1
    assert len({id(m) for m in from_member.members}) == 3  # the passed program was copied once per member


def test_an_ensemble_of_predictors_loads_without_the_users_code(tmp_path: Path) -> None:
    lm = variant_lm()
    members = [variant(ob.ChainOfThought("question -> answer"), k) for k in range(3)]
    for member in members:
        member.lm = lm
    ensemble = Ensemble().compile(members)
    assert [name for name, _ in ensemble.named_predictors()] == ["members.0", "members.1", "members.2"]
    expected = answers(ensemble, DEV)
    loaded = ob.load(ensemble.save(tmp_path / "cot.oobleck"), lm=lm)
    assert isinstance(loaded, EnsembleProgram)
    assert [type(m) for m in loaded.members] == [ob.ChainOfThought] * 3
    assert answers(loaded, DEV) == expected
    assert answers(loaded, DEV) == [{"reasoning": r["reasoning"], "answer": str(2 * n)} for n, r in zip(range(9), expected)]

    # Members that are the user's own modules with one predictor each load the same way.
    wrapped = Ensemble().compile(compiled_members(lm))
    again = ob.load(wrapped.save(tmp_path / "wrapped.oobleck"), lm=lm)
    assert answers(again, DEV) == answers(wrapped, DEV)


def test_a_callable_reducer_refuses_to_save(tmp_path: Path) -> None:
    def pick_first(predictions: list[ob.Prediction]) -> ob.Prediction:
        return predictions[0]

    ensemble = Ensemble(pick_first).compile(compiled_members(variant_lm()))
    assert ensemble(question="double 3").answer == "wrong 0"  # the callable is used
    assert ensemble.compile_info["settings"]["reducer"] == "pick_first"
    with pytest.raises(ob.ArtifactError, match=r"reducer 'pick_first' is a function.*named reducer \(majority_vote\)"):
        ensemble.save(tmp_path / "first.oobleck")
    assert not (tmp_path / "first.oobleck").exists()
    # Swapping in a named reducer makes it saveable.
    ensemble.reducer = "majority_vote"
    assert ensemble(question="double 3").answer == "6"
    assert (ensemble.save(tmp_path / "first.oobleck") / "program.json").is_file()


def test_loading_refuses_what_does_not_fit(tmp_path: Path) -> None:
    lm = variant_lm()
    folder = Ensemble().compile(compiled_members(lm)).save(tmp_path / "three.oobleck")
    with pytest.raises(ob.ArtifactError, match="ensemble of 3 members but the EnsembleProgram passed has 2"):
        ob.load(folder, program=EnsembleProgram([Doubler(), Doubler()]))
    with pytest.raises(ob.ArtifactError, match="does not fit EnsembleProgram"):
        ob.load(folder, program=ob.Predict("question -> answer"))
    single = compiled_members(lm, 1)[0].save(tmp_path / "single.oobleck")
    with pytest.raises(ob.ArtifactError, match="holds a single Doubler, not an ensemble"):
        ob.load(single, program=EnsembleProgram([Doubler()]))

    class TwoSteps(ob.Module):
        def __init__(self) -> None:
            self.first = ob.Predict("question -> answer")
            self.second = ob.Predict("question -> answer")

    two = Ensemble().compile([TwoSteps(), TwoSteps()]).save(tmp_path / "two.oobleck")
    with pytest.raises(ob.ArtifactError, match="pass one member program"):
        ob.load(two)
    assert isinstance(ob.load(two, program=TwoSteps()), EnsembleProgram)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["program"]["ensemble"].update(reducer="pick_first"), "not a named reducer"),
        (lambda d: d["program"]["ensemble"].update(members=0), "positive integer"),
        (lambda d: d["program"]["ensemble"].update(size=4), "from 1 to 3"),
        (lambda d: d["program"]["ensemble"].update(seed="7"), "seed must be an integer"),
        (lambda d: d["program"]["ensemble"].update(members=4), "'member_classes' must list 4"),
        (lambda d: d["program"]["ensemble"].update(members=4, member_classes=["Doubler"] * 4), r"members \[3\] have no saved predictors"),
        (lambda d: d["program"]["predictors"].update({"members.3.step": d["program"]["predictors"]["members.0.step"]}), "outside"),
        (lambda d: d["program"]["predictors"].update({"members.01.step": d["program"]["predictors"]["members.0.step"]}), "outside"),
        (lambda d: d["program"].update(ensemble=[]), "must be an object"),
    ],
)
def test_a_damaged_ensemble_section_is_an_artifact_error(tmp_path: Path, change: Any, message: str) -> None:
    folder = Ensemble().compile(compiled_members(variant_lm())).save(tmp_path / "vote.oobleck")
    document = json.loads((folder / "program.json").read_text())
    change(document)
    (folder / "program.json").write_text(json.dumps(document))
    with pytest.raises(ob.ArtifactError, match=message):
        ob.load(folder, program=Doubler())


def test_ensembles_that_cannot_be_saved_say_why(tmp_path: Path) -> None:
    inner = Ensemble().compile([Doubler(), Doubler()])
    with pytest.raises(ob.ArtifactError, match="member 0 is itself an ensemble"):
        EnsembleProgram([inner, Doubler()]).save(tmp_path / "nested.oobleck")
    shared = Doubler()
    twin = Doubler()
    twin.step = shared.step  # two members, one predictor object
    with pytest.raises(ob.ArtifactError, match="member 1 .* has no predictors of its own"):
        EnsembleProgram([shared, twin]).save(tmp_path / "shared.oobleck")
    assert not list(tmp_path.iterdir())
