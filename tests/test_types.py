"""The type grammar (parse_type / type_to_str) and coercion of LM output to declared types."""

from __future__ import annotations

import enum
from typing import Any, Literal, Optional, Union

import pydantic
import pytest

import oobleck as ob
from oobleck.signatures.types import check_input, choices_of, coerce, is_pydantic_model, parse_type, type_to_str


class Item(pydantic.BaseModel):
    name: str
    qty: int = 1


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


# -- parse_type / type_to_str ----------------------------------------------------------------


@pytest.mark.parametrize(
    "tp",
    [
        str, int, float, bool, list, dict, Any, type(None),
        list[str], list[list[int]], dict[str, float], dict[str, list[str]],
        Literal["a", "b"], Literal[1, -2, 3.5, True, None], Literal["it's", 'q"uote', "back\\slash", "new\nline"],  # noqa: PYI061
        Optional[int], Optional[list[str]], Union[int, str], Union[int, str, None], Optional[Literal["x"]],
        Literal[1e-05],
    ],
)  # fmt: skip
def test_type_to_str_round_trips_through_parse_type(tp: Any) -> None:
    assert parse_type(type_to_str(tp)) == tp


def test_type_to_str_names_classes() -> None:
    assert type_to_str(Item) == "Item"
    assert type_to_str(list[Item]) == "list[Item]"
    assert type_to_str(Optional[Mood]) == "Optional[Mood]"
    assert type_to_str(int | None) == "Optional[int]"
    assert type_to_str(int | str | None) == "int | str | None"


def test_parse_type_reads_extra_names() -> None:
    assert parse_type("list[Item]", names={"Item": dict[str, Any]}) == list[dict[str, Any]]
    with pytest.raises(ob.SignatureError, match="unknown type 'Item'"):
        parse_type("list[Item]")


def test_parse_type_errors_point_into_the_source() -> None:
    with pytest.raises(ob.SignatureError) as info:
        parse_type("dict[str, strr]")
    assert info.value.position == 10


def test_parse_type_rejects_deep_nesting_cleanly() -> None:
    with pytest.raises(ob.SignatureError, match="nested too deeply"):
        parse_type("list[" * 2000 + "int" + "]" * 2000)


def test_parse_type_never_evaluates_code() -> None:
    for text in ["__import__('os').system('true')", "exec", "eval('1')", "int.__class__", "lambda: 1"]:
        with pytest.raises(ob.SignatureError):
            parse_type(text)


def test_choices_and_pydantic_detection() -> None:
    assert choices_of(Literal["a", 1]) == ["a", "1"]
    assert choices_of(Mood) == ["happy", "sad"]
    assert choices_of(bool) == ["True", "False"]
    assert choices_of(str) is None
    assert is_pydantic_model(Item) and not is_pydantic_model(dict) and not is_pydantic_model(Item(name="x"))


