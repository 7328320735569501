"""Saving and loading compiled programs (``name.oobleck/program.json``)."""

from __future__ import annotations

import enum
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import pydantic
import pytest

import oobleck as ob
from oobleck.artifact import FORMAT, SCHEMA_VERSION, program_file, read_manifest
from oobleck.testing import ScriptedLM


def prompt_hash_lm() -> ScriptedLM:
    """Answers with a digest of the whole prompt: the same answers mean the same prompts."""

    def respond(messages: list[dict[str, str]], settings: dict[str, Any]) -> str:
        digest = hashlib.sha256(json.dumps([messages, settings], sort_keys=True).encode()).hexdigest()[:12]
        wanted = messages[-1]["content"].split("Reply with ")[1].split(", and end with")[0]
        names = [part.strip()[6:-6] for part in wanted.split(", then ")]
        return "\n\n".join(f"[[ ## {n} ## ]]\n{n}-{digest}" for n in names) + "\n\n[[ ## completed ## ]]"

    return ScriptedLM(respond)


class Hop(ob.Module):
    def __init__(self) -> None:
        self.generate_query = ob.Predict("question -> query")
        self.answer = ob.ChainOfThought("question, query -> answer", temperature=0.2)

    def forward(self, question: str) -> ob.Prediction:
        query = self.generate_query(question=question).query
        return self.answer(question=question, query=query)


class HopReordered(ob.Module):
    """The same predictors as ``Hop``, created in the other order."""

    def __init__(self) -> None:
        self.answer = ob.ChainOfThought("question, query -> answer", temperature=0.2)
        self.generate_query = ob.Predict("question -> query")

    def forward(self, question: str) -> ob.Prediction:
        query = self.generate_query(question=question).query
        return self.answer(question=question, query=query)


def compiled_hop() -> Hop:
    program = Hop()
    program.generate_query.signature = program.generate_query.signature.with_instructions("Write a search query.")
    program.generate_query.demos = [{"question": "Who?", "query": "who is"}, {"question": "Où ?", "query": "où est"}]
    program.answer.demos = [{"question": "Who?", "query": "who is", "reasoning": "because", "answer": "Ada"}]
    program.compile_info = {"optimizer": "Manual", "seed": 3, "scores": {"best": 0.5}}  # type: ignore[attr-defined]
    return program


def document(path: Path) -> dict[str, Any]:
    data = json.loads((path / "program.json").read_text(encoding="utf-8"))
    data.pop("created_at")
    return data


