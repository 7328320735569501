"""A simulated LM for the multi-hop example, so it runs offline with meaningful numbers.

It is a test double (``ob.testing.ScriptedLM`` around a deterministic function), not a
model: it reads oobleck's chat format and follows simple rules.

- Writing a query, a *skilled* call asks for the person named in the question at the first
  hop, and at the second hop for the company or city the notes say that person works for or
  was born in. An *unskilled* call searches with the whole question at every hop.
- Answering, it follows the chain through the notes (person -> company or city -> the fact
  asked for); a skilled call replies with the bare answer, an unskilled one, on most
  questions, with a sentence around it (which fails exact match).

``strong=True`` (the teacher) is always skilled; the student is skilled only when its prompt
shows demos, which is what compiling gives it. Both err on about 8% of calls (keyed on a hash
of the prompt, so runs repeat exactly). The figures it produces show the pipeline's mechanics
(demos bootstrapped through retrieval and saved with the program), not any real LM's quality.
"""

from __future__ import annotations

import hashlib
import re

from oobleck.testing import ScriptedLM

_ERROR_RATE = 0.08
_VERBOSE_RATE = 0.75


def _fraction(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _fields(content: str) -> dict[str, str]:
    text = content.split("\n\nReply with ")[0]
    parts = re.split(r"\[\[ ## (\w+) ## \]\]\n", text)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def _notes(context: str) -> dict[str, str]:
    """Title -> text from the rendered notes ("[1] Title | text" per line)."""
    notes = {}
    for line in context.splitlines():
        body = re.sub(r"^\[\d+\]\s*", "", line.strip())
        title, sep, text = body.partition(" | ")
        if sep:
            notes[title] = text
    return notes


def _person(question: str) -> str | None:
    match = re.search(r"(?:that|was) ([A-Z][a-z]+ [A-Z][a-z]+)", question)
    return match.group(1) if match else None


def _bridge(question: str, notes: dict[str, str]) -> str | None:
    person = _person(question)
    text = notes.get(person or "", "")
    pattern = r"was born in ([A-Z][a-z]+)" if "born" in question else r"works for ([A-Z][a-z]+ [A-Z][a-z]+)\."
    match = re.search(pattern, text)
    return match.group(1) if match else None


def _answer(question: str, notes: dict[str, str]) -> str:
    bridge = _bridge(question, notes)
    text = notes.get(bridge or "", " ".join(notes.values()))  # a broken chain: read whatever notes there are
    if "born" in question:
        pattern = r"is a city in ([A-Z][a-z]+)"
    elif "founded" in question:
        pattern = r"founded by ([A-Z][a-z]+ [A-Z][a-z]+)"
    else:
        pattern = r"headquartered in ([A-Z][a-z]+)"
    match = re.search(pattern, text)
    return match.group(1) if match else "unknown"


def _reply(fields: dict[str, str]) -> str:
    return "\n\n".join(f"[[ ## {k} ## ]]\n{v}" for k, v in fields.items()) + "\n\n[[ ## completed ## ]]"


def respond(messages: list[dict[str, str]], strong: bool) -> str:
    system, last = messages[0]["content"], messages[-1]["content"]
    fields = _fields(last)
    question, notes = fields.get("question", ""), _notes(fields.get("context", ""))
    skilled = (strong or len(messages) > 2) and _fraction(last) >= _ERROR_RATE
    if "`query`" in system:
        if not skilled:
            return _reply({"reasoning": "Search for the question.", "query": question})
        if not notes:
            return _reply({"reasoning": "First find the person.", "query": _person(question) or question})
        bridge = _bridge(question, notes)
        return _reply({"reasoning": f"The notes lead to {bridge}.", "query": bridge or question})
    answer = _answer(question, notes)
    if not skilled and _fraction(question + "verbose") < _VERBOSE_RATE:
        return _reply({"reasoning": "From the notes.", "answer": f"Based on the notes, I think the answer is {answer}."})
    return _reply({"reasoning": "Following the notes.", "answer": answer})


def sim_lm(*, strong: bool = False) -> ScriptedLM:
    """The student (``strong=False``) or the teacher (``strong=True``)."""
    return ScriptedLM(lambda messages, settings: respond(messages, strong), model="sim-teacher" if strong else "sim-student")


