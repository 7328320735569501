"""A deterministic simulated LM and its task, for comparing optimizers with no real LLM offline.

The task ("which animal?"): each input is a sentence naming three animals and one action, in
one of four forms::

    active   The fox chased the owl while the cat watched.
    fronted  While the cat slept, the fox chased the owl.
    passive  The owl was chased by the fox near the cat.
    place    Near the cat, the fox quietly chased the owl.

The label is always the animal acted upon (the grammatical object: ``owl``). The starting
instruction, "Name the animal in the sentence.", does not say which one, so a model told only
that guesses; heuristics such as "the first animal" or "the subject" are right only sometimes.

The simulated model is a function of the request's messages and a seed, nothing else: it does
not see which client sent them. It reads what any chat model would read: the output field
names listed in the system message (``1. `animal` (str)``, the layout both DSPy's and oobleck's
chat adapters write), the instruction words and demos anywhere in the prompt, and the task
sentences it contains. Its rules:

* Worked examples: a task sentence followed (before the next task sentence) by its correct
  label, however formatted (chat demo turns, ``sentence='...' -> animal='owl'`` lines,
  ``Sentence: ... Animal: ...`` blocks, ``Example({...})`` reprs) counts as one.
* Answering (the output field is ``animal``; the query is the last sentence of the last
  message): if the prompt contains a key phrase naming the rule (``object of``, ``direct
  object``, ``acted upon``, ``receiving end``, ...) the answer is right with probability 0.90,
  0.95 with at least two worked examples. Otherwise, if it states a wrong rule ("first animal",
  "the subject", "performs the action"), it follows that rule with probability 0.9. Otherwise
  it is right with probability min(0.75, 1/3 + 0.1 per worked example (up to 4) + 0.1 if one
  of them has the query's sentence form). A wrong answer is another animal of the sentence.
* Writing an instruction (an output field whose name contains ``instruction``: DSPy's
  ``proposed_instruction``, oobleck's ``instruction``): the proposal names the rule
  ("insight") with probability 0.9 if the prompt already contains a key phrase (an earlier
  observation or instruction to copy), else 1 - 0.85^n for n worked examples in the prompt,
  at most 0.85. An insightful proposal is one of four phrasings naming the rule; otherwise one
  of four vague phrasings (60%) or three wrong rules (40%). Phrasings use the verb of an
  example the model saw, so proposals differ with the examples shown.
* Any other output field (data observations and summaries, program and module descriptions)
  gets a sentence about the data, which states the rule under the same insight draw.
* Draws: a uniform number from blake2b(seed, kind, the whole prompt text, k), where k counts
  earlier identical requests for instruction and text fields (those are sampled, so asking
  again gives a fresh sample) and is always 0 for answers (greedy: the same prompt, the same
  answer).
* Format: ``[[ ## field ## ]]`` sections ending with ``[[ ## completed ## ]]`` when the system
  message shows that layout, else one JSON object (the JSON adapters' format).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

ANIMALS = ("fox", "owl", "cat", "dog", "hen", "pig", "goat", "deer", "bear", "wolf",
           "duck", "frog", "mole", "lynx", "crow", "hare", "seal", "swan", "toad", "yak")  # fmt: skip
VERBS = ("chased", "followed", "startled", "greeted", "nudged", "pushed", "tickled", "ignored", "teased", "pecked", "licked", "visited")
FORMS = {
    "active": "The {a} {v} the {b} while the {c} watched.",
    "fronted": "While the {c} slept, the {a} {v} the {b}.",
    "passive": "The {b} was {v} by the {a} near the {c}.",
    "place": "Near the {c}, the {a} quietly {v} the {b}.",
}
INSTRUCTION = "Name the animal in the sentence."
INPUT, OUTPUT = "sentence", "animal"

KEY = re.compile(r"\b(object of|direct object|grammatical object|acted upon|receiving end|receives the action)\b", re.IGNORECASE)
WRONG_FIRST = re.compile(r"\b(first animal|mentioned first|first-mentioned)\b", re.IGNORECASE)
WRONG_SUBJECT = re.compile(r"\b(the subject|doing the action|performs the action)\b", re.IGNORECASE)

INSIGHT_PHRASINGS = (
    "Name the animal that is the object of the verb: the one that gets {v}, not the one doing it.",
    "Find the action in the sentence and answer with the animal on the receiving end of it (for example, the one that was {v}).",
    "Answer with the direct object of the sentence, the animal acted upon, even when the sentence is passive.",
    "You are a careful reader. Work out which animal is acted upon in the sentence and reply with its name only.",
)
VAGUE_PHRASINGS = (
    "Name the animal in the sentence.",
    "Read the sentence and reply with the animal it is about, in one lowercase word.",
    "Identify the most important animal in the sentence and output its name.",
    "Which animal does the sentence focus on? Answer with a single word.",
)
WRONG_PHRASINGS = (
    "Answer with the first animal mentioned in the sentence.",
    "Return the subject of the sentence: the animal doing the action (for example, the one that {v} another).",
    "Name the animal that performs the action described in the sentence.",
)
INSIGHT_TEXT = ("Each example is a short sentence in which one animal acts on another while a third is nearby. The label is "
                "always the object of the verb, the animal acted upon, whether the sentence is active or passive.")  # fmt: skip
PLAIN_TEXTS = (
    (
        "Each example is a short sentence mentioning three animals and one action; the label is a single lowercase animal name "
        "taken from the sentence."
    ),
    "The data are one-sentence scenes with animals; the output is one of the animals named in the input.",
    "The sentences vary in word order (some are passive) and the answer is always one animal from the sentence.",
)


def _pattern(form: str) -> re.Pattern[str]:
    text = re.escape(FORMS[form])
    for slot in ("a", "b", "c", "v"):
        text = text.replace(re.escape("{" + slot + "}"), f"(?P<{slot}>[a-z]+)")
    return re.compile(text)


PATTERNS = {form: _pattern(form) for form in FORMS}


@dataclass(frozen=True)
class Parsed:
    """One task sentence found in a prompt: where it is, its form, its animals in order and the object."""

    start: int
    end: int
    form: str
    verb: str
    agent: str
    object: str
    order: tuple[str, ...]


def parse_sentences(text: str) -> list[Parsed]:
    found = []
    for form, pattern in PATTERNS.items():
        for m in pattern.finditer(text):
            if not all(m.group(s) in ANIMALS for s in "abc"):
                continue
            order = tuple(sorted("abc", key=m.start))
            found.append(Parsed(m.start(), m.end(), form, m.group("v"), m.group("a"), m.group("b"), tuple(m.group(s) for s in order)))
    return sorted(found, key=lambda p: p.start)


def worked_examples(text: str, sentences: list[Parsed]) -> list[Parsed]:
    """Sentences followed, before the next one, by their correct label."""
    out = []
    for i, s in enumerate(sentences):
        stop = sentences[i + 1].start if i + 1 < len(sentences) else len(text)
        if re.search(rf"\b{s.object}\b", text[s.end : stop]):
            out.append(s)
    return out


def make_examples(n: int, seed: int, exclude: set[str] | None = None) -> list[dict[str, str]]:
    """``n`` distinct labeled sentences, forms and animals drawn with ``seed``."""
    rng = random.Random(f"animal-task-{seed}")
    seen = set(exclude or ())
    out: list[dict[str, str]] = []
    while len(out) < n:
        a, b, c = rng.sample(ANIMALS, 3)
        form = rng.choice(list(FORMS))
        sentence = FORMS[form].format(a=a, b=b, c=c, v=rng.choice(VERBS))
        if sentence in seen:
            continue
        seen.add(sentence)
        out.append({INPUT: sentence, OUTPUT: b})
    return out


def is_correct(answer: Any, label: str) -> bool:
    return str(answer).strip().strip(".'\"").lower() == label


def _content(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


_FIELD_LINE = re.compile(r"^\s*\d+\. `(\w+)`")


def output_fields(system: str) -> list[str]:
    """Output field names from the numbered list after the "output fields" heading."""
    start = system.lower().find("output fields")
    if start < 0:
        return []
    names: list[str] = []
    for line in system[start:].splitlines()[1:]:
        m = _FIELD_LINE.match(line)
        if m:
            names.append(m.group(1))
        elif names and (not line.strip() or not line[:1].isspace()):
            break
    return names


def _wrong_rule(text: str, query: Parsed) -> str | None:
    """The animal a stated wrong rule picks, when the prompt states one and no key phrase."""
    if KEY.search(text) or not (WRONG_FIRST.search(text) or WRONG_SUBJECT.search(text)):
        return None
    return query.order[0] if WRONG_FIRST.search(text) else query.agent


def _right_probability(text: str, query: Parsed, worked: list[Parsed]) -> float:
    """Probability of the right answer when no wrong rule is followed (the rules in the module docstring)."""
    demos = [w for w in worked if (w.form, w.verb, w.order) != (query.form, query.verb, query.order)]
    if KEY.search(text):
        return 0.95 if len(demos) >= 2 else 0.90
    same_form = any(d.form == query.form for d in demos)
    return min(0.75, 1 / 3 + 0.1 * min(len(demos), 4) + (0.1 if same_form else 0.0))


class SimulatedLM:
    """The responder: ``messages -> completion text`` (see the module docstring for its rules)."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.kinds: Counter[str] = Counter()
        self._seen: Counter[str] = Counter()
        # The probability of a right answer behind each answer given since the last reset: their
        # mean is a program's expected score, free of the draws' noise.
        self.answer_probabilities: list[float] = []
        self.plumbing: Counter[str] = Counter()  # what the prompts held, for ``optimizers.py --plumbing`` (the routing task fills it)

    def reset_counts(self) -> None:
        self.kinds.clear()
        self._seen.clear()
        self.answer_probabilities = []

    def _draw(self, *parts: Any) -> float:
        digest = hashlib.blake2b("\x1f".join(str(p) for p in (self.seed, *parts)).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    output = OUTPUT  # the answer field; any other field is writing (sampled)

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        system = next((_content(m) for m in messages if m.get("role") == "system"), "")
        text = "\n\n".join(f"[{m.get('role')}]\n{_content(m)}" for m in messages)
        last = _content(messages[-1]) if messages else ""
        names = output_fields(system) or [self.output]
        sample_key = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
        values = self._values(text, last, names, self._seen[sample_key])
        if any(n != self.output for n in names):
            self._seen[sample_key] += 1
        if "[[ ## completed ## ]]" in system:
            return "\n\n".join(f"[[ ## {n} ## ]]\n{v}" for n, v in values.items()) + "\n\n[[ ## completed ## ]]"
        return json.dumps(values)

    def _values(self, text: str, last: str, names: list[str], k: int) -> dict[str, str]:
        """One value per output field; ``k`` counts earlier identical writing requests."""
        sentences = parse_sentences(text)
        worked = worked_examples(text, sentences)
        values: dict[str, str] = {}
        for name in names:
            if name == OUTPUT:
                self.kinds["answer"] += 1
                values[name] = self._answer(text, last, worked)
            elif "instruction" in name:
                self.kinds["instruction"] += 1
                values[name] = self._instruction(text, worked, k)
            else:
                self.kinds["text"] += 1
                values[name] = self._text(text, worked, k)
        return values

    # -- the three kinds of output -----------------------------------------------------------

    def _answer(self, text: str, last: str, worked: list[Parsed]) -> str:
        queries = parse_sentences(last)
        if not queries:
            self.answer_probabilities.append(0.0)
            return "unknown"
        query = queries[-1]
        u, pick = self._draw("answer", text), self._draw("answer-other", text)
        others = [a for a in query.order if a != query.object]
        rule = _wrong_rule(text, query)
        if rule is not None:
            self.answer_probabilities.append(0.9 * (rule == query.object) + 0.1 / 3)
            return rule if u < 0.9 else query.order[int(pick * 3)]
        p = _right_probability(text, query, worked)
        self.answer_probabilities.append(p)
        return query.object if u < p else others[int(pick * len(others))]

    def _insight(self, text: str, worked: list[Parsed], k: int, kind: str) -> bool:
        p = 0.9 if KEY.search(text) else min(0.85, 1 - 0.85 ** len(worked))
        return self._draw(kind, text, k) < p

    def _instruction(self, text: str, worked: list[Parsed], k: int) -> str:
        verb = worked[int(self._draw("verb", text, k) * len(worked))].verb if worked else "affected"
        pick = self._draw("phrasing", text, k)
        if self._insight(text, worked, k, "insight"):
            pool = INSIGHT_PHRASINGS
        else:
            pool = VAGUE_PHRASINGS if self._draw("vague-or-wrong", text, k) < 0.6 else WRONG_PHRASINGS
        return pool[int(pick * len(pool))].format(v=verb)

    def _text(self, text: str, worked: list[Parsed], k: int) -> str:
        if self._insight(text, worked, k, "insight-text"):
            return INSIGHT_TEXT
        return PLAIN_TEXTS[int(self._draw("plain", text, k) * len(PLAIN_TEXTS))]
