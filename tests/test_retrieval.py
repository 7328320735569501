"""Retrievers (BM25, dense, hybrid, ColBERTv2 client, functions), index folders, corpora, QA metrics, HotPotQA files."""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import oobleck as ob
from oobleck.evaluate import metrics
from oobleck.lm.embedder import Embedder
from oobleck.retrieval import BM25, ColBERTv2, Dense, FunctionRetriever, Hybrid, Passage, load_corpus, load_index
from oobleck.retrieval.ranking import convex_fusion, reciprocal_rank_fusion, top_k

CORPUS = [
    {"id": "paris", "title": "Paris", "text": "Paris is the capital of France and sits on the Seine."},
    {"id": "berlin", "title": "Berlin", "text": "Berlin is the capital of Germany."},
    {"id": "cat", "title": "Cats", "text": "The domestic cat is a small carnivorous mammal."},
    {"id": "dog", "title": "Dogs", "text": "The dog was domesticated from wolves."},
    {"id": "seine", "title": "Seine", "text": "The Seine is a river flowing through northern France."},
]

# A deterministic toy embedder: counts of a few topic words (plus a constant so no row is zero).
TOPICS = [("capital", "city", "paris", "berlin"), ("cat", "feline", "kitten"), ("dog", "puppy", "wolves"), ("river", "seine", "water")]


def topic_vectors(texts: list[str]) -> np.ndarray:
    return np.array([[sum(t.lower().count(w) for w in words) for words in TOPICS] + [0.01] for t in texts], dtype=float)


@pytest.fixture(scope="module")
def toy_embedder() -> Embedder:
    return Embedder.from_callable(topic_vectors, id="test/topic-words", cache=False)


# -- passages, ranking, corpora -------------------------------------------------------------------


def test_passage_is_its_text_and_keeps_id_title_score() -> None:
    p = Passage("Paris is big.", id="paris", title="Paris", score=1.5)
    assert p == "Paris is big." and p.upper() == "PARIS IS BIG."
    assert (p.id, p.title, p.score, p.text) == ("paris", "Paris", 1.5, "Paris is big.")
    import copy

    clone = copy.deepcopy(p)
    assert (clone.id, clone.title, clone.score) == ("paris", "Paris", 1.5)
    assert json.dumps([p]) == '["Paris is big."]'  # JSON (prompts, demos) sees the text


def test_top_k_orders_ties_by_corpus_position() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.1])
    assert top_k(scores, 3) == [1, 3, 0]
    assert top_k(scores, 10) == [1, 3, 0, 2, 4]
    assert top_k(np.array([0.0, 0.2]), 2, positive_only=True) == [1]


def test_reciprocal_rank_fusion_rewards_agreement() -> None:
    a = [Passage("x", id="x"), Passage("y", id="y"), Passage("z", id="z")]
    b = [Passage("y", id="y"), Passage("w", id="w"), Passage("x", id="x")]
    fused = reciprocal_rank_fusion([a, b], 3, rrf_k=60)
    assert [p.id for p in fused] == ["y", "x", "w"]  # y: 1/62 + 1/61 beats x: 1/61 + 1/63
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)


def _scored(*pairs: tuple[str, float | None]) -> list[Passage]:
    return [Passage(pid, id=pid, score=score) for pid, score in pairs]


def test_convex_fusion_keeps_a_confident_lead_that_rank_fusion_loses() -> None:
    # BM25 is sure of x (10 against 1); dense barely prefers y and z over x, and w is far behind.
    lexical = _scored(("x", 10.0), ("y", 1.0), ("z", 0.9))
    semantic = _scored(("y", 0.900), ("z", 0.899), ("x", 0.898), ("w", 0.2))
    assert [p.id for p in reciprocal_rank_fusion([lexical, semantic], 2)] == ["y", "x"]  # ranks 2+1 beat 1+3
    fused = convex_fusion([lexical, semantic], 4)
    assert [p.id for p in fused] == ["x", "y", "z", "w"]
    assert fused[0].score == pytest.approx(0.5 * 1.0 + 0.5 * (0.898 - 0.2) / (0.900 - 0.2))
    assert fused[-1].score == 0.0  # the bottom of the one list it is in
    # Weights shift the balance: dense alone decides when BM25 weighs nothing.
    assert [p.id for p in convex_fusion([lexical, semantic], 2, weights=[0.0, 1.0])] == ["y", "z"]


