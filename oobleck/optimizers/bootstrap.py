"""Few-shot optimizers: labeled demos, and demos bootstrapped from successful teacher runs."""

from __future__ import annotations

import contextvars
import logging
import math
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from oobleck.errors import BudgetExceeded, OobleckError
from oobleck.evaluate.evaluate import _as_score
from oobleck.evaluate.metrics import get_metric
from oobleck.example import Example
from oobleck.lm.usage import track_usage
from oobleck.modules.module import Module
from oobleck.modules.trace import TraceEntry, trace
from oobleck.optimizers.base import Candidate, Optimizer, check_trainset, demo_record

__all__ = ["BootstrapFewShot", "LabeledFewShot", "bootstrap_candidate"]

logger = logging.getLogger("oobleck.optimizers.bootstrap")


class LabeledFewShot(Optimizer):
    """Use ``k`` training examples, as they are, as every predictor's demos."""

    def __init__(self, k: int = 4, *, seed: int = 0, sample: bool = True):
        self.k = k
        self.seed = seed
        self.sample = sample

    def candidate(self, program: Module, trainset: Sequence[Example]) -> Candidate:
        items = list(trainset)
        if self.sample:
            items = random.Random(self.seed).sample(items, min(self.k, len(items)))
        demos = [demo_record(ex) for ex in items[: self.k]]
        return Candidate(demos={name: list(demos) for name, _ in program.named_predictors()}, source=f"labeled k={self.k}")

    def compile(self, program: Module, *, trainset: Sequence[Example], valset: Sequence[Example] | None = None) -> Module:
        trainset = check_trainset(trainset)
        with track_usage() as usage:
            candidate = self.candidate(program, trainset)
            compiled = candidate.apply(program)
        compiled.compile_info = self._provenance(program, seed=self.seed, trainset=trainset, valset=valset,
                                                 scores={}, candidates=[candidate], usage=usage)  # fmt: skip
        return compiled


def _passes(metric: Callable[..., Any], example: Example, prediction: Any, entries: list[TraceEntry], threshold: float | None) -> bool:
    score = _as_score(metric(example, prediction, entries))
    return score >= threshold if threshold is not None else score > 0


def bootstrap_candidate(
    student: Module,
    trainset: Sequence[Example],
    metric: Callable[..., Any],
    *,
    max_demos: int = 4,
    max_labeled_demos: int = 0,
    teacher: Module | None = None,
    teacher_demos: int | None = None,
    max_rounds: int = 1,
    metric_threshold: float | None = None,
    num_threads: int = 8,
    seed: int | None = 0,
    source: str = "bootstrap",
    adaptive: bool = False,
) -> Candidate:
    """Run a teacher over the trainset; keep the traces of runs that pass the metric as demos.

    ``seed=None`` keeps the trainset order; otherwise it is shuffled with the seed. Without an
    explicit teacher, the student itself teaches, shown ``teacher_demos`` labeled examples
    (default ``max_demos``) that are then left out of the pool, so no demo answers itself.
    Teacher runs go in waves of 2 x ``num_threads``; ``adaptive`` sizes each wave to the demos
    still needed at the pass rate seen so far (50% before any run), at most that, so a teacher
    that passes often is not run far past the demos it has to find.
    """
    items = list(trainset)
    rng = random.Random(seed)
    if seed is not None:
        rng.shuffle(items)
    names = {id(p): n for n, p in student.named_predictors()}
    if teacher is None:
        k = max_demos if teacher_demos is None else teacher_demos
        shown, items = items[:k], items[k:] if len(items) > k else items
        teacher = Candidate(demos={n: [demo_record(e) for e in shown] for n in names.values()}).apply(student)
    else:
        teacher = teacher.deepcopy()
    teacher_names = {id(p): n for n, p in teacher.named_predictors()}
    if sorted(teacher_names.values()) != sorted(names.values()):
        raise OobleckError(f"the teacher's predictors {sorted(teacher_names.values())} differ from the student's {sorted(names.values())}")

    bootstrapped: dict[str, list[dict[str, Any]]] = {n: [] for n in names.values()}
    used: set[int] = set()

    def run(example: Example) -> list[tuple[str | None, TraceEntry]] | None:
        runner = _without_own_demo(teacher, example)
        runner_names = teacher_names if runner is teacher else {id(p): n for n, p in runner.named_predictors()}
        with trace() as entries:
            try:
                prediction = runner(**example.inputs())
            except BudgetExceeded:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed teacher run just yields no demo
                logger.debug("teacher failed on an example: %s", exc)
                return None
        try:
            if not _passes(metric, example, prediction, entries, metric_threshold):
                return None
            return [(runner_names.get(id(entry.predictor)), entry) for entry in entries]
        except OobleckError:
            raise
        except Exception as exc:  # noqa: BLE001
            logger.debug("metric failed on an example: %s", exc)
            return None

    def full() -> bool:
        return all(len(v) >= max_demos for v in bootstrapped.values())

    base_config = {id(p): dict(p.config) for p in teacher.predictors()}
    tried = passed = 0
    for round_index in range(max_rounds):
        settings = {} if round_index == 0 else {"temperature": 0.7, "rollout_id": f"bootstrap-round-{round_index}"}
        for p in teacher.predictors():
            p.config = {**base_config[id(p)], **settings}
        pending = [i for i in range(len(items)) if i not in used]
        chunk = max(1, num_threads) * 2
        start = 0
        while start < len(pending):
            if full():
                break
            size = _wave_size(chunk, max_demos - min(len(v) for v in bootstrapped.values()), tried, passed) if adaptive else chunk
            batch = pending[start : start + size]
            start += len(batch)
            with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
                # Each task gets a copy of *this* thread's context (settings, usage scopes).
                futures = [pool.submit(contextvars.copy_context().run, run, items[i]) for i in batch]
                traces = [f.result() for f in futures]
            tried, passed = tried + len(batch), passed + sum(1 for t in traces if t is not None)
            for i, entries in zip(batch, traces, strict=True):  # in trainset order: threads cannot reorder demos
                if entries is None or full():
                    continue
                used.add(i)
                for name, entry in entries:
                    if name is not None and len(bootstrapped[name]) < max_demos:
                        bootstrapped[name].append(demo_record({**entry.inputs, **entry.outputs}))
        if full():
            break
    for p in teacher.predictors():
        p.config = dict(base_config[id(p)])
    labeled = [demo_record(items[i]) for i in range(len(items)) if i not in used][:max_labeled_demos]
    demos = {n: bootstrapped[n] + labeled for n in names.values()}
    found = {n: len(v) for n, v in bootstrapped.items()}
    logger.info("bootstrapped demos per predictor: %s", found)
    return Candidate(demos=demos, source=source)