def write(path: Path, content: bytes | str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    data = content.encode("utf-8") if isinstance(content, str) else content
    (path / "program.json").write_bytes(data)
    return path


# -- round trips -----------------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_predictions_and_file(tmp_path: Path) -> None:
    lm = prompt_hash_lm()
    program = compiled_hop()
    program.set_lm(lm)
    before = [program(question=q) for q in ("a", "b")]
    saved = program.save(tmp_path / "hop.oobleck")
    assert saved == tmp_path / "hop.oobleck" and (saved / "program.json").is_file()

    fresh = Hop()
    loaded = ob.load(str(saved), fresh, lm=lm)
    assert loaded is fresh
    after = [loaded(question=q) for q in ("a", "b")]
    assert [dict(p) for p in after] == [dict(p) for p in before]
    assert loaded.generate_query.demos == program.generate_query.demos
    assert loaded.generate_query.signature.instructions == "Write a search query."
    assert loaded.compile_info == program.compile_info  # type: ignore[attr-defined]

    loaded.save(tmp_path / "again.oobleck")
    assert document(tmp_path / "again.oobleck") == document(saved)


def test_program_json_content(tmp_path: Path) -> None:
    program = compiled_hop()
    program.set_lm(ScriptedLM([]))
    data = document(program.save(tmp_path / "hop.oobleck"))
    assert data["format"] == FORMAT == "oobleck.program"
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["program"]["class"] == "Hop"
    predictors = data["program"]["predictors"]
    assert list(predictors) == ["generate_query", "answer"]
    answer = predictors["answer"]
    assert answer["kind"] == "ChainOfThought"
    assert [f["name"] for f in answer["signature"]["fields"]] == ["question", "query", "reasoning", "answer"]
    assert answer["config"] == {"temperature": 0.2}
    assert answer["lm"] == {"model": "scripted/scripted", "settings": {}}
    assert predictors["generate_query"]["demos"][1] == {"question": "Où ?", "query": "où est"}
    assert data["provenance"] == {"optimizer": "Manual", "seed": 3, "scores": {"best": 0.5}}
    raw = (tmp_path / "hop.oobleck" / "program.json").read_text(encoding="utf-8")
    assert "Où ?" in raw  # written as readable UTF-8


def test_loading_matches_predictors_by_name_not_order(tmp_path: Path) -> None:
    lm = prompt_hash_lm()
    program = compiled_hop()
    program.set_lm(lm)
    expected = dict(program(question="x"))
    program.save(tmp_path / "hop.oobleck")
    reordered = ob.load(tmp_path / "hop.oobleck", HopReordered(), lm=lm)
    assert [n for n, _ in reordered.named_predictors()] == ["answer", "generate_query"]
    assert reordered.answer.demos == program.answer.demos
    assert reordered.generate_query.demos == program.generate_query.demos
    assert dict(reordered(question="x")) == expected


def test_single_predictor_loads_without_a_program(tmp_path: Path) -> None:
    lm = prompt_hash_lm()
    cot = ob.ChainOfThought("question -> answer: int", temperature=0.3)
    cot.demos = [{"question": "1+1", "reasoning": "add", "answer": 2}]
    cot.save(tmp_path / "cot.oobleck")
    loaded = ob.load(tmp_path / "cot.oobleck", lm=lm)
    assert isinstance(loaded, ob.ChainOfThought)
    assert list(loaded.signature.output_fields) == ["reasoning", "answer"]
    assert loaded.signature.output_fields["answer"].annotation is int
    assert loaded.demos == cot.demos
    assert loaded.config == {"temperature": 0.3}
    assert loaded.lm is lm
    loaded.save(tmp_path / "again.oobleck")
    cot.lm = lm
    cot.save(tmp_path / "orig.oobleck")
    assert document(tmp_path / "again.oobleck") == document(tmp_path / "orig.oobleck")


def test_load_reads_the_file_path_too(tmp_path: Path) -> None:
    ob.Predict("a -> b").save(tmp_path / "p.oobleck")
    loaded = ob.load(str(tmp_path / "p.oobleck" / "program.json"))
    assert list(loaded.signature.fields) == ["a", "b"]


def test_load_with_an_lm_id(tmp_path: Path) -> None:
    ob.Predict("a -> b").save(tmp_path / "p.oobleck")
    loaded = ob.load(tmp_path / "p.oobleck", lm="openai/some-model")
    assert loaded.lm is not None and loaded.lm.model == "some-model"
    with pytest.raises(ob.UnknownLMError):
        ob.load(tmp_path / "p.oobleck", lm="nowhere/model")


def test_saved_adapter_is_restored(tmp_path: Path) -> None:
    ob.Predict("a -> b", adapter="json").save(tmp_path / "p.oobleck")
    assert ob.load(tmp_path / "p.oobleck").adapter == "json"
    target = ob.Predict("a -> b")
    ob.load(tmp_path / "p.oobleck", target)
    assert target.adapter == "json"
    own = ob.Predict("a -> b", adapter="compact")
    ob.load(tmp_path / "p.oobleck", own)
    assert own.adapter == "compact"  # the program's own choice wins


class Shade(enum.Enum):
    LIGHT = "light"
    DARK = "dark"


class Part(pydantic.BaseModel):
    name: str


class Inspect(ob.Signature):
    """Inspect the object."""

    text: str = ob.InputField()
    shade: Shade = ob.OutputField()
    parts: list[Part] = ob.OutputField()


def test_enum_and_pydantic_fields_load_with_and_without_the_classes(tmp_path: Path) -> None:
    ob.Predict(Inspect).save(tmp_path / "i.oobleck")
    own = ob.Predict(Inspect)
    ob.load(tmp_path / "i.oobleck", own)
    assert own.signature.output_fields["parts"].annotation == list[Part]
    bare = ob.load(tmp_path / "i.oobleck")
    assert bare.signature.output_fields["shade"].annotation == Literal["light", "dark"]
    assert bare.signature.output_fields["parts"].annotation == list[dict[str, Any]]
    assert bare.signature.instructions == "Inspect the object."


def test_no_api_key_in_program_json(tmp_path: Path) -> None:
    secret = "sk-secret-0123456789abcdef"
    lm = ob.LM("openai/x", base_url="http://127.0.0.1:9/v1", api_key=secret, temperature=0.5)
    program = ob.Predict("question -> answer", lm=lm, api_key=secret, headers={"Authorization": f"Bearer {secret}"})
    program.save(tmp_path / "p.oobleck")
    text = (tmp_path / "p.oobleck" / "program.json").read_text(encoding="utf-8")
    assert secret not in text
    data = json.loads(text)
    described = data["program"]["predictors"]["self"]["lm"]
    assert described["model"] == "openai/x"
    assert described["base_url"] == "http://127.0.0.1:9/v1"
    assert described["settings"] == {"temperature": 0.5}


def test_save_requires_a_module_with_predictors(tmp_path: Path) -> None:
    class Empty(ob.Module):
        def forward(self) -> None:
            return None

    with pytest.raises(ob.ArtifactError, match="no predictors"):
        Empty().save(tmp_path / "e.oobleck")
    with pytest.raises(ob.ArtifactError, match="only an ob.Module"):
        program_file.save_program("not a module", tmp_path / "x")  # type: ignore[arg-type]


# -- mismatches ------------------------------------------------------------------------------


def test_mismatched_predictor_names(tmp_path: Path) -> None:
    compiled_hop().save(tmp_path / "hop.oobleck")

    class Other(ob.Module):
        def __init__(self) -> None:
            self.generate_query = ob.Predict("question -> query")
            self.respond = ob.ChainOfThought("question, query -> answer")

    with pytest.raises(ob.ArtifactError) as info:
        ob.load(tmp_path / "hop.oobleck", Other())
    message = str(info.value)
    assert "saved predictor(s) ['answer'] are not in the program" in message
    assert "program predictor(s) ['respond'] are not in the file" in message


def test_mismatched_field_names(tmp_path: Path) -> None:
    compiled_hop().save(tmp_path / "hop.oobleck")

    class Renamed(ob.Module):
        def __init__(self) -> None:
            self.generate_query = ob.Predict("question -> search")
            self.answer = ob.ChainOfThought("question, query -> answer")

    program = Renamed()
    with pytest.raises(ob.ArtifactError) as info:
        ob.load(tmp_path / "hop.oobleck", program)
    message = str(info.value)
    assert "'generate_query'" in message
    assert "['question', 'query']" in message and "['question', 'search']" in message
    # Nothing was half-loaded into the program.
    assert program.answer.demos == [] and program.generate_query.demos == []


def test_multi_predictor_artifact_needs_the_program(tmp_path: Path) -> None:
    compiled_hop().save(tmp_path / "hop.oobleck")
    with pytest.raises(ob.ArtifactError, match=r"pass the program object"):
        ob.load(tmp_path / "hop.oobleck")
    with pytest.raises(ob.ArtifactError, match="must be an ob.Module"):
        ob.load(tmp_path / "hop.oobleck", "Hop")  # type: ignore[arg-type]


# -- broken files ----------------------------------------------------------------------------


def valid_text(tmp_path: Path) -> str:
    compiled_hop().save(tmp_path / "valid.oobleck")
    return (tmp_path / "valid.oobleck" / "program.json").read_text(encoding="utf-8")


def test_truncated_file(tmp_path: Path) -> None:
    text = valid_text(tmp_path)
    path = write(tmp_path / "t.oobleck", text[: len(text) // 2])
    with pytest.raises(ob.ArtifactError, match=r"is not valid JSON \(truncated or damaged\?\)"):
        ob.load(path, Hop())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not valid JSON"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8"),
        ("caf\xe9".encode("latin-1"), "not UTF-8"),
        (b"\x80\x04\x95pickle", "not UTF-8"),
        ("hello world", "not valid JSON"),
        ("[1, 2, 3]", "top level must be a JSON object"),
        ("{}", "not an oobleck program (format is None"),
        ('{"format": "dspy.program", "program": {}}', "format is 'dspy.program'"),
        ('{"format": "oobleck.program"}', "schema_version is missing"),
        ('{"format": "oobleck.program", "schema_version": "1"}', "schema_version is missing or not an integer"),
        ('{"format": "oobleck.program", "schema_version": true}', "schema_version is missing or not an integer"),
        ('{"format": "oobleck.program", "schema_version": 0, "program": {}}', "not a valid version"),
        ('{"format": "oobleck.program", "schema_version": 99, "program": {}}', "schema_version 99 is newer"),
        ('{"format": "oobleck.program", "schema_version": 1, "program": {"predictors": {}}}', "non-empty object"),
        ('{"format": "oobleck.program", "schema_version": ' + "1" * 5000 + "}", "not a readable program file"),
        ('{"a": ' + "[" * 100000 + "}", "JSON"),
    ],
)
def test_garbage_and_foreign_files(tmp_path: Path, content: bytes | str, message: str) -> None:
    path = write(tmp_path / "bad.oobleck", content)
    with pytest.raises(ob.ArtifactError, match=message.replace("(", r"\(").replace("?", r"\?")):
        ob.load(path)
    with pytest.raises(ob.ArtifactError):
        read_manifest(path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.update(kind="Retrieve"), "unknown kind 'Retrieve'"),
        (lambda p: p.update(signature="question -> answer"), "no valid signature"),
        (lambda p: p["signature"]["fields"].append({"name": "x"}), "string 'name' and 'type'"),
        (lambda p: p["signature"].update(instructions=["x"]), "instructions must be text"),
        (lambda p: p.update(demos={"a": 1}), "demos must be a list of objects"),
        (lambda p: p.update(demos=[1]), "demos must be a list of objects"),
        (lambda p: p.update(adapter=3), "adapter must be a name"),
        (lambda p: p.update(adapter="yaml"), "unknown adapter 'yaml'"),
        (lambda p: p.update(config=[]), "config must be an object"),
        (lambda p: p.update(lm="gpt"), "lm must be an object"),
        (lambda p: p["signature"]["fields"][0].update(type="list[Nope]"), "invalid signature"),
        (lambda p: p["signature"]["fields"][0].update(kind="both"), "invalid signature"),
        (lambda p: p["signature"].update(fields=[p["signature"]["fields"][0]]), "at least one input and one output"),
    ],
)
def test_invalid_predictor_state(tmp_path: Path, mutate: Any, message: str) -> None:
    program = ob.Predict("question -> answer")
    program.save(tmp_path / "p.oobleck")
    data = json.loads((tmp_path / "p.oobleck" / "program.json").read_text())
    mutate(data["program"]["predictors"]["self"])
    write(tmp_path / "p.oobleck", json.dumps(data))
    with pytest.raises(ob.ArtifactError, match=message):
        ob.load(tmp_path / "p.oobleck")


