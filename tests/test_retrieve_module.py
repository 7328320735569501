"""``ob.Retrieve``: passages in predictions and traces, multi-hop bootstrapping, and artifacts of programs holding it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import oobleck as ob
from oobleck.retrieval import BM25, FunctionRetriever
from oobleck.testing import FieldScriptedLM

CORPUS = [
    {"id": "ann", "title": "Ann Lee", "text": "Ann Lee works for Acme Corp."},
    {"id": "bob", "title": "Bob Ray", "text": "Bob Ray works for Zenith Labs."},
    {"id": "acme", "title": "Acme Corp", "text": "Acme Corp is headquartered in Oslo."},
    {"id": "zenith", "title": "Zenith Labs", "text": "Zenith Labs is headquartered in Lima."},
]


@pytest.fixture(autouse=True)
def _no_configured_retriever() -> Any:
    yield
    ob.configure(retriever=None)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return BM25(CORPUS, progress=False).save(tmp_path_factory.mktemp("indexes") / "bm25.index")


class TwoHop(ob.Module):
    """Query for the person, then for what the notes say they work for; answer from the notes."""

    def __init__(self, retriever: Any = None):
        self.hops = [ob.Predict("context: list[str], question -> query") for _ in range(2)]
        self.retrieve = ob.Retrieve(k=1, retriever=retriever)
        self.answer = ob.Predict("context: list[str], question -> answer")

    def forward(self, question: str) -> ob.Prediction:
        notes: list[str] = []
        passages: list[Any] = []
        for hop in self.hops:
            found = self.retrieve(hop(context=notes, question=question).query).passages
            passages += found
            notes += list(found)
        return ob.Prediction(answer=self.answer(context=notes, question=question).answer, passages=passages)


def reader(inputs: dict[str, str]) -> dict[str, str]:
    """A scripted LM that follows the notes: person -> employer -> city."""
    question, context = inputs["question"], inputs.get("context", "")
    person = " ".join(question.rstrip("?").split()[-2:])
    if "headquartered" in context:
        city = context.split("headquartered in ")[1].split(".")[0]
        return {"query": city, "answer": city}
    if "works for" in context:
        return {"query": context.split("works for ")[1].split(".")[0], "answer": "unknown"}
    return {"query": person, "answer": "unknown"}


def scripted() -> FieldScriptedLM:
    return FieldScriptedLM(reader)


def test_retrieve_returns_passages_with_ids_titles_scores(index: Path) -> None:
    retrieve = ob.Retrieve(k=2, retriever=ob.retrieval.load_index(index))
    prediction = retrieve("Where is Acme Corp headquartered?")
    assert isinstance(prediction, ob.Prediction)
    top = prediction.passages[0]
    assert (top.id, top.title) == ("acme", "Acme Corp") and top.score > 0 and top == "Acme Corp is headquartered in Oslo."
    assert len(retrieve("Acme", k=1).passages) == 1
    fused = retrieve(["Ann Lee", "Zenith Labs"], k=2).passages  # several queries: fused by rank
    assert {p.id for p in fused} == {"ann", "zenith"}


def test_retrieve_uses_the_configured_retriever_and_checks_inputs(index: Path) -> None:
    retrieve = ob.Retrieve(k=1)
    with pytest.raises(ob.ConfigurationError, match="no retriever configured"):
        retrieve("Ann")
    ob.configure(retriever=ob.retrieval.load_index(index))
    assert retrieve("Ann Lee").passages[0].id == "ann"
    with ob.context(retriever=lambda query, k: [{"text": "from a function", "id": "f"}]):
        assert retrieve("Ann Lee").passages[0].id == "f"
    with pytest.raises(ob.InputError, match="takes a query string"):
        retrieve(42)
    with pytest.raises(ob.ConfigurationError, match="k must be an integer"):
        ob.Retrieve(k=0)


def test_retrieve_in_async_code(index: Path) -> None:
    import asyncio

    retrieve = ob.Retrieve(k=1, retriever=ob.retrieval.load_index(index))

    async def both() -> list[Any]:
        return await asyncio.gather(retrieve.acall("Ann Lee"), retrieve.acall("Zenith Labs"))

    first, second = asyncio.run(both())
    assert (first.passages[0].id, second.passages[0].id) == ("ann", "zenith")


def test_retrieve_calls_are_traced_and_copies_share_the_retriever(index: Path) -> None:
    program = TwoHop(ob.retrieval.load_index(index))
    program.set_lm(scripted())
    with ob.trace() as calls:
        prediction = program(question="Where is the company of Ann Lee?")
    assert prediction.answer == "Oslo" and [p.id for p in prediction.passages] == ["ann", "acme"]
    retrievals = [c for c in calls if isinstance(c.predictor, ob.Retrieve)]
    assert [c.inputs["query"] for c in retrievals] == ["Ann Lee", "Acme Corp"]
    assert [[p.id for p in c.outputs["passages"]] for c in retrievals] == [["ann"], ["acme"]]
    copy = program.deepcopy()
    assert copy.retrieve is not program.retrieve and copy.retrieve.retriever is program.retrieve.retriever


def test_bootstrap_builds_multi_hop_demos_through_retrieval(index: Path) -> None:
    program = TwoHop(ob.retrieval.load_index(index))
    program.set_lm(scripted())
    train = [ob.Example(question=f"Where is the company of {name}?", answer=city, gold_titles=[name, company]).with_inputs("question")
             for name, company, city in [("Ann Lee", "Acme Corp", "Oslo"), ("Bob Ray", "Zenith Labs", "Lima")]]  # fmt: skip

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        return ob.metrics.answer_exact_match(example, prediction) and ob.metrics.all_gold_retrieved(example, prediction, trace)

    compiled = ob.optimizers.BootstrapFewShot(metric=metric, max_demos=2, teacher=program, num_threads=1).compile(program, trainset=train)
    second_hop = compiled.predictor("hops.1").demos
    assert len(second_hop) == 2 and {d["query"] for d in second_hop} == {"Acme Corp", "Zenith Labs"}
    assert any("works for" in note for d in second_hop for note in d["context"])  # the retrieved notes are in the demo
    assert [d["context"] for d in compiled.predictor("hops.0").demos] == [[], []]  # as they were at hop 1 (the list grew later)
    assert sorted(n for n, _ in compiled.named_predictors()) == ["answer", "hops.0", "hops.1"]  # Retrieve is no predictor


# -- artifacts ------------------------------------------------------------------------------------


def test_program_with_retrieve_saves_its_index_location_and_loads_back(index: Path, tmp_path: Path) -> None:
    program = TwoHop(ob.retrieval.load_index(index))
    program.retrieve.k = 2
    program.hops[0].demos = [{"context": [], "question": "q", "query": "x"}]
    path = program.save(tmp_path / "two.oobleck")
    saved = json.loads((path / "program.json").read_text())["program"]["retrievers"]
    config = saved["retrieve"]["retriever"]
    assert saved["retrieve"]["k"] == 2 and config["kind"] == "bm25" and config["index"] == str(index.resolve())
    assert (path / saved["retrieve"]["retriever"]["index_relative"]).resolve() == index.resolve()
    assert "Acme Corp is headquartered" not in (path / "program.json").read_text()  # the corpus is not in the artifact

    loaded = ob.load(path, program=TwoHop(), lm=scripted())
    assert loaded.retrieve.k == 2 and isinstance(loaded.retrieve.retriever, BM25)
    assert loaded.hops[0].demos == program.hops[0].demos
    program.set_lm(scripted())
    question = "Where is the company of Bob Ray?"
    assert loaded(question=question) == program(question=question)


def test_an_artifact_moved_with_its_index_still_loads(index: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(index, project / "bm25.index")
    program = TwoHop(ob.retrieval.load_index(project / "bm25.index"))
    program.save(project / "two.oobleck")
    moved = tmp_path / "moved"
    shutil.move(project, moved)
    loaded = ob.load(moved / "two.oobleck", program=TwoHop())
    assert loaded.retrieve.retriever.path == (moved / "bm25.index").resolve()


def test_missing_or_damaged_index_is_an_artifact_error(index: Path, tmp_path: Path) -> None:
    own = tmp_path / "own.index"
    shutil.copytree(index, own)
    path = TwoHop(ob.retrieval.load_index(own)).save(tmp_path / "two.oobleck")
    (own / "passages.jsonl").write_text("damaged\n")
    with pytest.raises(ob.ArtifactError, match=r"cannot load the bm25 retriever of 'retrieve' .*damaged"):
        ob.load(path, program=TwoHop())
    shutil.rmtree(own)
    with pytest.raises(ob.ArtifactError, match=r"retriever of 'retrieve' \(looked in: .*own.index\).*no retrieval index at"):
        ob.load(path, program=TwoHop())
    program = TwoHop()
    before = [p.demos for p in program.predictors()]
    with pytest.raises(ob.ArtifactError):
        ob.load(path, program=program)
    assert [p.demos for p in program.predictors()] == before and program.retrieve.retriever is None
    # A program that brings its own retriever does not need the saved index.
    mine = ob.retrieval.load_index(index)
    assert ob.load(path, program=TwoHop(mine)).retrieve.retriever is mine


def test_unsavable_retrievers_and_mismatched_programs_are_refused(index: Path, tmp_path: Path) -> None:
    with pytest.raises(ob.ArtifactError, match="cannot save the retriever of 'retrieve': .*built in memory"):
        TwoHop(BM25(CORPUS, progress=False)).save(tmp_path / "a.oobleck")
    path = TwoHop(FunctionRetriever(lambda q, k: ["x"], name="test-fn")).save(tmp_path / "fn.oobleck")
    assert ob.load(path, program=TwoHop()).retrieve.retriever.name == "test-fn"

    class NoRetrieve(ob.Module):
        def __init__(self) -> None:
            self.hops = [ob.Predict("context: list[str], question -> query") for _ in range(2)]
            self.answer = ob.Predict("context: list[str], question -> answer")

    with pytest.raises(ob.ArtifactError, match=r"saved Retrieve module\(s\) \['retrieve'\] are not in the program"):
        ob.load(path, program=NoRetrieve())
    document = json.loads((path / "program.json").read_text())
    document["program"]["retrievers"]["retrieve"]["k"] = 0
    (path / "program.json").write_text(json.dumps(document))
    with pytest.raises(ob.ArtifactError, match="retriever 'retrieve': k must be an integer"):
        ob.load(path, program=TwoHop())
