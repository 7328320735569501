"""DSPy interop against the installed DSPy: convert, compile with oobleck, export, load in DSPy.

DSPy never calls a real LM here: oobleck programs run on ``FieldScriptedLM``, DSPy only formats
prompts (``dspy.ChatAdapter().format``) and, once, runs on ``dspy.utils.DummyLM``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

try:
    import dspy
except ImportError:  # not installed, or unimportable here: nothing to round-trip against
    pytest.skip("DSPy is not importable (pip install 'oobleck[dspy]')", allow_module_level=True)

import oobleck as ob
from oobleck.interop import DSPyProgram, dspy_names, from_dspy, import_dspy_json, to_dspy
from oobleck.interop.dspy import dspy_prefix
from oobleck.testing import FieldScriptedLM

ROOT = Path(__file__).resolve().parents[1]


class QA(dspy.Signature):
    """Answer the question with a short factoid."""

    context: list[str] = dspy.InputField(desc="facts that may help")
    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="1-5 words")


class Pipeline(dspy.Module):
    """A user module: a string-signature Predict, a list of predictors and a ChainOfThought on a class signature."""

    def __init__(self):
        super().__init__()
        self.rewrite = dspy.Predict("question -> query")
        self.hops = [dspy.Predict("query -> note")]
        self.respond = dspy.ChainOfThought(QA)

    def forward(self, question):
        query = self.rewrite(question=question).query
        note = self.hops[0](query=query).note
        return self.respond(context=[note], question=question)


class Inner(dspy.Module):
    def __init__(self):
        super().__init__()
        self.gen = dspy.ChainOfThought("text -> label: Literal['pos', 'neg']")

    def forward(self, text):
        return self.gen(text=text)


class Nested(dspy.Module):
    """Every place DSPy finds predictors: attribute, list, dict, nested module, shared predictor."""

    def __init__(self):
        super().__init__()
        shared = dspy.Predict("a -> b")
        self.first = shared
        self.steps = [dspy.ChainOfThought("a -> b"), Inner()]
        self.table = {"x": dspy.Predict("a -> c"), "y": shared}
        self.inner = Inner()
        self.settings_like = {"not": "a predictor"}

    def forward(self, a):
        return self.first(a=a)


class Shout(dspy.Module):
    """A helper module with no predictors: left as it is, and still called by the program's forward."""

    def forward(self, text):
        return text.upper() + "!"


class WithHelper(dspy.Module):
    def __init__(self):
        super().__init__()
        self.shout = Shout()
        self.step = dspy.Predict("question -> query")

    def forward(self, question):
        return dspy.Prediction(query=self.shout(self.step(question=question).query))


def respond(inputs: dict[str, str]) -> dict[str, object]:
    """The scripted LM behind every oobleck run: each step transforms its input deterministically."""
    if "context" in inputs:
        return {"reasoning": "the note says so", "answer": inputs["question"].upper()}
    if "query" in inputs:
        return {"note": "note:" + inputs["query"]}
    return {"query": "q:" + inputs["question"]}


TRAIN = [ob.Example(question=w, answer=w.upper()).with_inputs("question") for w in ["paris", "rome", "oslo", "lima", "kyiv", "bern"]]


def dspy_messages(signature, demos, inputs):
    return dspy.ChatAdapter().format(signature, demos, inputs)


# -- signatures --------------------------------------------------------------------------------


def test_class_signature_keeps_fields_types_descriptions_and_instructions():
    sig = from_dspy(QA)
    assert issubclass(sig, ob.Signature) and sig.__name__ == "QA"
    assert list(sig.input_fields) == ["context", "question"] and list(sig.output_fields) == ["answer"]
    assert sig.input_fields["context"].annotation == list[str]
    assert sig.input_fields["context"].desc == "facts that may help"
    assert sig.input_fields["question"].desc == ""  # DSPy's "${question}" placeholder means no description
    assert sig.output_fields["answer"].desc == "1-5 words"
    assert sig.instructions == QA.instructions and sig.has_custom_instructions


def test_string_signature_is_parsed_by_dspy_and_keeps_default_instructions():
    sig = from_dspy("question, k: int -> answers: list[str], label: Literal['a', 'b']")
    assert sig.input_fields["k"].annotation is int
    assert sig.output_fields["answers"].annotation == list[str]
    assert sig.output_fields["label"].annotation == Literal["a", "b"]
    assert not sig.has_custom_instructions
    assert sig.instructions == dspy.Signature("question, k: int -> answers: list[str], label: Literal['a', 'b']").instructions


