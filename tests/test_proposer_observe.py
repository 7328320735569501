"""InstructionProposer's data observations: the LM reads labeled batches once, and every proposal sees what it found."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

import oobleck as ob
from oobleck.errors import ConfigurationError
from oobleck.optimizers.proposer import InstructionProposer
from oobleck.testing import ScriptedLM


def _trainset(n: int = 25) -> list[ob.Example]:
    return [ob.Example(word=f"w{i}", label="long" if i % 2 else "short").with_inputs("word") for i in range(n)]


def _fields(messages: list[dict[str, str]]) -> dict[str, str]:
    parts = re.split(r"\[\[ ## (\w+) ## \]\]\n", messages[-1]["content"].split("\n\nReply with ")[0])
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


class Observer:
    """A chat-format double: numbered observations that keep the earlier ones; proposals echo their data summary."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.observations: list[dict[str, str]] = []
        self.proposals: list[dict[str, str]] = []
        self.fail_at = fail_at

    def __call__(self, messages: list[dict[str, str]], settings: dict[str, Any]) -> str:
        fields = _fields(messages)
        if "`observations`" in messages[0]["content"]:
            self.observations.append(fields)
            if self.fail_at is not None and len(self.observations) >= self.fail_at:  # the adapter's retries fail too
                return "no sections at all"
            earlier = "" if fields["earlier_observations"] == "none yet" else fields["earlier_observations"] + " "
            return f"[[ ## observations ## ]]\n{earlier}note {len(self.observations)}.\n\n[[ ## completed ## ]]"
        self.proposals.append(fields)
        return f"[[ ## instruction ## ]]\nLabel it, version {len(self.proposals)}.\n\n[[ ## completed ## ]]"


def test_observations_chain_over_batches_and_reach_every_proposal() -> None:
    script = Observer()
    lm = ScriptedLM(script, adapter="chat")
    proposer = InstructionProposer(num_candidates=3, seed=1)
    out = proposer.propose(ob.Predict("word -> label", lm=lm), _trainset())
    assert len(script.observations) == 3 == proposer.planned_observation_calls("chat", 25)  # ceil(25 / 10) batches, at most 3
    assert [o["earlier_observations"] for o in script.observations] == ["none yet", "note 1.", "note 1. note 2."]
    batches = [re.findall(r"word='(w\d+)'", o["examples"]) for o in script.observations]
    assert [len(b) for b in batches] == [10, 10, 5] and len({w for b in batches for w in b}) == 25  # every example read once
    assert "label='long'" in script.observations[0]["examples"]  # the labels are shown, not only the inputs
    assert script.proposals and all(p["data_summary"].endswith("observations: note 1. note 2. note 3.") for p in script.proposals)
    assert len(out["self"]) == 3


def test_observations_are_read_once_for_a_program_and_can_be_passed_in() -> None:
    script = Observer()
    lm = ScriptedLM(script, adapter="chat")

    class Two(ob.Module):
        def __init__(self) -> None:
            self.first = ob.Predict("word -> label", lm=lm)
            self.second = ob.Predict("word -> label", lm=lm)

        def forward(self, word: str) -> Any:
            return self.second(word=self.first(word=word).label)

    InstructionProposer(num_candidates=2).propose(Two(), _trainset(12))
    assert len(script.observations) == 2  # two batches of 12 examples, shared by both predictors
    script.observations.clear()
    InstructionProposer(num_candidates=2).propose(Two(), _trainset(12), observations="given")
    assert script.observations == [] and all(p["data_summary"].endswith("observations: given") for p in script.proposals[-2:])


def test_no_observations_when_turned_off_or_for_the_induction_style() -> None:
    script = Observer()
    lm = ScriptedLM(script, adapter="chat")
    proposer = InstructionProposer(num_candidates=2, observation_batches=0)
    proposer.propose(ob.Predict("word -> label", lm=lm), _trainset())
    assert script.observations == [] and proposer.planned_observation_calls("chat", 25) == 0
    assert "observations:" not in script.proposals[0]["data_summary"]
    assert InstructionProposer().planned_observation_calls("compact", 25) == 0
    with pytest.raises(ConfigurationError, match="observation_batches"):
        InstructionProposer(observation_batches=-1)


def test_a_failed_observation_keeps_the_earlier_ones_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    script = Observer(fail_at=2)
    lm = ScriptedLM(script, adapter="chat")
    with caplog.at_level(logging.WARNING, logger="oobleck.optimizers.proposer"):
        InstructionProposer(num_candidates=2).propose(ob.Predict("word -> label", lm=lm), _trainset())
    asked = {o["examples"] for o in script.observations if "examples" in o}  # the adapter's JSON retry reads differently
    assert len(asked) == 2  # the third batch is not asked after a failure
    assert script.proposals[0]["data_summary"].endswith("observations: note 1.")
    assert "data observation 1 failed" in caplog.text


def test_a_program_is_observed_by_its_first_predictor_whose_lm_gets_meta_proposals() -> None:
    script = Observer()

    class Two(ob.Module):
        def __init__(self) -> None:
            self.first = ob.Predict("word -> label", lm=ScriptedLM(["unused"], adapter="compact"))
            self.second = ob.Predict("word -> label", lm=ScriptedLM(script, adapter="chat"))

        def forward(self, word: str) -> Any:
            return self.second(word=self.first(word=word).label)

    program = Two()
    assert InstructionProposer().observe_program(program, _trainset(12)) == "note 1. note 2."
    assert program.first.lm.calls == []  # a compact-format model cannot write observations and is not asked
