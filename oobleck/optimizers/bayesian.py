"""``Bayesian``: a joint search over instructions and demo sets with optuna's TPE (MIPRO-style).

Setup builds, per predictor, demo-set candidates (zero-shot, labeled, bootstraps over shuffled
trainsets) and instruction candidates (``InstructionProposer``, shown those demo sets). Each
trial picks one instruction and one demo set per predictor, scores the program on a seeded
minibatch of the dev set in chunks (optuna's median pruner stops hopeless trials early), and
every ``full_eval_every`` trials the best combination so far is scored on the whole dev set.
At the end the top combinations by mean minibatch score are fully scored and the best wins.

Everything lives in a ``CompileSession``: trials resume after a crash, several workers can
share one study, and the budget covers setup, trials and full evaluations. One seed drives
every random choice; the sampler of trial ``i`` is seeded from (seed, i), so a resumed run
draws what the uninterrupted run drew.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from oobleck.errors import BudgetExceeded, ConfigurationError
from oobleck.evaluate.evaluate import Evaluate
from oobleck.evaluate.metrics import get_metric
from oobleck.example import Example
from oobleck.lm.base import BaseLM
from oobleck.lm.budget import Budget, spending
from oobleck.modules.module import Module
from oobleck.optimizers.base import Candidate, Optimizer, check_trainset, data_fingerprint
from oobleck.optimizers.bootstrap import LabeledFewShot, bootstrap_candidate
from oobleck.optimizers.proposer import InstructionProposer
from oobleck.optimizers.session import CompileSession, candidate_key

__all__ = ["Bayesian"]

logger = logging.getLogger("oobleck.optimizers.bayesian")


class Bayesian(Optimizer):
    """TPE over (instruction, demo set) per predictor, minibatch scoring, pruning, resumable."""

    def __init__(self, metric: Callable[..., Any] | str, *, num_trials: int = 24, num_instructions: int = 6, num_demo_sets: int = 6,
                 max_demos: int = 4, max_labeled_demos: int = 0, minibatch_size: int = 25, full_eval_every: int = 8,
                 num_final: int = 3, prompt_lm: BaseLM | None = None, proposer: InstructionProposer | None = None,
                 instructions: Sequence[str] | Mapping[str, Sequence[str]] | None = None, pruning: bool = True,
                 budget: Budget | None = None, storage: Any = None, study: str | None = None, exclusive: bool = True,
                 num_threads: int = 8, seed: int = 0, display_progress: bool = False):  # fmt: skip
        if num_trials < 1:
            raise ConfigurationError("Bayesian needs num_trials >= 1")
        self.metric = get_metric(metric)
        self.num_trials = num_trials
        self.num_instructions = num_instructions
        self.num_demo_sets = num_demo_sets
        self.max_demos = max_demos
        self.max_labeled_demos = max_labeled_demos
        self.minibatch_size = minibatch_size
        self.full_eval_every = full_eval_every
        self.num_final = num_final
        self.pruning = pruning
        self.seed = seed
        self.num_threads = num_threads
        self.display_progress = display_progress
        self._proposer = proposer or InstructionProposer(prompt_lm, num_candidates=num_instructions, pool=instructions, seed=seed)
        self._budget = budget
        self._storage = storage
        self._study = study
        self._exclusive = exclusive
        self.session: CompileSession | None = None

    def settings(self) -> dict[str, Any]:
        out = super().settings()
        out.pop("session", None)
        out.pop("report_extras", None)
        out["proposer"] = self._proposer.settings()
        return out

    def plan(self, program: Module, n_train: int, n_dev: int) -> list[Any]:
        """Program runs per phase, for dry runs.

        Assumes 40% of teacher runs pass the metric (runs go in chunks of 2 x threads), a
        quarter of proposals repeat an earlier one and are asked again, no trial is pruned,
        and the periodic and final full evaluations share one candidate.
        """
        from oobleck.optimizers.estimate import Phase

        chunk = 2 * max(1, self.num_threads)
        bootstraps = max(0, self.num_demo_sets - 2)
        needed = math.ceil(self.max_demos / 0.4)
        teacher_runs = min(max(n_train - self.max_demos, 1), chunk * math.ceil(needed / chunk))
        sizes = [0, self.max_demos] + [self.max_demos] + [(1 + self.max_demos) / 2] * max(0, bootstraps - 1)
        mean_demos = sum(sizes[: max(self.num_demo_sets, 1)]) / max(min(len(sizes), self.num_demo_sets), 1)
        periodic = (self.num_trials - 1) // self.full_eval_every if self.full_eval_every > 0 else 0
        full = min(self.num_trials, max(self.num_final, self.num_final + periodic - 1))
        extra = 0 if self._proposer.style == "induction" else 150
        return [
            Phase("bootstrap demo sets", bootstraps * teacher_runs, demos=self.max_demos),
            Phase("instruction proposals", 1.25 * max(0, self.num_instructions - 1), demos=4, extra_prompt=extra),
            Phase("baseline on dev", n_dev),
            Phase("trials (minibatches)", self.num_trials * min(self.minibatch_size, n_dev), demos=mean_demos),
            Phase("full dev evaluations", full * n_dev, demos=mean_demos),
        ]

    # -- setup -------------------------------------------------------------------------------

    def _demo_sets(self, student: Module, trainset: list[Example]) -> list[Candidate]:
        rng = random.Random(self.seed)
        sets = [Candidate.from_program(student, source="zero-shot")]
        sets.append(LabeledFewShot(self.max_demos, seed=self.seed).candidate(student, trainset))
        for i in range(max(0, self.num_demo_sets - 2)):
            seed = None if i == 0 else rng.randrange(2**31)
            k = self.max_demos if i == 0 else rng.randint(1, self.max_demos)
            candidate = bootstrap_candidate(student, trainset, self.metric, max_demos=k, max_labeled_demos=self.max_labeled_demos,
                                            teacher_demos=self.max_demos, num_threads=self.num_threads, seed=seed,
                                            source=f"bootstrap #{i}")  # fmt: skip
            sets.append(candidate)
        return sets

    def _setup(self, program: Module, trainset: list[Example]) -> dict[str, Any]:
        student = program.reset_copy()
        demo_sets = self._demo_sets(student, trainset)
        instructions = self._proposer.propose(student, trainset, demo_sets=[c.demos for c in demo_sets[2:]] or [c.demos for c in demo_sets])
        return {"demo_sets": [{"source": c.source, "demos": c.demos} for c in demo_sets], "instructions": instructions}

    # -- scoring -----------------------------------------------------------------------------

    def _candidate(self, setup: dict[str, Any], params: Mapping[str, Any], names: list[str]) -> Candidate:
        instructions = {n: setup["instructions"][n][int(params[f"{n}.instruction"])] for n in names}
        demos = {n: setup["demo_sets"][int(params[f"{n}.demos"])]["demos"].get(n, []) for n in names}
        label = ", ".join(f"{n}: i{params[f'{n}.instruction']} d{params[f'{n}.demos']}" for n in names)
        return Candidate(instructions=instructions, demos=demos, source=label)

    def _evaluate(self, program: Module, examples: Sequence[Example]) -> float:
        return Evaluate(devset=list(examples), metric=self.metric, num_threads=self.num_threads, display_progress=False)(program).score

    def _minibatch(self, valset: list[Example], index: int) -> list[Example]:
        if len(valset) <= self.minibatch_size:
            return list(valset)
        return random.Random(f"{self.seed}-minibatch-{index}").sample(valset, self.minibatch_size)

    def _trial_work(self, program: Module, candidate: Candidate, batch: list[Example]) -> Callable[[Any], float]:
        import optuna

        def work(trial: Any) -> float:
            compiled = candidate.apply(program)
            chunk = max(5, len(batch) // 3)
            total, seen = 0.0, 0
            for step, start in enumerate(range(0, len(batch), chunk)):
                part = batch[start : start + chunk]
                total += self._evaluate(compiled, part) * len(part)
                seen += len(part)
                if seen < len(batch) and self.pruning:
                    trial.report(total / seen, step)
                    if trial.should_prune():
                        raise optuna.TrialPruned(total / seen)
            return total / seen

        return work

    def _full(self, session: CompileSession, program: Module, candidate: Candidate, valset: list[Example], key: str) -> float:
        """The full-dev score of a candidate, computed once per study (resumes and workers reuse it)."""
        attr = f"oobleck.full.{key}"
        stored = session.study.user_attrs.get(attr)
        if stored is not None:
            if attr not in session.charged:  # spent by an earlier run (or worker): it counts once
                session.charged.add(attr)
                session.spend.add(stored["spend"])
            return float(stored["score"])
        with spending() as spent:
            score = self._evaluate(candidate.apply(program), valset)
        session.charged.add(attr)
        session.study.set_user_attr(attr, {"score": score, "spend": spent.to_dict(), "label": candidate.source})
        return score

    # -- the search --------------------------------------------------------------------------

    def compile(self, program: Module, *, trainset: Sequence[Example], valset: Sequence[Example] | None = None) -> Module:
        import optuna

        trainset = check_trainset(trainset)
        if valset is None:
            logger.warning("Bayesian got no valset; scoring on the trainset, which flatters candidates")
            valset = trainset
        valset = check_trainset(valset, "valset")
        names = [n for n, _ in program.named_predictors()]
        fingerprint = {"optimizer": "Bayesian", "settings": self.settings(), "train": data_fingerprint(trainset),
                       "dev": data_fingerprint(valset), "predictors": names}  # fmt: skip
        pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0) if self.pruning else optuna.pruners.NopPruner()
        session = CompileSession(storage=self._storage, study_name=self._study, budget=self._budget, fingerprint=fingerprint,
                                 exclusive=self._exclusive, pruner=pruner)  # fmt: skip
        self.session = session
        scores: dict[str, Any] = {}
        setup: dict[str, Any] | None = None
        with session:
            try:
                setup = session.shared("setup", lambda: self._setup(program, trainset))
                distributions = {}
                for n in names:
                    distributions[f"{n}.instruction"] = optuna.distributions.CategoricalDistribution(list(range(len(setup["instructions"][n]))))
                    distributions[f"{n}.demos"] = optuna.distributions.CategoricalDistribution(list(range(len(setup["demo_sets"]))))
                baseline = self._candidate(setup, {k: 0 for k in distributions}, names)
                scores["baseline"] = self._full(session, program, baseline, valset, "baseline")
                self._search(session, program, setup, names, distributions, valset)
            except BudgetExceeded as exc:
                session.stopped = str(exc)
                logger.warning("compile stopped: %s; keeping the best candidate so far", exc)
            chosen, full_scores = self._choose(session, program, setup, names, valset)
        if chosen is None:
            chosen = Candidate.from_program(program, source="program (nothing was scored within the budget)")
        compiled = chosen.apply(program)
        scores.update(best=chosen.score, chosen=chosen.source, full_scores=full_scores)
        candidates = [Candidate(source=r.label, score=r.score, cost=_logical(r.spend)) for r in session.records()]
        info = self._provenance(program, seed=self.seed, trainset=trainset, valset=valset, scores=scores, candidates=candidates,
                                usage=_usage_of(session), metric=self.metric)  # fmt: skip
        info.update(session.provenance())
        compiled.compile_info = info
        self.report_extras = session.report_extras()
        return compiled

    def _search(self, session: CompileSession, program: Module, setup: dict[str, Any], names: list[str],
                distributions: dict[str, Any], valset: list[Example]) -> None:  # fmt: skip
        import optuna

        startup = max(2, min(8, self.num_trials // 3))
        index = 0
        if session.exclusive:  # a resumed run: charge the finished steps in the order they ran
            done = {int(t.user_attrs.get("index", t.number)) for t in session.finished()}
            while index in done:
                self._maybe_full_eval(session, program, setup, names, valset, index)
                session.replay(index)
                index += 1
        while True:
            if not session.exclusive:
                index = session.claimed()
            if index >= self.num_trials:
                break
            self._maybe_full_eval(session, program, setup, names, valset, index)
            sampler = optuna.samplers.TPESampler(seed=_derive(self.seed, index), multivariate=True, n_startup_trials=startup,
                                                 constant_liar=not session.exclusive)  # fmt: skip
            trial = session.ask(index, distributions, sampler=sampler)
            if not session.exclusive:
                index = session.index_of(trial)
                if index >= self.num_trials:  # another worker claimed the last trial first
                    session.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    break
                trial.set_user_attr("index", index)
            candidate = self._candidate(setup, trial.params, names)
            batch = self._minibatch(valset, index)
            score = session.run(trial, candidate.source, self._trial_work(program, candidate, batch), key=candidate_key(trial.params))
            logger.info("trial %d (%s): %.3f", index, candidate.source, score)
            index += 1
        if not session.exclusive:
            session.wait_for_others()
        self._maybe_full_eval(session, program, setup, names, valset, self.num_trials)

    def _ranked(self, session: CompileSession, before: int | None = None) -> list[tuple[float, int, dict[str, Any]]]:
        """Parameter combinations by mean minibatch score over complete trials of steps < ``before`` (ties: earliest)."""
        groups: dict[str, tuple[list[float], int, dict[str, Any]]] = {}
        for trial in session.finished():
            if trial.state.name != "COMPLETE" or trial.value is None:
                continue
            key = candidate_key(trial.params)
            index = int(trial.user_attrs.get("index", trial.number))
            if before is not None and index >= before:
                continue
            values, first, params = groups.get(key, ([], index, dict(trial.params)))
            values.append(float(trial.value))
            groups[key] = (values, min(first, index), params)
        ranked = [(sum(v) / len(v), first, params) for v, first, params in groups.values()]
        return sorted(ranked, key=lambda r: (-r[0], r[1]))

    def _maybe_full_eval(self, session: CompileSession, program: Module, setup: dict[str, Any], names: list[str],
                         valset: list[Example], index: int) -> None:  # fmt: skip
        if self.full_eval_every <= 0 or index == 0 or index % self.full_eval_every:
            return
        ranked = self._ranked(session, before=index)
        if ranked:
            params = ranked[0][2]
            self._full(session, program, self._candidate(setup, params, names), valset, candidate_key(params))

    def _choose(self, session: CompileSession, program: Module, setup: dict[str, Any] | None, names: list[str],
                valset: list[Example]) -> tuple[Candidate | None, dict[str, float]]:  # fmt: skip
        """Fully score the top combinations (and the baseline) and return the best."""
        if setup is None:
            return None, {}
        options: list[tuple[str, dict[str, Any]]] = [("baseline", {f"{n}.{kind}": 0 for n in names for kind in ("instruction", "demos")})]
        options += [(candidate_key(params), params) for _, _, params in self._ranked(session)[: self.num_final]]
        full_scores: dict[str, float] = {}
        best: Candidate | None = None
        ranked = self._ranked(session)
        for key, params in options:
            candidate = self._candidate(setup, params, names)
            try:
                score = self._full(session, program, candidate, valset, key)
            except BudgetExceeded as exc:
                session.stopped = session.stopped or str(exc)
                attr = session.study.user_attrs.get(f"oobleck.full.{key}")
                if attr is None:
                    continue
                score = float(attr["score"])
            full_scores[candidate.source] = score
            candidate.score = score
            if best is None or score > (best.score or 0.0):
                best = candidate
        if ranked and len(full_scores) <= 1 and session.stopped:
            # The budget ran out before any searched candidate got a full score: trust the
            # minibatches over falling back to the unoptimized program.
            mean, _, params = ranked[0]
            top = self._candidate(setup, params, names)
            if best is None or mean > (best.score or 0.0):
                top.score = mean
                best = top
        return best, full_scores


def _derive(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index * 7919) % (2**31 - 1)


def _logical(spend: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spend.items() if k != "billed_calls"}


def _usage_of(session: CompileSession) -> Any:
    """Logical usage (cache hits counted as calls): the same for a resumed and an uninterrupted run."""
    from oobleck.lm.usage import Usage

    spend = session.spend
    return Usage(spend.calls, spend.prompt_tokens, spend.completion_tokens, 0)
