"""``COPRO``: coordinate ascent over instructions, one predictor at a time.

Each round visits every predictor in turn: an ``InstructionProposer`` writes ``breadth`` new
instructions for it, shown the instructions already tried for that predictor with their
scores (so later rounds build on what worked), and each is scored on the dev set with the other
predictors held at their best so far; the best one stays. ``depth`` rounds, or fewer when a
candidate is perfect on the dev set (nothing can beat it, so the rest would be spent for nothing).

Demos are left as the program has them, so COPRO composes after a demo optimizer. Every
scoring is a trial of a ``CompileSession`` numbered by its place in the (deterministic) loop,
and proposals are stored once per study, so a compile resumes where it stopped and a budget
stop returns the best instructions found so far.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from oobleck.errors import BudgetExceeded, ConfigurationError
from oobleck.evaluate.evaluate import Evaluate
from oobleck.evaluate.metrics import get_metric
from oobleck.example import Example
from oobleck.lm.base import BaseLM
from oobleck.lm.budget import Budget
from oobleck.modules.module import Module
from oobleck.modules.predict import Predict
from oobleck.optimizers.base import Candidate, Optimizer, open_session
from oobleck.optimizers.proposer import InstructionProposer, prompt_adapter
from oobleck.optimizers.session import candidate_key
from oobleck.optimizers.steps import StepLoop, logical_spend, session_usage

__all__ = ["COPRO"]

logger = logging.getLogger("oobleck.optimizers.copro")

_HISTORY_SHOWN = 10  # earlier (instruction, score) pairs shown to the proposer, best last


class _OnePredictor(Module):
    """A view of one predictor under its name in the program, so the proposer works on it alone."""

    def __init__(self, name: str, predictor: Predict):
        self._name = name
        self._predictor = predictor

    def named_predictors(self) -> list[tuple[str, Predict]]:
        return [(self._name, self._predictor)]


class COPRO(Optimizer):
    """Coordinate ascent over instructions: ``depth`` rounds of ``breadth`` proposals per predictor.

    ``prompt_lm`` writes the proposals (default: each predictor's own LM). ``budget``,
    ``storage``, ``study`` and ``exclusive`` are those of ``CompileSession``. The loop is
    sequential: several workers on one study replay each other's finished steps but do not
    split the work; use ``Bayesian`` to spread a search over workers.
    """

    def __init__(self, metric: Callable[..., Any] | str, *, prompt_lm: BaseLM | None = None, breadth: int = 6, depth: int = 3,
                 num_threads: int = 8, seed: int = 0, budget: Budget | None = None, storage: Any = None, study: str | None = None,
                 exclusive: bool = True):  # fmt: skip
        if breadth < 1 or depth < 1:
            raise ConfigurationError(f"COPRO needs breadth >= 1 and depth >= 1, got breadth={breadth}, depth={depth}")
        self.metric = get_metric(metric)
        self.breadth = breadth
        self.depth = depth
        self.num_threads = num_threads
        self.seed = seed
        self._prompt_lm = prompt_lm
        self._resumable(budget, storage, study, exclusive)

    def settings(self) -> dict[str, Any]:
        out = super().settings()
        out["prompt_lm"] = self._prompt_lm.describe()["model"] if self._prompt_lm is not None else None
        return out

    def plan(self, program: Module, n_train: int, n_dev: int) -> list[Any]:
        """Program runs per phase, for dry runs.

        Assumes every round runs (no perfect score ends the search early), a quarter more
        proposal calls than proposals (repeats are asked again), and one proposal in six
        repeating an instruction already scored, which is not scored again.
        """
        from oobleck.optimizers.estimate import Phase

        predictors = program.named_predictors()
        demos = sum(len(p.demos) for _, p in predictors) / max(len(predictors), 1)
        proposer = InstructionProposer(self._prompt_lm, num_candidates=self.breadth + 1)
        adapter = prompt_adapter(program, self._prompt_lm)
        extra = 0 if proposer.style_for(adapter) == "induction" else 150
        return [
            Phase("baseline on dev", n_dev, demos=demos),
            Phase("instruction proposals", proposer.planned_calls(adapter) * self.depth * len(predictors) + proposer.planned_observation_calls(adapter, n_train),
                  demos=4, extra_prompt=extra),
            Phase("candidates on dev", self.depth * len(predictors) * self.breadth * n_dev * 5 / 6, demos=demos),
        ]

    def _score(self, candidate: Candidate, program: Module, valset: list[Example]) -> float:
        evaluate = Evaluate(devset=valset, metric=self.metric, num_threads=self.num_threads, display_progress=False)
        return evaluate(candidate.apply(program)).score

    def _propose(self, program: Module, best: Candidate, name: str, trainset: list[Example],
                 tried: list[tuple[str, float]], round_: int, observations: str) -> list[str]:  # fmt: skip
        """New instructions for ``name`` (not the current one), written with the earlier scores in view."""
        predictor = best.apply(program).predictor(name)
        proposer = InstructionProposer(self._prompt_lm, num_candidates=self.breadth + 1, seed=self.seed * 1000 + round_)
        shown = sorted(tried, key=lambda pair: pair[1])[-_HISTORY_SHOWN:]
        demo_sets = [{name: predictor.demos}] if predictor.demos else []
        proposals = proposer.propose(_OnePredictor(name, predictor), trainset, demo_sets=demo_sets, history={name: shown},
                                     observations=observations)  # fmt: skip
        current = predictor.signature.instructions
        return [text for text in proposals.get(name, []) if text != current]

    def compile(self, program: Module, *, trainset: Sequence[Example], valset: Sequence[Example] | None = None) -> Module:
        trainset, valset, names, session = open_session(self, program, trainset, valset)
        self.session = session
        best = Candidate.from_program(program, source="program as is")
        history: dict[str, list[tuple[str, float]]] = {n: [] for n in names}
        baseline: float | None = None
        steps = StepLoop(session)
        with session:
            try:
                baseline, _ = steps.step("program as is", lambda attrs: self._score(best, program, valset),
                                         key=candidate_key(best.instructions), full=True)  # fmt: skip
                best.score = baseline
                for n in names:
                    history[n].append((best.instructions[n], baseline))
                # once per run, before the rounds (a perfect baseline has no rounds to read them for)
                observations = steps.once("copro.observations", lambda: InstructionProposer(self._prompt_lm, seed=self.seed).observe_program(program, trainset)) if (best.score or 0.0) < 1.0 else ""
                for round_, name in [(r, n) for r in range(self.depth) for n in names]:
                    if (best.score or 0.0) >= 1.0:  # perfect on the dev set: no proposal can beat it
                        break
                    best = self._ascend(steps, program, best, name, trainset, valset, history, round_, observations)
            except BudgetExceeded as exc:
                session.stopped = str(exc)
                logger.warning("compile stopped: %s; keeping the best instructions so far", exc)
        compiled = best.apply(program)
        records = session.records()
        scores: dict[str, Any] = {"baseline": baseline, "best": best.score, "chosen": best.source}
        candidates = [Candidate(source=r.label, score=r.score, cost=logical_spend(r.spend)) for r in records]
        info = self._provenance(program, seed=self.seed, trainset=trainset, valset=valset, scores=scores, candidates=candidates,
                                usage=session_usage(session), metric=self.metric)  # fmt: skip
        info.update(session.provenance())
        info.update(instructions=dict(best.instructions), history={n: [[text, score] for text, score in pairs] for n, pairs in history.items()})
        compiled.compile_info = info
        self.report_extras = session.report_extras()
        return compiled

    def _ascend(self, steps: StepLoop, program: Module, best: Candidate, name: str, trainset: list[Example], valset: list[Example],
                history: dict[str, list[tuple[str, float]]], round_: int, observations: str) -> Candidate:  # fmt: skip
        """One coordinate step: propose for ``name``, score each proposal, return the new best."""
        tried = history[name]
        proposals = steps.once(f"copro.{round_}.{name}", lambda: self._propose(program, best, name, trainset, tried, round_, observations))
        seen = {text for text, _ in tried}
        for text in proposals:
            if text in seen:  # scored before (maybe with other partners): not worth its calls again
                continue
            if (best.score or 0.0) >= 1.0:
                break
            seen.add(text)
            candidate = Candidate(instructions={**best.instructions, name: text}, demos=best.demos,
                                  source=f"round {round_ + 1}, {name}: {text}")  # fmt: skip
            score, _ = steps.step(candidate.source, lambda attrs, c=candidate: self._score(c, program, valset),
                                  key=candidate_key(candidate.instructions), full=True)  # fmt: skip
            candidate.score = score
            tried.append((text, score))
            logger.info("COPRO %s: %.3f", candidate.source, score)
            if score > (best.score or 0.0):
                best = candidate
        return best
