"""Property tests: parsers and loaders fail only with oobleck's own errors, and round trips hold.

Runs are derandomized (a fixed seed per test) so a failure reproduces on every machine.
"""

from __future__ import annotations

import copy
import enum
import json
import keyword
import os
from pathlib import Path
from typing import Any, Literal, Optional, Union

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import oobleck as ob
from oobleck.signatures import make_signature
from oobleck.signatures.types import coerce, parse_type, type_to_str

# OOBLECK_PROPERTY_EXAMPLES=5000 turns this into a longer, randomized bug hunt.
_HUNT = int(os.environ.get("OOBLECK_PROPERTY_EXAMPLES", "0"))
PROPERTY = settings(
    max_examples=_HUNT or 120, deadline=None, derandomize=not _HUNT, database=None, suppress_health_check=[HealthCheck.too_slow]
)


class Tone(enum.Enum):
    WARM = "warm"
    COLD = "cold"


class Point(pydantic.BaseModel):
    x: int
    label: str = ""


# -- strategies ------------------------------------------------------------------------------

# Text made of the grammar's own pieces finds deeper parser paths than uniform random text.
PIECES = [
    "a", "b", "question", "answer", ":", ",", "->", "-", ">", " ", "list", "dict", "Literal", "Optional", "Union",
    "str", "int", "float", "bool", "None", "Any", "[", "]", "|", "'", '"', "\\", "'x'", '"y"', "1", "-2", "3.5", "e5",
    "True", "class", "\n", "é", "\x00", "lambda", "__import__",
]  # fmt: skip
grammarish = st.lists(st.sampled_from(PIECES), max_size=25).map("".join)
any_text = st.one_of(st.text(max_size=60), grammarish)

identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True).filter(lambda name: not keyword.iskeyword(name))
literal_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
literal_values = st.one_of(
    literal_text,
    st.integers(-(10**6), 10**6),
    # typing caches Literal[0.0] and Literal[-0.0] as one object (they are equal), so skip -0.0.
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda x: x + 0.0),
    st.booleans(),
    st.none(),
)
base_types = st.sampled_from([str, int, float, bool, Any, list, dict])


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        children.map(lambda t: list[t]),  # type: ignore[valid-type]
        children.map(lambda t: dict[str, t]),  # type: ignore[valid-type]
        children.map(lambda t: Optional[t]),
        st.tuples(children, children).map(lambda ts: Union[ts]),
    )


literals = st.lists(literal_values, min_size=1, max_size=4).map(lambda vs: Literal[tuple(vs)])
field_types = st.recursive(st.one_of(base_types, literals), _extend, max_leaves=5)


@st.composite
def signatures(draw: st.DrawFn) -> type[ob.Signature]:
    names = draw(st.lists(identifiers, min_size=2, max_size=6, unique=True))
    split = draw(st.integers(1, len(names) - 1))
    spec: dict[str, Any] = {}
    for i, name in enumerate(names):
        kind = ob.InputField if i < split else ob.OutputField
        desc = draw(st.one_of(st.just(""), st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)))
        spec[name] = (draw(field_types), kind(desc=desc))
    instructions = draw(st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)))
    return make_signature(spec, instructions)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)),
    max_leaves=10,
)


# -- parsers only raise SignatureError -------------------------------------------------------


@PROPERTY
@given(any_text)
def test_signature_parser_raises_only_signature_errors(text: str) -> None:
    try:
        sig = ob.Signature(text)
    except ob.SignatureError as error:
        if error.position is not None:
            assert 0 <= error.position <= len(text)
        return
    assert sig.input_fields and sig.output_fields


@PROPERTY
@given(any_text)
def test_type_parser_raises_only_signature_errors(text: str) -> None:
    try:
        tp = parse_type(text)
    except ob.SignatureError:
        return
    # Whatever parses prints back to text that parses to the same type.
    assert parse_type(type_to_str(tp)) == tp


# -- valid signatures round-trip -------------------------------------------------------------


def _described(sig: type[ob.Signature]) -> list[tuple[Any, ...]]:
    return [(f.name, f.kind, f.annotation, f.desc, f.prefix) for f in sig.fields.values()]


@PROPERTY
@given(signatures())
def test_signatures_round_trip_through_dicts(sig: type[ob.Signature]) -> None:
    data = json.loads(json.dumps(sig.to_dict()))
    back = ob.Signature.from_dict(data)
    assert _described(back) == _described(sig)
    assert back.instructions == sig.instructions
    assert back.to_dict() == data


@PROPERTY
@given(signatures())
def test_signatures_round_trip_through_their_string_form(sig: type[ob.Signature]) -> None:
    again = ob.Signature(sig.signature)
    assert [(f.name, f.kind, f.annotation) for f in again.fields.values()] == [(f.name, f.kind, f.annotation) for f in sig.fields.values()]
    assert again.signature == sig.signature


