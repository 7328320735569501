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


class InstructionSensitiveLM(ob.BaseLM):
    """A test double whose accuracy depends on the prompt, for optimizer tests.

    Task calls ("double N" in the chat format) are answered right when the system prompt says
    "twice", else only for even N. Proposer calls (a ``program_step`` field) return one of four
    instructions chosen by a hash of the prompt, one of which says "twice". ``delay`` slows each
    call, for tests that interrupt a compile.
    """

    provider = "scripted"
    PROPOSALS = ("Answer the question.", "Return twice the number in the question.", "Reply with a number.", "Be helpful.")

    def __init__(self, delay: float = 0.0, **kwargs: Any):
        kwargs.setdefault("cache", False)
        super().__init__("instruction-sensitive", adapter="chat", **kwargs)
        self.delay = delay
        self.calls = 0
        self._lock = __import__("threading").Lock()

    def generate(self, messages: list[dict[str, str]], **settings: Any) -> list[ob.Completion]:
        import hashlib
        import re
        import time

        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        system, last = messages[0]["content"], messages[-1]["content"]
        tokens = sum(len(m["content"]) for m in messages) // 4
        if "[[ ## program_step ## ]]" in last:
            pick = int(hashlib.sha256(last.encode()).hexdigest(), 16) % len(self.PROPOSALS)
            return [ob.Completion(f"[[ ## instruction ## ]]\n{self.PROPOSALS[pick]}\n\n[[ ## completed ## ]]", tokens, 10)]
        question = re.findall(r"\[\[ ## question ## \]\]\n(.*)", last)[-1].strip()
        n = int(question.split()[-1])
        answer = str(2 * n) if "twice" in system or n % 2 == 0 else str(n + 1)
        return [ob.Completion(f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]", tokens, 5)]