def test_convex_fusion_counts_equal_scores_equally_and_ranks_unscored_lists_by_position() -> None:
    # BM25 ties b, c and d (corpus order b, c, d); the dense list alone orders them.
    tied = _scored(("a", 2.0), ("b", 1.0), ("c", 1.0), ("d", 1.0))
    dense = _scored(("d", 0.9), ("c", 0.5), ("b", 0.1))
    fused = {p.id: p.score for p in convex_fusion([tied, dense], 4)}
    assert list(fused) == ["a", "d", "c", "b"]
    # The tied passages get the same share from BM25 (its lowest score, 0), so only dense separates them.
    assert (fused["d"], fused["c"], fused["b"]) == pytest.approx((0.5, 0.5 * 0.5, 0.0))
    unscored = _scored(("q", None), ("r", None), ("s", None))
    fused = convex_fusion([unscored, _scored(("s", 1.0))], 3)  # positions 1, 2, 3 score 1, 0.5, 0; a lone passage 1
    assert [(p.id, p.score) for p in fused] == [("q", 0.5), ("s", 0.5), ("r", 0.25)]  # a tie: q ranks first in its list


def test_load_corpus_reads_jsonl_json_parquet_and_checks_rows(tmp_path: Path) -> None:
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in CORPUS))
    assert [p.id for p in load_corpus(jsonl, progress=False)] == [r["id"] for r in CORPUS]
    (tmp_path / "c.json").write_text(json.dumps(CORPUS))
    assert load_corpus(tmp_path / "c.json", progress=False)[0].title == "Paris"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"doc": r["text"], "name": r["title"]} for r in CORPUS]), tmp_path / "c.parquet")
    passages = load_corpus(tmp_path / "c.parquet", text_field="doc", id_field=None, title_field="name", progress=False)
    assert [(p.id, p.title) for p in passages[:2]] == [("0", "Paris"), ("1", "Berlin")]
    with pytest.raises(ob.DataError, match="share the id 'a'"):
        load_corpus([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], progress=False)
    with pytest.raises(ob.DataError, match="row 1 has no text field 'text'"):
        load_corpus([{"text": "x"}, {"body": "y"}], progress=False)
    with pytest.raises(ob.DataError, match="does not exist"):
        load_corpus(tmp_path / "missing.jsonl")


def test_load_corpus_reads_a_datasets_dataset() -> None:
    import datasets

    table = datasets.Dataset.from_list(CORPUS)
    assert [p.title for p in load_corpus(table, progress=False)] == [r["title"] for r in CORPUS]


# -- BM25 -----------------------------------------------------------------------------------------