def test_custom_prefix_survives_and_default_prefix_matches_dspy():
    from dspy.signatures.signature import infer_prefix

    for name in ["question", "answer", "snake_case_text", "camelCaseText", "text2number", "HTMLParser", "x_1", "Q2A", "reasoning"]:
        assert dspy_prefix(name) == infer_prefix(name) + ":", name
    custom = dspy.Signature("question -> answer").with_updated_fields("answer", prefix="Final Answer:")
    assert from_dspy(custom).output_fields["answer"].prefix == "Final Answer:"
    assert from_dspy(dspy.Signature("question -> answer")).output_fields["answer"].prefix is None


def test_dspy_only_types_and_modules_are_refused_clearly():
    class Caption(dspy.Signature):
        image: dspy.Image = dspy.InputField()
        caption: str = dspy.OutputField()

    with pytest.raises(ob.SignatureError, match=r"Caption.image has type Image, a DSPy-specific type"):
        from_dspy(Caption)
    with pytest.raises(ob.ConfigurationError, match=r"dspy\.ReAct"):
        from_dspy(dspy.ReAct("question -> answer", tools=[]))

    class WithAgent(dspy.Module):
        def __init__(self):
            super().__init__()
            self.plan = dspy.Predict("q -> a")
            self.agent = dspy.ReAct("question -> answer", tools=[])

    with pytest.raises(ob.ConfigurationError, match=r"WithAgent\.agent is a dspy\.ReAct"):
        from_dspy(WithAgent())
    with pytest.raises(ob.ConfigurationError, match="not int"):
        from_dspy(3)
    with pytest.raises(ob.ConfigurationError, match=r"instance: from_dspy\(Pipeline\(...\)\), not the class"):
        from_dspy(Pipeline)

    class Awkward(dspy.Module):
        def __init__(self, attribute, frozen=False):
            super().__init__()
            inner = Inner()
            inner._compiled = frozen
            setattr(self, attribute, inner)

    with pytest.raises(ob.ConfigurationError, match="Awkward._steps holds predictors, but oobleck skips attributes whose names start with '_'"):
        from_dspy(Awkward("_steps"))
    with pytest.raises(ob.ConfigurationError, match="'bound' is taken"):
        from_dspy(Awkward("bound"))
    with pytest.raises(ob.ConfigurationError, match=r"steps is a DSPy module marked compiled \(frozen\)"):
        from_dspy(Awkward("steps", frozen=True))


# -- predictors and modules --------------------------------------------------------------------


def test_predict_and_chain_of_thought_keep_demos_config_and_instructions():
    predict = dspy.Predict(QA, temperature=0.3, rollout_id=7)
    predict.demos = [dspy.Example(context=["c"], question="q", answer="a"), {"context": ["d"], "question": "r", "answer": "b"}]
    converted = from_dspy(predict)
    assert type(converted) is ob.Predict
    assert converted.demos == [{"context": ["c"], "question": "q", "answer": "a"}, {"context": ["d"], "question": "r", "answer": "b"}]
    assert converted.config == {"temperature": 0.3}  # DSPy-only settings (rollout_id) are left out

    cot = dspy.ChainOfThought("question -> answer")
    cot.predict.demos = [{"question": "q", "reasoning": "r", "answer": "a"}]
    converted = from_dspy(cot)
    assert type(converted) is ob.ChainOfThought
    assert list(converted.signature.output_fields) == ["reasoning", "answer"]
    assert converted.demos == [{"question": "q", "reasoning": "r", "answer": "a"}]
    # DSPy keeps the instructions of the signature before `reasoning` was added; so does the conversion.
    assert converted.signature.instructions == cot.predict.signature.instructions
    assert dspy_names(converted) == {"self": "predict"} and dspy_names(from_dspy(predict)) == {"self": "self"}


def test_predictor_names_map_to_dspy_names_in_dspy_order():
    native = Nested()
    program = from_dspy(native)
    assert isinstance(program, DSPyProgram)
    names = dspy_names(program)
    assert list(names.values()) == [name for name, _ in native.named_predictors()]
    assert names == {
        "first": "first",
        "steps.0": "steps[0].predict",
        "steps.1.gen": "steps[1].gen.predict",
        "table.x": "table['x']",
        "inner.gen": "inner.gen.predict",
    }
    assert program.first is program.table["y"]  # one DSPy predictor under two names stays one predictor, named once


