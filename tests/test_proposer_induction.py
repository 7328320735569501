"""InstructionProposer's induction style: small example subsets, greedy readings, ranked by agreement."""

from __future__ import annotations

import re
from typing import Any

import pytest

import oobleck as ob
from oobleck.errors import ConfigurationError
from oobleck.optimizers.proposer import InstructionProposer
from oobleck.testing import ScriptedLM

WORDS = ["apple", "stone", "river", "house", "green", "light", "paper", "table", "water", "music", "dream", "tiger"]


def _trainset() -> list[ob.Example]:
    return [ob.Example(word=w, answer=w[0]).with_inputs("word") for w in WORDS]


def _examples_line(messages: list[dict[str, str]]) -> str:
    match = re.search(r"^examples: (.*)$", messages[-1]["content"], re.MULTILINE)
    assert match, messages
    return match.group(1)


class NoisyNamer:
    """Names the task right from short example lines, drifts to another task from long ones, garbles when sampled."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.temperatures: list[float] = []

    def __call__(self, messages: list[dict[str, str]], settings: dict[str, Any]) -> str:
        line = _examples_line(messages)
        self.lines.append(line)
        self.temperatures.append(float(settings.get("temperature") or 0.0))
        if settings.get("temperature"):
            return f" Wrtie teh {len(self.lines)} lettr."  # a unique garble per call
        pairs = line.split("; ")
        if len(pairs) >= 4:
            return " Write the word backwards."
        if "apple" in line:
            return f" Wrtie teh {len(self.lines)} lettr."
        return " Give the first letter of the word."


def _program(lm: ob.BaseLM) -> ob.Predict:
    return ob.Predict("word -> answer", lm=lm)


def test_induction_reads_small_subsets_greedily_and_keeps_what_subsets_agree_on() -> None:
    namer = NoisyNamer()
    lm = ScriptedLM(namer, adapter="compact")
    proposer = InstructionProposer(num_candidates=4, seed=3)
    out = proposer.propose(_program(lm), _trainset())["self"]
    assert len(namer.lines) == 9 == proposer.planned_calls("compact")  # three readings per wanted candidate
    assert all(2 <= len(line.split("; ")) <= 4 for line in namer.lines)  # the subset sizes the model was trained on
    assert len(set(namer.lines)) == len(namer.lines)  # each reading sees a different subset
    assert set(namer.temperatures) == {0.0}
    assert out[0] == _program(lm).signature.instructions  # the current instruction first
    assert out[1] == "Give the first letter of the word."  # the most agreed reading next
    assert not any("Wrtie" in text for text in out)  # one-off readings are noise, left out
    drifted = sum(len(line.split("; ")) == 4 for line in namer.lines)
    assert ("Write the word backwards." in out) == (drifted >= 2)  # a wrong reading that recurs stays a candidate


def test_induction_keeps_first_readings_when_none_repeat_and_honours_settings() -> None:
    namer = NoisyNamer()
    lm = ScriptedLM(namer, adapter="compact")
    proposer = InstructionProposer(num_candidates=3, induction_samples=5, temperature=0.7, seed=0)
    out = proposer.propose(_program(lm), _trainset())["self"]
    assert len(namer.lines) == 5 == proposer.planned_calls("compact")
    assert set(namer.temperatures) == {0.7}
    assert out[1:] == ["Wrtie teh 1 lettr.", "Wrtie teh 2 lettr."]  # all unique: the first ones read, in order


def test_style_follows_the_declared_adapter_and_bad_settings_are_refused() -> None:
    proposer = InstructionProposer(num_candidates=6)
    assert proposer.style_for("compact") == "induction" and proposer.style_for("chat") == "meta"
    assert proposer.planned_calls("compact") == 15 and proposer.planned_calls("chat") == pytest.approx(6.25)
    assert InstructionProposer(style="meta").style_for("compact") == "meta"
    with pytest.raises(ConfigurationError, match="induction_samples"):
        InstructionProposer(induction_samples=0)


def test_bayesian_dry_run_counts_induction_readings() -> None:
    lm = ScriptedLM(NoisyNamer(), adapter="compact")
    phases = {p.name: p.runs for p in ob.optimizers.Bayesian("exact_match", num_instructions=5).plan(_program(lm), 30, 100)}
    assert phases["instruction proposals"] == 12


@pytest.mark.slow
def test_demo_model_names_its_trained_wording_as_a_candidate() -> None:
    """The bundled model, proposing for itself on first_letter, puts a trained wording among the candidates."""
    from oobleck.tiny.tasks import TASKS, task_examples

    lm = ob.LM("hf/oobleck-tiny", cache=False)
    train = [ob.Example(**r).with_inputs("word") for r in task_examples("first_letter", 30, seed=0)]
    out = InstructionProposer(num_candidates=4, seed=0).propose(_program(lm), train)["self"]
    assert set(out[1:3]) & set(TASKS["first_letter"].precise), out
