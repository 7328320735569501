"""The in-process Hugging Face backend on a tiny random-init model built from a config."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import oobleck as ob

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with the demo model's character tokenizer; large init so logits are peaked."""
    from oobleck.tiny.train import build_tokenizer

    folder = tmp_path_factory.mktemp("tiny-random")
    tokenizer = build_tokenizer()
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=0, eos_token_id=1,
        bos_token_id=1, initializer_range=0.5,
    )  # fmt: skip
    config.oobleck = {"adapter": "compact"}
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _prompts(n: int) -> list[list[dict[str, str]]]:
    words = ["stone", "apple", "river", "cloud", "tiger", "glass", "zq", "a", "longerwordhere", "mid"]
    return [
        [{"role": "system", "content": "Reverse the word."}, {"role": "user", "content": f"word: {words[i % len(words)]}{'x' * (i % 7)}\nanswer:"}]
        for i in range(n)
    ]


def test_declared_adapter_and_lazy_load(tiny_dir: Path) -> None:
    lm = ob.LM(f"hf/{tiny_dir}", cache=False)
    assert lm.adapter == "compact"  # read from config.json without loading weights
    assert lm._model is None
    lm([{"role": "user", "content": "word: a\nanswer:"}], max_tokens=4)
    assert lm._model is not None


def test_batched_outputs_equal_one_at_a_time(tiny_dir: Path) -> None:
    prompts = _prompts(24)
    single = ob.LM(f"hf/{tiny_dir}", cache=False, max_batch_size=1)
    expected = [single(p, max_tokens=12)[0] for p in prompts]
    assert single.batches_run == len(prompts)

    batched = ob.LM(f"hf/{tiny_dir}", cache=False, max_batch_size=64, batch_wait_ms=20)
    results: list[str | None] = [None] * len(prompts)
    barrier = threading.Barrier(len(prompts))

    def call(i: int) -> None:
        barrier.wait()
        results[i] = batched(prompts[i], max_tokens=12)[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected
    assert batched.batches_run < len(prompts)  # requests really were gathered
    assert batched.usage.calls == len(prompts)
    assert batched.usage.completion_tokens > 0


def test_different_settings_are_not_mixed_in_one_batch(tiny_dir: Path) -> None:
    lm = ob.LM(f"hf/{tiny_dir}", cache=False, batch_wait_ms=20)
    prompt = _prompts(1)[0]
    out: dict[int, str] = {}

    def call(tokens: int) -> None:
        out[tokens] = lm(prompt, max_tokens=tokens)[0]

    threads = [threading.Thread(target=call, args=(k,)) for k in (2, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(lm._tokenizer(out[2], add_special_tokens=False)["input_ids"]) <= 2
    assert out[9].startswith(out[2])


def test_sampled_requests_with_a_rollout_id_are_reproducible_alone_or_batched(tiny_dir: Path) -> None:
    """What a compile samples (proposals, bootstrap rounds) depends on its rollout ids, not on torch's global state or batching."""
    prompts = _prompts(8)
    rollouts = [f"propose-self-0-{i % 4}" for i in range(len(prompts))]  # prompts share rollouts, rollouts share prompts
    prompts.append(prompts[0])  # the same request twice at once (a duplicate example, concurrent cache misses)
    rollouts.append(rollouts[0])
    first = ob.LM(f"hf/{tiny_dir}", cache=False, max_batch_size=1)
    alone = [first(p, max_tokens=12, temperature=1.0, rollout_id=r)[0] for p, r in zip(prompts, rollouts, strict=True)]

    torch.manual_seed(12345)  # a different global state: must not matter
    torch.rand(7)
    second = ob.LM(f"hf/{tiny_dir}", cache=False, batch_wait_ms=20)
    together: list[str | None] = [None] * len(prompts)
    barrier = threading.Barrier(len(prompts))

    def call(i: int) -> None:
        barrier.wait()
        together[i] = second(prompts[i], max_tokens=12, temperature=1.0, rollout_id=rollouts[i])[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone and together[-1] == together[0]
    # another rollout id on the same prompt is another sample (the tiny random model samples widely at temperature 1)
    others = {second(prompts[0], max_tokens=12, temperature=1.0, rollout_id=f"other-{k}")[0] for k in range(6)}
    assert len(others | {alone[0]}) > 1


def test_stop_and_n(tiny_dir: Path) -> None:
    lm = ob.LM(f"hf/{tiny_dir}", cache=False)
    prompt = _prompts(1)[0]
    full = lm(prompt, max_tokens=12)[0]
    assert len(lm(prompt, max_tokens=12, n=3)) == 3
    if len(full) > 2:
        stop = full[1:3]
        assert lm(prompt, max_tokens=12, stop=[stop])[0] == full[: full.index(stop)]


def test_prompt_longer_than_context_is_a_clear_error(tiny_dir: Path) -> None:
    lm = ob.LM(f"hf/{tiny_dir}", cache=False)
    with pytest.raises(ob.LMError, match="reads at most 256"):
        lm([{"role": "user", "content": "x" * 400}])


def test_unknown_setting_is_rejected(tiny_dir: Path) -> None:
    lm = ob.LM(f"hf/{tiny_dir}", cache=False)
    with pytest.raises(ob.ConfigurationError, match="frequency_penalty"):
        lm(_prompts(1)[0], frequency_penalty=1.0)


def test_missing_model_names_the_path(tmp_path: Path) -> None:
    lm = ob.LM(f"hf/{tmp_path / 'nowhere'}", cache=False)
    with pytest.raises(ob.LMError, match="nowhere"):
        lm(_prompts(1)[0])


def test_predict_runs_on_the_compact_adapter(tiny_dir: Path) -> None:
    lm = ob.LM(f"hf/{tiny_dir}", cache=False)
    predict = ob.Predict("word -> answer", lm=lm, max_tokens=8)
    try:
        prediction = predict(word="stone")
    except ob.ParseError as exc:  # a random model may ramble; the error must keep its text
        assert exc.raw is not None
    else:
        assert isinstance(prediction.answer, str)
    sent = lm.inspect_history(1)[0]["messages"]
    assert sent[-1]["content"].endswith("word: stone\nanswer:")
