"""Bayesian search: finds the instruction, honours budgets, estimates its spend, resumes, distributes, reproduces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from support import InstructionSensitiveLM, doubling_dataset, instruction_sensitive_reply

import oobleck as ob
from oobleck.lm.base import RetryPolicy
from oobleck.lm.cache import ResponseCache
from oobleck.optimizers.estimate import estimate_compile
from oobleck.testing.server import OpenAITestServer

DATA = doubling_dataset(range(60))
TRAIN, DEV = DATA[:30], DATA[30:]
WORKER = Path(__file__).parent / "bayes_worker.py"


def _bayesian(**kwargs):
    settings = {"num_trials": 10, "minibatch_size": 10, "num_threads": 2, "seed": 3, **kwargs}
    return ob.optimizers.Bayesian("exact_match", **settings)


def _program(lm):
    return ob.Predict("question -> answer", lm=lm)


def _manifest(folder: Path) -> dict:
    document = json.loads((folder / "program.json").read_text())
    document.pop("created_at")  # the one field that holds a timestamp
    return document


def test_finds_the_instruction_and_records_the_search():
    lm = InstructionSensitiveLM()
    compiled = _bayesian().compile(_program(lm), trainset=TRAIN, valset=DEV)
    assert "twice" in compiled.signature.instructions
    info = compiled.compile_info
    assert info["scores"]["baseline"] == pytest.approx(0.5)
    assert info["scores"]["best"] == pytest.approx(1.0)
    assert len(info["trials"]) == 10 and {t["index"] for t in info["trials"]} == set(range(10))
    assert info["spend"]["calls"] == lm.calls and info["stopped"] is None


def test_budget_cap_is_honoured_to_the_call_and_keeps_the_best_so_far():
    unlimited = InstructionSensitiveLM()
    _bayesian().compile(_program(unlimited), trainset=TRAIN, valset=DEV)
    cap = unlimited.calls // 2
    lm = InstructionSensitiveLM()
    compiled = _bayesian(budget=ob.Budget(max_lm_calls=cap)).compile(_program(lm), trainset=TRAIN, valset=DEV)
    assert lm.calls <= cap
    info = compiled.compile_info
    assert info["spend"]["calls"] == lm.calls
    assert "max_lm_calls" in info["stopped"]
    assert 0 < len(info["trials"]) < 10
    assert info["scores"]["best"] is not None  # the best of what was scored, not nothing


def test_dry_run_estimate_is_within_20_percent_of_the_real_spend():
    optimizer = _bayesian(num_trials=12)
    estimate = estimate_compile(optimizer, _program(InstructionSensitiveLM()), TRAIN, DEV)
    lm = InstructionSensitiveLM()
    spent = optimizer.compile(_program(lm), trainset=TRAIN, valset=DEV).compile_info["spend"]
    assert lm.calls == spent["calls"]
    assert abs(estimate.calls - spent["calls"]) <= 0.2 * spent["calls"], (estimate.to_dict(), spent)


def test_same_seed_gives_a_byte_identical_artifact(tmp_path):
    for name in ("a", "b"):
        lm = InstructionSensitiveLM()
        _bayesian().compile(_program(lm), trainset=TRAIN, valset=DEV).save(tmp_path / name)
    assert _manifest(tmp_path / "a") == _manifest(tmp_path / "b")
    first, second = ((tmp_path / n / "program.json").read_text().splitlines() for n in ("a", "b"))
    assert all('"created_at"' in a for a, b in zip(first, second, strict=True) if a != b)


def test_a_finished_study_replays_from_storage_without_lm_calls(tmp_path):
    storage = tmp_path / "study.db"
    cache = ResponseCache(tmp_path / "cache.sqlite")
    first_lm = InstructionSensitiveLM(cache=cache)
    _bayesian(storage=storage).compile(_program(first_lm), trainset=TRAIN, valset=DEV).save(tmp_path / "first")
    again_lm = InstructionSensitiveLM(cache=cache)
    again = _bayesian(storage=storage).compile(_program(again_lm), trainset=TRAIN, valset=DEV)
    again.save(tmp_path / "again")
    assert again_lm.calls == 0  # setup from the cache, trials and full scores from the study
    assert _manifest(tmp_path / "first") == _manifest(tmp_path / "again")


def test_a_study_of_another_compile_is_refused(tmp_path):
    storage = tmp_path / "study.db"
    _bayesian(storage=storage, study="shared-name").compile(_program(InstructionSensitiveLM()), trainset=TRAIN, valset=DEV)
    with pytest.raises(ob.ConfigurationError, match="different compile"):
        _bayesian(storage=storage, study="shared-name", num_trials=11).compile(_program(InstructionSensitiveLM()), trainset=TRAIN, valset=DEV)


def _finished(storage: str, study: str | None = None) -> list:
    summaries = optuna.get_all_study_summaries(storage)
    if not summaries:
        return []
    name = study or summaries[0].study_name
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return optuna.load_study(study_name=name, storage=storage).get_trials(states=states)


@pytest.mark.slow
def test_kill_9_then_the_same_command_resumes_to_the_same_artifact(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    command = [sys.executable, str(WORKER), str(tmp_path / "study.db"), str(tmp_path / "resumed"), "--cache", str(tmp_path), "--delay", "0.01"]
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
        try:
            if len(_finished(url)) >= 3:
                break
        except Exception:  # noqa: BLE001, S112 - the study is not created yet
            continue
    assert process.poll() is None, "the compile finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(_finished(url))
    assert 3 <= done_before < 10
    assert subprocess.run(command, timeout=300, check=False).returncode == 0
    clean = [sys.executable, str(WORKER), str(tmp_path / "clean.db"), str(tmp_path / "clean"), "--cache", str(tmp_path / "fresh")]
    (tmp_path / "fresh").mkdir()
    assert subprocess.run(clean, timeout=300, check=False).returncode == 0
    assert _manifest(tmp_path / "resumed") == _manifest(tmp_path / "clean")
    assert len(_finished(url)) == 10


def _two_workers(storage: str, tmp_path: Path) -> None:
    command = [sys.executable, str(WORKER), storage, "", "--cache", str(tmp_path), "--study", "shared", "--shared", "--trials", "12"]
    workers = [subprocess.Popen([*command[:3], str(tmp_path / f"out{i}"), *command[4:]]) for i in range(2)]
    for worker in workers:
        assert worker.wait(timeout=300) == 0
    study = optuna.load_study(study_name="shared", storage=storage)
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    indices = sorted(t.user_attrs["index"] for t in finished)
    assert indices == list(range(12))  # every step once: none duplicated, none lost
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert _manifest(tmp_path / "out0")["program"] == _manifest(tmp_path / "out1")["program"]


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(tmp_path):
    _two_workers(f"sqlite:///{tmp_path / 'shared.db'}", tmp_path)


@pytest.mark.slow
def test_two_workers_share_one_postgresql_study(postgres_server, tmp_path):
    _two_workers(postgres_server.create_database("bayes_workers"), tmp_path)


@pytest.mark.integration
def test_server_faults_leave_the_result_unchanged(tmp_path):
    """20% of requests get a 429, a 500 or a truncated body; retries make the compile come out the same."""
    results = {}
    for name, rate in (("clean", 0.0), ("faulty", 0.2)):
        with OpenAITestServer(responder=instruction_sensitive_reply, fault_rate=rate, seed=5, models=["sim"]) as server:
            lm = ob.LM("openai/sim", base_url=server.base_url + "/v1", api_key="test", cache=False, retry=RetryPolicy(retries=10, base_delay=0.001, max_delay=0.01))
            compiled = _bayesian().compile(_program(lm), trainset=TRAIN, valset=DEV)
            results[name] = (compiled, dict(server.fault_counts), server.requests)
    clean, faulty = results["clean"][0], results["faulty"][0]
    faults, requests = results["faulty"][1], results["faulty"][2]
    assert sum(faults.values()) > 0.1 * requests and {"429", "500", "malformed"} <= {str(k) for k in faults}
    assert faulty.signature.instructions == clean.signature.instructions and faulty.demos == clean.demos
    assert faulty.compile_info["trials"] == clean.compile_info["trials"]
    assert faulty.compile_info["spend"] == clean.compile_info["spend"]  # retries are not extra logical calls


# -- the baseline as trial 0, evidence-weighted ranking, adaptive bootstrap -----------------------


def test_the_program_as_given_is_trial_0_on_a_minibatch_not_a_full_dev_pass():
    optimizer = _bayesian(num_final=1)
    compiled = optimizer.compile(_program(InstructionSensitiveLM()), trainset=TRAIN, valset=DEV)
    info = compiled.compile_info
    assert "twice" in compiled.signature.instructions
    assert info["trials"][0]["index"] == 0 and set(info["trials"][0]["params"].values()) == {0}
    batch = [DEV[i] for i in optimizer._minibatch(len(DEV), 0)]
    evens = sum(int(ex.question.split()[-1]) % 2 == 0 for ex in batch) / len(batch)
    assert info["scores"]["baseline"] == pytest.approx(evens) and info["scores"]["baseline_examples"] == len(batch)
    full_passes = [v["label"] for k, v in optimizer.session.study.user_attrs.items() if k.startswith("oobleck.full.")]
    # the winner and its one refinement only: the baseline beat nothing it was compared on
    assert len(full_passes) == 2 and full_passes[1].startswith("refinement 0 of ") and "self: i0 d0" not in full_passes


def _crafted_study_choice(baseline_right, budget=None):
    """``_choose`` on a study where the program as given scored 9/10 on dev[0:10] and "other" 10/10 on dev[10:20].

    "other" is wrong on exactly dev[0:10], so it loses to the baseline on the examples both saw.
    """
    from oobleck.optimizers.session import CompileSession, candidate_key

    dev = doubling_dataset(range(100, 140))

    def reply(messages, settings):
        n = int(messages[-1]["content"].split("double ")[-1].split()[0])
        right = n >= 110 if "other rule" in messages[0]["content"] else baseline_right(n)
        return f"[[ ## answer ## ]]\n{2 * n if right else -1}\n\n[[ ## completed ## ]]"

    lm = ob.testing.ScriptedLM(reply, adapter="chat")
    setup = {"instructions": {"self": ["Answer the question.", "Use the other rule."]}, "demo_sets": [{"source": "zero-shot", "demos": {}}]}
    distributions = {"self.instruction": optuna.distributions.CategoricalDistribution([0, 1]),
                     "self.demos": optuna.distributions.CategoricalDistribution([0])}  # fmt: skip
    optimizer = _bayesian(num_final=1)
    session = CompileSession(budget=budget)
    with session:
        for index, (instruction, rows) in enumerate([(0, [[i, float(i > 0)] for i in range(10)]), (1, [[i, 1.0] for i in range(10, 20)])]):
            params = {"self.instruction": instruction, "self.demos": 0}
            session.study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=sum(v for _, v in rows) / 10,
                                                              user_attrs={"index": index, "examples": rows}))  # fmt: skip
        chosen, full_scores = optimizer._choose(session, _program(lm), setup, ["self"], dev)
    baseline_key = candidate_key({"self.instruction": 0, "self.demos": 0})
    return chosen, full_scores, session, f"oobleck.full.{baseline_key}" in session.study.user_attrs


def test_a_winner_that_loses_to_the_baseline_where_both_were_scored_brings_a_full_baseline_score():
    chosen, full_scores, _, baseline_scored = _crafted_study_choice(lambda n: True)  # the baseline is right everywhere
    assert baseline_scored and chosen.source == "self: i0 d0"
    assert full_scores == {"self: i1 d0": 0.75, "self: i0 d0": 1.0}


def test_a_winner_that_loses_on_the_baseline_minibatch_but_wins_on_the_whole_dev_set_is_kept():
    chosen, full_scores, _, baseline_scored = _crafted_study_choice(lambda n: n < 110)  # right only where it was scored
    assert baseline_scored and chosen.source == "self: i1 d0" and chosen.score == 0.75
    assert full_scores["self: i0 d0"] == 0.25


def test_with_no_budget_left_to_settle_it_the_baseline_is_kept():
    chosen, _, session, baseline_scored = _crafted_study_choice(lambda n: True, budget=ob.Budget(max_lm_calls=40))
    assert not baseline_scored and chosen.source == "self: i0 d0" and chosen.score == pytest.approx(0.9)
    assert "max_lm_calls" in session.stopped


def test_ranking_shrinks_thin_evidence_toward_the_mean():
    from oobleck.optimizers.bayesian import _shrunk

    # (total score, examples): a repeated 20/20, a single 10/10, and mediocre combinations
    perfect_twice, perfect_once, *rest = _shrunk([(20, 20), (10, 10), (5, 10), (4, 10), (6, 10)])
    mean = 45 / 60
    assert perfect_twice > perfect_once > mean and perfect_once < 1.0
    assert all(abs(r - mean) < abs(raw - mean) for r, raw in zip(rest, (0.5, 0.4, 0.6), strict=True))
    # no spread beyond binomial noise: every estimate is pulled most of the way to the mean
    assert all(abs(e - 0.8) < 0.05 for e in _shrunk([(8, 10), (9, 10), (7, 10), (8, 10)]))


def test_adaptive_bootstrap_runs_the_teacher_only_as_much_as_the_demos_need():
    from oobleck.optimizers.bootstrap import bootstrap_candidate

    def answers(right):
        return ob.testing.FieldScriptedLM(lambda inputs: {"answer": str(2 * int(inputs["question"].split()[-1])) if right(inputs) else "?"})

    fixed, adaptive = answers(lambda _: True), answers(lambda _: True)
    for lm, flag in ((fixed, False), (adaptive, True)):
        found = bootstrap_candidate(_program(lm), TRAIN, ob.metrics.exact_match, max_demos=4, num_threads=8, adaptive=flag)
        assert len(found.demos["self"]) == 4
    assert (fixed.calls, adaptive.calls) == (16, 8)  # one wave of 2 x threads, or 4 demos at the 50% prior pass rate
    rare = answers(lambda inputs: int(inputs["question"].split()[-1]) % 4 == 0)  # a quarter pass: more, larger waves
    found = bootstrap_candidate(_program(rare), TRAIN, ob.metrics.exact_match, max_demos=4, num_threads=8, adaptive=True)
    assert len(found.demos["self"]) == 4 and all(int(d["question"].split()[-1]) % 4 == 0 for d in found.demos["self"])


def test_the_data_summary_says_when_labels_are_copied_out_of_an_input():
    from oobleck.optimizers.proposer import summarize_data

    extractive = [ob.Example(sentence=f"The {a} chased the {b}.", animal=b).with_inputs("sentence") for a, b in [("fox", "owl"), ("cat", "dog"), ("hen", "pig")]]
    assert "animal appears verbatim in sentence in 100% of examples" in summarize_data(extractive)
    assert "verbatim" not in summarize_data(TRAIN)  # "double 12" -> "24": computed, not copied
    partial = [ob.Example(question="double 1", answer="1").with_inputs("question"), *TRAIN[2:5]]
    assert "verbatim" not in summarize_data(partial)  # one in four is no pattern


def test_every_fully_scored_candidate_is_an_option_for_the_final_choice():
    optimizer = _bayesian(full_eval_every=3, num_final=1, seed=1)  # a seed whose periodic picks differ from the final one
    compiled = optimizer.compile(_program(InstructionSensitiveLM()), trainset=TRAIN, valset=DEV)
    attrs = optimizer.session.study.user_attrs
    labels = {v["label"]: v["score"] for k, v in attrs.items() if k.startswith("oobleck.full.")}
    assert len(labels) >= 2  # the periodic evaluations plus the final one
    assert compiled.compile_info["scores"]["full_scores"] == labels
    assert compiled.compile_info["scores"]["best"] == max(labels.values())
