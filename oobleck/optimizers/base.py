"""Shapes every optimizer shares: ``Candidate`` (a point in prompt space) and ``Optimizer``.

A candidate is the instructions and demos of each predictor, by predictor name, plus how well
it scored and what it cost. Every optimizer proposes candidates, scores them and applies the
best one to a copy of the program, so later optimizers (instruction search, Bayesian search,
soft prompts) reuse this shape rather than inventing their own.
"""

from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from oobleck._json import to_jsonable
from oobleck.errors import ConfigurationError, DataError
from oobleck.evaluate.evaluate import Evaluate, EvaluationResult
from oobleck.example import Example
from oobleck.lm.usage import Usage
from oobleck.modules.module import Module

__all__ = ["Candidate", "Optimizer", "check_trainset", "data_fingerprint"]

logger = logging.getLogger("oobleck.optimizers")
# What a compile leaves on a resumable optimizer (its session, report data): state, not settings.
_RUN_STATE = frozenset({"session", "report_extras"})


def demo_record(values: Mapping[str, Any]) -> dict[str, Any]:
    """A demo as plain JSON-ready data."""
    return {str(k): to_jsonable(v) for k, v in values.items()}


@dataclass
class Candidate:
    """Instructions and demos per predictor name, with score and cost once evaluated."""

    instructions: dict[str, str] = field(default_factory=dict)
    demos: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    score: float | None = None
    cost: dict[str, int] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def from_program(cls, program: Module, source: str = "program") -> Candidate:
        return cls(
            instructions={n: p.signature.instructions for n, p in program.named_predictors()},
            demos={n: [dict(d) for d in p.demos] for n, p in program.named_predictors()},
            source=source,
        )

    def apply(self, program: Module) -> Module:
        """A copy of ``program`` with this candidate's instructions and demos."""
        clone = program.deepcopy()
        names = dict(clone.named_predictors())
        for name in [*self.instructions, *self.demos]:
            if name not in names:
                raise ConfigurationError(f"candidate names predictor {name!r}, which the program lacks; it has {sorted(names)}")
        for name, predictor in names.items():
            if name in self.instructions and self.instructions[name] != predictor.signature.instructions:
                predictor.signature = predictor.signature.with_instructions(self.instructions[name])
            if name in self.demos:
                predictor.demos = [dict(d) for d in self.demos[name]]
        return clone

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "score": self.score, "cost": dict(self.cost), "instructions": dict(self.instructions),
                "demos": {k: [demo_record(d) for d in v] for k, v in self.demos.items()}}  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """The row of a candidates table: its instructions, but only how many demos."""
        return {"source": self.source, "score": self.score, "cost": dict(self.cost), "instructions": dict(self.instructions),
                "demos": {k: len(v) for k, v in self.demos.items()}}  # fmt: skip