# -- coercion: successes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tp", "expected"),
    [
        ("  hello \n", str, "hello"),
        (42, str, "42"),
        ([1, 2], str, "[1, 2]"),
        ("42", int, 42),
        (" -7. ", int, -7),
        ("+5", int, 5),
        ("1,000", int, 1000),
        (3.0, int, 3),
        (7, int, 7),
        ("3.25", float, 3.25),
        ("2", float, 2.0),
        (2, float, 2.0),
        ("1,234.5", float, 1234.5),
        ("True", bool, True),
        ("true", bool, True),
        ("Yes.", bool, True),
        ("**yes**", bool, True),
        ("`no`", bool, False),
        ("FALSE", bool, False),
        ("0", bool, False),
        (False, bool, False),
        ("positive", Literal["positive", "negative"], "positive"),
        ("Positive.", Literal["positive", "negative"], "positive"),
        ("'NEGATIVE'", Literal["positive", "negative"], "negative"),
        ("**negative**", Literal["positive", "negative"], "negative"),
        ("2", Literal[1, 2], 2),
        (2, Literal[1, 2], 2),
        ("[1, 2, 3]", list[int], [1, 2, 3]),
        ('["1", 2]', list[int], [1, 2]),
        ("```json\n[\"a\", \"b\"]\n```", list[str], ["a", "b"]),
        ("```\n[true, \"no\"]\n```", list[bool], [True, False]),
        ([" a ", "b"], list[str], ["a", "b"]),
        ('{"a": 1, "b": "2"}', dict[str, int], {"a": 1, "b": 2}),
        ("```json\n{\"a\": [1]}\n```", dict[str, list[int]], {"a": [1]}),
        ('{"1": "x"}', dict[int, str], {1: "x"}),
        ("[1, [2]]", list, [1, [2]]),
        ('{"k": null}', dict, {"k": None}),
        ("None", Optional[int], None),
        ("null", Optional[int], None),
        ("", Optional[int], None),
        ("5", Optional[int], 5),
        ("5", Union[int, str], 5),
        ("five", Union[int, str], "five"),
        ("happy", Mood, Mood.HAPPY),
        ("SAD", Mood, Mood.SAD),
        ("'Happy'.", Mood, Mood.HAPPY),
        (Mood.SAD, Mood, Mood.SAD),
        ('{"name": "pen", "qty": "3"}', Item, Item(name="pen", qty=3)),
        ("```json\n{\"name\": \"pen\"}\n```", Item, Item(name="pen")),
        ({"name": "cup"}, Item, Item(name="cup")),
        ('[{"name": "a"}, {"name": "b", "qty": 2}]', list[Item], [Item(name="a"), Item(name="b", qty=2)]),
        ("anything", Any, "anything"),
    ],
)
def test_coerce_success(value: Any, tp: Any, expected: Any) -> None:
    result = coerce(value, tp, field="out")
    assert result == expected
    assert type(result) is type(expected)


# -- coercion: failures are ParseErrors that name the field and keep the raw text -------------


@pytest.mark.parametrize(
    ("value", "tp", "reason"),
    [
        ("forty-two", int, "expected an integer"),
        ("4.5", int, "expected an integer"),
        (True, int, "boolean"),
        ("1" * 5000, int, ""),
        ("abc", float, "expected a number"),
        ("maybe", bool, "expected true or false"),
        ("neutral", Literal["positive", "negative"], "expected one of 'positive', 'negative'"),
        ("[1, 2", list[int], "expected a list as JSON"),
        ('{"a": 1}', list[int], "expected a list"),
        ('["x"]', list[int], "expected an integer"),
        ("[" * 5000, list, "expected a list as JSON"),
        ("not json", dict[str, int], "expected an object as JSON"),
        ("[1]", dict[str, int], "expected an object"),
        ("x", Optional[int], "expected an integer"),
        ("blue", Mood, "expected one of happy, sad"),
        ('{"qty": 2}', Item, "does not match Item"),
        ("pen", Item, "expected a Item object as JSON"),
        ("[]", Union[int, bool], ""),
        ("x", type(None), "expected None"),
    ],
)
def test_coerce_failure(value: Any, tp: Any, reason: str) -> None:
    with pytest.raises(ob.ParseError) as info:
        coerce(value, tp, field="answer", raw="THE RAW COMPLETION")
    error = info.value
    assert error.field == "answer"
    assert error.raw == "THE RAW COMPLETION"
    assert "'answer'" in str(error)
    assert reason in str(error)


def test_coerce_failure_keeps_the_value_as_raw_by_default() -> None:
    with pytest.raises(ob.ParseError) as info:
        coerce("twelve", int, field="n")
    assert info.value.raw == "twelve"
    assert isinstance(info.value, ValueError)


def test_check_input_is_loose_but_catches_nonsense() -> None:
    assert check_input("anything", str)
    assert check_input(["a"], list[str])
    assert check_input("5", int)
    assert not check_input("five", int)
    assert not check_input({"a": 1}, list[str])
    assert check_input(None, Optional[int])