def test_forward_runs_the_dspy_code_with_oobleck_predictors():
    native = Pipeline()
    program = from_dspy(native)
    lm = FieldScriptedLM(respond)
    with ob.context(lm=lm):
        prediction = program(question="paris")
        assert prediction.answer == "PARIS" and prediction.reasoning == "the note says so"
        with ob.trace() as calls:
            asyncio.run(program.acall(question="rome"))
    assert lm.calls == 6
    assert [type(c.predictor).__name__ for c in calls] == ["Predict", "Predict", "ChainOfThought"]
    assert calls[1].inputs == {"query": "q:rome"} and calls[2].inputs["context"] == ["note:q:rome"]
    # The DSPy object is untouched: its predictors are still DSPy's.
    assert type(native.rewrite) is dspy.Predict and type(native.hops[0]) is dspy.Predict and native.rewrite.demos == []


def test_async_forward_of_the_dspy_module_is_used():
    class AsyncPipeline(Pipeline):
        async def aforward(self, question):
            query = (await self.rewrite.acall(question=question)).query
            note = (await self.hops[0].acall(query=query)).note
            return await self.respond.acall(context=[note, "async"], question=question)

    program = from_dspy(AsyncPipeline())
    with ob.context(lm=FieldScriptedLM(respond)), ob.trace() as calls:
        assert asyncio.run(program.acall(question="oslo")).answer == "OSLO"
    assert calls[-1].inputs["context"] == ["note:q:oslo", "async"]  # its own aforward ran, not forward in a thread


def test_helper_modules_without_predictors_are_kept():
    program = from_dspy(WithHelper())
    assert dspy_names(program) == {"step": "step"} and not hasattr(program, "shout")
    with ob.context(lm=FieldScriptedLM(respond)):
        assert program(question="hi").query == "Q:HI!"
    with pytest.raises(ob.ConfigurationError, match="Shout has no dspy.Predict or dspy.ChainOfThought to convert"):
        from_dspy(Shout())


def test_copies_run_their_own_predictors():
    program = from_dspy(Pipeline())
    copy = program.deepcopy()
    copy.respond.demos = [{"context": ["x"], "question": "y", "reasoning": "z", "answer": "w"}]
    assert program.respond.demos == [] and copy.dspy_module is program.dspy_module
    seen = []

    def spy(messages, settings):
        seen.append(messages)
        return "[[ ## reasoning ## ]]\nr\n\n[[ ## answer ## ]]\nA\n\n[[ ## completed ## ]]"

    scripted = ob.testing.ScriptedLM(spy)
    copy.respond.lm = scripted
    with ob.context(lm=FieldScriptedLM(respond)):
        copy(question="q")
    assert len(seen) == 1 and any("[[ ## question ## ]]\ny" in m["content"] for m in seen[0])  # the copy's demo was shown


# -- the round trip: DSPy -> oobleck -> compile -> DSPy ------------------------------------------


@pytest.fixture(scope="module")
def compiled_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[ob.Module, Path]:
    program = from_dspy(Pipeline())
    with ob.context(lm=FieldScriptedLM(respond)):
        compiled = ob.optimizers.BootstrapFewShot(metric=ob.metrics.exact_match, max_demos=2, max_labeled_demos=1).compile(
            program, trainset=TRAIN
        )
    compiled.respond.signature = compiled.respond.signature.with_instructions("Answer in capitals, from the note.")
    folder = tmp_path_factory.mktemp("dspy") / "pipeline.oobleck"
    compiled.save(folder)
    return compiled, folder


