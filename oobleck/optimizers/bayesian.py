"""``Bayesian``: a joint search over instructions and demo sets with optuna's TPE (MIPRO-style).

Setup builds, per predictor, demo-set candidates (zero-shot, labeled, bootstraps over shuffled
trainsets) and instruction candidates (``InstructionProposer``, shown those demo sets). Each
trial picks one instruction and one demo set per predictor, scores the program on a seeded
minibatch of the dev set in chunks (optuna's median pruner stops hopeless trials early), and
every ``full_eval_every`` trials the best combination so far is scored on the whole dev set.
The program as given is trial 0 (it is a combination too: instruction 0, demo set 0), scored
on its minibatch like any other, not on the whole dev set. Combinations are ranked by their
minibatch evidence (every example scored, pruned trials included), shrunk toward the mean of
all trials, so thin evidence counts for less (20/20 outranks 10/10). The top ``num_final`` are
fully scored and the best fully scored one wins, unless it does worse than the program as
given on the examples both were scored on: then the baseline is fully scored too and kept if
it is at least as good, so the result is never worse than the baseline on what was measured.

Between the trials and that choice, a meta-style proposer writes ``num_refinements`` more
instructions per predictor, shown the best-ranked instructions with their scores (OPRO-style):
the proposals of setup each find part of what the task needs, and a writer that sees the best
of them side by side can keep all of it. Each refinement, with the best combination's demos,
is fully scored beside the top ``num_final``.

Everything lives in a ``CompileSession``: trials resume after a crash, several workers can
share one study, and the budget covers setup, trials and full evaluations. One seed drives
every random choice; the sampler of trial ``i`` is seeded from (seed, i), so a resumed run
draws what the uninterrupted run drew.
"""

from __future__ import annotations

import logging
import math
import random
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from oobleck.errors import BudgetExceeded, ConfigurationError
from oobleck.evaluate.evaluate import Evaluate
from oobleck.evaluate.metrics import get_metric
from oobleck.example import Example
from oobleck.lm.base import BaseLM
from oobleck.lm.budget import Budget, spending
from oobleck.modules.module import Module
from oobleck.optimizers.base import Candidate, Optimizer, open_session
from oobleck.optimizers.bootstrap import LabeledFewShot, bootstrap_candidate
from oobleck.optimizers.proposer import InstructionProposer, prompt_adapter
from oobleck.optimizers.session import CompileSession, candidate_key

__all__ = ["Bayesian"]

logger = logging.getLogger("oobleck.optimizers.bayesian")


