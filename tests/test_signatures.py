"""Signature strings, class signatures, derived signatures and their dict form.

This module uses ``from __future__ import annotations`` on purpose: every class signature
below is declared with string annotations, the way many user code bases write them.
"""

from __future__ import annotations

import enum
import json
from typing import Any, Literal, Optional, Union

import pydantic
import pytest

import oobleck as ob
from oobleck.signatures import make_signature
from oobleck.signatures.field import Field


class Item(pydantic.BaseModel):
    name: str
    qty: int = 1


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class QA(ob.Signature):
    """Answer the question using the context.

    Keep it short.
    """

    context: list[str] = ob.InputField(desc="retrieved passages")
    question: str = ob.InputField()
    answer: str = ob.OutputField(desc="a few words", prefix="Answer")


def fields_of(sig: type[ob.Signature]) -> list[tuple[str, str, Any]]:
    return [(f.name, f.kind, f.annotation) for f in sig.fields.values()]


# -- signature strings: every supported type -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("str", str),
        ("int", int),
        ("float", float),
        ("bool", bool),
        ("list[str]", list[str]),
        ("list[int]", list[int]),
        ("list[list[float]]", list[list[float]]),
        ("dict[str, int]", dict[str, int]),
        ("dict[str, list[bool]]", dict[str, list[bool]]),
        ("Literal['yes', 'no']", Literal["yes", "no"]),
        ('Literal["a b", "c"]', Literal["a b", "c"]),
        ("Literal[1, 2, -3]", Literal[1, 2, -3]),
        ("Literal[True, None, 1.5]", Literal[True, None, 1.5]),  # noqa: PYI061 - the spelling users write
        ("Optional[int]", Optional[int]),
        ("int | None", Optional[int]),
        ("None | int", Union[None, int]),
        ("int | str", Union[int, str]),
        ("Optional[list[str]]", Optional[list[str]]),
        ("list", list),
        ("dict", dict),
        ("Any", Any),
        ("List[int]", list[int]),
        ("Dict[str, str]", dict[str, str]),
        ("Union[int, str]", Union[int, str]),
    ],
)
def test_string_signature_field_types(text: str, expected: Any) -> None:
    sig = ob.Signature(f"question -> answer: {text}")
    assert sig.output_fields["answer"].annotation == expected
    assert sig.input_fields["question"].annotation is str


def test_string_signature_order_and_kinds() -> None:
    sig = ob.Signature("context: list[str], question -> answer: int, confidence: float")
    assert fields_of(sig) == [
        ("context", "input", list[str]),
        ("question", "input", str),
        ("answer", "output", int),
        ("confidence", "output", float),
    ]
    assert sig.signature == "context: list[str], question: str -> answer: int, confidence: float"


def test_string_signature_tolerates_missing_spaces() -> None:
    sig = ob.Signature("a:int,b->c:list[str]")
    assert fields_of(sig) == [("a", "input", int), ("b", "input", str), ("c", "output", list[str])]


def test_default_instructions_name_the_fields() -> None:
    sig = ob.Signature("question, context -> answer")
    assert sig.instructions == "Given the fields `question`, `context`, produce the fields `answer`."
    assert not sig.has_custom_instructions


def test_signature_call_with_instructions() -> None:
    sig = ob.Signature("question -> answer", "Answer like a pirate.")
    assert sig.instructions == "Answer like a pirate."
    assert sig.has_custom_instructions
    assert issubclass(sig, ob.Signature)


def test_literal_values_with_quotes_commas_arrows_and_escapes() -> None:
    sig = ob.Signature("""text -> label: Literal['x->y', 'a,b', 'it\\'s', "say \\"hi\\"", 'back\\\\slash', '[x]']""")
    assert sig.output_fields["label"].annotation == Literal["x->y", "a,b", "it's", 'say "hi"', "back\\slash", "[x]"]


def test_signature_instances_cannot_be_created() -> None:
    with pytest.raises(TypeError, match="used as a class"):
        QA()