def test_provenance_must_be_an_object(tmp_path: Path) -> None:
    ob.Predict("a -> b").save(tmp_path / "p.oobleck")
    data = json.loads((tmp_path / "p.oobleck" / "program.json").read_text())
    data["provenance"] = "yesterday"
    write(tmp_path / "p.oobleck", json.dumps(data))
    with pytest.raises(ob.ArtifactError, match="provenance must be an object"):
        ob.load(tmp_path / "p.oobleck")


def test_config_keys_never_collide_with_constructor_arguments(tmp_path: Path) -> None:
    ob.Predict("a -> b").save(tmp_path / "p.oobleck")
    data = json.loads((tmp_path / "p.oobleck" / "program.json").read_text())
    data["program"]["predictors"]["self"]["config"] = {"signature": "x", "lm": "y", "temperature": 1}
    write(tmp_path / "p.oobleck", json.dumps(data))
    loaded = ob.load(tmp_path / "p.oobleck")
    assert loaded.config == {"signature": "x", "lm": "y", "temperature": 1}
    assert loaded.lm is None


def test_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(ob.ArtifactError, match="no artifact at"):
        ob.load(tmp_path / "nothing.oobleck")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ob.ArtifactError, match="holds no program.json"):
        ob.load(tmp_path / "empty")


