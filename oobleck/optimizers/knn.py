"""``KNNFewShot``: every call gets the demos nearest to its own inputs.

Fixed demos are a compromise across all queries; a pool searched per query shows each one
the examples most like it. The pool of each predictor is built from bootstrapped traces (the
teacher's passing runs, which hold every field of that predictor) plus the labeled training
examples that carry its outputs. A ``KNNDemos`` selector on each predictor of the compiled
copy then picks the ``k`` nearest pool demos at call time, and the artifact stores the pool and
the embedder id so a loaded program selects the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from oobleck.evaluate.evaluate import Evaluate
from oobleck.evaluate.metrics import get_metric
from oobleck.example import Example
from oobleck.lm.embedder import Embedder, get_embedder
from oobleck.lm.usage import track_usage
from oobleck.modules.knn import KNNDemos
from oobleck.modules.module import Module
from oobleck.optimizers.base import Candidate, Optimizer, check_trainset, demo_record
from oobleck.optimizers.bootstrap import bootstrap_candidate

__all__ = ["KNNFewShot"]

logger = logging.getLogger("oobleck.optimizers.knn")


class KNNFewShot(Optimizer):
    """Per-query demos: the ``k`` pool demos most similar to the inputs (cosine of embeddings).

    ``max_bootstrapped`` caps the bootstrapped traces per predictor; ``include_labeled`` adds
    the training examples not bootstrapped. ``embedder`` is an ``ob.lm.Embedder``, an embedder
    id, or None for the bundled MiniLM. With a ``valset`` the compiled program is scored on it.
    """

    def __init__(self, metric: Callable[..., Any] | str, *, k: int = 4, embedder: Embedder | str | None = None,
                 max_bootstrapped: int = 64, include_labeled: bool = True, teacher: Module | None = None,
                 teacher_demos: int | None = None, max_rounds: int = 1, metric_threshold: float | None = None,
                 seed: int = 0, num_threads: int = 8, display_progress: bool = False):  # fmt: skip
        self.metric = get_metric(metric)
        self.k = k
        self._embedder = get_embedder(embedder)
        self.embedder = self._embedder.id  # provenance records the id, never the object
        self.max_bootstrapped = max_bootstrapped
        self.include_labeled = include_labeled
        self._teacher = teacher
        self.teacher_demos = teacher_demos
        self.max_rounds = max_rounds
        self.metric_threshold = metric_threshold
        self.seed = seed
        self.num_threads = num_threads
        self.display_progress = display_progress

    def pools(self, program: Module, trainset: Sequence[Example]) -> Candidate:
        """The demo pool of each predictor, as a candidate (bootstrapped traces first, then labeled)."""
        student = program.reset_copy()
        for predictor in student.predictors():
            predictor.demo_selector = None  # the teacher runs on fixed demos, even when recompiling a kNN program
        boot = bootstrap_candidate(
            student, trainset, self.metric, max_demos=self.max_bootstrapped, max_labeled_demos=0, teacher=self._teacher,
            teacher_demos=self.teacher_demos if self.teacher_demos is not None else self.k, max_rounds=self.max_rounds,
            metric_threshold=self.metric_threshold, num_threads=self.num_threads, seed=self.seed,
        )  # fmt: skip
        pools: dict[str, list[dict[str, Any]]] = {}
        for name, predictor in student.named_predictors():
            fields = list(predictor.signature.input_fields)
            outputs = list(predictor.signature.output_fields)
            pool = list(boot.demos.get(name, []))
            seen: dict[tuple[str, ...], set[str]] = {}  # input keys of the pool, by the fields compared
            if self.include_labeled:
                for example in trainset:
                    record = demo_record(example)
                    present = tuple(f for f in fields if f in record)
                    # A demo needs something to match on and something to show as the answer.
                    if not present or not any(o in record for o in outputs):
                        continue
                    # Compared on the fields it has: a labeled example lacks intermediate inputs (a "query").
                    keys = seen.setdefault(present, {_input_key(d, present) for d in pool})
                    key = _input_key(record, present)
                    if key not in keys:
                        pool.append(record)
                        for compared, known in seen.items():
                            known.add(_input_key(record, compared))
            pools[name] = pool
        logger.info("kNN demo pools per predictor: %s", {n: len(p) for n, p in pools.items()})
        return Candidate(demos=pools, source=f"knn pool (k={self.k})")

    def compile(self, program: Module, *, trainset: Sequence[Example], valset: Sequence[Example] | None = None) -> Module:
        trainset = check_trainset(trainset)
        if valset is not None:
            valset = check_trainset(valset, "valset")
        scores: dict[str, float | None] = {}
        with track_usage() as usage:
            candidate = self.pools(program, trainset)
            candidate.cost = usage.to_dict()
            compiled = program.reset_copy()
            for name, predictor in compiled.named_predictors():
                selector = KNNDemos(candidate.demos[name], fields=list(predictor.signature.input_fields), k=self.k, embedder=self._embedder)
                predictor.demo_selector = selector.warm()  # embed the pool now: a missing model fails the compile, not a call
            if valset is not None:
                result = Evaluate(devset=valset, metric=self.metric, num_threads=self.num_threads, display_progress=self.display_progress)(
                    compiled
                )
                candidate.score = result.score
                scores["best"] = result.score
                logger.info("kNN program scores %.3f on the valset", result.score)
        compiled.compile_info = self._provenance(program, seed=self.seed, trainset=trainset, valset=valset, scores=scores,
                                                 candidates=[candidate], usage=usage, metric=self.metric)  # fmt: skip
        return compiled


def _input_key(record: dict[str, Any], fields: Sequence[str]) -> str:
    """The identity of a demo's inputs, so a labeled example already in the pool is not added twice."""
    return json.dumps([record.get(f) for f in fields], sort_keys=True, ensure_ascii=False, default=str)
