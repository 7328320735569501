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


PROPOSALS = ("Answer the question.", "Return twice the number in the question.", "Reply with a number.", "Be helpful.")
REFINEMENT = "Answer with digits only."


def scored_history(prompt: str) -> list[tuple[float, str]]:
    """The (score, instruction) pairs a proposal prompt shows as earlier instructions, in the order shown."""
    import re

    shown = re.search(r"\[\[ ## previous_instructions ## \]\]\n(.*?)\n\n\[\[", prompt, re.DOTALL)
    pairs = [line.split(": ", 1) for line in (shown.group(1).splitlines() if shown else [])]
    return [(float(score), text) for score, text, *_ in (pair for pair in pairs if len(pair) == 2)]


def instruction_sensitive_reply(messages: list[dict[str, Any]]) -> str:
    """A completion whose correctness depends on the prompt (see ``InstructionSensitiveLM``)."""
    import hashlib
    import re

    system, last = str(messages[0]["content"]), str(messages[-1]["content"])
    if "[[ ## earlier_observations ## ]]" in last:
        return "[[ ## observations ## ]]\nEach question asks about a number; the answer is a number.\n\n[[ ## completed ## ]]"
    if "[[ ## program_step ## ]]" in last:
        scored = [text for _, text in scored_history(last)]
        if scored:  # a refinement: the best shown (listed last) with one more sentence
            return f"[[ ## instruction ## ]]\n{scored[-1]} {REFINEMENT}\n\n[[ ## completed ## ]]"
        pick = int(hashlib.sha256(last.encode()).hexdigest(), 16) % len(PROPOSALS)
        return f"[[ ## instruction ## ]]\n{PROPOSALS[pick]}\n\n[[ ## completed ## ]]"
    question = re.findall(r"\[\[ ## question ## \]\]\n(.*)", last)[-1].strip()
    n = int(question.split()[-1])
    answer = str(2 * n) if "twice" in system or n % 2 == 0 else str(n + 1)
    return f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"


class InstructionSensitiveLM(ob.BaseLM):
    """A test double whose accuracy depends on the prompt, for optimizer tests.

    Task calls ("double N" in the chat format) are answered right when the system prompt says
    "twice", else only for even N. Proposer calls (a ``program_step`` field) return one of four
    instructions chosen by a hash of the prompt, one of which says "twice", or, when shown earlier
    instructions with scores, the best of them with ``REFINEMENT`` added; data-observation calls
    get a fixed note. ``delay`` slows each call, for tests that interrupt a compile. The same replies are served over HTTP by
    ``instruction_sensitive_reply`` as an ``OpenAITestServer`` responder.
    """

    provider = "scripted"

    def __init__(self, delay: float = 0.0, **kwargs: Any):
        kwargs.setdefault("cache", False)
        super().__init__("instruction-sensitive", adapter="chat", **kwargs)
        self.delay = delay
        self.calls = 0
        self._lock = __import__("threading").Lock()

    def generate(self, messages: list[dict[str, str]], **settings: Any) -> list[ob.Completion]:
        import time

        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        text = instruction_sensitive_reply(messages)
        tokens = sum(len(m["content"]) for m in messages) // 4
        return [ob.Completion(text, tokens, 10 if "instruction ##" in text else 5)]