def data_fingerprint(examples: Sequence[Example]) -> str:
    """sha256 of a data set's content and input keys (order matters, as it does for seeds)."""
    digest = hashlib.sha256()
    for example in examples:
        keys = sorted(example.input_keys or [])
        digest.update(json.dumps([keys, to_jsonable(dict(example))], sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def check_trainset(examples: Sequence[Any], what: str = "trainset") -> list[Example]:
    items = list(examples or [])
    if not items:
        raise DataError(f"the {what} is empty")
    for i, example in enumerate(items):
        if not isinstance(example, Example):
            raise DataError(f"{what} item {i} is a {type(example).__name__}; use ob.Example(...).with_inputs(...)")
        if example.input_keys is None:
            raise DataError(f"{what} item {i} has no inputs marked; call .with_inputs('field', ...)")
    return items


class Optimizer(ABC):
    """Base of optimizers: ``compile(program, trainset=..., valset=...)`` returns a new program.

    The returned program carries ``compile_info`` (optimizer, settings, seed, data hashes,
    scores, candidates, LM usage), which ``save`` writes into the artifact's provenance.
    """

    name: str = "optimizer"

    @abstractmethod
    def compile(self, program: Module, *, trainset: Sequence[Example], valset: Sequence[Example] | None = None) -> Module:
        """Return an optimized copy of ``program``; the input program is not changed."""

    def _resumable(self, budget: Any, storage: Any, study: str | None, exclusive: bool) -> None:
        """Keep what ``open_session`` needs for a resumable search (budget, optuna storage, study name, exclusivity)."""
        self._budget = budget
        self._storage = storage
        self._study = study
        self._exclusive = exclusive
        self.session: Any = None
        self.report_extras: dict[str, Any] = {}

    def settings(self) -> dict[str, Any]:
        """Settings recorded in provenance (JSON-ready, no callables)."""
        out = {}
        for key, value in vars(self).items():
            if key.startswith("_") or key in _RUN_STATE or callable(value) or isinstance(value, Module):
                continue
            out[key] = to_jsonable(value)
        return out

    def _provenance(self, program: Module, *, seed: int | None, trainset: Sequence[Example], valset: Sequence[Example] | None,
                    scores: dict[str, float | None], candidates: Sequence[Candidate], usage: Usage,
                    metric: Callable[..., Any] | None = None) -> dict[str, Any]:  # fmt: skip
        lms = []
        for _, predictor in program.named_predictors():
            try:
                described = predictor.resolve_lm().describe()
            except ConfigurationError:
                continue
            if described not in lms:
                lms.append(described)
        data: dict[str, Any] = {"train_sha256": data_fingerprint(trainset), "train_size": len(trainset)}
        if valset is not None:
            data.update(dev_sha256=data_fingerprint(valset), dev_size=len(valset))
        return {
            "optimizer": type(self).__name__,
            "settings": self.settings(),
            "seed": seed,
            "metric": getattr(metric, "__name__", None) if metric is not None else None,
            "data": data,
            "scores": scores,
            "candidates": [c.summary() for c in candidates],
            "usage": usage.to_dict(),
            "lms": lms,
        }


def open_session(optimizer: Optimizer, program: Module, trainset: Sequence[Example], valset: Sequence[Example] | None, *,
                 pruner: Any = None) -> tuple[list[Example], list[Example], list[str], Any]:  # fmt: skip
    """Checked train and dev sets, predictor names and the ``CompileSession`` of a resumable search.

    The study is keyed by what makes two compiles the same one (optimizer, settings, data,
    predictors), so re-running a compile resumes it and a changed one is refused. The
    optimizer's ``_storage``, ``_study``, ``_budget`` and ``_exclusive`` configure the session.
    """
    from oobleck.optimizers.session import CompileSession

    label = type(optimizer).__name__
    train = check_trainset(trainset)
    if valset is None:
        logger.warning("%s got no valset; scoring on the trainset, which flatters candidates", label)
        valset = train
    dev = check_trainset(valset, "valset")
    names = [n for n, _ in program.named_predictors()]
    if not names:
        raise ConfigurationError(f"{label} needs a program with at least one predictor; {type(program).__name__} has none")
    fingerprint = {"optimizer": label, "settings": optimizer.settings(), "train": data_fingerprint(train),
                   "dev": data_fingerprint(dev), "predictors": names}  # fmt: skip
    session = CompileSession(storage=optimizer._storage, study_name=optimizer._study, budget=optimizer._budget,  # type: ignore[attr-defined]
                             fingerprint=fingerprint, exclusive=optimizer._exclusive, pruner=pruner)  # type: ignore[attr-defined]  # fmt: skip
    return train, dev, names, session


def score_candidate(candidate: Candidate, program: Module, valset: Sequence[Example], metric: Callable[..., Any],
                    num_threads: int, display_progress: bool = False) -> tuple[Module, EvaluationResult]:  # fmt: skip
    """Apply a candidate, evaluate it, and store its score and cost on it."""
    compiled = candidate.apply(program)
    result = Evaluate(devset=valset, metric=metric, num_threads=num_threads, display_progress=display_progress)(compiled)
    candidate.score = result.score
    candidate.cost = {k: candidate.cost.get(k, 0) + v for k, v in result.usage.to_dict().items()}
    return compiled, result
