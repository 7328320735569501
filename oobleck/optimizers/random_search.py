"""``RandomSearch``: bootstrap several demo sets and keep the one that scores best on dev.

The candidate pool follows DSPy's BootstrapFewShotWithRandomSearch: zero-shot, labeled
demos, a bootstrap in trainset order, then bootstraps over shuffled trainsets with a random
number of demos. Every candidate is scored on the same dev set; ties go to the earlier one.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from oobleck.evaluate.metrics import get_metric
from oobleck.example import Example
from oobleck.lm.usage import track_usage
from oobleck.modules.module import Module
from oobleck.optimizers.base import Candidate, Optimizer, check_trainset, score_candidate
from oobleck.optimizers.bootstrap import LabeledFewShot, bootstrap_candidate

__all__ = ["RandomSearch"]

logger = logging.getLogger("oobleck.optimizers.random_search")


class RandomSearch(Optimizer):
    """Score ``num_candidates`` bootstrapped demo sets (plus three baselines) on the dev set."""

    def __init__(self, metric: Callable[..., Any] | str, *, num_candidates: int = 8, max_demos: int = 4,
                 max_labeled_demos: int = 0, teacher_demos: int | None = None, num_threads: int = 8,
                 seed: int = 0, display_progress: bool = True):  # fmt: skip
        self.metric = get_metric(metric)
        self.num_candidates = num_candidates
        self.max_demos = max_demos
        self.max_labeled_demos = max_labeled_demos
        self.teacher_demos = teacher_demos
        self.num_threads = num_threads
        self.seed = seed
        self.display_progress = display_progress

    def candidates(self, program: Module, trainset: Sequence[Example]) -> list[Candidate]:
        """The candidate pool, built lazily in order so its cost is attributed to each one."""
        rng = random.Random(self.seed)
        student = program.reset_copy()
        pool = [Candidate.from_program(student, source="zero-shot")]
        pool.append(LabeledFewShot(self.max_demos, seed=self.seed).candidate(student, trainset))
        plans: list[tuple[int | None, int, str]] = [(None, self.max_demos, "bootstrap (train order)")]
        for i in range(self.num_candidates):
            plans.append((rng.randrange(2**31), rng.randint(1, self.max_demos), f"bootstrap #{i}"))
        for seed, k, source in plans:
            with track_usage() as usage:
                candidate = bootstrap_candidate(student, trainset, self.metric, max_demos=k, max_labeled_demos=self.max_labeled_demos,
                                                teacher_demos=self.teacher_demos if self.teacher_demos is not None else self.max_demos,
                                                num_threads=self.num_threads, seed=seed, source=source)  # fmt: skip
            candidate.cost = usage.to_dict()
            pool.append(candidate)
        return pool

    def compile(self, program: Module, *, trainset: Sequence[Example], valset: Sequence[Example] | None = None) -> Module:
        trainset = check_trainset(trainset)
        if valset is None:
            logger.warning("RandomSearch got no valset; scoring candidates on the trainset, which flatters them")
            valset = trainset
        valset = check_trainset(valset, "valset")
        best: tuple[float, Module, Candidate] | None = None
        with track_usage() as usage:
            pool = self.candidates(program, trainset)
            for candidate in pool:
                compiled, result = score_candidate(candidate, program, valset, self.metric, self.num_threads, self.display_progress)
                logger.info("candidate %-24s score %.3f", candidate.source, result.score)
                if best is None or result.score > best[0]:
                    best = (result.score, compiled, candidate)
        assert best is not None
        score, compiled, chosen = best
        compiled.compile_info = self._provenance(
            program, seed=self.seed, trainset=trainset, valset=valset,
            scores={"baseline": pool[0].score, "best": score, "chosen": chosen.source}, candidates=pool, usage=usage, metric=self.metric,
        )  # fmt: skip
        return compiled
