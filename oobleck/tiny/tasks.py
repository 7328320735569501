"""Synthetic tasks the demo model is trained and tested on, rendered by oobleck's own adapter.

Four tasks share one kind of input (a lowercase word): reverse, repeat, uppercase and first
letter. Under a vague instruction with no demos they are truly ambiguous, so the score depends
on the instruction and the demos, which is what an optimizer searches. Sorting digits and
addition are controls; sentiment takes its label words from the instruction; "remap" takes
them from the demos alone; a capital table tests recall. Instruction induction (demos in, the
task's instruction out) lets an instruction proposer run on the demo model itself.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oobleck.adapters.compact import CompactAdapter
from oobleck.optimizers.induction import examples_line, induction_signature
from oobleck.signatures.field import InputField, OutputField
from oobleck.signatures.signature import Signature, default_instructions, make_signature

__all__ = ["TASKS", "VAGUE", "Sample", "Task", "make_sample", "random_word", "render_prompt", "task_examples"]

VAGUE = ["Answer the question.", "Complete the task.", "Respond to the input.", "Produce the output."]
"""Vague instructions; the signature's default line ('Given the fields ...') is a fifth."""

COUNTRIES = {
    "france": "paris", "japan": "tokyo", "italy": "rome", "spain": "madrid", "egypt": "cairo",
    "kenya": "nairobi", "peru": "lima", "chile": "santiago", "cuba": "havana", "greece": "athens",
    "norway": "oslo", "poland": "warsaw", "china": "beijing", "india": "delhi", "iran": "tehran",
    "russia": "moscow", "canada": "ottawa", "mexico": "mexico city", "germany": "berlin", "austria": "vienna",
}  # fmt: skip

_SUBJECTS = ["the food", "the movie", "this book", "the service", "my day", "the hotel", "the game", "the song", "the trip", "the class", "the show", "our room"]
_POSITIVE = ["great", "wonderful", "amazing", "lovely", "excellent", "fun", "delightful", "superb", "nice", "perfect"]
_NEGATIVE = ["awful", "terrible", "boring", "bad", "horrible", "dull", "sad", "poor", "ugly", "broken"]
_LABEL_PAIRS = [("positive", "negative"), ("good", "bad"), ("yes", "no"), ("happy", "sad"), ("pos", "neg"), ("like", "dislike")]
_REMAP_WORDS = ["blue", "red", "cat", "dog", "up", "down", "alpha", "beta", "sun", "moon", "left", "right", "hot", "cold", "one", "two", "tea", "milk"]
_ALT_INPUTS = ["text", "input", "question", "query", "item", "string"]
_ALT_OUTPUTS = ["output", "answer", "result", "response", "label"]
_COMMON = ["apple", "stone", "river", "house", "green", "light", "paper", "table", "water", "music", "dream", "tiger", "cloud", "bread", "smile", "chair", "plant", "horse", "money", "night", "train", "sugar", "phone", "beach", "glass", "heart", "ocean", "pilot", "lemon", "robot", "storm"]  # fmt: skip


def random_word(rng: random.Random) -> str:
    """A lowercase word: common, pronounceable or random letters (copy tasks must generalise)."""
    roll = rng.random()
    if roll < 0.2:
        return rng.choice(_COMMON)
    length = rng.randint(3, 7)
    if roll < 0.6:
        vowels, consonants = "aeiou", "bcdfghjklmnprstvwz"
        return "".join(rng.choice(consonants if i % 2 == 0 else vowels) for i in range(length))
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(length))


def _phrase(rng: random.Random, positive: bool) -> str:
    adjective = rng.choice(_POSITIVE if positive else _NEGATIVE)
    return f"{rng.choice(_SUBJECTS)} was {adjective}"


@dataclass
class Task:
    """One synthetic task: canonical field names, precise wordings and an example generator."""

    name: str
    inputs: tuple[str, ...]
    output: str
    precise: list[str]
    generate: Callable[[random.Random], tuple[dict[str, Any], str, dict[str, str]]]
    """rng -> (input values by canonical name, answer, words that fill the precise wordings)."""
    ambiguous: bool = False
    demos_only: bool = False  # remap: no instruction can say the labels
    weight: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


def _word_task(name: str, fn: Callable[[str], str], precise: list[str]) -> Task:
    def generate(rng: random.Random) -> tuple[dict[str, Any], str, dict[str, str]]:
        word = random_word(rng)
        return {"word": word}, fn(word), {}

    return Task(name, ("word",), "answer", precise, generate, ambiguous=True, weight=1.6)


def _sentiment(rng: random.Random) -> tuple[dict[str, Any], str, dict[str, str]]:
    pos, neg = rng.choice(_LABEL_PAIRS)
    positive = rng.random() < 0.5
    return {"review": _phrase(rng, positive)}, pos if positive else neg, {"pos": pos, "neg": neg}


def _remap_labels(rng: random.Random) -> tuple[str, str]:
    first, second = rng.sample(_REMAP_WORDS, 2)
    return first, second


def _sort_digits(rng: random.Random) -> tuple[dict[str, Any], str, dict[str, str]]:
    digits = "".join(rng.choice(string.digits) for _ in range(rng.randint(3, 6)))
    return {"digits": digits}, "".join(sorted(digits)), {}


def _add(rng: random.Random) -> tuple[dict[str, Any], str, dict[str, str]]:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    return {"question": f"{a}+{b}"}, str(a + b), {}


