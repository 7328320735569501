"""A SIMULATED LM for the multi-hop example: rule-based, not a model, so the example runs offline.

It is a test double (``ob.testing.ScriptedLM`` around a deterministic function) that reads
oobleck's chat format and follows the rules below. Its model ids say so:
``simulated/rule-based-student`` and ``simulated/rule-based-teacher``. The figures it produces
show the pipeline's mechanics (demos bootstrapped through retrieval, instructions and demos
searched, the program saved and reloaded), not any real LM's quality.

What it does, per step:

- Writing a query, a *skilled* call asks for the person named in the question at the first
  hop, and at the second hop for the company or city the notes say that person works for or
  was born in. An *unskilled* call searches with the whole question at every hop.
- Answering, it follows the chain through the notes (person -> company or city -> the fact
  asked for) whatever its skill; a skilled call replies with the bare answer, an unskilled
  one, on most questions, with a sentence around it (which fails exact match).

When a call is skilled, for the reasons a real LM would do better:

- the teacher (``strong=True``) always is;
- the student imitates demos of the step it is doing: a query step is skilled when its demos'
  queries are names rather than whole questions, an answer step when its demos' answers are
  a few words (demos that show the opposite teach the opposite);
- the student follows an explicit instruction: a query step whose instruction says to search
  for one name (or entity) at a time, an answer step whose instruction asks for the answer
  alone, not a sentence.

Everyone errs (an unskilled reply) on about 8% of calls, keyed on a hash of the call's input,
so runs repeat exactly. Asked to propose an instruction (an optimizer's proposal prompt), it
returns the step's current instruction unchanged: it has no insight of its own to offer.
"""

from __future__ import annotations

import hashlib
import re

from oobleck.testing import ScriptedLM

_ERROR_RATE = 0.08
_VERBOSE_RATE = 0.75
STUDENT_ID, TEACHER_ID = "simulated/rule-based-student", "simulated/rule-based-teacher"

# What an explicit instruction must say for the student to follow it (any phrasing with these words).
_QUERY_INSTRUCTION = re.compile(r"\b(?:one|a single)\s+(?:name|entity)\b", re.IGNORECASE)
_ANSWER_INSTRUCTION = re.compile(r"\b(?:answer|it)\s+alone\b|\bnot a (?:full )?sentence\b|\bonly the answer\b", re.IGNORECASE)


def _fraction(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _fields(content: str) -> dict[str, str]:
    text = content.split("\n\nReply with ")[0].split("[[ ## completed ## ]]")[0]
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


def _demo_outputs(messages: list[dict[str, str]], field: str) -> list[str]:
    """The values of ``field`` in the demos shown (the assistant turns before the last user turn)."""
    return [value for m in messages[1:-1] if m["role"] == "assistant" and (value := _fields(m["content"]).get(field))]


def _instruction(system: str) -> str:
    return system.split("\nTask:\n", 1)[1] if "\nTask:\n" in system else ""


def _query_skill(messages: list[dict[str, str]]) -> bool:
    """Demos whose queries are names (most of them), or an instruction to search for one name at a time."""
    shown = _demo_outputs(messages, "query")
    if shown:
        return sum(not q.endswith("?") and len(q.split()) <= 4 for q in shown) > len(shown) / 2
    return bool(_QUERY_INSTRUCTION.search(_instruction(messages[0]["content"])))


def _answer_skill(messages: list[dict[str, str]]) -> bool:
    """Demos whose answers are a few words (most of them), or an instruction to give the answer alone."""
    shown = _demo_outputs(messages, "answer")
    if shown:
        return sum(len(a.split()) <= 4 for a in shown) > len(shown) / 2
    return bool(_ANSWER_INSTRUCTION.search(_instruction(messages[0]["content"])))


def respond(messages: list[dict[str, str]], strong: bool) -> str:
    system, last = messages[0]["content"], messages[-1]["content"]
    if "`instruction`" in system:  # an optimizer asks for an instruction proposal: it has none to offer
        current = _fields(last).get("program_step", "")
        match = re.search(r"current instruction: (.+)", current)
        return _reply({"instruction": match.group(1).strip() if match else "Answer the question."})
    fields = _fields(last)
    question, notes = fields.get("question", ""), _notes(fields.get("context", ""))
    lucky = _fraction(last) >= _ERROR_RATE
    if "`query`" in system:
        if not (lucky and (strong or _query_skill(messages))):
            return _reply({"reasoning": "Search for the question.", "query": question})
        if not notes:
            return _reply({"reasoning": "First find the person.", "query": _person(question) or question})
        bridge = _bridge(question, notes)
        return _reply({"reasoning": f"The notes lead to {bridge}.", "query": bridge or question})
    answer = _answer(question, notes)
    skilled = lucky and (strong or _answer_skill(messages))
    if not skilled and _fraction(question + "verbose") < _VERBOSE_RATE:
        return _reply({"reasoning": "From the notes.", "answer": f"Based on the notes, I think the answer is {answer}."})
    return _reply({"reasoning": "Following the notes.", "answer": answer})


def sim_lm(*, strong: bool = False) -> ScriptedLM:
    """The simulated student (``strong=False``) or teacher (``strong=True``)."""
    return ScriptedLM(lambda messages, settings: respond(messages, strong), model=TEACHER_ID if strong else STUDENT_ID)