# -- signature strings: errors with a caret at the right place -------------------------------


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("question -> answer: foo", 20, "unknown type 'foo'"),
        ("question: list[foo] -> answer", 15, "unknown type 'foo'"),
        ("question answer", 15, "needs '->'"),
        ("", 0, "needs '->'"),
        ("a -> b -> c", 7, "exactly one '->'"),
        ("a, a -> b", 3, "appears twice"),
        ("a -> a", 5, "appears twice"),
        ("a, b -> c, b", 11, "appears twice"),
        ("a,, b -> c", 2, "stray comma"),
        ("a, -> b", 3, "stray comma"),
        ("a -> b,", 7, "stray comma"),
        ("a: list[str -> b", 7, "unbalanced '['"),
        ("a -> b: dict[str, list[int]", 12, "unbalanced '['"),
        ("a: list[str]] -> b", 12, "unbalanced ']'"),
        ("class -> b", 0, "keyword"),
        ("a -> lambda", 5, "keyword"),
        ("a, for -> b", 3, "keyword"),
        ("-> b", 0, "no input fields"),
        ("a ->", 4, "no output fields"),
        ("a: -> b", 2, "empty type"),
        ("1a -> b", 0, "expected a field name"),
        ("a b -> c", 2, "expected ':' or ','"),
        ("a: int int -> b", 7, "unexpected 'int'"),
        ("a: list[str, int] -> b", 3, "list takes one parameter"),
        ("a: dict[str] -> b", 3, "dict takes two parameters"),
        ("a: Optional -> b", 3, "needs parameters"),
        ("a -> b: Literal[x]", 16, "Literal values must be"),
        ("a -> b: Literal['x', ]", 21, "Literal values must be"),
        ("a -> b: Literal['\\q']", 16, "unknown escape"),
        ("a -> b: Literal['open", 16, "unterminated quote"),
        ("a: str | -> b", 8, "ends too early"),
        ("a: 'str' -> b", 3, "expected a type name"),
        ("a: str; -> b", 6, "unexpected character ';'"),
    ],
)
def test_signature_string_errors(text: str, position: int, message: str) -> None:
    with pytest.raises(ob.SignatureError) as info:
        ob.Signature(text)
    error = info.value
    assert message in str(error)
    assert error.position == position, str(error)
    assert error.source == text
    # The message shows the source with a caret under the reported position.
    lines = str(error).splitlines()
    assert lines[-2] == f"  {text}"
    assert lines[-1] == "  " + " " * position + "^"


def test_signature_error_is_also_a_value_error() -> None:
    with pytest.raises(ValueError):
        ob.Signature("a b")


@pytest.mark.parametrize("bad", [None, 3, ["a -> b"], b"a -> b"])
def test_make_signature_rejects_non_strings(bad: Any) -> None:
    with pytest.raises(ob.SignatureError):
        make_signature(bad)


# -- dict and class signatures ---------------------------------------------------------------


def test_make_signature_from_dict_of_fields() -> None:
    sig = make_signature({"question": (str, ob.InputField(desc="q")), "score": (float, ob.OutputField()), "why": ob.OutputField()})
    assert fields_of(sig) == [("question", "input", str), ("score", "output", float), ("why", "output", str)]
    assert sig.input_fields["question"].desc == "q"


@pytest.mark.parametrize(
    "spec",
    [
        {"question": ob.InputField()},
        {"answer": ob.OutputField()},
        {"question": ob.InputField(), "answer": "not a field"},
        {"not valid": ob.InputField(), "answer": ob.OutputField()},
        {"class": ob.InputField(), "answer": ob.OutputField()},
    ],
)
def test_make_signature_dict_errors(spec: dict[str, Any]) -> None:
    with pytest.raises(ob.SignatureError):
        make_signature(spec)


def test_class_signature_docstring_descriptions_prefix() -> None:
    assert QA.instructions == "Answer the question using the context.\n\nKeep it short."
    assert QA.has_custom_instructions
    assert fields_of(QA) == [("context", "input", list[str]), ("question", "input", str), ("answer", "output", str)]
    assert QA.input_fields["context"].desc == "retrieved passages"
    assert QA.output_fields["answer"].label == "Answer"
    assert QA.input_fields["question"].label == "question"
    assert QA.signature == "context: list[str], question: str -> answer: str"