@PROPERTY
@given(field_types)
def test_types_round_trip_through_text(tp: Any) -> None:
    assert parse_type(type_to_str(tp)) == tp


# -- coercion only raises ParseError ---------------------------------------------------------

coercion_types = st.one_of(field_types, st.sampled_from([Tone, Point, list[Point], Optional[Tone], type(None)]))
lm_values = st.one_of(
    st.text(max_size=40),
    grammarish,
    json_values,
    json_values.map(json.dumps),
    json_values.map(lambda v: f"```json\n{json.dumps(v)}\n```"),
)


@PROPERTY
@given(lm_values, coercion_types)
def test_coercion_raises_only_parse_errors(value: Any, tp: Any) -> None:
    try:
        result = coerce(value, tp, field="out")
    except ob.ParseError as error:
        assert error.field == "out"
        return
    if tp in (str, int, float, bool):
        assert type(result) is tp
    if tp is Tone:
        assert isinstance(result, Tone)


OUTPUTS = ob.Signature("q -> label: Literal['yes', 'no'], n: int, items: list[str], note, maybe: Optional[float]")


@PROPERTY
@given(st.one_of(st.text(max_size=200), grammarish), st.sampled_from([ob.ChatAdapter(), ob.JSONAdapter(), ob.CompactAdapter()]))
def test_adapters_parse_or_raise_parse_error(completion: str, adapter: ob.Adapter) -> None:
    try:
        parsed = adapter.parse(OUTPUTS, completion)
    except ob.ParseError as error:
        assert error.raw == completion
        return
    assert list(parsed) == list(OUTPUTS.output_fields)
    assert parsed["note"] != ""


# -- the artifact loader only raises oobleck errors ------------------------------------------


class Extract(ob.Signature):
    """Extract the point."""

    text: str = ob.InputField(desc="source")
    tone: Tone = ob.OutputField()
    points: list[Point] = ob.OutputField()


class Program(ob.Module):
    def __init__(self) -> None:
        self.extract = ob.Predict(Extract, temperature=0.1)
        self.steps = [ob.ChainOfThought("question, context: list[str] -> answer: int")]

    def forward(self, **kwargs: Any) -> Any:
        return self.extract(**kwargs)


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
def valid_document(artifact_dir: Path) -> dict[str, Any]:
    program = Program()
    program.extract.demos = [{"text": "t", "tone": "warm", "points": [{"x": 1, "label": ""}]}]
    program.steps[0].demos = [{"question": "q", "context": ["c"], "reasoning": "r", "answer": 3}]
    program.save(artifact_dir / "valid.oobleck", note="seed")
    return json.loads((artifact_dir / "valid.oobleck" / "program.json").read_text(encoding="utf-8"))


def _load_all_ways(path: Path) -> None:
    """Load with and without the program; success or an oobleck error are both fine."""
    for program in (None, Program()):
        try:
            loaded = ob.load(str(path), program)
        except ob.OobleckError:
            continue
        assert isinstance(loaded, ob.Module)
        try:
            loaded.save(path.parent / "resaved.oobleck")  # whatever loads can be saved again
        except ob.OobleckError:
            pass


@PROPERTY
@given(st.binary(max_size=300))
def test_loader_on_arbitrary_bytes(artifact_dir: Path, data: bytes) -> None:
    folder = artifact_dir / "bytes.oobleck"
    folder.mkdir(exist_ok=True)
    (folder / "program.json").write_bytes(data)
    with pytest.raises(ob.ArtifactError):
        ob.load(str(folder))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _paths(child, (*prefix, i))
    return found


@st.composite
def mutated_documents(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        action = draw(st.sampled_from(["replace", "delete", "add", "retype"]))
        if action == "replace":
            parent[last] = draw(json_values)
        elif action == "delete":
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(json_values)
        elif action == "add":
            parent.append(draw(json_values))
        else:
            current = parent[last]
            parent[last] = draw(st.sampled_from([str(current), [current], {"v": current}, None, 0, True, ""]))
    return doc


@PROPERTY
@given(st.data())
def test_loader_on_mutated_program_files(artifact_dir: Path, valid_document: dict[str, Any], data: st.DataObject) -> None:
    doc = data.draw(mutated_documents(valid_document))
    folder = artifact_dir / "mutated.oobleck"
    folder.mkdir(exist_ok=True)
    (folder / "program.json").write_text(json.dumps(doc), encoding="utf-8")
    _load_all_ways(folder)


def test_the_unmutated_document_loads(artifact_dir: Path, valid_document: dict[str, Any]) -> None:
    folder = artifact_dir / "plain.oobleck"
    folder.mkdir(exist_ok=True)
    (folder / "program.json").write_text(json.dumps(valid_document), encoding="utf-8")
    loaded = ob.load(str(folder), Program())
    assert loaded.extract.demos[0]["tone"] == "warm"
    assert loaded.steps[0].demos[0]["answer"] == 3