class Bayesian(Optimizer):
    """TPE over (instruction, demo set) per predictor, minibatch scoring, pruning, resumable."""

    def __init__(self, metric: Callable[..., Any] | str, *, num_trials: int = 24, num_instructions: int = 6, num_demo_sets: int = 6,
                 max_demos: int = 4, max_labeled_demos: int = 0, minibatch_size: int = 25, full_eval_every: int = 8,
                 num_final: int = 3, num_refinements: int = 1, prompt_lm: BaseLM | None = None, proposer: InstructionProposer | None = None,
                 instructions: Sequence[str] | Mapping[str, Sequence[str]] | None = None, pruning: bool = True,
                 budget: Budget | None = None, storage: Any = None, study: str | None = None, exclusive: bool = True,
                 num_threads: int = 8, seed: int = 0, display_progress: bool = False):  # fmt: skip
        if num_trials < 1:
            raise ConfigurationError("Bayesian needs num_trials >= 1")
        if num_refinements < 0:
            raise ConfigurationError(f"Bayesian needs num_refinements >= 0, got {num_refinements}")
        self.metric = get_metric(metric)
        self.num_trials = num_trials
        self.num_instructions = num_instructions
        self.num_demo_sets = num_demo_sets
        self.max_demos = max_demos
        self.max_labeled_demos = max_labeled_demos
        self.minibatch_size = minibatch_size
        self.full_eval_every = full_eval_every
        self.num_final = num_final
        self.num_refinements = num_refinements
        self.pruning = pruning
        self.seed = seed
        self.num_threads = num_threads
        self.display_progress = display_progress
        self._proposer = proposer or InstructionProposer(prompt_lm, num_candidates=num_instructions, pool=instructions, seed=seed)
        self._resumable(budget, storage, study, exclusive)

    def settings(self) -> dict[str, Any]:
        out = super().settings()
        out["proposer"] = self._proposer.settings()
        return out

    def plan(self, program: Module, n_train: int, n_dev: int) -> list[Any]:
        """Program runs per phase, for dry runs.

        Assumes 40% of teacher runs pass the metric (waves are sized to the demos still
        needed), a quarter of proposals repeat an earlier one and are asked again, no trial
        is pruned, the periodic and final full evaluations share one candidate, and the winner
        beats the baseline on the baseline's minibatch (so the baseline is not fully scored).
        """
        from oobleck.optimizers.estimate import Phase

        bootstraps = max(0, self.num_demo_sets - 2)
        pool = max(n_train - self.max_demos, 1)
        wanted = [self.max_demos] + [(1 + self.max_demos) / 2] * max(0, bootstraps - 1)
        teacher_runs = sum(min(pool, math.ceil(k / 0.4)) for k in wanted[:bootstraps])
        sizes = [0, self.max_demos] + [self.max_demos] + [(1 + self.max_demos) / 2] * max(0, bootstraps - 1)
        mean_demos = sum(sizes[: max(self.num_demo_sets, 1)]) / max(min(len(sizes), self.num_demo_sets), 1)
        periodic = (self.num_trials - 1) // self.full_eval_every if self.full_eval_every > 0 else 0
        full = min(self.num_trials, max(self.num_final, self.num_final + periodic - 1))
        adapter = prompt_adapter(program, self._proposer.prompt_lm)
        predictors = len(program.named_predictors())
        proposals = self._proposer.planned_calls(adapter) * predictors + self._proposer.planned_observation_calls(adapter, n_train)
        extra = 0 if self._proposer.style_for(adapter) == "induction" else 150
        refinements = self._refinements(adapter)
        phases = [
            Phase("bootstrap demo sets", teacher_runs, demos=self.max_demos),
            Phase("instruction proposals", proposals, demos=4, extra_prompt=extra),
            Phase("trials (minibatches; trial 0 is the baseline)", self.num_trials * min(self.minibatch_size, n_dev), demos=mean_demos),
        ]
        if refinements:  # the scored instructions they are shown make their prompts longer
            phases.append(Phase("refined instructions", 1.25 * refinements * predictors, demos=4, extra_prompt=extra + 100))
        phases.append(Phase("full dev evaluations", (full + refinements) * n_dev, demos=mean_demos))
        return phases

    def _refinements(self, adapter: str | None) -> int:
        """Refined instructions per predictor: none for induction-style proposers, which cannot read scored candidates."""
        return self.num_refinements if self._proposer.style_for(adapter) == "meta" else 0

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
                                            source=f"bootstrap #{i}", adaptive=True)  # fmt: skip
            sets.append(candidate)
        return sets

    def _setup(self, program: Module, trainset: list[Example]) -> dict[str, Any]:
        student = program.reset_copy()
        demo_sets = self._demo_sets(student, trainset)
        observations = self._proposer.observe_program(student, trainset)
        instructions = self._proposer.propose(student, trainset, demo_sets=[c.demos for c in demo_sets[2:]] or [c.demos for c in demo_sets],
                                              observations=observations)  # fmt: skip
        return {"demo_sets": [{"source": c.source, "demos": c.demos} for c in demo_sets], "instructions": instructions,
                "observations": observations}  # fmt: skip

    def _refine(self, program: Module, setup: dict[str, Any], names: list[str], trainset: list[Example],
                ranked: list[_Evidence]) -> dict[str, list[str]]:  # fmt: skip
        """New instructions per predictor, written from the best-ranked ones and their scores (see the module docstring)."""
        best = self._candidate(setup, ranked[0].params, names)
        student = best.apply(program.reset_copy())  # the best instructions are shown as the current ones
        history: dict[str, list[tuple[str, float]]] = {}
        for n in names:
            estimates: dict[int, float] = {}
            for group in ranked:  # best first: an instruction's first group is its best estimate
                estimates.setdefault(int(group.params[f"{n}.instruction"]), group.estimate)
            top = sorted(estimates.items(), key=lambda kv: (-kv[1], kv[0]))[:_REFINE_SHOWN]
            history[n] = [(setup["instructions"][n][i], score) for i, score in reversed(top)]  # ascending: the best last
        shown = [best.demos] if any(best.demos.values()) else [s["demos"] for s in setup["demo_sets"][2:]]
        proposals = self._proposer.propose(student, trainset, demo_sets=shown, history=history, observations=setup.get("observations"),
                                           count=self.num_refinements)  # fmt: skip
        return {n: [t for t in proposals.get(n, []) if t not in setup["instructions"][n]][: self.num_refinements] for n in names}

    def _refined(self, setup: dict[str, Any], names: list[str], ranked: list[_Evidence],
                 refined: Mapping[str, Sequence[str]]) -> list[tuple[str, Candidate]]:  # fmt: skip
        """(study key, candidate) per refinement: its instructions with the best combination's demos."""
        if not ranked or not refined:
            return []
        params = ranked[0].params
        best = self._candidate(setup, params, names)
        out = []
        for r in range(max((len(refined.get(n, [])) for n in names), default=0)):
            instructions = {n: refined[n][r] if r < len(refined.get(n, [])) else best.instructions[n] for n in names}
            label = f"refinement {r} of {best.source}"
            key = candidate_key({"refinement": instructions, "params": params})
            out.append((key, Candidate(instructions=instructions, demos=best.demos, source=label)))
        return out

    # -- scoring -----------------------------------------------------------------------------

    def _candidate(self, setup: dict[str, Any], params: Mapping[str, Any], names: list[str]) -> Candidate:
        instructions = {n: setup["instructions"][n][int(params[f"{n}.instruction"])] for n in names}
        demos = {n: setup["demo_sets"][int(params[f"{n}.demos"])]["demos"].get(n, []) for n in names}
        label = ", ".join(f"{n}: i{params[f'{n}.instruction']} d{params[f'{n}.demos']}" for n in names)
        return Candidate(instructions=instructions, demos=demos, source=label)

    def _evaluate(self, program: Module, examples: Sequence[Example]) -> list[float]:
        """Per-example scores, in the order of ``examples``."""
        return Evaluate(devset=list(examples), metric=self.metric, num_threads=self.num_threads, display_progress=False)(program).scores

    def _minibatch(self, n_dev: int, index: int) -> list[int]:
        """Positions in the dev set of trial ``index``'s minibatch (seeded: a resumed run draws the same)."""
        if n_dev <= self.minibatch_size:
            return list(range(n_dev))
        return random.Random(f"{self.seed}-minibatch-{index}").sample(range(n_dev), self.minibatch_size)

    def _trial_work(self, program: Module, candidate: Candidate, valset: list[Example], batch: list[int]) -> Callable[[Any], float]:
        import optuna

        def work(trial: Any) -> float:
            compiled = candidate.apply(program)
            chunk = max(5, len(batch) // 3)
            scores: list[float] = []
            for step, start in enumerate(range(0, len(batch), chunk)):
                scores += self._evaluate(compiled, [valset[i] for i in batch[start : start + chunk]])
                mean = sum(scores) / len(scores)
                if len(scores) < len(batch) and self.pruning:
                    trial.report(mean, step)
                    if trial.should_prune():
                        _record_examples(trial, batch, scores)
                        raise optuna.TrialPruned(mean)
            _record_examples(trial, batch, scores)
            return sum(scores) / len(scores)

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
            scores = self._evaluate(candidate.apply(program), valset)
        score = sum(scores) / len(scores)
        session.charged.add(attr)
        session.study.set_user_attr(attr, {"score": score, "scores": scores, "spend": spent.to_dict(), "label": candidate.source})
        return score

    # -- the search --------------------------------------------------------------------------

    def compile(self, program: Module, *, trainset: Sequence[Example], valset: Sequence[Example] | None = None) -> Module:
        import optuna

        pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0) if self.pruning else optuna.pruners.NopPruner()
        trainset, valset, names, session = open_session(self, program, trainset, valset, pruner=pruner)
        self.session = session
        scores: dict[str, Any] = {}
        setup: dict[str, Any] | None = None
        ranked: list[_Evidence] = []
        refined: dict[str, list[str]] = {}
        with session:
            try:
                setup = session.shared("setup", lambda: self._setup(program, trainset))
                distributions = {}
                for n in names:
                    distributions[f"{n}.instruction"] = optuna.distributions.CategoricalDistribution(list(range(len(setup["instructions"][n]))))
                    distributions[f"{n}.demos"] = optuna.distributions.CategoricalDistribution(list(range(len(setup["demo_sets"]))))
                self._search(session, program, setup, names, distributions, valset)
                ranked = self._ranked(session)
                if ranked and self._refinements(prompt_adapter(program, self._proposer.prompt_lm)):
                    refined = session.shared("refined", lambda: self._refine(program, setup, names, trainset, ranked))
            except BudgetExceeded as exc:
                session.stopped = str(exc)
                logger.warning("compile stopped: %s; keeping the best candidate so far", exc)
            refinements = self._refined(setup, names, ranked, refined) if setup is not None else []
            chosen, full_scores = self._choose(session, program, setup, names, valset, refinements)
            scores.update(self._baseline_scores(session, names))
        if chosen is None:
            chosen = Candidate.from_program(program, source="program (nothing was scored within the budget)")
        compiled = chosen.apply(program)
        scores.update(best=chosen.score, chosen=chosen.source, full_scores=full_scores)
        candidates = []
        for record in session.records():
            shown = self._candidate(setup, record.params, names) if setup is not None and len(record.params) == 2 * len(names) else Candidate()
            candidates.append(Candidate(shown.instructions, shown.demos, score=record.score, cost=_logical(record.spend), source=record.label))
        for _, candidate in refinements:
            candidates.append(Candidate(candidate.instructions, candidate.demos, score=full_scores.get(candidate.source), source=candidate.source))
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
        baseline = _baseline_params(names)
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
            if index == 0:  # the program as given is the first trial (with workers: whoever takes step 0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    sampler = optuna.samplers.PartialFixedSampler(baseline, sampler)
            trial = session.ask(index, distributions, sampler=sampler)
            if not session.exclusive:
                index = session.index_of(trial)
                if index >= self.num_trials:  # another worker claimed the last trial first
                    session.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    break
                trial.set_user_attr("index", index)
            candidate = self._candidate(setup, trial.params, names)
            batch = self._minibatch(len(valset), index)
            work = self._trial_work(program, candidate, valset, batch)
            score = session.run(trial, candidate.source, work, key=candidate_key(trial.params))
            logger.info("trial %d (%s): %.3f", index, candidate.source, score)
            index += 1
        if not session.exclusive:
            session.wait_for_others()
        self._maybe_full_eval(session, program, setup, names, valset, self.num_trials)

    def _evidence(self, session: CompileSession, before: int | None = None) -> dict[str, _Evidence]:
        """Per parameter combination: every example score its finished trials of steps < ``before`` saw."""
        groups: dict[str, _Evidence] = {}
        for trial in session.finished():
            index = int(trial.user_attrs.get("index", trial.number))
            if before is not None and index >= before:
                continue
            rows = trial.user_attrs.get("examples")
            if rows is None:  # a study written before per-example scores were kept
                if trial.state.name != "COMPLETE" or trial.value is None:
                    continue
                rows = [[-1, float(trial.value)]] * self.minibatch_size
            key = candidate_key(trial.params)
            group = groups.setdefault(key, _Evidence(params=dict(trial.params), first=index))
            group.first = min(group.first, index)
            group.rows += [(int(i), float(v)) for i, v in rows]
        return groups

    def _ranked(self, session: CompileSession, before: int | None = None) -> list[_Evidence]:
        """Parameter combinations, best first, by shrunk mean minibatch score (ties: earliest step)."""
        groups = list(self._evidence(session, before).values())
        for group, estimate in zip(groups, _shrunk([(g.total, len(g.rows)) for g in groups]), strict=True):
            group.estimate = estimate
        return sorted(groups, key=lambda g: (-g.estimate, g.first))

    def _maybe_full_eval(self, session: CompileSession, program: Module, setup: dict[str, Any], names: list[str],
                         valset: list[Example], index: int) -> None:  # fmt: skip
        if self.full_eval_every <= 0 or index == 0 or index % self.full_eval_every:
            return
        ranked = self._ranked(session, before=index)
        if ranked:
            params = ranked[0].params
            self._full(session, program, self._candidate(setup, params, names), valset, candidate_key(params))

    def _baseline_scores(self, session: CompileSession, names: list[str]) -> dict[str, Any]:
        """The program as given: its full-dev score if it got one, else its mean on the examples it was scored on."""
        key = candidate_key(_baseline_params(names))
        stored = session.study.user_attrs.get(f"oobleck.full.{key}")
        if stored is not None:
            return {"baseline": float(stored["score"]), "baseline_examples": len(stored.get("scores") or []) or None}
        group = self._evidence(session).get(key)
        if group is None or not group.rows:
            return {"baseline": None, "baseline_examples": 0}
        return {"baseline": group.mean, "baseline_examples": len(group.rows)}

    def _choose(self, session: CompileSession, program: Module, setup: dict[str, Any] | None, names: list[str],
                valset: list[Example], refinements: Sequence[tuple[str, Candidate]] = ()) -> tuple[Candidate | None, dict[str, float]]:  # fmt: skip
        """Fully score the top combinations and the refinements; the best wins, never worse than the baseline on what was measured."""
        if setup is None:
            return None, {}
        ranked = self._ranked(session)
        baseline_key = candidate_key(_baseline_params(names))
        full_scores: dict[str, float] = {}
        scored: dict[str, Candidate] = {}

        def full(group: _Evidence) -> bool:
            return score(candidate_key(group.params), self._candidate(setup, group.params, names))

        def score(key: str, candidate: Candidate) -> bool:
            try:
                score = self._full(session, program, candidate, valset, key)
            except BudgetExceeded as exc:
                session.stopped = session.stopped or str(exc)
                return False
            candidate.score = full_scores[candidate.source] = score
            scored[key] = candidate
            return True

        for group in ranked[: self.num_final]:
            if not full(group):
                break
        else:
            for key, candidate in refinements:
                if not score(key, candidate):
                    break
        stored = session.study.user_attrs
        for group in ranked[self.num_final :]:  # fully scored earlier (every ``full_eval_every`` trials): free evidence
            if f"oobleck.full.{candidate_key(group.params)}" in stored:
                full(group)
        if not scored:
            if not ranked:
                return None, full_scores
            # The budget ran out before any candidate got a full score: trust the minibatches
            # over falling back to the unoptimized program.
            top = self._candidate(setup, ranked[0].params, names)
            top.score = ranked[0].mean
            return top, full_scores
        best_key = max(scored, key=lambda k: scored[k].score or 0.0)  # first (best ranked) on ties
        base = next((g for g in ranked if candidate_key(g.params) == baseline_key), None)
        if best_key != baseline_key and base is not None and baseline_key not in scored:
            per_example = session.study.user_attrs.get(f"oobleck.full.{best_key}", {}).get("scores") or []
            seen = {i: v for i, v in base.rows if 0 <= i < len(per_example)}
            ours = sum(per_example[i] for i in seen) / len(seen) if seen else scored[best_key].score or 0.0
            theirs = sum(seen.values()) / len(seen) if seen else base.mean
            if ours < theirs and not full(base):  # no budget left to settle it: keep what measured better
                fallback = self._candidate(setup, base.params, names)
                fallback.score = base.mean
                return fallback, full_scores
        if baseline_key in scored and (scored[baseline_key].score or 0.0) >= (scored[best_key].score or 0.0):
            best_key = baseline_key  # the search found nothing better than the program as given
        return scored[best_key], full_scores


