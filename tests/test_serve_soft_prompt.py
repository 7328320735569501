"""The OpenAI-compatible endpoint serves a predictor's model with its soft prompt applied."""

from __future__ import annotations

import pytest

import oobleck as ob

soft_prompt = pytest.importorskip("oobleck.optimizers.soft_prompt")  # soft prompts arrive with the optimizer that trains them
pytest.importorskip("peft")
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")]


def test_served_model_is_the_soft_prompted_one() -> None:
    import openai

    from oobleck.lm.soft_prompt import SoftPromptLM
    from oobleck.optimizers.soft_prompt.methods import MethodSettings
    from oobleck.optimizers.soft_prompt.trainer import SoftPromptTrainer
    from oobleck.serve import BackgroundServer, create_app
    from oobleck.tiny.tasks import task_examples

    tiny = ob.LM("hf/oobleck-tiny", cache=False)
    program = ob.Predict(ob.make_signature("word -> answer").with_instructions("Answer the question."), lm=tiny)
    examples = [ob.Example(**r).with_inputs("word") for r in task_examples("first_letter", 24, 1)]
    records = soft_prompt.build_records(program, tiny, examples, [], [], None)
    trainer = SoftPromptTrainer(tiny, MethodSettings("prompt_tuning", num_virtual_tokens=4, num_tasks=1), labels=None, choices=None,
                                steps=2, batch_size=8, lr=None, eval_every=2, patience=0, seed=0, display_progress=False)  # fmt: skip
    program.soft_prompt = trainer.fit(records, None, init_text="Answer the question.", task_id=None).state
    applied = program.resolve_lm()
    assert isinstance(applied, SoftPromptLM)

    messages = [{"role": "user", "content": "word: planet\nanswer:"}]
    base_calls, applied_calls = tiny.usage.calls, applied.usage.calls
    with BackgroundServer(create_app({"first": program})) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
        served = client.chat.completions.create(model="first", messages=messages, max_tokens=6, temperature=0)
    assert (applied.usage.calls, tiny.usage.calls) == (applied_calls + 1, base_calls)  # the soft-prompted model answered
    assert served.choices[0].message.content == applied.generate(messages, max_tokens=6, temperature=0)[0].text