def test_bm25_ranks_by_terms_and_reloads_without_rebuilding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bm25 = BM25(CORPUS, progress=False)
    found = bm25.retrieve("capital of Germany", k=2)
    assert [p.id for p in found] == ["berlin", "paris"]
    assert found[0].score > found[1].score > 0 and found[0].title == "Berlin"
    assert bm25.retrieve("zebra quantum", k=3) == []  # no shared word: nothing, not arbitrary passages
    bm25.save(tmp_path / "bm25.index")

    def no_rebuild(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("loading must not rebuild the index")

    monkeypatch.setattr(BM25, "index", no_rebuild)
    again = load_index(tmp_path / "bm25.index")
    assert isinstance(again, BM25) and again.path == (tmp_path / "bm25.index").resolve()
    assert [(p.id, p.score) for p in again.retrieve("capital of Germany", k=2)] == [(p.id, p.score) for p in found]
    assert again.to_config() == {"kind": "bm25", "index": str((tmp_path / "bm25.index").resolve())}


def test_bm25_in_memory_cannot_be_configured_for_saving() -> None:
    with pytest.raises(ob.RetrievalError, match="built in memory; save its index first"):
        BM25(CORPUS, progress=False).to_config()


# -- index folder errors ----------------------------------------------------------------------------


def test_missing_and_damaged_indexes_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ob.RetrievalIndexError, match="no retrieval index at"):
        load_index(tmp_path / "nowhere")
    folder = BM25(CORPUS, progress=False).save(tmp_path / "bm25.index")

    matrix = folder / "bm25s" / "data.csc.index.npy"
    original = matrix.read_bytes()
    matrix.write_bytes(original[:-8] + b"\x00" * 8)  # same size, different bytes
    with pytest.raises(ob.RetrievalIndexError, match="does not match its checksum"):
        load_index(folder)
    matrix.write_bytes(original[:-8])
    with pytest.raises(ob.RetrievalIndexError, match="has .* bytes, the manifest says"):
        load_index(folder)
    matrix.unlink()
    with pytest.raises(ob.RetrievalIndexError, match="is incomplete: bm25s/data.csc.index.npy is missing"):
        load_index(folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ob.RetrievalIndexError, match="manifest.json is damaged"):
        load_index(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(ob.RetrievalIndexError, match="holds no manifest.json"):
        load_index(folder)
    assert issubclass(ob.RetrievalIndexError, ob.OobleckError)


def test_index_of_another_kind_or_newer_version_is_refused(tmp_path: Path) -> None:
    folder = BM25(CORPUS, progress=False).save(tmp_path / "bm25.index")
    with pytest.raises(ob.RetrievalIndexError, match="holds a 'bm25' index, not a 'dense' index"):
        Dense.load(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ob.RetrievalIndexError, match="newer than this oobleck reads"):
        load_index(folder)


def test_a_manifest_naming_files_outside_its_folder_is_refused(tmp_path: Path) -> None:
    folder = BM25(CORPUS, progress=False).save(tmp_path / "bm25.index")
    (tmp_path / "secret.txt").write_text("not yours")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["../secret.txt"] = {"bytes": 9, "sha256": "0" * 64}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ob.RetrievalIndexError, match="names a file outside itself"):
        load_index(folder)


def test_saving_never_overwrites_a_folder_that_is_not_an_index(tmp_path: Path) -> None:
    precious = tmp_path / "data"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ob.RetrievalIndexError, match="not an oobleck index; refusing to overwrite"):
        BM25(CORPUS, progress=False).save(precious)
    assert (precious / "notes.txt").read_text() == "keep me"


# -- dense and hybrid -------------------------------------------------------------------------------


def test_dense_exact_search_with_a_function_embedder(tmp_path: Path, toy_embedder: Embedder) -> None:
    dense = Dense(CORPUS, embedder=toy_embedder, progress=False)
    assert [p.id for p in dense.retrieve("a kitten", k=1)] == ["cat"]
    batch = dense.retrieve_many(["puppy", "water"], k=1)
    assert [[p.id for p in r] for r in batch] == [["dog"], ["seine"]]
    folder = dense.save(tmp_path / "dense.index")
    again = Dense.load(folder)
    assert again.embedder_id == "test/topic-words" and np.array_equal(again.vectors, dense.vectors)
    assert [(p.id, p.score) for p in again.retrieve("a kitten", k=2)] == [(p.id, p.score) for p in dense.retrieve("a kitten", k=2)]
    vectors = np.load(folder / "vectors.npy")
    np.save(folder / "vectors.npy", vectors[:2])
    with pytest.raises(ob.RetrievalIndexError, match="damaged"):
        Dense.load(folder)


def test_dense_faiss_backend_returns_what_exact_numpy_search_returns(toy_embedder: Embedder) -> None:
    pytest.importorskip("faiss")
    exact = Dense(CORPUS, embedder=toy_embedder, backend="numpy", progress=False)
    flat = Dense(CORPUS, embedder=toy_embedder, backend="faiss", progress=False)
    for query in ("a kitten", "capital city", "river water", "wolves and a puppy"):
        assert [p.id for p in flat.retrieve(query, 3)] == [p.id for p in exact.retrieve(query, 3)]
        assert [p.score for p in flat.retrieve(query, 3)] == pytest.approx([p.score for p in exact.retrieve(query, 3)], abs=1e-5)


def test_dense_index_naming_an_unknown_embedder_is_a_clear_error(tmp_path: Path) -> None:
    odd = Embedder.from_callable(topic_vectors, id="test/only-in-this-test", cache=False)
    folder = Dense(CORPUS, embedder=odd, progress=False).save(tmp_path / "dense.index")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["config"]["embedder"] = "test/never-registered"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ob.RetrievalIndexError, match="embedder 'test/never-registered', which is not available here"):
        Dense.load(folder)


