"""``EnsembleProgram``: several programs answer, a reducer turns their answers into one.

Members sit in the list attribute ``members``, so their predictors are named
``members.0.step``, ``members.1.step``...: optimizers, traces and artifacts address them like
any other predictor. Only reducers named in ``REDUCERS`` can be saved, because an artifact
never names code to import.
"""

from __future__ import annotations

import json
import logging
import string
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from oobleck._json import to_jsonable
from oobleck.errors import ConfigurationError, LMError, ParseError
from oobleck.example import Prediction
from oobleck.modules.module import Module

__all__ = ["REDUCERS", "EnsembleProgram", "Reducer", "majority_vote", "reducer_name", "vote_key"]

logger = logging.getLogger("oobleck.modules.ensemble")

Reducer = Callable[[list[Any]], Any]

# Fields that explain an answer rather than give it: they never agree word for word, so they
# follow the winning member instead of being voted on.
_EXPLANATION_FIELDS = frozenset({"reasoning", "rationale"})
_EDGE_PUNCTUATION = string.punctuation + " \t\n\r"

# Failures of one member's LM call: the others can still answer. Anything else (bad inputs, no
# LM configured, a spent budget, a bug) is the caller's to see, so it propagates.
_MEMBER_FAILURES = (ParseError, LMError)


def vote_key(value: Any) -> Any:
    """The form in which two answers count as the same vote; ``None`` abstains.

    Text is compared case-, accent- and spacing-insensitively without surrounding punctuation
    ("Paris." and " paris" agree); numbers by value (``1 == 1.0``); anything else by its JSON form.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = unicodedata.normalize("NFKD", value)
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn").casefold()
        text = " ".join(text.split()).strip(_EDGE_PUNCTUATION)
        return ("text", text) if text else None
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", float(value))
    return ("json", json.dumps(to_jsonable(value), sort_keys=True, ensure_ascii=False))


def _tally(keys: Sequence[Any]) -> dict[Any, int]:
    """Votes per non-abstaining key, in first-seen (earliest member) order."""
    counts: dict[Any, int] = {}
    for key in keys:
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    return counts


def _winner(counts: dict[Any, int]) -> Any:
    """The most voted key; a tie goes to the key seen first. ``None`` when everyone abstained."""
    best = max(counts.values(), default=0)
    return next((key for key in counts if counts[key] == best), None)


def majority_vote(predictions: list[Any]) -> Any:
    """Per output field the most common normalised value; ties go to the earliest member.

    The result is the full prediction (reasoning, completions and all) of the earliest member
    that agrees with the most field winners; a field on which that member was outvoted (not
    merely tied) takes the winning value as the earliest member holding it wrote it.
    Explanation fields (``reasoning``) are not voted on. Non-mapping answers are compared whole.
    """
    if not predictions:
        raise ConfigurationError("majority_vote needs at least one prediction")
    if not all(isinstance(p, Mapping) for p in predictions):
        keys = [vote_key(p) for p in predictions]
        winner = _winner(_tally(keys))
        return predictions[keys.index(winner)] if winner is not None else predictions[0]
    fields: list[str] = []
    for prediction in predictions:
        fields.extend(k for k in prediction if k not in fields and k not in _EXPLANATION_FIELDS)
    votes: dict[str, tuple[list[Any], dict[Any, int]]] = {}
    for name in fields:
        keys = [vote_key(p[name]) if name in p else None for p in predictions]
        votes[name] = (keys, _tally(keys))
    winners = {name: _winner(counts) for name, (_, counts) in votes.items()}
    agreement = [sum(1 for name, (keys, _) in votes.items() if keys[i] is not None and keys[i] == winners[name])
                 for i in range(len(predictions))]  # fmt: skip
    chosen = agreement.index(max(agreement))
    base = predictions[chosen]
    result = Prediction(base)
    if isinstance(base, Prediction) and len(base.completions) > 1:
        object.__setattr__(result, "_completions", [dict(c) for c in base.completions])  # keep the member's n > 1 samples
    for name, (keys, counts) in votes.items():
        winner, own = winners[name], keys[chosen]
        if winner is not None and counts[winner] > counts.get(own, 0):
            result[name] = predictions[keys.index(winner)][name]
    return result


REDUCERS: dict[str, Reducer] = {"majority_vote": majority_vote}


def reducer_name(reducer: Any) -> str | None:
    """The registered name of ``reducer``, or ``None`` for a user's own callable."""
    if isinstance(reducer, str):
        return reducer if reducer in REDUCERS else None
    return next((name for name, fn in REDUCERS.items() if fn is reducer), None)