_REFINE_SHOWN = 4  # best-ranked instructions a refinement sees, with their scores


class _Evidence:
    """The example scores one parameter combination got in its trials, and its ranking estimate."""

    __slots__ = ("estimate", "first", "params", "rows")

    def __init__(self, params: dict[str, Any], first: int):
        self.params = params
        self.first = first
        self.rows: list[tuple[int, float]] = []  # (position in the dev set, score)
        self.estimate = 0.0

    @property
    def total(self) -> float:
        return sum(v for _, v in self.rows)

    @property
    def mean(self) -> float:
        return self.total / len(self.rows) if self.rows else 0.0


def _shrunk(groups: Sequence[tuple[float, int]]) -> list[float]:
    """Posterior mean scores of (total score, examples) groups under a beta prior fitted to all of them.

    The prior's mean is the mean of every example scored; its strength is what the spread
    between groups says is noise (method of moments: the spread beyond binomial noise is real).
    A combination seen on few examples is pulled toward the mean more than one seen on many:
    a repeated perfect score outranks a single one, and one lucky minibatch counts for less
    the less the trials differ beyond noise.
    """
    n = sum(k for _, k in groups)
    if n == 0:
        return [0.0 for _ in groups]
    mu = sum(t for t, _ in groups) / n
    noise = mu * (1 - mu)  # per-example variance of a 0/1 metric with this mean (an upper bound for graded ones)
    largest = max(k for _, k in groups)
    if noise <= 0 or len(groups) < 2:
        strength = 0.0
    else:
        between = sum(k * (t / k - mu) ** 2 for t, k in groups if k) / n
        real = between - noise * len(groups) / n
        strength = min(2.0 * largest, noise / real - 1) if real > 0 else 2.0 * largest
        strength = max(0.0, strength)
    return [(t + strength * mu) / (k + strength) if k + strength > 0 else mu for t, k in groups]


def _record_examples(trial: Any, batch: Sequence[int], scores: Sequence[float]) -> None:
    """Keep which dev examples a trial scored and how, for ranking and the baseline comparison."""
    trial.set_user_attr("examples", [[int(i), float(v)] for i, v in zip(batch, scores, strict=False)])


def _baseline_params(names: Sequence[str]) -> dict[str, int]:
    return {f"{n}.{kind}": 0 for n in names for kind in ("instruction", "demos")}


def _derive(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index * 7919) % (2**31 - 1)


def _logical(spend: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spend.items() if k != "billed_calls"}


def _usage_of(session: CompileSession) -> Any:
    """Logical usage (cache hits counted as calls): the same for a resumed and an uninterrupted run."""
    from oobleck.lm.usage import Usage

    spend = session.spend
    return Usage(spend.calls, spend.prompt_tokens, spend.completion_tokens, 0)
