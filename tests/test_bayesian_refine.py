"""Bayesian's refinements: instructions written from the best-ranked ones and their scores, fully scored beside the winner."""

from __future__ import annotations

import re

import pytest
from support import doubling_dataset, scored_history

import oobleck as ob
from oobleck.optimizers.estimate import estimate_compile

DATA = doubling_dataset(range(60))
TRAIN, DEV = DATA[:30], DATA[30:]
# Each setup proposal finds one half of the task; only an instruction with both halves is right on every question.
HALVES = ("Return twice the number.", "Write the answer in digits.", "Be helpful.")


def _reply(messages, settings):
    system, last = str(messages[0]["content"]), str(messages[-1]["content"])
    if "[[ ## earlier_observations ## ]]" in last:
        return "[[ ## observations ## ]]\nThe answer is a number.\n\n[[ ## completed ## ]]"
    if "[[ ## program_step ## ]]" in last:
        scored = [text for _, text in scored_history(last)]
        if scored:  # shown scored candidates, this writer keeps what the best two say
            return f"[[ ## instruction ## ]]\n{' '.join(scored[-2:])}\n\n[[ ## completed ## ]]"
        tip = re.search(r"\[\[ ## tip ## \]\]\n(.*?)\n", last).group(1)
        return f"[[ ## instruction ## ]]\n{HALVES[len(tip) % len(HALVES)]}\n\n[[ ## completed ## ]]"
    n = int(re.findall(r"\[\[ ## question ## \]\]\n(.*)", last)[-1].split()[-1])
    twice, digits = "twice" in system, "digits" in system
    right = (twice and digits) or (twice and n % 2 == 0) or (digits and n % 3 == 0)
    return f"[[ ## answer ## ]]\n{2 * n if right else n + 1}\n\n[[ ## completed ## ]]"


def _bayesian(**kwargs):
    settings = {"num_trials": 10, "minibatch_size": 10, "num_demo_sets": 2, "num_final": 1, "num_threads": 2, "seed": 3, **kwargs}
    return ob.optimizers.Bayesian("exact_match", **settings)


def _program(lm):
    return ob.Predict("question -> answer", lm=lm)


def _refinement_prompts(lm):
    return [m[-1]["content"] for m in lm.calls if "[[ ## program_step ## ]]" in m[-1]["content"] and "none yet" not in m[-1]["content"]]


def test_a_refinement_that_combines_the_best_instructions_wins_on_the_full_dev_set():
    lm = ob.testing.ScriptedLM(_reply, adapter="chat")
    compiled = _bayesian().compile(_program(lm), trainset=TRAIN, valset=DEV)
    info = compiled.compile_info
    instruction = compiled.signature.instructions
    assert "twice" in instruction and "digits" in instruction
    assert info["scores"]["chosen"].startswith("refinement 0 of ") and info["scores"]["best"] == 1.0
    prompts = _refinement_prompts(lm)
    assert len(prompts) == 1  # one refinement per predictor, asked once
    scores = [score for score, _ in scored_history(prompts[0])]
    assert 2 <= len(scores) <= 4 and scores == sorted(scores)  # the best-ranked with their scores, the best last
    refined = [c for c in info["candidates"] if c["source"].startswith("refinement")]
    assert len(refined) == 1 and refined[0]["score"] == 1.0 and refined[0]["instructions"]["self"] == instruction
    assert info["scores"]["full_scores"][info["scores"]["chosen"]] == 1.0


def test_no_refinement_when_turned_off_and_the_plan_counts_one_dev_pass_per_refinement():
    lm = ob.testing.ScriptedLM(_reply, adapter="chat")
    compiled = _bayesian(num_refinements=0).compile(_program(lm), trainset=TRAIN, valset=DEV)
    assert not _refinement_prompts(lm)
    assert not any(c["source"].startswith("refinement") for c in compiled.compile_info["candidates"])
    assert "digits" not in compiled.signature.instructions or "twice" not in compiled.signature.instructions
    program = _program(ob.testing.ScriptedLM(_reply, adapter="chat"))
    off, on = (estimate_compile(_bayesian(num_refinements=k), program, TRAIN, DEV) for k in (0, 2))
    assert on.calls - off.calls == pytest.approx(2 * len(DEV) + 2.5, abs=1)  # two dev passes and 1.25 calls per asked refinement


def test_a_resumed_study_reuses_the_stored_refinement(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first_lm = ob.testing.ScriptedLM(_reply, adapter="chat")
    first = _bayesian(storage=storage, study="refine").compile(_program(first_lm), trainset=TRAIN, valset=DEV)
    again_lm = ob.testing.ScriptedLM(_reply, adapter="chat")
    again = _bayesian(storage=storage, study="refine").compile(_program(again_lm), trainset=TRAIN, valset=DEV)
    assert again.signature.instructions == first.signature.instructions
    assert again.compile_info["scores"]["chosen"] == first.compile_info["scores"]["chosen"]
    assert not any("[[ ## question ## ]]" in m[-1]["content"] for m in again_lm.calls)  # trials and full scores come from the study


def test_an_induction_style_proposer_makes_no_refinements():
    optimizer = _bayesian(proposer=ob.optimizers.InstructionProposer(style="induction", num_candidates=2), num_refinements=3)
    program = _program(ob.testing.ScriptedLM(_reply, adapter="chat"))
    plan = [p.name for p in optimizer.plan(program, len(TRAIN), len(DEV))]
    assert "refined instructions" not in plan
    with pytest.raises(ob.errors.ConfigurationError, match="num_refinements"):
        _bayesian(num_refinements=-1)