def test_hybrid_fuses_and_saves_its_parts_inside_its_folder(tmp_path: Path, toy_embedder: Embedder) -> None:
    bm25 = BM25(CORPUS, progress=False)
    dense = Dense(CORPUS, embedder=toy_embedder, progress=False)
    hybrid = Hybrid([bm25, dense])
    # "feline" is no word of the corpus (BM25 finds nothing); dense maps it to the cat passage.
    assert [p.id for p in hybrid.retrieve("feline", k=1)] == ["cat"]
    # Both agree on Paris for this query; fusion keeps it first.
    assert hybrid.retrieve("capital city Paris", k=1)[0].id == "paris"
    folder = hybrid.save(tmp_path / "hybrid.index")
    assert (folder / "parts" / "0" / "manifest.json").is_file() and bm25.path == (folder / "parts" / "0").resolve()
    again = load_index(folder)
    assert isinstance(again, Hybrid) and [type(p).__name__ for p in again.parts] == ["BM25", "Dense"]
    query = "river through France"
    assert [(p.id, p.score) for p in again.retrieve(query, 3)] == [(p.id, p.score) for p in hybrid.retrieve(query, 3)]
    assert (again.fusion, again.weights, again.depth) == ("convex", [1.0, 1.0], None)


def test_hybrid_fusion_settings_save_and_load_and_older_indexes_load_as_rank_fusion(tmp_path: Path, toy_embedder: Embedder) -> None:
    bm25 = BM25(CORPUS, progress=False)
    dense = Dense(CORPUS, embedder=toy_embedder, progress=False)
    rrf = Hybrid([bm25, dense], fusion="rrf", rrf_k=10, weights=[2.0, 1.0], depth=4)
    folder = rrf.save(tmp_path / "rrf.index")
    again = load_index(folder)
    assert (again.fusion, again.rrf_k, again.weights, again.depth) == ("rrf", 10.0, [2.0, 1.0], 4)
    assert [(p.id, p.score) for p in again.retrieve("capital river", 3)] == [(p.id, p.score) for p in rrf.retrieve("capital river", 3)]
    convex = Hybrid([bm25, dense], weights=[0.3, 0.7])
    assert load_index(convex.save(tmp_path / "convex.index")).weights == [0.3, 0.7]
    # An index saved before "fusion" was a setting was built with rank fusion: it loads as such.
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["config"]["fusion"]
    manifest_path.write_text(json.dumps(manifest))
    assert load_index(folder, verify=False).fusion == "rrf"
    manifest["config"]["fusion"] = "borda"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ob.RetrievalIndexError, match="unknown fusion 'borda'"):
        load_index(folder, verify=False)
    manifest["config"].update(fusion="rrf", depth=0)  # 0 once meant the default depth
    manifest_path.write_text(json.dumps(manifest))
    assert load_index(folder, verify=False).depth is None
    manifest["config"]["weights"] = [-1.0, 1.0]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ob.RetrievalIndexError, match="unusable hybrid settings"):
        load_index(folder, verify=False)
    with pytest.raises(ob.ConfigurationError, match="depth must be a whole number"):
        Hybrid([bm25, dense], depth=True)
    with pytest.raises(ob.ConfigurationError, match="fusion must be one of"):
        Hybrid([bm25, dense], fusion="borda")
    with pytest.raises(ob.ConfigurationError, match="weights must be >= 0"):
        Hybrid([bm25, dense], weights=[0.0, 0.0])


@pytest.mark.slow
def test_dense_and_hybrid_with_the_real_minilm_encoder(tmp_path: Path) -> None:
    dense = Dense(CORPUS, progress=False)
    assert dense.embedder_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert dense.retrieve("Which animal descends from wolves?", k=1)[0].id == "dog"
    assert dense.retrieve("German capital city", k=1)[0].id == "berlin"
    hybrid = Hybrid(corpus=CORPUS, progress=False)
    assert hybrid.retrieve("pet feline", k=1)[0].id == "cat"
    again = load_index(hybrid.save(tmp_path / "hybrid.index"))
    assert [p.id for p in again.retrieve("French river", k=2)] == [p.id for p in hybrid.retrieve("French river", k=2)]


