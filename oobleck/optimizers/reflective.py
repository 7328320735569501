"""``Reflective``: instructions evolved by an LM that reads failing traces and feedback (GEPA-like).

A pool of candidates starts with the program as it is. Each iteration:

1. picks a parent from the Pareto front over dev examples (the candidates that reach the best
   score on at least one example and are not dominated), sampled with weights by how many
   examples each wins, so candidates good at different things all get explored;
2. picks one predictor (round robin) and runs the parent on a seeded minibatch of the trainset
   with tracing, collecting that predictor's inputs and outputs, the score and textual feedback
   on each example (the user's ``feedback`` function, or "expected X, got Y");
3. asks the reflection LM for a better instruction for that predictor, scores the child on the
   same minibatch, and keeps it only if it beats the parent there; a kept child is scored on
   the whole dev set, example by example, for the front.

Every ``merge_every`` iterations a merge is tried instead: two front candidates that descend
from a common ancestor are combined predictor by predictor (a predictor only one of them
changed comes from that one; one both changed comes from the one that did better on the dev
examples where they differ), checked on a dev subsample against both parents and, if no worse,
scored on the rest of the dev set. The result is the candidate with the best mean dev score;
the search ends early once a candidate is perfect on the dev set, as nothing can beat it.

A reflection LM that declares the compact prompt format (the bundled demo model) cannot read
the reflection prompt; it gets the instruction-induction prompt instead, with the step's
inputs and the outputs it should have given, which such a model was trained on.

All LM calls run in a ``CompileSession`` (one budget) and every scoring is a trial numbered by
its place in the deterministic loop, so a compile resumes where it stopped.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from oobleck.adapters.base import format_value
from oobleck.errors import BudgetExceeded, ConfigurationError, MetricError, OobleckError
from oobleck.evaluate.evaluate import Evaluate, ExampleResult
from oobleck.evaluate.metrics import get_metric
from oobleck.example import Example, Prediction
from oobleck.lm.base import BaseLM
from oobleck.lm.budget import Budget
from oobleck.modules.module import Module
from oobleck.modules.predict import Predict
from oobleck.modules.trace import TraceEntry, trace
from oobleck.optimizers.base import Candidate, Optimizer, open_session
from oobleck.optimizers.induction import examples_line, induction_signature
from oobleck.optimizers.session import CompileSession, candidate_key
from oobleck.optimizers.steps import StepLoop, session_usage
from oobleck.signatures.signature import Signature, make_signature

__all__ = ["Reflective", "merge_instructions", "pareto_front"]

logger = logging.getLogger("oobleck.optimizers.reflective")

Feedback = Callable[[Example, Any, list[TraceEntry]], str]

_REFLECT_INSTRUCTIONS = (
    "You improve the instruction of one step of a language-model program. You get the step's current instruction and "
    "examples of what the step received and answered, each with the score the whole program reached and feedback on "
    "what was right or wrong. Work out what the step must do differently, and write a new instruction that keeps what "
    "worked and fixes the failures; state any rule the feedback reveals. Reply with the new instruction only."
)
_VALUE_CHARS = 600  # of one field value shown to the reflection LM
_CALLS_SHOWN = 2  # calls of the predictor shown per example


def _reflect_signature() -> type[Signature]:
    return make_signature("current_instruction, examples_with_feedback -> new_instruction", _REFLECT_INSTRUCTIONS, name="ReflectInstruction")


def _short(value: Any) -> str:
    text = format_value(value)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 3] + "..."


def _fields(values: Any) -> str:
    return ", ".join(f"{k}={_short(v)!r}" for k, v in dict(values).items())


def _default_feedback(example: Example, prediction: Any, score: float) -> str:
    """The feedback when the user gives none: "correct", or what was expected and what came out."""
    if score >= 1.0:
        return "correct"
    labels = example.labels()
    got = {k: prediction[k] for k in labels if isinstance(prediction, Prediction) and k in prediction}
    text = f"expected {_fields(labels)}, got {_fields(got) if got else _short(prediction)}"
    return text if score <= 0.0 else f"partly correct (score {score:.2f}): {text}"


def _induction_demos(target: Predict, results: list[ExampleResult], traces: list[list[TraceEntry]], shown: list[int],
                     limit: int = 6) -> list[dict[str, Any]]:  # fmt: skip
    """The step's inputs with what it should have output: the gold labels when they name its outputs, else its correct runs."""
    outputs = list(target.signature.output_fields)
    demos = []
    for i in sorted(shown, key=lambda i: (results[i].score, i)):
        calls = [c for c in traces[i] if c.predictor is target]
        if not calls:
            continue
        labels = results[i].example.labels()
        if all(n in labels for n in outputs):
            demos.append({**calls[0].inputs, **{n: labels[n] for n in outputs}})
        elif results[i].score >= 1.0:
            demos.append({**calls[0].inputs, **calls[0].outputs})
    return demos[:limit]


