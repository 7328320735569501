"""Integration tests on the bundled demo model (oobleck-tiny): real neural LM, offline, CPU.

Each task here is ambiguous under the generic default instruction, so the uncompiled program
scores low; the tests check that optimizers raise the score by a margin far above sampling
noise (with 60 dev examples one standard error is at most ~6.5 points).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import oobleck as ob
from oobleck.tiny import WEIGHTS_DIR
from oobleck.tiny.tasks import task_examples

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _split(task: str, seed: int, n_train: int = 30, n_dev: int = 60) -> tuple[list[ob.Example], list[ob.Example]]:
    rows = task_examples(task, n_train + n_dev, seed=seed)
    examples = [ob.Example(r).with_inputs("word") for r in rows]
    return examples[:n_train], examples[n_train:]


@pytest.fixture(scope="module")
def lm() -> ob.LM:
    return ob.LM("hf/oobleck-tiny")


def _vague_program() -> ob.Predict:
    return ob.Predict("word -> answer")  # default instruction: does not say which word task


def test_bundled_weights_resolve_and_declare_the_compact_adapter(lm: ob.LM) -> None:
    assert (WEIGHTS_DIR / "model.safetensors").stat().st_size < 10 * 1024 * 1024
    assert lm.adapter == "compact"
    card = (WEIGHTS_DIR / "README.md").read_text()
    assert "oobleck-tiny" in card and "python -m oobleck.tiny.train" in card


def test_bootstrap_raises_the_dev_score(lm: ob.LM) -> None:
    train, dev = _split("first_letter", seed=11)
    evaluate = ob.Evaluate(devset=dev, metric=ob.metrics.exact_match, num_threads=16, display_progress=False)
    with ob.context(lm=lm):
        program = _vague_program()
        before = evaluate(program)
        compiled = ob.optimizers.BootstrapFewShot(metric=ob.metrics.exact_match, max_demos=3, seed=0).compile(program, trainset=train)
        after = evaluate(compiled)
    assert len(compiled.demos) == 3
    assert all(d["answer"] == d["word"][0] for d in compiled.demos)  # only passing traces became demos
    assert after.score - before.score >= 0.25, (before.score, after.score)


def test_random_search_raises_the_dev_score(lm: ob.LM) -> None:
    train, dev = _split("first_letter", seed=12)
    with ob.context(lm=lm):
        program = _vague_program()
        before = ob.Evaluate(devset=dev, metric="exact_match", num_threads=16, display_progress=False)(program)
        optimizer = ob.optimizers.RandomSearch(metric="exact_match", num_candidates=3, max_demos=3, num_threads=16, seed=0, display_progress=False)
        compiled = optimizer.compile(program, trainset=train, valset=dev)
    info = compiled.compile_info
    assert info["scores"]["baseline"] == pytest.approx(before.score)
    assert info["scores"]["best"] - before.score >= 0.25, info["scores"]
    assert len(info["candidates"]) == 6 and info["usage"]["calls"] > 0


def test_artifact_round_trip_gives_the_same_predictions(lm: ob.LM, tmp_path: Path) -> None:
    train, dev = _split("uppercase", seed=13, n_dev=20)
    compiled = ob.optimizers.LabeledFewShot(k=3).compile(ob.Predict("word -> answer", lm=lm), trainset=train)
    path = compiled.save(tmp_path / "first.oobleck")
    document = json.loads((path / "program.json").read_text())
    assert document["program"]["predictors"]["self"]["lm"]["model"] == "hf/oobleck-tiny"
    loaded = ob.load(path, lm="hf/oobleck-tiny")
    for example in dev:
        assert loaded(**example.inputs()).answer == compiled(**example.inputs()).answer


def test_batched_evaluation_matches_sequential(lm: ob.LM) -> None:
    _, dev = _split("repeat", seed=14, n_dev=32)
    program = ob.Predict("word -> answer", lm=ob.LM("hf/oobleck-tiny", cache=False))
    sequential = ob.Evaluate(devset=dev, metric="exact_match", num_threads=1, display_progress=False)(program)
    parallel = ob.Evaluate(devset=dev, metric="exact_match", num_threads=32, display_progress=False)(program)
    assert [r.prediction.answer for r in parallel.results] == [r.prediction.answer for r in sequential.results]


def test_training_script_smoke(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from oobleck.tiny.train import TrainConfig, train

    report = train(TrainConfig(out=tmp_path / "model", tokens=40_000, eval_examples=0, checkpoint_every=5))
    assert report["steps"] > 5 and report["loss_last"] < report["loss_first"]
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert model.config.oobleck["adapter"] == "compact"
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Reverse the word."}, {"role": "user", "content": "word: abc\nanswer:"}],
        tokenize=False, add_generation_prompt=True,
    )  # fmt: skip
    assert text == "Reverse the word.\nword: abc\nanswer:"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_warm_start_records_the_earlier_stage(tmp_path: Path) -> None:
    """A second stage's training.json carries the first stage's record, so one file tells the whole recipe."""
    from oobleck.tiny.train import TrainConfig, train

    train(TrainConfig(out=tmp_path / "one", tokens=8_000, eval_examples=0))
    report = train(TrainConfig(out=tmp_path / "two", tokens=8_000, seed=1, lr=1e-3, eval_examples=0, init_from=tmp_path / "one"))
    assert report["settings"]["init_from"] == "one" and report["settings"]["seed"] == 1
    [first] = report["earlier_stages"]
    assert first["settings"]["seed"] == 0 and first["settings"]["init_from"] is None and "accuracy" not in first
    saved = json.loads((tmp_path / "two" / "training.json").read_text())
    assert saved["earlier_stages"] == report["earlier_stages"]