# -- atomic saves ----------------------------------------------------------------------------


def test_saving_over_an_artifact_replaces_it_without_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "p.oobleck"
    first = ob.Predict("question -> answer")
    first.save(target)
    second = ob.Predict("question -> answer", demos=[{"question": "q", "answer": "a"}])
    second.save(target)
    assert os.listdir(tmp_path) == ["p.oobleck"]
    assert os.listdir(target) == ["program.json"]
    assert ob.load(target).demos == [{"question": "q", "answer": "a"}]


def test_a_failed_save_keeps_the_old_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "p.oobleck"
    ob.Predict("question -> answer", demos=[{"question": "old", "answer": "a"}]).save(target)
    real_replace = os.replace
    calls = []

    def flaky_replace(src: Any, dst: Any) -> None:
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the staged folder moving into place
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(program_file.os, "replace", flaky_replace)
    with pytest.raises(OSError, match="disk full"):
        ob.Predict("question -> answer", demos=[{"question": "new", "answer": "b"}]).save(target)
    monkeypatch.undo()
    assert len(calls) == 3  # old out of the way, staged in (failed), old back
    assert os.listdir(tmp_path) == ["p.oobleck"]
    assert ob.load(target).demos == [{"question": "old", "answer": "a"}]


def test_a_crash_while_writing_leaves_no_staging_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any) -> None:
        raise OSError("fsync failed")

    monkeypatch.setattr(program_file.os, "fsync", fail)
    with pytest.raises(OSError, match="fsync failed"):
        ob.Predict("a -> b").save(tmp_path / "p.oobleck")
    assert os.listdir(tmp_path) == []