@dataclass
class _Member:
    """A candidate of the pool: instructions, per-example dev scores, lineage."""

    instructions: dict[str, str]
    scores: list[float]
    parents: tuple[int, ...]
    origin: str

    @property
    def mean(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0


def pareto_front(scores: Sequence[Sequence[float]]) -> list[tuple[int, int]]:
    """``(candidate, examples won)`` for the candidates worth exploring from.

    A candidate is on the front when it reaches the best score on some dev example and no
    other candidate is at least as good on every example (of identical ones, the earliest
    stays). Examples nobody scores on say nothing and are skipped; when nobody scores
    anywhere, the earliest candidate is the front.
    """
    wins: Counter[int] = Counter()
    for j in range(len(scores[0]) if scores else 0):
        top = max(s[j] for s in scores)
        if top <= 0:
            continue
        for i, s in enumerate(scores):
            if s[j] == top:
                wins[i] += 1
    members = sorted(wins) or list(range(len(scores)))

    def dominated(i: int) -> bool:
        return any(j != i and all(x >= y for x, y in zip(scores[j], scores[i])) and (list(scores[j]) != list(scores[i]) or j < i)
                   for j in members)  # fmt: skip

    return [(i, wins[i] or 1) for i in members if not dominated(i)]


def _ancestors(pool: Sequence[_Member], index: int) -> set[int]:
    seen, todo = set(), [index]
    while todo:
        i = todo.pop()
        if i not in seen:
            seen.add(i)
            todo.extend(pool[i].parents)
    return seen


def merge_instructions(pool: Sequence[_Member], a: int, b: int) -> dict[str, str] | None:
    """Combine members ``a`` and ``b`` predictor by predictor; None when they share no ancestor or one descends from the other."""
    common = _ancestors(pool, a) & _ancestors(pool, b)
    if not common or a in common or b in common:
        return None
    origin = pool[max(common)].instructions  # the latest common ancestor
    first, second = pool[a], pool[b]
    differ = [j for j, (x, y) in enumerate(zip(first.scores, second.scores)) if x != y]
    on_differ = (sum(first.scores[j] for j in differ), sum(second.scores[j] for j in differ))
    better = first if on_differ[0] >= on_differ[1] else second
    merged = {}
    for name, mine in first.instructions.items():
        theirs, old = second.instructions.get(name, mine), origin.get(name, mine)
        if mine == theirs or theirs == old:
            merged[name] = mine
        elif mine == old:
            merged[name] = theirs
        else:
            merged[name] = better.instructions[name]
    return merged


class Reflective(Optimizer):
    """Reflective instruction evolution with a Pareto pool and merges, resumable and budgeted.

    ``reflection_lm`` rewrites instructions (default: the predictor's own LM). ``feedback``:
    ``feedback(example, prediction, trace) -> str`` explains a result to that LM (``trace``
    is the list of ``TraceEntry`` of the run); the default says what was expected. ``merge_every``:
    every that many iterations a merge is tried (0: never). ``budget``, ``storage``, ``study``
    and ``exclusive`` are those of ``CompileSession``; the loop is sequential.
    """

    def __init__(self, metric: Callable[..., Any] | str, *, reflection_lm: BaseLM | None = None, feedback: Feedback | None = None,
                 max_iterations: int = 12, minibatch_size: int = 8, merge_every: int = 4, num_threads: int = 8, seed: int = 0,
                 budget: Budget | None = None, storage: Any = None, study: str | None = None, exclusive: bool = True):  # fmt: skip
        if max_iterations < 0 or minibatch_size < 1 or merge_every < 0:
            raise ConfigurationError(
                f"Reflective needs max_iterations >= 0, minibatch_size >= 1 and merge_every >= 0, got {max_iterations}, {minibatch_size}, {merge_every}"
            )
        if feedback is not None and not callable(feedback):
            raise ConfigurationError(f"feedback must be a function (example, prediction, trace) -> str, not {type(feedback).__name__}")
        self.metric = get_metric(metric)
        self.max_iterations = max_iterations
        self.minibatch_size = minibatch_size
        self.merge_every = merge_every
        self.num_threads = num_threads
        self.seed = seed
        self._reflection_lm = reflection_lm
        self._feedback = feedback
        self._resumable(budget, storage, study, exclusive)

    def settings(self) -> dict[str, Any]:
        out = super().settings()
        out["reflection_lm"] = self._reflection_lm.describe()["model"] if self._reflection_lm is not None else None
        out["feedback"] = getattr(self._feedback, "__name__", type(self._feedback).__name__) if self._feedback is not None else None
        return out

    def plan(self, program: Module, n_train: int, n_dev: int) -> list[Any]:
        """Program runs per phase, for dry runs.

        Assumes every iteration reflects (no minibatch is already perfect, merges cost like
        reflections) and half of the children are kept and scored on the dev set.
        """
        from oobleck.optimizers.estimate import Phase

        predictors = program.named_predictors()
        demos = sum(len(p.demos) for _, p in predictors) / max(len(predictors), 1)
        batch = min(self.minibatch_size, n_train)
        return [
            Phase("baseline on dev", n_dev, demos=demos),
            Phase("minibatch runs (parent and child)", self.max_iterations * 2 * batch, demos=demos),
            Phase("reflections", self.max_iterations / max(len(predictors), 1), demos=batch, extra_prompt=120),
            Phase("kept children on dev", self.max_iterations * n_dev / 2, demos=demos),
        ]

    # -- scoring -----------------------------------------------------------------------------

    def _evaluate(self, program: Callable[..., Any], examples: Sequence[Example]) -> list[ExampleResult]:
        evaluate = Evaluate(devset=list(examples), metric=self.metric, num_threads=self.num_threads, display_progress=False)
        return evaluate(program).results

    def _run_traced(self, program: Module, examples: Sequence[Example]) -> tuple[list[ExampleResult], list[list[TraceEntry]]]:
        """Results on ``examples`` and, for each, the predictor calls its run made (a failed run's too)."""
        traces: dict[str, list[TraceEntry]] = {}

        def traced(**inputs: Any) -> Any:
            with trace() as calls:
                try:
                    return program(**inputs)
                finally:
                    traces[candidate_key(inputs)] = list(calls)

        results = self._evaluate(traced, examples)
        return results, [traces.get(candidate_key(dict(r.example.inputs())), []) for r in results]

    def _feedback_text(self, result: ExampleResult, calls: list[TraceEntry]) -> str:
        if result.error is not None:
            return f"the program failed: {result.error}"
        if self._feedback is None:
            return _default_feedback(result.example, result.prediction, result.score)
        try:
            return str(self._feedback(result.example, result.prediction, calls))
        except OobleckError:
            raise
        except Exception as exc:  # a bug in the user's function: say whose it is
            raise MetricError(f"the feedback function failed: {type(exc).__name__}: {exc}") from exc

    def _reflective_dataset(self, target: Predict, results: list[ExampleResult], traces: list[list[TraceEntry]], shown: list[int]) -> str:
        """The examples ``shown`` as the reflection LM reads them: the step's calls, score and feedback, failures first."""
        blocks = []
        for number, i in enumerate(sorted(shown, key=lambda i: (results[i].score, i)), 1):
            result, calls = results[i], traces[i]
            mine = [c for c in calls if c.predictor is target][:_CALLS_SHOWN]
            lines = [f"## Example {number} (score {result.score:.2f})"]
            for call in mine:
                lines.append(f"inputs: {_fields(call.inputs)}")
                lines.append(f"outputs: {_fields(call.outputs)}")
            if not mine:
                lines.append(f"program inputs: {_fields(result.example.inputs())}")
            lines.append(f"feedback: {self._feedback_text(result, calls)}")
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)

    # -- steps -------------------------------------------------------------------------------

    def _reflect(self, program: Module, base: Candidate, parent: _Member, name: str, batch: list[Example], iteration: int,
                 known: set[str], attrs: dict[str, Any]) -> float:  # fmt: skip
        """Reflect on the parent's minibatch run and score the child there; the value is the child's (or parent's) score."""
        parent_program = Candidate(instructions=parent.instructions, demos=base.demos).apply(program)
        results, traces = self._run_traced(parent_program, batch)
        parent_score = sum(r.score for r in results) / len(results)
        attrs.update(predictor=name, parent_score=parent_score, accepted=False)
        target = parent_program.predictor(name)
        # the examples that say something about this step: it ran on them, or the run failed (maybe in it)
        shown = [i for i, r in enumerate(results) if r.error is not None or any(c.predictor is target for c in traces[i])]
        if all(results[i].score >= 1.0 for i in shown):
            attrs["reason"] = "the step was not called on this minibatch" if not shown else "the parent is perfect where the step ran"
            return parent_score
        current = target.signature.instructions
        lm = self._reflection_lm or target.resolve_lm()
        rollout = f"reflect-{self.seed}-{iteration}"
        if lm.adapter == "compact":  # a small model that cannot read the reflection prompt: induce from expected outputs
            demos = _induction_demos(target, results, traces, shown)
            if not demos:
                attrs["reason"] = "no example shows what the step should output"
                return parent_score
            reflect = Predict(induction_signature(), lm=lm, adapter="compact", rollout_id=rollout)
            prompt, field = {"examples": examples_line(target.signature, demos)}, "instruction"
        else:
            reflect = Predict(_reflect_signature(), lm=lm, rollout_id=rollout)
            prompt = {"current_instruction": current, "examples_with_feedback": self._reflective_dataset(target, results, traces, shown)}
            field = "new_instruction"
        try:
            text = reflect(**prompt)[field]
        except BudgetExceeded:
            raise
        except OobleckError as exc:  # an unusable reflection is an iteration without a child
            attrs["reason"] = f"reflection failed: {exc}"
            return parent_score
        text = " ".join(str(text).split()).strip().strip('"').strip()
        child = {**parent.instructions, name: text}
        if not text or text == current or candidate_key(child) in known:
            attrs["reason"] = "no new instruction"
            return parent_score
        child_results = self._evaluate(Candidate(instructions=child, demos=base.demos).apply(program), batch)
        child_score = sum(r.score for r in child_results) / len(child_results)
        attrs.update(instruction=text, child_score=child_score, accepted=child_score > parent_score)
        return child_score

    def _score_full(self, program: Module, base: Candidate, instructions: dict[str, str], valset: list[Example],
                    known: dict[int, float], attrs: dict[str, Any]) -> float:  # fmt: skip
        """Per-example dev scores (``known`` ones are reused), stored for the Pareto front."""
        rest = [j for j in range(len(valset)) if j not in known]
        compiled = Candidate(instructions=instructions, demos=base.demos).apply(program)
        results = self._evaluate(compiled, [valset[j] for j in rest]) if rest else []
        scores = dict(known)
        scores.update({j: r.score for j, r in zip(rest, results)})
        attrs["scores"] = [scores[j] for j in range(len(valset))]
        return sum(attrs["scores"]) / len(valset)

    def _merge_check(self, program: Module, base: Candidate, merged: dict[str, str], pool: list[_Member], pair: tuple[int, int],
                     valset: list[Example], iteration: int, attrs: dict[str, Any]) -> float:  # fmt: skip
        """Score a merge on a dev subsample; accepted when no worse there than either parent."""
        picked = sorted(random.Random(f"{self.seed}-merge-batch-{iteration}").sample(range(len(valset)), min(self.minibatch_size, len(valset))))
        results = self._evaluate(Candidate(instructions=merged, demos=base.demos).apply(program), [valset[j] for j in picked])
        score = sum(r.score for r in results) / len(results)
        parents = [sum(pool[p].scores[j] for j in picked) / len(picked) for p in pair]
        attrs.update(subsample=picked, subsample_scores=[r.score for r in results], parent_scores=parents, accepted=score >= max(parents))
        return score

    def _pick_parent(self, pool: list[_Member], iteration: int) -> int:
        front = pareto_front([m.scores for m in pool])
        rng = random.Random(f"{self.seed}-parent-{iteration}")
        return rng.choices([i for i, _ in front], weights=[w for _, w in front])[0]

    def _merge_pair(self, pool: list[_Member], tried: set[tuple[int, int]], iteration: int) -> tuple[tuple[int, int], dict[str, str]] | None:
        keys = {candidate_key(m.instructions) for m in pool}
        front = [i for i, _ in pareto_front([m.scores for m in pool])]
        pairs = [(a, b) for k, a in enumerate(front) for b in front[k + 1 :] if (a, b) not in tried]
        random.Random(f"{self.seed}-merge-{iteration}").shuffle(pairs)
        for pair in pairs:
            merged = merge_instructions(pool, *pair)
            if merged is not None and candidate_key(merged) not in keys:
                return pair, merged
        return None

    # -- the loop ----------------------------------------------------------------------------

    def compile(self, program: Module, *, trainset: Sequence[Example], valset: Sequence[Example] | None = None) -> Module:
        trainset, valset, names, session = open_session(self, program, trainset, valset)
        self.session = session
        base = Candidate.from_program(program, source="program as is")
        pool: list[_Member] = []
        with session:
            try:
                self._search(StepLoop(session), program, base, names, trainset, valset, pool)
            except BudgetExceeded as exc:
                session.stopped = str(exc)
                logger.warning("compile stopped: %s; keeping the best candidate so far", exc)
        return self._finish(program, base, pool, session, trainset, valset)

    def _search(self, steps: StepLoop, program: Module, base: Candidate, names: list[str], trainset: list[Example],
                valset: list[Example], pool: list[_Member]) -> None:  # fmt: skip
        _, attrs = steps.step("#0 program as is (dev set)", lambda a: self._score_full(program, base, base.instructions, valset, {}, a),
                              key=candidate_key(base.instructions), full=True)  # fmt: skip
        pool.append(_Member(dict(base.instructions), list(attrs["scores"]), (), "program as is"))
        tried_merges: set[tuple[int, int]] = set()
        reflections = 0
        for iteration in range(self.max_iterations):
            if max(m.mean for m in pool) >= 1.0:
                logger.info("Reflective: a candidate is perfect on the dev set; stopping after %d iterations", iteration)
                break
            if self.merge_every and iteration and iteration % self.merge_every == 0:
                found = self._merge_pair(pool, tried_merges, iteration)
                if found is not None:
                    pair, merged = found
                    tried_merges.add(pair)
                    self._merge(steps, program, base, merged, pool, pair, valset, iteration)
                    continue
            name = names[reflections % len(names)]
            reflections += 1
            parent = self._pick_parent(pool, iteration)
            picked = random.Random(f"{self.seed}-minibatch-{iteration}").sample(range(len(trainset)), min(self.minibatch_size, len(trainset)))
            batch = [trainset[j] for j in sorted(picked)]
            known = {candidate_key(m.instructions) for m in pool}
            label = f"iteration {iteration + 1}: reflect on {name} of #{parent} (minibatch)"
            _, attrs = steps.step(label, lambda a, p=parent, n=name, b=batch, it=iteration, k=known: self._reflect(program, base, pool[p], n, b, it, k, a),
                                  key=candidate_key({"parent": pool[parent].instructions, "predictor": name, "iteration": iteration}))  # fmt: skip
            logger.info("Reflective %s: parent %.3f, child %s", label, attrs.get("parent_score", 0.0), attrs.get("child_score", "none"))
            if not attrs.get("accepted"):
                continue
            child = {**pool[parent].instructions, name: attrs["instruction"]}
            index = len(pool)
            _, full = steps.step(f"#{index} {name} rewritten from #{parent} (dev set)",
                                 lambda a, c=child: self._score_full(program, base, c, valset, {}, a), key=candidate_key(child), full=True)  # fmt: skip
            pool.append(_Member(child, list(full["scores"]), (parent,), f"reflection on {name} of #{parent}"))

    def _merge(self, steps: StepLoop, program: Module, base: Candidate, merged: dict[str, str], pool: list[_Member],
               pair: tuple[int, int], valset: list[Example], iteration: int) -> None:  # fmt: skip
        a, b = pair
        label = f"iteration {iteration + 1}: merge #{a} and #{b} (dev subsample)"
        _, attrs = steps.step(label, lambda at: self._merge_check(program, base, merged, pool, pair, valset, iteration, at),
                              key=candidate_key({"merge": merged, "iteration": iteration}))  # fmt: skip
        logger.info("Reflective %s: accepted=%s", label, attrs.get("accepted"))
        if not attrs.get("accepted"):
            return
        known = {int(j): float(s) for j, s in zip(attrs["subsample"], attrs["subsample_scores"])}
        index = len(pool)
        _, full = steps.step(f"#{index} merge of #{a} and #{b} (dev set)",
                             lambda at: self._score_full(program, base, merged, valset, known, at), key=candidate_key(merged), full=True)  # fmt: skip
        pool.append(_Member(merged, list(full["scores"]), (a, b), f"merge of #{a} and #{b}"))

    def _finish(self, program: Module, base: Candidate, pool: list[_Member], session: CompileSession, trainset: list[Example],
                valset: list[Example]) -> Module:  # fmt: skip
        best = max(range(len(pool)), key=lambda i: (pool[i].mean, -i)) if pool else None
        chosen = base if best is None else Candidate(instructions=pool[best].instructions, demos=base.demos, score=pool[best].mean,
                                                       source=f"#{best} {pool[best].origin}")  # fmt: skip
        compiled = chosen.apply(program)
        front = pareto_front([m.scores for m in pool]) if pool else []
        scores: dict[str, Any] = {"baseline": pool[0].mean if pool else None, "best": chosen.score, "chosen": chosen.source}
        candidates = [Candidate(instructions=m.instructions, score=m.mean, source=f"#{i} {m.origin}") for i, m in enumerate(pool)]
        info = self._provenance(program, seed=self.seed, trainset=trainset, valset=valset, scores=scores, candidates=candidates,
                                usage=session_usage(session), metric=self.metric)  # fmt: skip
        info.update(session.provenance())
        info.update(instructions=dict(chosen.instructions),
                    pool=[{"index": i, "origin": m.origin, "parents": list(m.parents), "score": m.mean, "instructions": m.instructions}
                          for i, m in enumerate(pool)],
                    pareto_front=[{"index": i, "wins": w} for i, w in front])  # fmt: skip
        compiled.compile_info = info
        self.report_extras = session.report_extras()
        return compiled