def test_exported_program_loads_in_dspy_with_the_same_prompts(compiled_artifact, tmp_path):
    compiled, folder = compiled_artifact
    manifest = json.loads((folder / "program.json").read_text())["program"]["predictors"]
    assert all(manifest[name]["demos"] for name in ("rewrite", "hops.0", "respond"))  # the compile found demos for every step

    exported = to_dspy(folder, tmp_path / "pipeline.json")
    from_module = to_dspy(compiled, tmp_path / "from_module.json")
    assert json.loads(exported.read_text()) == json.loads(from_module.read_text())

    loaded = Pipeline()
    loaded.load(str(exported))
    fresh = Pipeline()
    names = dspy_names(compiled)
    assert sorted(names.values()) == sorted(n for n, _ in loaded.named_predictors())
    inputs = {"rewrite": {"question": "who?"}, "hops.0": {"query": "q:who?"}, "respond": {"context": ["n"], "question": "who?"}}
    for name, state in manifest.items():
        dspy_predictor = dict(loaded.named_predictors())[names[name]]
        instructions = state["signature"]["instructions"]
        assert dspy_predictor.signature.instructions == instructions
        assert dspy_predictor.demos == state["demos"]
        # DSPy formats exactly the prompt it would for its own program given these instructions and demos.
        original = dict(fresh.named_predictors())[names[name]].signature.with_instructions(instructions)
        got = dspy_messages(dspy_predictor.signature, dspy_predictor.demos, inputs[name])
        assert got == dspy_messages(original, state["demos"], inputs[name])
        assert instructions in got[0]["content"]
        # Both frameworks skip a demo with no output of this step (a labeled demo of another step's fields).
        fields = [f["name"] for f in state["signature"]["fields"]]
        outputs = [f["name"] for f in state["signature"]["fields"] if f["kind"] == "output"]
        shown = [d for d in state["demos"] if any(k in d for k in outputs)]
        assert len(got) == 2 + 2 * len(shown)
        pairs = list(zip(got[1:-1:2], got[2:-1:2]))
        for demo in shown:
            values = [v if isinstance(v, str) else json.dumps(v) for k, v in demo.items() if k in fields]
            assert any(all(v in user["content"] + assistant["content"] for v in values) for user, assistant in pairs), demo
    assert manifest["respond"]["signature"]["instructions"] == "Answer in capitals, from the note."
    assert [f["name"] for f in manifest["respond"]["signature"]["fields"]] == ["context", "question", "reasoning", "answer"]
    bootstrapped = [d for d in manifest["respond"]["demos"] if "context" in d]  # traces of runs; the labeled one has no context
    assert len(bootstrapped) == 2 and all(d["reasoning"] == "the note says so" for d in bootstrapped)


def test_loaded_dspy_program_runs_on_a_dummy_lm(compiled_artifact, tmp_path):
    from dspy.utils import DummyLM

    _, folder = compiled_artifact
    loaded = Pipeline()
    loaded.load(str(to_dspy(folder, tmp_path / "p.json")))
    lm = DummyLM([{"query": "q"}, {"note": "n"}, {"reasoning": "r", "answer": "OSLO"}])
    with dspy.context(lm=lm):
        assert loaded(question="oslo").answer == "OSLO"
    last = lm.history[-1]["messages"]
    assert "Answer in capitals, from the note." in last[0]["content"]


def test_export_checks_names_and_fields_against_the_dspy_program(compiled_artifact, tmp_path):
    compiled, folder = compiled_artifact

    class Other(dspy.Module):
        def __init__(self):
            super().__init__()
            self.rewrite = dspy.Predict("question -> query")
            self.hops = [dspy.Predict("query -> note")]
            self.answer = dspy.ChainOfThought(QA)

    with pytest.raises(ob.ArtifactError, match=r"\['respond'\] are not in the DSPy program.*\['answer'\]"):
        to_dspy(folder, tmp_path / "x.json", dspy_program=Other())

    class Fields(Pipeline):
        def __init__(self):
            super().__init__()
            self.rewrite = dspy.Predict("question -> search_query")

    with pytest.raises(ob.ArtifactError, match=r"'rewrite' has fields \['question', 'query'\] .* \['question', 'search_query'\]"):
        to_dspy(compiled, tmp_path / "x.json", dspy_program=Fields())
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(ob.ConfigurationError, match="does not end in .json"):
        to_dspy(compiled, tmp_path / "x.pkl")

    class PerCall:  # stands in for KNNFewShot's selector: demos chosen per call cannot be written as DSPy state
        def select(self, inputs):
            return []

    per_call = compiled.deepcopy()
    per_call.rewrite.demo_selector = PerCall()
    with pytest.raises(ob.ConfigurationError, match="'rewrite' picks its demos per call"):
        to_dspy(per_call, tmp_path / "x.json")


# -- DSPy-saved JSON -> oobleck ----------------------------------------------------------------


@pytest.fixture
def dspy_saved(tmp_path: Path) -> tuple[Pipeline, Path]:
    """A program compiled by DSPy's own LabeledFewShot (no LM needed) with new instructions, saved by DSPy."""
    trainset = [dspy.Example(question=w, query="q:" + w, note="note:q:" + w, context=["c"], reasoning="r", answer=w.upper())
                .with_inputs("question") for w in ["paris", "rome", "oslo"]]  # fmt: skip
    compiled = dspy.LabeledFewShot(k=2).compile(Pipeline(), trainset=trainset)
    compiled.respond.predict.signature = compiled.respond.predict.signature.with_instructions("Use the note.")
    path = tmp_path / "dspy_program.json"
    compiled.save(str(path))
    return compiled, path