def test_refuses_to_replace_something_that_is_not_an_artifact(tmp_path: Path) -> None:
    folder = tmp_path / "my_project"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    with pytest.raises(ob.ArtifactError, match="not an oobleck artifact; refusing"):
        ob.Predict("a -> b").save(folder)
    assert (folder / "notes.txt").read_text() == "precious"
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(ob.ArtifactError, match="not an artifact folder"):
        ob.Predict("a -> b").save(file)
    assert file.read_text() == "x"
    assert sorted(os.listdir(tmp_path)) == ["file.txt", "my_project"]
    (tmp_path / "empty").mkdir()
    ob.Predict("a -> b").save(tmp_path / "empty")  # an empty folder is fine to fill
    assert (tmp_path / "empty" / "program.json").is_file()


def test_save_creates_parent_folders(tmp_path: Path) -> None:
    path = ob.Predict("a -> b").save(tmp_path / "deep" / "er" / "p.oobleck")
    assert (path / "program.json").is_file()


def test_provenance_argument_to_save(tmp_path: Path) -> None:
    program = ob.Predict("a -> b")
    program.save(tmp_path / "p.oobleck", note="hand-tuned", rounds=2)
    assert document(tmp_path / "p.oobleck")["provenance"] == {"note": "hand-tuned", "rounds": 2}
    assert ob.load(tmp_path / "p.oobleck").compile_info == {"note": "hand-tuned", "rounds": 2}


def test_text_that_is_not_valid_unicode_still_saves(tmp_path: Path) -> None:
    program = ob.Predict("a -> b", demos=[{"a": "\ud800 lone surrogate", "b": "ok"}])
    program.save(tmp_path / "p.oobleck")
    assert ob.load(tmp_path / "p.oobleck").demos == program.demos