def _wave_size(limit: int, needed: int, tried: int, passed: int) -> int:
    """Teacher runs for the next wave: ``needed`` demos at the pass rate so far (Laplace-smoothed), 1..``limit``."""
    rate = (passed + 1) / (tried + 2)
    return max(1, min(limit, math.ceil(needed / rate)))


def _without_own_demo(teacher: Module, example: Example) -> Module:
    """The teacher, or a copy of it whose demos leave out ``example`` (no demo answers itself)."""
    record = demo_record(example)
    if not any(demo == record for p in teacher.predictors() for demo in p.demos):
        return teacher
    clone = teacher.deepcopy()
    for predictor in clone.predictors():
        predictor.demos = [d for d in predictor.demos if d != record]
    return clone


class BootstrapFewShot(Optimizer):
    """Demos from the teacher's own successful runs, per predictor (DSPy's BootstrapFewShot).

    ``max_demos`` bootstrapped demos per predictor, plus up to ``max_labeled_demos`` raw
    training examples. Failed examples are retried for ``max_rounds`` rounds at a higher
    temperature.
    """

    def __init__(self, metric: Callable[..., Any] | str, *, max_demos: int = 4, max_labeled_demos: int = 0,
                 teacher: Module | None = None, teacher_demos: int | None = None, max_rounds: int = 1,
                 metric_threshold: float | None = None, num_threads: int = 8, seed: int = 0):  # fmt: skip
        self.metric = get_metric(metric)
        self.max_demos = max_demos
        self.max_labeled_demos = max_labeled_demos
        self._teacher = teacher
        self.teacher_demos = teacher_demos
        self.max_rounds = max_rounds
        self.metric_threshold = metric_threshold
        self.num_threads = num_threads
        self.seed = seed

    def compile(self, program: Module, *, trainset: Sequence[Example], valset: Sequence[Example] | None = None) -> Module:
        trainset = check_trainset(trainset)
        with track_usage() as usage:
            candidate = bootstrap_candidate(
                program.reset_copy(), trainset, self.metric, max_demos=self.max_demos, max_labeled_demos=self.max_labeled_demos,
                teacher=self._teacher, teacher_demos=self.teacher_demos, max_rounds=self.max_rounds,
                metric_threshold=self.metric_threshold, num_threads=self.num_threads, seed=self.seed,
            )  # fmt: skip
            compiled = candidate.apply(program)
        candidate.cost = usage.to_dict()
        compiled.compile_info = self._provenance(program, seed=self.seed, trainset=trainset, valset=valset, scores={},
                                                 candidates=[candidate], usage=usage, metric=self.metric)  # fmt: skip
        return compiled
