"""The Baleen-style multi-hop program: per hop, a ChainOfThought writes a query, Retrieve finds
passages and they join the notes; then a ChainOfThought answers from the notes.

``oobleck inspect ARTIFACT --program examples/multihop/program.py:program --trace -i question=...``
shows each hop's query and passages.
"""

from __future__ import annotations

import oobleck as ob


class GenerateQuery(ob.Signature):
    """Write a search query that finds the fact still missing to answer the question."""

    context: list[str] = ob.InputField(desc="notes gathered so far")
    question: str = ob.InputField()
    query: str = ob.OutputField()


class AnswerQuestion(ob.Signature):
    """Answer the question from the notes with a short factoid."""

    context: list[str] = ob.InputField(desc="notes from the retrieved passages")
    question: str = ob.InputField()
    answer: str = ob.OutputField(desc="a few words")


class MultiHop(ob.Module):
    def __init__(self, hops: int = 2, k: int = 2, retriever: ob.retrieval.Retriever | None = None):
        self.generate_query = [ob.ChainOfThought(GenerateQuery) for _ in range(hops)]
        self.retrieve = ob.Retrieve(k=k, retriever=retriever)
        self.answer = ob.ChainOfThought(AnswerQuestion)

    def forward(self, question: str) -> ob.Prediction:
        notes: list[str] = []
        passages: list[ob.retrieval.Passage] = []
        for generate in self.generate_query:
            query = generate(context=notes, question=question).query
            for passage in self.retrieve(query).passages:
                if all(passage.id != seen.id for seen in passages):
                    passages.append(passage)
                    notes.append(f"{passage.title} | {passage.text}")
        out = self.answer(context=notes, question=question)
        return ob.Prediction(answer=out.answer, reasoning=out.reasoning, passages=passages)


def program() -> MultiHop:
    """A fresh, uncompiled program with no retriever: a loaded artifact supplies it."""
    return MultiHop()
