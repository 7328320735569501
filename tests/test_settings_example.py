"""``Example``/``Prediction`` records and process/scoped settings."""

from __future__ import annotations

import copy
import threading

import pytest

import oobleck as ob
from oobleck.settings import current_settings, get_setting

# -- Example ---------------------------------------------------------------------------------


def test_example_is_a_mapping_with_attribute_access() -> None:
    ex = ob.Example({"question": "q"}, answer="a")
    assert ex.question == "q" and ex["answer"] == "a"
    assert dict(ex) == {"question": "q", "answer": "a"}
    assert len(ex) == 2 and list(ex) == ["question", "answer"]
    assert ex.get("missing", 3) == 3
    ex.extra = 1
    ex["more"] = 2
    assert ex.to_dict() == {"question": "q", "answer": "a", "extra": 1, "more": 2}
    assert ex.toDict() == ex.to_dict()


def test_missing_attribute_names_the_fields() -> None:
    ex = ob.Example(question="q")
    with pytest.raises(AttributeError, match=r"no field 'answer'; it has \['question'\]"):
        _ = ex.answer
    with pytest.raises(AttributeError):
        _ = ex.__wrapped__


def test_inputs_and_labels() -> None:
    ex = ob.Example(question="q", context="c", answer="a").with_inputs("question", "context")
    assert ex.input_keys == frozenset({"question", "context"})
    assert dict(ex.inputs()) == {"question": "q", "context": "c"}
    assert dict(ex.labels()) == {"answer": "a"}
    plain = ob.Example(question="q", answer="a")
    assert plain.input_keys is None
    assert dict(plain.labels()) == {"question": "q", "answer": "a"}
    with pytest.raises(ob.InputError, match="no inputs marked"):
        plain.inputs()


def test_with_inputs_and_copy_do_not_share_state() -> None:
    base = ob.Example(question="q", answer="a")
    marked = base.with_inputs("question")
    assert base.input_keys is None
    marked.answer = "changed"
    assert base.answer == "a"
    changed = marked.copy(answer="b")
    assert changed.answer == "b" and changed.input_keys == frozenset({"question"}) and marked.answer == "changed"
    rebuilt = ob.Example(marked)
    assert rebuilt.input_keys == frozenset({"question"})


def test_equality_and_hash() -> None:
    a = ob.Example(q="x", n=[1, 2]).with_inputs("q")
    b = ob.Example(q="x", n=[1, 2]).with_inputs("q")
    assert a == b and hash(a) == hash(b)
    assert a != ob.Example(q="x", n=[1, 2])  # different inputs marked
    assert ob.Example(q="x") == {"q": "x"}
    assert ob.Example(q="x") != "x"
    assert len({a, b}) == 1


def test_repr_shows_inputs() -> None:
    assert repr(ob.Example(q=1).with_inputs("q")) == "Example({'q': 1}, inputs=['q'])"
    assert repr(ob.Prediction(a=1)) == "Prediction({'a': 1})"


def test_copy_and_deepcopy() -> None:
    ex = ob.Example(q="x", tags=["a"]).with_inputs("q")
    shallow = copy.copy(ex)
    deep = copy.deepcopy(ex)
    assert shallow == ex and deep == ex
    deep.tags.append("b")
    assert ex.tags == ["a"]
    assert deep.input_keys == frozenset({"q"})


def test_prediction_completions() -> None:
    single = ob.Prediction(answer="a")
    assert single.completions == [{"answer": "a"}]
    many = ob.Prediction.from_completions([{"answer": "a"}, {"answer": "b"}])
    assert many.answer == "a"
    assert many.completions == [{"answer": "a"}, {"answer": "b"}]
    clone = copy.deepcopy(many)
    assert clone.completions == many.completions and clone.answer == "a"
    assert isinstance(many, ob.Example)


# -- settings --------------------------------------------------------------------------------


def test_configure_and_context_layering() -> None:
    assert get_setting("lm") is None
    ob.configure(lm="base", adapter="json")
    assert get_setting("lm") == "base"
    with ob.context(lm="outer"):
        assert get_setting("lm") == "outer" and get_setting("adapter") == "json"
        with ob.context(adapter="compact"):
            assert (get_setting("lm"), get_setting("adapter")) == ("outer", "compact")
            assert current_settings()["adapter"] == "compact"
        assert get_setting("adapter") == "json"
    assert get_setting("lm") == "base"


def test_context_restores_after_an_exception() -> None:
    with pytest.raises(RuntimeError), ob.context(lm="temporary"):
        raise RuntimeError("boom")
    assert get_setting("lm") is None


def test_unknown_settings() -> None:
    with pytest.raises(ob.ConfigurationError, match=r"unknown setting\(s\) \['temperature'\]"):
        ob.configure(temperature=0.5)


def test_configure_is_process_wide_and_context_is_not() -> None:
    seen: dict[str, object] = {}
    ob.configure(lm="global")
    with ob.context(adapter="scoped"):

        def worker() -> None:
            seen["lm"] = get_setting("lm")
            seen["adapter"] = get_setting("adapter")

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(timeout=30)
    assert seen == {"lm": "global", "adapter": None}