# -- functions ------------------------------------------------------------------------------------


def test_function_retriever_accepts_texts_dicts_and_passages() -> None:
    def lookup(query: str, k: int) -> list[Any]:
        return ["plain text", {"text": "from a dict", "id": "d1", "title": "T", "score": 0.5}, Passage("p", id="p1")][:k]

    retriever = FunctionRetriever(lookup, name="test-lookup")
    found = retriever.retrieve("q", 3)
    assert [(p.text, p.id) for p in found] == [("plain text", "0"), ("from a dict", "d1"), ("p", "p1")]
    assert found[1].score == 0.5 and found[1].title == "T"
    assert ob.retrieval.retriever_from_config(retriever.to_config()) is retriever
    with pytest.raises(ob.RetrievalError, match="'nobody' is not defined in this process"):
        ob.retrieval.retriever_from_config({"kind": "function", "name": "nobody"})
    broken = FunctionRetriever(lambda q, k: 42, name="broken")
    with pytest.raises(ob.RetrievalError, match="must return a list of passages, not int"):
        broken.retrieve("q", 1)


# -- ColBERTv2 against a loopback server speaking its protocol ----------------------------------------


class _ColBERTHandler(BaseHTTPRequestHandler):
    """The ColBERTv2 server protocol: GET ?query=&k= (or POST {query, k}) -> {"topk": [...]}, by word overlap."""

    requests: ClassVar[list[tuple[str, str, int]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, query: str, k: int) -> None:
        type(self).requests.append((self.command, query, k))
        if query == "crash":
            self.send_response(500)
            self.end_headers()
            return
        words = set(query.lower().split())
        scored = sorted(CORPUS, key=lambda r: (-len(words & set(r["text"].lower().replace(".", "").split())), r["id"]))
        topk = [{"text": f"{r['title']} | {r['text']}", "pid": i, "rank": i + 1, "score": 20.0 - i, "prob": 0.1}
                for i, r in enumerate(scored[:k])]  # fmt: skip
        body = json.dumps({"query": query, "topk": topk}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # http.server names the handlers
        params = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        self._answer(params["query"][0], int(params["k"][0]))

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._answer(payload["query"], int(payload["k"]))


@pytest.fixture
def colbert_server() -> Any:
    _ColBERTHandler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ColBERTHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/search"
    server.shutdown()
    server.server_close()


def test_colbertv2_client_speaks_the_server_protocol(colbert_server: str) -> None:
    client = ColBERTv2(colbert_server)
    found = client.retrieve("capital of Germany", k=2)
    assert [(p.id, p.title, p.score) for p in found] == [("0", "Berlin", 20.0), ("1", "Paris", 19.0)]
    assert found[0].text == "Berlin | Berlin is the capital of Germany."
    assert client.retrieve("capital of Germany", k=2) == found and len(_ColBERTHandler.requests) == 1  # kept in memory
    post = ColBERTv2(colbert_server, post=True)
    assert post.retrieve("river France", k=1)[0].title == "Seine"
    assert _ColBERTHandler.requests[-1] == ("POST", "river France", 1)
    assert ob.retrieval.retriever_from_config(client.to_config()).url == colbert_server


def test_colbertv2_errors_are_retrieval_errors(colbert_server: str) -> None:
    with pytest.raises(ob.RetrievalError, match="answered HTTP 500"):
        ColBERTv2(colbert_server, retries=1).retrieve("crash", k=1)
    assert [r[1] for r in _ColBERTHandler.requests].count("crash") == 2  # retried once
    with pytest.raises(ob.RetrievalError, match="cannot reach the ColBERTv2 server"):
        ColBERTv2("http://127.0.0.1:9/api", retries=0, timeout=2).retrieve("q", k=1)


# -- metrics and HotPotQA files ----------------------------------------------------------------------


def test_answer_and_passage_metrics() -> None:
    example = ob.Example(question="q", answer="Paris", gold_titles=["Paris", "Seine"]).with_inputs("question")
    passages = [Passage("...", id="1", title="Seine"), Passage("...", id="2", title="Berlin"), Passage("...", id="3", title="Paris")]
    prediction = ob.Prediction(answer="paris.", passages=passages)
    assert metrics.answer_exact_match(example, prediction) is True
    assert metrics.answer_f1(example, ob.Prediction(answer="the city of Paris")) == pytest.approx(2 * (1 / 3) / (1 / 3 + 1))
    assert metrics.passage_recall(example, prediction) == 1.0 and metrics.all_gold_retrieved(example, prediction)
    assert metrics.recall_at_k(2)(example, prediction) == 0.5
    assert not metrics.all_gold_retrieved(example, ob.Prediction(answer="x", passages=passages[:1]))
    by_id = ob.Example(question="q", answer="a", gold_ids=["2"]).with_inputs("question")
    assert metrics.passage_recall(by_id, prediction) == 1.0
    with pytest.raises(ob.MetricError, match="need the gold passages"):
        metrics.passage_recall(ob.Example(question="q", answer="a").with_inputs("question"), prediction)
    assert metrics.get_metric("answer_em") is metrics.answer_exact_match


def test_passage_metrics_read_retrieve_calls_from_the_trace() -> None:
    retrieve = ob.Retrieve(k=2, retriever=BM25(CORPUS, progress=False))
    example = ob.Example(question="q", answer="a", gold_titles=["Paris", "Berlin"]).with_inputs("question")
    with ob.trace() as calls:
        retrieve("capital of France")
        retrieve("Germany")
    assert metrics.passage_recall(example, ob.Prediction(answer="a"), calls) == 1.0


HOTPOT_OFFICIAL = [{
    "_id": "q1", "question": "Which river flows through the capital of France?", "answer": "the Seine", "type": "bridge", "level": "easy",
    "supporting_facts": [["Paris", 0], ["Seine", 0], ["Paris", 1]],
    "context": [["Paris", ["Paris is the capital of France. ", "It sits on the Seine."]], ["Seine", ["The Seine is a river."]],
                ["Berlin", ["Berlin is in Germany."]]],
}]  # fmt: skip


def test_load_hotpotqa_official_and_hugging_face_layouts(tmp_path: Path) -> None:
    (tmp_path / "dev.json").write_text(json.dumps(HOTPOT_OFFICIAL))
    (example,) = ob.retrieval.load_hotpotqa(tmp_path / "dev.json")
    assert example.inputs() == {"question": HOTPOT_OFFICIAL[0]["question"]}
    assert example.gold_titles == ["Paris", "Seine"] and example.answer == "the Seine" and example.id == "q1"
    assert example.paragraphs[0] == {"title": "Paris", "text": "Paris is the capital of France. It sits on the Seine."}
    hf = {"id": "q1", "question": "Q?", "answer": "A", "type": "bridge", "level": "hard",
          "supporting_facts": {"title": ["Seine"], "sent_id": [0]},
          "context": {"title": ["Seine", "Berlin"], "sentences": [["The Seine is a river."], ["Berlin is in Germany."]]}}  # fmt: skip
    (tmp_path / "dev.jsonl").write_text(json.dumps(hf) + "\n")
    (other,) = ob.retrieval.load_hotpotqa(tmp_path / "dev.jsonl")
    assert other.gold_titles == ["Seine"] and [p["title"] for p in other.paragraphs] == ["Seine", "Berlin"]
    corpus = ob.retrieval.hotpotqa_corpus([example, other])
    assert [p.id for p in corpus] == ["Paris", "Seine", "Berlin"]
    bm25 = BM25(corpus, progress=False)
    prediction = ob.Prediction(answer="Seine", passages=bm25.retrieve("capital of France river", 2))
    assert metrics.answer_exact_match(example, prediction) and metrics.all_gold_retrieved(example, prediction)
    (tmp_path / "bad.json").write_text(json.dumps([{"question": "q", "context": "oops"}]))
    with pytest.raises(ob.DataError, match="context: expected a list of"):
        ob.retrieval.load_hotpotqa(tmp_path / "bad.json")


def test_top_k_matches_a_full_sort_with_ties() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        n = int(rng.integers(1, 60))
        scores = rng.choice([0.1, 0.25, 0.5, 0.5 + 1e-9, 0.9], size=n).astype(np.float32)  # many ties, some within float noise
        k = int(rng.integers(1, n + 3))
        expected = sorted(range(n), key=lambda i: (-round(float(scores[i]), 6), i))[:k]
        assert top_k(scores, k) == expected