def test_import_of_dspy_saved_json_gives_the_same_instructions_and_demos(dspy_saved, tmp_path):
    _, path = dspy_saved
    program = import_dspy_json(path, Pipeline(), out=tmp_path / "imported.oobleck")
    saved = json.loads(path.read_text())
    names = dspy_names(program)
    for name, predictor in program.named_predictors():
        assert predictor.signature.instructions == saved[names[name]]["signature"]["instructions"]
        assert predictor.demos == saved[names[name]]["demos"]
    assert program.respond.signature.instructions == "Use the note."
    assert program.compile_info["imported_from"] == "dspy"

    again = ob.load(tmp_path / "imported.oobleck", program=from_dspy(Pipeline()))
    assert again.respond.demos == saved["respond.predict"]["demos"]
    # Back to DSPy: the state is the one DSPy saved, apart from the metadata.
    back = json.loads(to_dspy(again, tmp_path / "back.json").read_text())
    assert {k: v for k, v in back.items() if k != "metadata"} == {k: v for k, v in saved.items() if k != "metadata"}
    assert back["metadata"]["dependency_versions"] == saved["metadata"]["dependency_versions"]


def test_import_into_an_oobleck_program_of_the_same_shape(dspy_saved):
    _, path = dspy_saved

    class Native(ob.Module):
        def __init__(self):
            self.rewrite = ob.Predict("question -> query")
            self.hops = [ob.Predict("query -> note")]
            self.respond = ob.ChainOfThought("context: list[str], question -> answer")

        def forward(self, question):
            return self.respond(context=[self.hops[0](query=self.rewrite(question=question).query).note], question=question)

    user = Native()
    program = import_dspy_json(path, user)
    assert program.respond.signature.instructions == "Use the note." and len(program.hops[0].demos) == 2
    assert user.respond.demos == []  # the program passed in is not changed
    with ob.context(lm=FieldScriptedLM(respond)):
        assert program(question="bern").answer == "BERN"


def test_single_predictors_round_trip_through_dspy_json(tmp_path):
    for make, own_name in ((lambda: dspy.ChainOfThought("question -> answer"), "predict"), (lambda: dspy.Predict(QA), "self")):
        native = make()
        state = dict(native.named_predictors())[own_name]
        state.demos = [{"question": "q", "reasoning": "r", "answer": "a", "context": ["c"]}]
        state.signature = state.signature.with_instructions("Be brief.")
        native.save(str(tmp_path / "one.json"))
        program = import_dspy_json(tmp_path / "one.json", make())
        assert type(program) is (ob.ChainOfThought if own_name == "predict" else ob.Predict)
        assert program.signature.instructions == "Be brief." and program.demos == state.demos
        saved = json.loads((tmp_path / "one.json").read_text())
        back = json.loads(to_dspy(program, tmp_path / "back.json").read_text())
        assert back.keys() == saved.keys() and {k: v for k, v in back.items() if k != "metadata"} == {
            k: v for k, v in saved.items() if k != "metadata"
        }
        again = make()
        again.load(str(tmp_path / "back.json"))
        assert dict(again.named_predictors())[own_name].demos == state.demos


def test_bad_dspy_files_are_refused_clearly(dspy_saved, tmp_path):
    native, path = dspy_saved
    saved = json.loads(path.read_text())

    pickled = tmp_path / "program.pkl"
    native.save(str(pickled))  # DSPy's own cloudpickle format
    with pytest.raises(ob.ArtifactError, match="is a pickle; oobleck never loads pickles"):
        import_dspy_json(pickled, Pipeline())
    disguised = tmp_path / "disguised.json"
    disguised.write_bytes(pickled.read_bytes())
    with pytest.raises(ob.ArtifactError, match="holds a pickle, not JSON"):
        import_dspy_json(disguised, Pipeline())

    renamed = dict(saved)
    renamed["rewriter"] = renamed.pop("rewrite")
    (tmp_path / "renamed.json").write_text(json.dumps(renamed))
    with pytest.raises(ob.ArtifactError, match=r"predictors \['rewriter'\] are not in the program.*\['rewrite'\] are not in the file"):
        import_dspy_json(tmp_path / "renamed.json", Pipeline())

    short = json.loads(path.read_text())
    short["hops[0]"]["signature"]["fields"].pop()
    (tmp_path / "short.json").write_text(json.dumps(short))
    with pytest.raises(ob.ArtifactError, match=r"'hops\[0\]' was saved with 1 fields but the program's has 2"):
        import_dspy_json(tmp_path / "short.json", Pipeline())

    class Swapped(Pipeline):
        def __init__(self):
            super().__init__()
            self.rewrite = dspy.Predict("question -> search")

    with pytest.raises(ob.ArtifactError, match="saved field 'query' stands where the program has 'search'"):
        import_dspy_json(path, Swapped())
    (tmp_path / "broken.json").write_text('{"rewrite": {"signature": ')
    with pytest.raises(ob.ArtifactError, match="not a JSON file DSPy saved"):
        import_dspy_json(tmp_path / "broken.json", Pipeline())
    with pytest.raises(ob.ConfigurationError, match="needs the program the file belongs to"):
        import_dspy_json(path, "Pipeline")


