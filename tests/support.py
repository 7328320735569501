"""Small programs and data shared by several test files."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import oobleck as ob


class Hop(ob.Module):
    """A two-predictor program: write a query, then answer from it."""

    def __init__(self) -> None:
        self.generate_query = ob.Predict("question -> query")
        self.answer = ob.Predict("question, query -> answer")

    def forward(self, question: str) -> ob.Prediction:
        query = self.generate_query(question=question).query
        return self.answer(question=question, query=query)


def doubling_respond(inputs: dict[str, str]) -> dict[str, Any]:
    """Answers "double N" right for even N, wrong for odd N, and fails on questions with "crash"."""
    question = inputs["question"]
    if "crash" in question:
        raise RuntimeError(f"backend down for {question}")
    n = int(question.split()[-1])
    return {"answer": str(n * 2) if n % 2 == 0 else "wrong"}


def doubling_dataset(numbers: Sequence[Any]) -> list[ob.Example]:
    return [ob.Example(question=f"double {n}", answer=str(n * 2) if isinstance(n, int) else "?").with_inputs("question") for n in numbers]
