"""The multi-hop example end to end (compile with BootstrapFewShot and Bayesian, compare, save, reload in a
fresh process with the same predictions), and the simulated LM's rules for what makes a prompt work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import oobleck as ob

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "examples" / "multihop")
_saved_path = list(sys.path)
sys.path.insert(0, EXAMPLE)
try:
    from program import AnswerQuestion, GenerateQuery
    from run import INSTRUCTIONS
    from sim_lm import STUDENT_ID, sim_lm
finally:  # the example's short module names (program, run, world) must not shadow anything else in the session
    sys.path[:] = _saved_path  # run.py puts the folder on sys.path again when imported
    for name in ("program", "run", "sim_lm", "world"):
        sys.modules.pop(name, None)

# The simulator errs on about 8% of inputs (by a hash); it errs on neither of this question's two prompts.
QUESTION = "In which city is the company that Ilsa Marren works for headquartered?"
NOTES = ["Ilsa Marren | Ilsa Marren is a pilot who works for Brel Labs. Ilsa Marren was born in Karsomvi and spends weekends chess.",
         "Brel Labs | Brel Labs is a mining company headquartered in Doruthen. It was founded by Kai Mos in 1950."]  # fmt: skip


def _predictor(signature: type[ob.Signature], instruction: str | None = None, demos: list[dict] | None = None) -> ob.Predict:
    predictor = ob.ChainOfThought(signature.with_instructions(instruction) if instruction else signature)
    predictor.set_lm(sim_lm())
    predictor.demos = demos or []
    return predictor


def test_the_simulated_student_follows_explicit_instructions_and_imitates_what_demos_show() -> None:
    assert sim_lm().model == STUDENT_ID and "simulated" in STUDENT_ID
    # Unprompted, the student searches with the whole question and answers in a sentence.
    assert _predictor(GenerateQuery)(context=NOTES[:1], question=QUESTION).query == QUESTION
    assert _predictor(AnswerQuestion)(context=NOTES, question=QUESTION).answer != "Doruthen"
    # An instruction that says what to do is followed; one that does not say it is not.
    told, vague = INSTRUCTIONS["generate_query.1"]
    assert _predictor(GenerateQuery, told)(context=NOTES[:1], question=QUESTION).query == "Brel Labs"
    assert _predictor(GenerateQuery, vague)(context=NOTES[:1], question=QUESTION).query == QUESTION
    assert _predictor(AnswerQuestion, INSTRUCTIONS["answer"][0])(context=NOTES, question=QUESTION).answer == "Doruthen"
    # Demos teach what they show: name queries teach name queries, whole-question queries do not.
    demo = {"context": [], "question": "Who founded the company that Ada Lim works for?", "reasoning": "r"}
    names = [{**demo, "query": "Ada Lim"}] * 2
    questions = [{**demo, "query": demo["question"]}] * 2
    assert _predictor(GenerateQuery, demos=names)(context=NOTES[:1], question=QUESTION).query == "Brel Labs"
    assert _predictor(GenerateQuery, told, demos=questions)(context=NOTES[:1], question=QUESTION).query == QUESTION
    short = [{"question": demo["question"], "answer": "Kai Mos"}] * 2
    assert _predictor(AnswerQuestion, demos=short)(context=NOTES, question=QUESTION).answer == "Doruthen"


@pytest.mark.slow
def test_multihop_example_compiles_with_two_optimizers_saves_and_reloads_in_a_fresh_process(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "multihop" / "run.py"), "all", "--out", str(tmp_path), "--trials", "16"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    before = results["uncompiled"]
    assert set(results["compiled"]) == {"bootstrap", "bayesian"}
    for name, compiled in results["compiled"].items():
        after = compiled["scores"]
        assert after["answer_em"] >= before["answer_em"] + 0.5 and after["all_gold_retrieved"] > before["all_gold_retrieved"] + 0.5, name
        assert compiled["fresh_process_same_predictions"] is True, name
        fresh = json.loads((tmp_path / f"predictions-{name}-fresh.json").read_text())
        assert fresh == json.loads((tmp_path / f"predictions-{name}.json").read_text()) and len(fresh) == results["test_questions"]
        manifest = json.loads((tmp_path / f"multihop-{name}.oobleck" / "program.json").read_text())
        assert manifest["program"]["retrievers"]["retrieve"]["retriever"]["kind"] == "bm25"
    assert results["compiled"]["bootstrap"]["demos"]["generate_query.1"] == 3
    bayesian = results["compiled"]["bayesian"]
    assert bayesian["optimizer"] == "Bayesian" and bayesian["compile_lm_calls"] <= 2000
    # The search chose the instruction that says what the second hop must search for (or demos that show it).
    assert bayesian["instructions"]["generate_query.1"] == INSTRUCTIONS["generate_query.1"][0] or bayesian["demos"]["generate_query.1"] > 0
