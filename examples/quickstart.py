"""Quickstart: compile a vague program on the bundled demo LM and watch its score rise.

The task is to give the first letter of a word, but the program says nothing useful about
it: its signature has no docstring, so the instruction is the generic "Given the fields
`word`, produce the fields `answer`.". The demo model (oobleck-tiny, bundled, offline) then
has to guess between the word tasks it knows (reverse, repeat, uppercase, first letter).
Compiling searches for few-shot demos that show it which task is meant.

All in Python:
    python examples/quickstart.py

Or with the command line, as ``make demo`` does:
    python examples/quickstart.py make-data runs/quickstart
    oobleck compile examples/quickstart.py:program --lm hf/oobleck-tiny --optimizer random \\
        --train runs/quickstart/train.jsonl --dev runs/quickstart/dev.jsonl \\
        --test runs/quickstart/test.jsonl --out runs/quickstart/first-letter.oobleck
    oobleck run runs/quickstart/first-letter.oobleck --input word=planet
"""

from __future__ import annotations

import json
import random
import string
import sys
from pathlib import Path

import oobleck as ob


class FirstLetter(ob.Signature):
    # No docstring on purpose: the default instruction does not say what to do with the word.
    word: str = ob.InputField()
    answer: str = ob.OutputField()


program = ob.Predict(FirstLetter)

SPLITS = {"train": 40, "dev": 60, "test": 150}


def make_examples(seed: int = 0) -> dict[str, list[dict[str, str]]]:
    """Random lowercase words and their first letters, split into train/dev/test with no overlap."""
    rng = random.Random(seed)
    words: list[str] = []
    while len(words) < sum(SPLITS.values()):
        word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 7)))
        if word not in words:
            words.append(word)
    splits, start = {}, 0
    for name, size in SPLITS.items():
        splits[name] = [{"word": w, "answer": w[0]} for w in words[start : start + size]]
        start += size
    return splits


def write_data(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in make_examples().items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {len(rows):3d} examples to {folder / f'{name}.jsonl'}")


def main() -> None:
    """The whole loop in Python: score, compile, score again, save, load, run."""
    splits = {name: [ob.Example(r).with_inputs("word") for r in rows] for name, rows in make_examples().items()}
    ob.configure(lm=ob.LM("hf/oobleck-tiny"))
    evaluate = ob.Evaluate(devset=splits["test"], metric=ob.metrics.exact_match, num_threads=16)
    before = evaluate(program)
    optimizer = ob.optimizers.RandomSearch(metric=ob.metrics.exact_match, max_demos=4, num_candidates=6, num_threads=16)
    compiled = optimizer.compile(program, trainset=splits["train"], valset=splits["dev"])
    after = evaluate(compiled)
    print(f"test score: {before.percent:.1f}% before, {after.percent:.1f}% after compiling")
    path = compiled.save("runs/quickstart/first-letter.oobleck")
    loaded = ob.load(path)
    print("loaded program says:", loaded(word="planet").answer)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make-data":
        write_data(Path(sys.argv[2]))
    else:
        main()