def test_class_signature_with_pydantic_and_enum_fields() -> None:
    class Extract(ob.Signature):
        text: str = ob.InputField()
        item: Item = ob.OutputField()
        color: Color = ob.OutputField()
        maybe: Optional[Color] = ob.OutputField()
        items: list[Item] = ob.OutputField()

    out = Extract.output_fields
    assert out["item"].annotation is Item
    assert out["color"].annotation is Color
    assert out["maybe"].annotation == Optional[Color]
    assert out["items"].annotation == list[Item]
    assert Extract.signature == "text: str -> item: Item, color: Color, maybe: Optional[Color], items: list[Item]"


def test_class_signature_resolves_names_local_to_a_function() -> None:
    class Local(pydantic.BaseModel):
        x: int

    class LocalSig(ob.Signature):
        q: list[str] = ob.InputField()
        r: Local = ob.OutputField()

    assert LocalSig.output_fields["r"].annotation is Local


def test_class_signature_explicit_string_annotations() -> None:
    class Quoted(ob.Signature):
        q: "list[int]" = ob.InputField()  # noqa: UP037 - the string form is what is tested
        a: "Literal['x', 'y']" = ob.OutputField()  # noqa: UP037

    assert Quoted.input_fields["q"].annotation == list[int]
    assert Quoted.output_fields["a"].annotation == Literal["x", "y"]


def test_class_signature_unresolvable_string_annotation_is_a_signature_error() -> None:
    with pytest.raises(ob.SignatureError, match="unknown type 'NoSuchThing'"):

        class Broken(ob.Signature):
            q: NoSuchThing = ob.InputField()  # noqa: F821 - the missing name is the point
            a: str = ob.OutputField()


def test_class_signature_annotation_without_field_is_an_error() -> None:
    with pytest.raises(ob.SignatureError, match="annotated but not declared"):

        class Missing(ob.Signature):
            q: str
            a: str = ob.OutputField()


def test_class_signature_inherits_fields() -> None:
    class Base(ob.Signature):
        question: str = ob.InputField()
        answer: str = ob.OutputField()

    class WithContext(Base):
        """Use the context."""

        context: str = ob.InputField()

    assert list(WithContext.fields) == ["question", "context", "answer"]
    assert list(Base.fields) == ["question", "answer"]
    assert WithContext.instructions == "Use the context."


def test_predict_rejects_signature_without_outputs() -> None:
    class OnlyInputs(ob.Signature):
        q: str = ob.InputField()

    with pytest.raises(ob.SignatureError, match="at least one input and one output"):
        ob.Predict(OnlyInputs)


# -- derived signatures are new classes ------------------------------------------------------


def test_with_instructions_returns_a_new_class() -> None:
    new = QA.with_instructions("Be terse.")
    assert new is not QA
    assert new.instructions == "Be terse."
    assert QA.instructions.startswith("Answer the question")
    assert list(new.fields) == list(QA.fields)
    assert new.__name__ == "QA"


def test_prepend_append_delete_return_new_classes() -> None:
    sig = ob.Signature("question -> answer", "Do it.")
    with_reasoning = sig.prepend("reasoning", ob.OutputField(desc="think"))
    assert list(with_reasoning.fields) == ["question", "reasoning", "answer"]
    assert with_reasoning.output_fields["reasoning"].desc == "think"
    assert with_reasoning.instructions == "Do it."
    with_hint = sig.append("hint", ob.InputField(), int)
    assert list(with_hint.fields) == ["question", "hint", "answer"]
    assert with_hint.input_fields["hint"].annotation is int
    first_input = sig.prepend("context", ob.InputField())
    assert list(first_input.input_fields) == ["context", "question"]
    extra_output = sig.append("score", ob.OutputField(), float)
    assert list(extra_output.output_fields) == ["answer", "score"]
    deleted = with_reasoning.delete("reasoning")
    assert list(deleted.fields) == ["question", "answer"]
    # The originals never change.
    assert list(sig.fields) == ["question", "answer"]
    assert list(with_reasoning.fields) == ["question", "reasoning", "answer"]