def _resolve_reducer(reducer: str | Reducer) -> Reducer:
    if isinstance(reducer, str):
        if reducer not in REDUCERS:
            raise ConfigurationError(f"unknown reducer {reducer!r}; named reducers: {sorted(REDUCERS)}, or pass a function")
        return REDUCERS[reducer]
    if not callable(reducer):
        raise ConfigurationError(f"reducer must be a name ({sorted(REDUCERS)}) or a function, not {type(reducer).__name__}")
    return reducer


class EnsembleProgram(Module):
    """Runs its member programs on the same inputs and reduces their predictions to one.

    ``reducer`` is a name from ``REDUCERS`` (saveable) or a function
    ``reducer(list[Prediction]) -> Prediction`` (not saveable). With ``size``, each call runs
    only ``size`` members, sampled from ``seed`` and the call's inputs: the same inputs always
    get the same members, whatever the thread or call order. A member whose LM call fails
    (``ParseError``, ``LMError``) is left out of the vote; if all fail, the first error is raised.
    """

    def __init__(self, members: Sequence[Module], reducer: str | Reducer = "majority_vote", *, size: int | None = None, seed: int = 0):
        items = list(members) if isinstance(members, (list, tuple)) else None
        if not items:
            raise ConfigurationError("an EnsembleProgram needs a non-empty list of member programs")
        for i, member in enumerate(items):
            if not isinstance(member, Module):
                raise ConfigurationError(f"ensemble member {i} is a {type(member).__name__}, not an ob.Module")
            for j in range(i):
                if items[j] is member:
                    raise ConfigurationError(f"ensemble members {j} and {i} are the same object; pass copies (program.deepcopy())")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= len(items)):
            raise ConfigurationError(f"ensemble size must be an int from 1 to the {len(items)} members, or None for all; got {size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigurationError(f"ensemble seed must be an int, not {seed!r}")
        self.members: list[Module] = items
        self.reducer: str | Reducer = reducer
        self.size = size
        self.seed = seed
        _resolve_reducer(reducer)  # fail now on a bad reducer, not at the first call

    @property
    def reducer_name(self) -> str | None:
        """The reducer's registered name; ``None`` for a callable, which cannot be saved."""
        return reducer_name(self.reducer)

    def chosen(self, inputs: Mapping[str, Any]) -> list[int]:
        """Indices (in member order) of the members that answer these inputs."""
        if self.size is None or self.size >= len(self.members):
            return list(range(len(self.members)))
        import hashlib  # imported on use: only sampled ensembles need them, and ``import oobleck`` stays fast
        import random

        text = json.dumps([self.seed, to_jsonable(dict(inputs))], sort_keys=True, ensure_ascii=False)
        rng = random.Random(int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big"))
        return sorted(rng.sample(range(len(self.members)), self.size))

    def _reduced(self, outcomes: list[Any]) -> Any:
        answers = [o for o in outcomes if not isinstance(o, BaseException)]
        if not answers:
            raise outcomes[0]
        return _resolve_reducer(self.reducer)(answers)  # looked up per call, so ``reducer`` can be reassigned

    def forward(self, **inputs: Any) -> Any:
        outcomes: list[Any] = []
        for i in self.chosen(inputs):
            try:
                outcomes.append(self.members[i](**inputs))
            except _MEMBER_FAILURES as exc:
                logger.info("ensemble member %d failed, left out of the vote: %s", i, exc)
                outcomes.append(exc)
        return self._reduced(outcomes)

    async def aforward(self, **inputs: Any) -> Any:
        """Members answer concurrently; the reduction is the same as ``forward``'s."""
        import asyncio

        async def one(i: int) -> Any:
            try:
                return await self.members[i].acall(**inputs)
            except _MEMBER_FAILURES as exc:
                logger.info("ensemble member %d failed, left out of the vote: %s", i, exc)
                return exc

        outcomes = await asyncio.gather(*(one(i) for i in self.chosen(inputs)))
        return self._reduced(list(outcomes))

    def __repr__(self) -> str:
        name = self.reducer_name or getattr(self.reducer, "__name__", "callable")
        return f"EnsembleProgram({len(self.members)} members, reducer={name}, size={self.size}, seed={self.seed})"
