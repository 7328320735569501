"""``oobleck inspect --trace``: one run of a saved multi-hop program, shown hop by hop (real HTTP LM server on loopback)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import oobleck as ob
from oobleck.cli import app
from oobleck.testing import OpenAITestServer

PROGRAM = '''
import oobleck as ob

class TwoHop(ob.Module):
    def __init__(self):
        self.hops = [ob.Predict("context: list[str], question -> query") for _ in range(2)]
        self.retrieve = ob.Retrieve(k=1)
        self.answer = ob.Predict("context: list[str], question -> answer")

    def forward(self, question):
        notes = []
        for hop in self.hops:
            notes += list(self.retrieve(hop(context=notes, question=question).query).passages)
        return ob.Prediction(answer=self.answer(context=notes, question=question).answer)
'''

CORPUS = [
    {"id": "ann", "title": "Ann Lee", "text": "Ann Lee works for Acme Corp."},
    {"id": "acme", "title": "Acme Corp", "text": "Acme Corp is headquartered in Oslo."},
    {"id": "bob", "title": "Bob Ray", "text": "Bob Ray works for Zenith Labs."},
]


def responder(messages: list[dict[str, Any]]) -> str:
    """Follows the notes: ask for the person, then the employer; answer the city."""
    last = messages[-1]["content"].split("\n\nReply with ")[0]
    parts = re.split(r"\[\[ ## (\w+) ## \]\]\n", last)
    fields = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    context = fields.get("context", "")
    if "`query`" in messages[0]["content"]:
        query = context.split("works for ")[1].split(".")[0] if "works for" in context else "Ann Lee"
        return f"[[ ## query ## ]]\n{query}\n\n[[ ## completed ## ]]"
    answer = context.split("headquartered in ")[1].split(".")[0] if "headquartered" in context else "unknown"
    return f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    (tmp_path / "two_hop.py").write_text(PROGRAM)
    import importlib.util

    spec = importlib.util.spec_from_file_location("two_hop_for_inspect", tmp_path / "two_hop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    program = module.TwoHop()
    program.retrieve.retriever = ob.retrieval.BM25(CORPUS, progress=False)
    program.retrieve.retriever.save(tmp_path / "people.index")
    return program.save(tmp_path / "two.oobleck")


def test_inspect_trace_shows_each_hop_query_and_passages(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAITestServer(responder=responder) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url + "/v1")
        monkeypatch.setenv("OOBLECK_CACHE", "0")
        result = CliRunner().invoke(app, ["inspect", str(saved), "--trace", "--program", f"{saved.parent / 'two_hop.py'}:TwoHop",
                                          "--lm", "openai/test-model", "-i", "question=Where is the company of Ann Lee?"])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.output
    assert "retriever retrieve: bm25 k=1" in out
    hop1, hop2 = out.index("hop 1"), out.index("hop 2")
    assert hop1 < out.index("query: Ann Lee") < out.index("[ann] Ann Lee (score") < hop2
    assert hop2 < out.index("query: Acme Corp") < out.index("[acme] Acme Corp (score") < out.index("answer: Oslo")
    assert "hops.1" in out and "out query: Acme Corp" in out
    assert "in  context: []" in out  # the first hop's notes as they were then, not as the run left them


def test_inspect_trace_without_inputs_is_a_clear_error(saved: Path) -> None:
    result = CliRunner().invoke(app, ["inspect", str(saved), "--trace"])
    assert result.exit_code == 2 and "--trace needs the program's inputs" in result.output