def test_derive_errors() -> None:
    sig = ob.Signature("question -> answer")
    with pytest.raises(ob.SignatureError, match="already has a field"):
        sig.append("answer", ob.OutputField())
    with pytest.raises(ob.SignatureError, match="no field named"):
        sig.delete("nope")
    with pytest.raises(ob.SignatureError, match="InputField"):
        sig.append("x", "not a field spec")


# -- to_dict / from_dict ---------------------------------------------------------------------


def test_to_dict_is_json_and_round_trips() -> None:
    data = QA.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["name"] == "QA"
    assert data["fields"][0] == {"name": "context", "kind": "input", "type": "list[str]", "desc": "retrieved passages"}
    assert data["fields"][2]["prefix"] == "Answer"
    back = ob.Signature.from_dict(data)
    assert back.__name__ == "QA"
    assert back.instructions == QA.instructions
    assert fields_of(back) == fields_of(QA)
    assert [(f.desc, f.prefix) for f in back.fields.values()] == [(f.desc, f.prefix) for f in QA.fields.values()]
    assert back.to_dict() == data


def test_to_dict_round_trips_every_string_type() -> None:
    sig = ob.Signature(
        "a: list[str], b: dict[str, int], c: Optional[float], d: int | str -> e: Literal['x', 'y'], f: bool, g: list[dict[str, Any]]"
    )
    back = ob.Signature.from_dict(json.loads(json.dumps(sig.to_dict())))
    assert fields_of(back) == fields_of(sig)
    assert back.signature == sig.signature


def test_enum_degrades_to_literal_and_pydantic_to_dict_without_the_classes() -> None:
    class Rich(ob.Signature):
        """Classify and extract."""

        text: str = ob.InputField()
        color: Color = ob.OutputField()
        item: Item = ob.OutputField()
        items: list[Item] = ob.OutputField()
        shades: Optional[list[Color]] = ob.OutputField()

    data = json.loads(json.dumps(Rich.to_dict()))
    by_name = {f["name"]: f for f in data["fields"]}
    assert by_name["color"]["choices"] == ["red", "green"]
    assert by_name["item"]["json_schema"]["properties"]["name"]["type"] == "string"
    back = ob.Signature.from_dict(data)
    out = back.output_fields
    assert out["color"].annotation == Literal["red", "green"]
    assert out["item"].annotation == dict[str, Any]
    assert out["items"].annotation == list[dict[str, Any]]
    assert out["shades"].annotation == Optional[list[Literal["red", "green"]]]
    assert back.instructions == "Classify and extract."


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("fields"),
        lambda d: d.update(fields="abc"),
        lambda d: d["fields"][0].pop("type"),
        lambda d: d["fields"][0].update(type="no such type"),
        lambda d: d["fields"][0].update(type=3),
        lambda d: d["fields"][0].update(kind="sideways"),
        lambda d: d["fields"][0].update(name="not an identifier"),
        lambda d: d["fields"][0].update(name=7),
        lambda d: d["fields"][0].update(name="lambda"),
        lambda d: d["fields"][1].update(name="question"),
        lambda d: d["fields"][0].update(desc=["x"]),
        lambda d: d.update(instructions=5),
        lambda d: d["fields"].append("not an object"),
    ],
)
def test_from_dict_rejects_malformed_data(mutate: Any) -> None:
    data = ob.Signature("question -> answer").to_dict()
    mutate(data)
    with pytest.raises(ob.SignatureError):
        ob.Signature.from_dict(data)


def test_from_dict_replaces_a_bad_name() -> None:
    data = ob.Signature("question -> answer").to_dict()
    data["name"] = "not valid!"
    assert ob.Signature.from_dict(data).__name__ == "Signature"


def test_field_helpers() -> None:
    f = Field("q", "input", int, "desc")
    assert f.is_input and f.label == "q"
    g = f.with_(kind="output", prefix="Q")
    assert not g.is_input and g.label == "Q" and f.kind == "input"
