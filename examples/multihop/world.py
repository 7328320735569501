"""A synthetic world for the multi-hop example: people, companies, cities and countries.

Every question needs two documents: the person's (which names the company they work for or
the city they were born in) and that company's or city's (which holds the answer). The world
is generated from a seed, so the example runs offline and the same seed gives the same files.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "st", "tr", "th", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "ou"]
_CODAS = ["", "n", "r", "l", "s", "th", "x", "m"]

PROFESSIONS = ["engineer", "chemist", "architect", "pilot", "teacher", "surgeon", "journalist", "economist", "botanist", "designer"]
INDUSTRIES = ["shipping", "software", "mining", "textile", "aerospace", "brewing", "insurance", "robotics"]
HOBBIES = ["sailing", "painting", "climbing", "fishing", "chess", "gardening", "cycling", "pottery"]
FEATURES = ["harbour", "cathedral", "markets", "bridges", "university", "vineyards", "museums", "festivals"]
SUFFIXES = ["Industries", "Works", "Holdings", "Labs", "Group", "Systems"]

QUESTION_KINDS = ("hq_city", "birth_country", "founder")


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)).capitalize()


@dataclass
class World:
    passages: list[dict[str, str]] = field(default_factory=list)
    questions: list[dict[str, Any]] = field(default_factory=list)


def make_world(seed: int = 0, *, people: int = 80, companies: int = 24, cities: int = 16, countries: int = 6) -> World:
    """Passages (id, title, text) and two-hop questions (question, answer, gold_titles, kind)."""
    rng = random.Random(seed)
    used: set[str] = set()

    def name(syllables: int) -> str:
        while True:
            word = _word(rng, syllables)
            if word.lower() not in used and len(word) > 3:
                used.add(word.lower())
                return word

    country_names = [name(2) for _ in range(countries)]
    city_names = [name(3) for _ in range(cities)]
    city_country = {c: rng.choice(country_names) for c in city_names}
    company_names = [f"{name(2)} {rng.choice(SUFFIXES)}" for _ in range(companies)]
    company = {c: {"industry": rng.choice(INDUSTRIES), "hq": rng.choice(city_names), "founder": f"{name(2)} {name(2)}",
                   "year": rng.randint(1890, 2015)} for c in company_names}  # fmt: skip
    person_names = [f"{name(2)} {name(2)}" for _ in range(people)]
    person = {p: {"job": rng.choice(PROFESSIONS), "employer": rng.choice(company_names), "born": rng.choice(city_names),
                  "hobby": rng.choice(HOBBIES)} for p in person_names}  # fmt: skip

    world = World()
    for p, facts in person.items():
        text = (f"{p} is a {facts['job']} who works for {facts['employer']}. {p} was born in {facts['born']} "
                f"and spends weekends {facts['hobby']}.")  # fmt: skip
        world.passages.append({"title": p, "text": text})
    for c, facts in company.items():
        text = (f"{c} is a {facts['industry']} company headquartered in {facts['hq']}. "
                f"It was founded by {facts['founder']} in {facts['year']}.")  # fmt: skip
        world.passages.append({"title": c, "text": text})
    for c in city_names:
        world.passages.append({"title": c, "text": f"{c} is a city in {city_country[c]}, famous for its {rng.choice(FEATURES)}."})
    for country in country_names:
        capital = rng.choice([c for c in city_names if city_country[c] == country] or city_names)
        world.passages.append({"title": country, "text": f"{country} is a country whose capital is {capital}."})
    for passage in world.passages:
        passage["id"] = passage["title"].lower().replace(" ", "-")

    for p, facts in person.items():
        kind = rng.choice(QUESTION_KINDS)
        employer = facts["employer"]
        if kind == "hq_city":
            question, answer, bridge = f"In which city is the company that {p} works for headquartered?", company[employer]["hq"], employer
        elif kind == "birth_country":
            question, answer, bridge = f"In which country was {p} born?", city_country[facts["born"]], facts["born"]
        else:
            question, answer, bridge = f"Who founded the company that {p} works for?", company[employer]["founder"], employer
        world.questions.append({"question": question, "answer": answer, "gold_titles": [p, bridge], "kind": kind})
    rng.shuffle(world.questions)
    return world


def write_world(world: World, folder: Path, *, train: int = 24, dev: int = 16) -> dict[str, Path]:
    """corpus.jsonl, train.jsonl, dev.jsonl and test.jsonl (the rest of the questions) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": world.questions[:train], "dev": world.questions[train : train + dev], "test": world.questions[train + dev :]}
    paths = {"corpus": folder / "corpus.jsonl"}
    _write_jsonl(paths["corpus"], world.passages)
    for split, rows in splits.items():
        paths[split] = folder / f"{split}.jsonl"
        _write_jsonl(paths[split], rows)
    return paths


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
