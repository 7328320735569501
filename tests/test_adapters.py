"""Adapters: prompt formats, parsing, the single re-ask, and which adapter a call uses."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest

import oobleck as ob
from oobleck.adapters import get_adapter
from oobleck.testing import ScriptedLM

QA = ob.Signature("question, context: list[str] -> answer: int", "Answer with a number.")
TWO = ob.Signature("question -> answer, confidence: float")


def chat_reply(**fields: Any) -> str:
    body = "\n\n".join(f"[[ ## {k} ## ]]\n{v}" for k, v in fields.items())
    return body + "\n\n[[ ## completed ## ]]"


def which_format(messages: list[dict[str, str]]) -> str:
    system = messages[0]["content"]
    if "Reply with one JSON object" in system:
        return "json"
    if "[[ ## " in system:
        return "chat"
    return "compact"


def reply_in_format(messages: list[dict[str, str]], settings: dict[str, Any]) -> str:
    return {"json": '{"answer": "7"}', "chat": chat_reply(answer=7), "compact": " 7"}[which_format(messages)]


# -- chat ------------------------------------------------------------------------------------


def test_chat_format_layout_and_demos_as_turns() -> None:
    demos = [
        {"question": "q1", "context": ["c1", "c2"], "answer": 1},
        {"question": "no answer here", "context": []},  # no output: not a demo, skipped
        {"question": "q2", "context": [], "answer": 2, "extra": "ignored"},
    ]
    messages = ob.ChatAdapter().format(QA, demos, {"question": "q3", "context": ["only"]})
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    system = messages[0]["content"]
    assert "1. `question` (str)" in system and "2. `context` (list[str])" in system
    assert "1. `answer` (int)" in system
    assert "- `answer`: a single int" in system
    assert system.endswith("Task:\nAnswer with a number.")
    assert messages[1]["content"] == "[[ ## question ## ]]\nq1\n\n[[ ## context ## ]]\n[1] c1\n[2] c2"
    assert messages[2]["content"] == "[[ ## answer ## ]]\n1\n\n[[ ## completed ## ]]"
    assert messages[3]["content"] == "[[ ## question ## ]]\nq2\n\n[[ ## context ## ]]\n(empty list)"
    assert "ignored" not in json.dumps(messages)
    assert "no answer here" not in json.dumps(messages)
    assert messages[-1]["content"].startswith("[[ ## question ## ]]\nq3\n\n[[ ## context ## ]]\n[1] only")
    assert messages[-1]["content"].endswith("Reply with [[ ## answer ## ]], and end with [[ ## completed ## ]].")


def test_chat_demo_outputs_are_shown_the_way_they_are_parsed() -> None:
    sig = ob.Signature("question -> items: list[str]")
    adapter = ob.ChatAdapter()
    messages = adapter.format(sig, [{"question": "q", "items": ["x", "y"]}], {"question": "q2"})
    shown = messages[2]["content"]
    assert adapter.parse(sig, shown) == {"items": ["x", "y"]}


def test_chat_type_hints_for_classification_and_json() -> None:
    sig = ob.Signature("text -> label: Literal['pos', 'neg'], ok: bool, tags: list[str], note")
    system = ob.ChatAdapter().format(sig, [], {"text": "t"})[0]["content"]
    assert "- `label`: exactly one of: pos; neg" in system
    assert "- `ok`: exactly one of: True; False" in system
    assert "- `tags`: JSON of type list[str]" in system
    assert "`note`:" not in system.split("Output values must be:")[1]


def test_chat_parse_sections_and_types() -> None:
    adapter = ob.ChatAdapter()
    text = (
        "preamble\n[[ ## confidence ## ]]\n0.5\n[[ ## answer ## ]]\nParis\n"
        "[[ ## answer ## ]]\nignored second copy\n[[ ## completed ## ]]"
    )
    assert adapter.parse(TWO, text) == {"answer": "Paris", "confidence": 0.5}


@pytest.mark.parametrize(
    ("completion", "field", "message"),
    [
        ("no markers at all", "answer", "is missing (found: none)"),
        (chat_reply(answer="x"), "confidence", "is missing (found: answer)"),
        (chat_reply(answer="", confidence=0.5), "answer", "is empty"),
        (chat_reply(answer="   \n ", confidence=0.5), "answer", "is empty"),
        (chat_reply(answer="x", confidence="high"), "confidence", "expected a number"),
    ],
)
def test_chat_parse_errors_name_the_field_and_keep_raw(completion: str, field: str, message: str) -> None:
    with pytest.raises(ob.ParseError) as info:
        ob.ChatAdapter().parse(TWO, completion)
    assert info.value.field == field
    assert info.value.raw == completion
    assert message in str(info.value)


def test_empty_is_fine_where_the_type_allows_it() -> None:
    sig = ob.Signature("q -> a: Optional[int], b: Literal['', 'x'], c: Any")
    parsed = ob.ChatAdapter().parse(sig, chat_reply(a="", b="", c=""))
    assert parsed == {"a": None, "b": "", "c": ""}


# -- json ------------------------------------------------------------------------------------


def test_json_format_and_parse() -> None:
    adapter = ob.JSONAdapter()
    demos = [{"question": "q1", "context": ["c"], "answer": 1}, {"question": "skip me", "context": []}]
    messages = adapter.format(QA, demos, {"question": "q2", "context": ["d"]})
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert "Reply with one JSON object and nothing else" in messages[0]["content"]
    assert '- "answer": a single int' in messages[0]["content"]
    assert json.loads(messages[1]["content"]) == {"question": "q1", "context": ["c"]}
    assert json.loads(messages[2]["content"]) == {"answer": 1}
    assert json.loads(messages[3]["content"]) == {"question": "q2", "context": ["d"]}
    assert adapter.parse(QA, 'Sure! ```json\n{"answer": "12", "other": 1}\n```') == {"answer": 12}
    assert adapter.parse(QA, '{"answer": 5}\nThat is {roughly} right.') == {"answer": 5}
    assert adapter.parse(QA, 'Using {braces}: {"answer": 6}') == {"answer": 6}
    assert adapter.lm_settings(QA) == {}
    assert ob.JSONAdapter(json_mode=True).lm_settings(QA) == {"response_format": {"type": "json_object"}}


@pytest.mark.parametrize(
    ("completion", "message"),
    [
        ("no json here", "no JSON object"),
        ("{not json}", "not valid JSON"),
        ('{"answer": ' + "[" * 5000 + "}", "JSON"),
        ('{"other": 1}', "'answer' is missing"),
        ('{"answer": null}', "'answer' is empty"),
        ('{"answer": "many"}', "expected an integer"),
    ],
)
def test_json_parse_errors(completion: str, message: str) -> None:
    with pytest.raises(ob.ParseError) as info:
        ob.JSONAdapter().parse(QA, completion)
    assert message in str(info.value)
    assert info.value.raw == completion


def test_json_adapter_serialises_enum_and_model_values() -> None:
    import enum

    import pydantic

    class Size(enum.Enum):
        S = "small"

    class Box(pydantic.BaseModel):
        w: int

    messages = ob.JSONAdapter().format(ob.Signature("a: Any, b: Any -> c"), [], {"a": Size.S, "b": Box(w=2)})
    assert json.loads(messages[-1]["content"]) == {"a": "small", "b": {"w": 2}}


# -- compact ---------------------------------------------------------------------------------


def test_compact_format() -> None:
    sig = ob.Signature("word -> answer", "Reverse the word.")
    demos = [{"word": "ab", "answer": "ba"}, {"word": "no output"}, {"word": "cd\nef", "answer": "fe dc"}]
    messages = ob.CompactAdapter().format(sig, demos, {"word": "xyz"})
    assert messages == [
        {"role": "system", "content": "Reverse the word."},
        {"role": "user", "content": "word: ab\nanswer: ba\nword: cd ef\nanswer: fe dc\nword: xyz\nanswer:"},
    ]
    spaced = ob.CompactAdapter("\n\n").format(sig, demos[:1], {"word": "xyz"})
    assert spaced[1]["content"] == "word: ab\nanswer: ba\n\nword: xyz\nanswer:"


def test_compact_parse_stops_at_an_invented_example() -> None:
    sig = ob.Signature("word -> answer, why")
    adapter = ob.CompactAdapter()
    assert adapter.parse(sig, " dcba\nwhy: reversed\nit is\nword: next\nanswer: more") == {"answer": "dcba", "why": "reversed\nit is"}
    with pytest.raises(ob.ParseError, match="'why' is missing"):
        adapter.parse(sig, " dcba\nword: next\nwhy: late")


def test_compact_uses_prefix_labels() -> None:
    class Sig(ob.Signature):
        word: str = ob.InputField(prefix="Word")
        answer: str = ob.OutputField(prefix="Reversed")

    adapter = ob.CompactAdapter()
    assert adapter.format(Sig, [], {"word": "ab"})[1]["content"] == "Word: ab\nReversed:"
    assert adapter.parse(Sig, " ba") == {"answer": "ba"}


# -- the one re-ask --------------------------------------------------------------------------


def test_reask_once_then_succeed() -> None:
    lm = ScriptedLM(["garbage", chat_reply(answer=42)])
    prediction = ob.Predict(QA, lm=lm)(question="q", context=["c"])
    assert prediction.answer == 42
    assert len(lm.calls) == 2
    retry = lm.calls[1]
    assert retry[:-2] == lm.calls[0]
    assert retry[-2] == {"role": "assistant", "content": "garbage"}
    assert retry[-1]["role"] == "user" and "'answer' is missing" in retry[-1]["content"]
    assert lm.usage.calls == 2


def test_reask_once_then_parse_error_with_raw_text() -> None:
    lm = ScriptedLM(["first bad", chat_reply(answer="not a number")])
    with pytest.raises(ob.ParseError) as info:
        ob.Predict(QA, lm=lm)(question="q", context=[])
    assert len(lm.calls) == 2
    assert info.value.raw == chat_reply(answer="not a number")
    assert info.value.field == "answer"


def test_empty_field_is_reasked_not_returned() -> None:
    lm = ScriptedLM([chat_reply(answer=""), chat_reply(answer="")])
    with pytest.raises(ob.ParseError, match="is empty"):
        ob.Predict("question -> answer", lm=lm)(question="q")
    assert len(lm.calls) == 2


def test_compact_reask_resamples_the_same_prompt() -> None:
    lm = ScriptedLM(["", " ok"], adapter="compact")
    assert ob.Predict("word -> answer", lm=lm)(word="w").answer == "ok"
    assert lm.calls[0] == lm.calls[1]
    first, second = lm.inspect_history(2)
    assert "temperature" not in first["settings"]
    assert second["settings"]["temperature"] == 0.7


def test_json_mode_setting_reaches_the_lm() -> None:
    lm = ScriptedLM(['{"answer": 3}'])
    ob.Predict(QA, lm=lm, adapter=ob.JSONAdapter(json_mode=True))(question="q", context=[])
    assert lm.inspect_history()[0]["settings"]["response_format"] == {"type": "json_object"}


def test_multiple_completions_become_prediction_completions() -> None:
    lm = ScriptedLM(lambda messages, settings: [chat_reply(answer=i) for i in range(settings.get("n", 1))])
    prediction = ob.Predict(QA, lm=lm, n=3)(question="q", context=[])
    assert prediction.answer == 0
    assert [c["answer"] for c in prediction.completions] == [0, 1, 2]
    assert len(lm.calls) == 1


def test_unparsable_completions_are_dropped_when_others_parse() -> None:
    lm = ScriptedLM(lambda messages, settings: ["junk", chat_reply(answer=5)])
    prediction = ob.Predict(QA, lm=lm)(question="q", context=[])
    assert prediction.answer == 5 and len(prediction.completions) == 1
    assert len(lm.calls) == 1


def test_lm_failure_is_not_reasked() -> None:
    def boom(messages: Any, settings: Any) -> str:
        raise RuntimeError("backend exploded")

    lm = ScriptedLM(boom)
    with pytest.raises(ob.LMError, match="backend exploded"):
        ob.Predict(QA, lm=lm)(question="q", context=[])
    assert len(lm.calls) == 1


async def _acall(predictor: ob.Predict, **inputs: Any) -> Any:
    return await predictor.acall(**inputs)


def test_async_path_reasks_too() -> None:
    import asyncio

    lm = ScriptedLM(["bad", chat_reply(answer=9)])
    prediction = asyncio.run(_acall(ob.Predict(QA, lm=lm), question="q", context=[]))
    assert prediction.answer == 9
    assert len(lm.calls) == 2


# -- which adapter ---------------------------------------------------------------------------


def test_adapter_default_is_chat() -> None:
    lm = ScriptedLM(reply_in_format)
    ob.Predict("question -> answer: int", lm=lm)(question="q")
    assert which_format(lm.calls[-1]) == "chat"


def test_lm_declared_adapter_beats_default() -> None:
    lm = ScriptedLM(reply_in_format, adapter="compact")
    ob.Predict("question -> answer: int", lm=lm)(question="q")
    assert which_format(lm.calls[-1]) == "compact"


def test_configured_adapter_beats_lm_declared() -> None:
    lm = ScriptedLM(reply_in_format, adapter="compact")
    predictor = ob.Predict("question -> answer: int", lm=lm)
    ob.configure(adapter="json")
    predictor(question="q")
    assert which_format(lm.calls[-1]) == "json"
    with ob.context(adapter=ob.ChatAdapter()):
        predictor(question="q")
    assert which_format(lm.calls[-1]) == "chat"
    predictor(question="q")
    assert which_format(lm.calls[-1]) == "json"


def test_predictor_adapter_beats_everything() -> None:
    lm = ScriptedLM(reply_in_format, adapter="compact")
    predictor = ob.Predict("question -> answer: int", lm=lm, adapter="json")
    ob.configure(adapter="chat")
    with ob.context(adapter="compact"):
        assert predictor(question="q").answer == 7
    assert which_format(lm.calls[-1]) == "json"


def test_get_adapter() -> None:
    assert isinstance(get_adapter(None), ob.ChatAdapter)
    assert isinstance(get_adapter("json"), ob.JSONAdapter)
    adapter = ob.CompactAdapter()
    assert get_adapter(adapter) is adapter
    with pytest.raises(ob.ConfigurationError, match="unknown adapter 'xml'"):
        get_adapter("xml")


def test_unknown_configured_adapter_fails_clearly() -> None:
    lm = ScriptedLM([chat_reply(answer=1)])
    with pytest.raises(ob.ConfigurationError, match="unknown adapter"):
        ob.Predict("question -> answer", lm=lm, adapter="yaml")(question="q")
    assert lm.calls == []


def test_literal_type_hint_roundtrip_in_json_adapter() -> None:
    sig = ob.Signature("text -> label: Literal['pos', 'neg'], score: Optional[float]")
    lm = ScriptedLM(['{"label": "POS.", "score": null}'], adapter="json")
    prediction = ob.Predict(sig, lm=lm)(text="t")
    assert prediction.label == "pos" and prediction.score is None
    literal: Any = Literal["pos", "neg"]
    assert sig.output_fields["label"].annotation == literal