# -- command line and import cost --------------------------------------------------------------

CLI_PROGRAM = '''
import dspy

class Pipeline(dspy.Module):
    def __init__(self):
        super().__init__()
        self.rewrite = dspy.Predict("question -> query")
        self.hops = [dspy.Predict("query -> note")]
        self.respond = dspy.ChainOfThought("context: list[str], question -> answer")

    def forward(self, question):
        return self.respond(context=[self.hops[0](query=self.rewrite(question=question).query).note], question=question)
'''


def test_cli_import_and_export(dspy_saved, tmp_path):
    from typer.testing import CliRunner

    from oobleck.cli import app

    _, path = dspy_saved
    (tmp_path / "prog.py").write_text(CLI_PROGRAM)
    runner = CliRunner()
    result = runner.invoke(app, ["import-dspy", str(path), "--program", f"{tmp_path / 'prog.py'}:Pipeline", "--out", str(tmp_path / "a.oobleck")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "a.oobleck" / "program.json").read_text())
    assert manifest["program"]["predictors"]["respond"]["signature"]["instructions"] == "Use the note."
    result = runner.invoke(app, ["export-dspy", str(tmp_path / "a.oobleck"), "--out", str(tmp_path / "b.json"),
                                 "--program", f"{tmp_path / 'prog.py'}:Pipeline"])  # fmt: skip
    assert result.exit_code == 0, result.output
    saved, back = json.loads(path.read_text()), json.loads((tmp_path / "b.json").read_text())
    assert {k: v for k, v in back.items() if k != "metadata"} == {k: v for k, v in saved.items() if k != "metadata"}
    result = runner.invoke(app, ["import-dspy", str(tmp_path / "x.pkl"), "--program", f"{tmp_path / 'prog.py'}:Pipeline", "--out", "o"])
    assert result.exit_code == 2 and "never loads pickles" in result.output


def test_cli_compiles_a_dspy_program_and_exports_it_for_dspy(tmp_path, monkeypatch):
    """``oobleck compile my_dspy.py:Pipeline`` against a real OpenAI-compatible server on loopback."""
    from typer.testing import CliRunner

    from oobleck.cli import app
    from oobleck.testing import OpenAITestServer

    (tmp_path / "prog.py").write_text(CLI_PROGRAM)
    rows = [{"question": w, "answer": w} for w in ["paris", "rome", "oslo", "lima", "kyiv", "bern"]]
    for name, part in (("train", rows[:4]), ("dev", rows[4:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    with OpenAITestServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        result = CliRunner().invoke(app, [
            "compile", f"{tmp_path / 'prog.py'}:Pipeline", "--train", str(tmp_path / "train.jsonl"), "--dev", str(tmp_path / "dev.jsonl"),
            "--inputs", "question", "--optimizer", "labeled", "--max-demos", "2", "--lm", "openai/test-model",
            "--out", str(tmp_path / "c.oobleck"),
        ])  # fmt: skip
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["export-dspy", str(tmp_path / "c.oobleck"), "--out", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "c.oobleck" / "program.json").read_text())["program"]["predictors"]
    assert sorted(manifest) == ["hops.0", "respond", "rewrite"]
    loaded = Pipeline()
    loaded.load(str(tmp_path / "c.json"))
    assert loaded.respond.predict.demos == manifest["respond"]["demos"] and len(loaded.respond.predict.demos) == 2
    assert loaded.hops[0].signature.instructions == manifest["hops.0"]["signature"]["instructions"]


def test_import_oobleck_does_not_import_dspy():
    code = "import sys, oobleck as ob; ob.interop; ob.from_dspy; print('dspy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