def _capital(rng: random.Random) -> tuple[dict[str, Any], str, dict[str, str]]:
    country = rng.choice(sorted(COUNTRIES))
    return {"country": country}, COUNTRIES[country], {}


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        _word_task("reverse", lambda w: w[::-1], ["Reverse the word.", "Write the word backwards.", "Spell the word in reverse order."]),
        _word_task("repeat", lambda w: f"{w} {w}", ["Repeat the word twice.", "Write the word two times.", "Say the word twice."]),
        _word_task("uppercase", str.upper, ["Write the word in capital letters.", "Convert the word to uppercase.", "Uppercase the word."]),
        _word_task("first_letter", lambda w: w[0], ["Give the first letter of the word.", "Write only the first letter.", "What letter does the word start with?"]),
        Task("sort_digits", ("digits",), "sorted", ["Sort the digits in ascending order.", "Sort the digits from smallest to largest.", "Arrange the digits in increasing order."], _sort_digits, weight=0.7),
        Task("add", ("question",), "answer", ["Add the two numbers.", "Compute the sum.", "What is the sum of the numbers?"], _add, weight=0.7),
        Task("sentiment", ("review",), "sentiment", ["Label the sentiment as {pos} or {neg}.", "Is the review {pos} or {neg}?", "Classify the sentiment: {pos} or {neg}."], _sentiment, weight=1.2),
        Task("remap", ("review",), "label", [], _sentiment, demos_only=True, weight=0.8),
        Task("capital", ("country",), "capital", ["Name the capital city of the country.", "What is the capital of this country?", "Give the country's capital."], _capital, weight=0.6),
    ]
}


@dataclass
class Sample:
    """One rendered training or test prompt."""

    task: str
    signature: type[Signature]
    instruction: str
    demos: list[dict[str, Any]]
    inputs: dict[str, Any]
    answer: str
    condition: str  # "precise", "vague" or "induction"


def _field_names(task: Task, rng: random.Random, alt_rate: float) -> tuple[list[str], str]:
    if rng.random() >= alt_rate or len(task.inputs) != 1:
        return list(task.inputs), task.output
    inp = rng.choice(_ALT_INPUTS)
    out = rng.choice([o for o in _ALT_OUTPUTS if o != inp])
    return [inp], out


def task_examples(task_name: str, n: int, seed: int, **fixed: str) -> list[dict[str, Any]]:
    """``n`` examples of a task with canonical field names (for examples, tests, benchmarks).

    For sentiment and remap, ``fixed`` may set the label words (``pos=..., neg=...``).
    """
    task = TASKS[task_name]
    rng = random.Random(seed)
    out = []
    pos, neg = fixed.get("pos"), fixed.get("neg")
    if task.demos_only and not (pos and neg):
        pos, neg = _remap_labels(rng)
    for _ in range(n):
        inputs, answer, words = task.generate(rng)
        if pos and neg and "pos" in words:
            answer = pos if answer == words["pos"] else neg
        out.append({**inputs, task.output: answer})
    return out


def make_sample(rng: random.Random, *, task_name: str | None = None, condition: str | None = None,
                n_demos: int | None = None, alt_rate: float = 0.4) -> Sample:  # fmt: skip
    """Draw one prompt: a task, an instruction (precise or vague), 0-4 demos, a query."""
    if task_name is None:
        names = list(TASKS)
        task_name = rng.choices(names, weights=[TASKS[n].weight for n in names])[0]
    task = TASKS[task_name]
    if condition is None:
        condition = "vague" if task.demos_only or rng.random() < 0.5 else "precise"
    ins, out = _field_names(task, rng, alt_rate)
    signature = make_signature({**{n: (str, InputField()) for n in ins}, out: (str, OutputField())})
    if n_demos is None:
        n_demos = rng.randint(2, 4) if task.demos_only else rng.choice([0, 0, 1, 2, 3, 4])
    remap = _remap_labels(rng) if task.demos_only else None
    records = []
    words: dict[str, str] = {}
    for i in range(n_demos + 1):
        values, answer, words_i = task.generate(rng)
        if i == 0:
            words = words_i
        if "pos" in words_i:  # keep one label pair across the whole prompt
            positive = answer == words_i["pos"]
            answer = (remap[0] if positive else remap[1]) if remap else (words["pos"] if positive else words["neg"])
        renamed = dict(zip(ins, values.values(), strict=True))
        records.append({**renamed, out: answer})
    *demos, query = records
    if condition == "precise":
        instruction = rng.choice(task.precise).format(**words)
    else:
        instruction = rng.choice([*VAGUE, default_instructions(ins, [out])])
    return Sample(task.name, signature.with_instructions(instruction), instruction, demos,
                  {n: query[n] for n in ins}, query[out], condition)  # fmt: skip


def make_induction_sample(rng: random.Random) -> Sample:
    """Demos of a task in, one of its precise wordings out."""
    names = [n for n, t in TASKS.items() if t.precise]
    task = TASKS[rng.choice(names)]
    base = make_sample(rng, task_name=task.name, condition="precise", n_demos=rng.randint(2, 4), alt_rate=0.4)
    instruction = base.instruction
    line = examples_line(base.signature, base.demos)
    return Sample("induction", induction_signature(), induction_signature().instructions, [],
                  {"examples": line}, instruction, "induction")  # fmt: skip


_ADAPTERS = {"\n": CompactAdapter("\n"), "\n\n": CompactAdapter("\n\n")}


def render_prompt(sample: Sample, separator: str = "\n") -> list[dict[str, str]]:
    """The chat messages oobleck's compact adapter sends for this sample."""
    return _ADAPTERS[separator].format(sample.signature, sample.demos, sample.inputs)
