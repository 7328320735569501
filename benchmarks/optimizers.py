"""Optimizers side by side: oobleck vs DSPy on one task, one simulated LM server, one metric.

Simulated tasks (``--task``): ``animal`` (the default, described below; ``_sim_lm.py``),
``routing``, ``helpdesk`` and ``bank`` (``_sim_routing.py``: six or eight routing rules to find, so
optimizers do not all reach the ceiling; each was registered, with this benchmark's settings,
in ``<task>_preregistration.md`` before its first run). ``--plumbing`` compiles once per
optimizer on seed 1000 and prints only what the simulator parsed, no scores.

What it measures: for each optimizer, the held-out (test) score of the compiled program, the
LM calls and tokens the compile spent (counted by the server, so both frameworks are measured
the same way; test-set calls are not included) and its wall time.

* DSPy (3.x): ``BootstrapFewShot``, ``BootstrapFewShotWithRandomSearch`` and
  ``MIPROv2(auto="light")``, through ``dspy.LM("openai/sim", api_base=..., cache=False)``.
* oobleck: ``BootstrapFewShot``, ``RandomSearch``, ``Bayesian`` and ``Reflective``, through
  ``ob.LM("openai/sim", base_url=..., cache=False)``.

Both use 4 demos at most, 8 threads, the same train/dev/test split (50/100/200), the same
exact-match metric and the same starting program: ``sentence -> animal`` with the instruction
"Name the animal in the sentence.". RandomSearch gets 8 bootstrapped candidates on each side
(plus each framework's zero-shot, labeled and unshuffled baselines). MIPROv2 light runs with
its defaults (6 demo sets, 3 instruction candidates, 10 trials, minibatches of 35) and runs
first; its measured call count then caps Bayesian's and Reflective's budgets at half of it
(``ob.Budget(max_lm_calls=...)``). Bayesian's settings (``BAYESIAN`` below) are chosen to fit
inside that cap; Reflective runs with its defaults and the cap ends it.

The LM: no real LLM is available offline, so the server (oobleck's loopback
``OpenAITestServer``, in this process) answers with ``benchmarks/_sim_lm.py``, a deterministic
simulated model whose accuracy depends on the prompt: it answers the "which animal?" task well
only when the prompt names the rule (the animal acted upon) and somewhat better with worked
examples; asked to write an instruction or describe the data, it names the rule with a
probability that grows with the worked examples it is shown. Its rules are in that module's
docstring; it sees only the request's messages, never which framework sent them. Caches are
off on both sides (``cache=False`` and DSPy's ``configure_cache`` off), so every call reaches
the server.

Every seed (``--seeds``) draws a fresh data split, simulated-LM seed and optimizer seed; the
table shows means over seeds, and the JSON has every run. The gain of oobleck's best optimizer
over MIPROv2 light comes with a paired bootstrap interval over (seed, test example) pairs, at
95% widened for picking the best of the optimizers within half MIPROv2's calls (Bonferroni).

The expected test score: the simulated model's answers are draws, so a program's test score is
its probability of answering right plus draw noise (about +-0.015 per seed of 200 examples at
0.95). The simulator records the probability behind every answer it gives; their mean over the
test set is the program's expected score, the same number whatever the draws. It separates what
an optimizer found (the prompt) from luck on the test draws. The best any prompt can do is 0.95
(the rule named and at least two worked examples), so two optimizers that both reach it tie in
expectation, and which one shows the higher test score is then a coin toss; 15 seeds by default
keep that toss's spread small.

Target: our best optimizer reaches a higher held-out score than MIPROv2 light with at most
half of its LM calls.

    python benchmarks/optimizers.py [--task animal|routing|helpdesk|bank] [--seeds 0 1 ... 14] [--latency 0.02] [--only oobleck:Bayesian ...]
                                    [--no-cap] [--plumbing]

``--only`` takes framework:optimizer names (MIPROv2 light always runs, as it sets the cap).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import random
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import _sim_lm
import _sim_routing
from _common import console, load_note, verdict, write_result
from rich.table import Table

from oobleck.testing.server import OpenAITestServer

SPLIT = (50, 100, 200)  # train, dev, test
THREADS = 8
MAX_DEMOS = 4
RS_CANDIDATES = 8
# Bayesian's settings, fixed before the measured runs: its fixed costs are full dev evaluations
# of the top combination and of one refinement written from the best-ranked instructions and
# their scores (200 calls on a 100-example dev set; the program as given is trial 0, on a
# minibatch) and a setup (2 bootstraps sized to the demos they need, about 14 teacher runs in
# all; 3 data observations; 5 instruction proposals); 8 trials on minibatches of 10 bring it to
# about 300 calls, under half of MIPROv2 light's (about 680 here). Minibatches of 10 cannot tell
# a 0.95 program from a 0.90 one, so the second full evaluation goes where it can find more: a
# refinement of the winner, not the runner-up. The budget cap (half of MIPROv2's measured calls)
# is a guard that a normal run does not reach.
BAYESIAN = {"num_trials": 8, "num_instructions": 6, "num_demo_sets": 4, "minibatch_size": 10, "full_eval_every": 0, "num_final": 1,
            "num_refinements": 1}  # fmt: skip
# Reflective runs with its defaults (12 iterations, minibatches of 8, a merge every 4) under the
# same cap as Bayesian; the cap is what ends it, cleanly, keeping the best candidate scored so far.
REFLECTIVE: dict[str, Any] = {}
MIPRO = ("DSPy", "MIPROv2 light")


@dataclass(frozen=True)
class Task:
    """One simulated task: its data, fields, starting instruction, simulated LM and rule coverage."""

    name: str
    title: str
    input: str
    output: str
    instruction: str
    make_examples: Callable[[int, int], list[dict[str, str]]]
    is_correct: Callable[[Any, str], bool]
    coverage: Callable[[str], float]  # share of the task's rule an instruction states, 0 to 1
    lm: Callable[[], Any]


TASKS = {
    "animal": Task("animal", "the simulated 'which animal?' task", _sim_lm.INPUT, _sim_lm.OUTPUT, _sim_lm.INSTRUCTION,
                   _sim_lm.make_examples, _sim_lm.is_correct, lambda text: float(bool(_sim_lm.KEY.search(text))), _sim_lm.SimulatedLM),
    **{
        name: Task(name, f"the simulated {name} task", _sim_routing.INPUT, _sim_routing.OUTPUT, domain.instruction,
                   partial(_sim_routing.make_examples, domain), _sim_routing.is_correct, partial(_sim_routing.rule_coverage, domain),
                   partial(_sim_routing.RoutingLM, domain))
        for name, domain in _sim_routing.DOMAINS.items()
    },
}  # fmt: skip

logger = logging.getLogger("benchmarks.optimizers")


# -- data and metric -------------------------------------------------------------------------


def split(task: Task, seed: int) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
    rows = task.make_examples(sum(SPLIT), seed)
    a, b = SPLIT[0], SPLIT[0] + SPLIT[1]
    return rows[:a], rows[a:b], rows[b:]


def make_metric(task: Task) -> Callable[..., bool]:
    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        return task.is_correct(getattr(prediction, task.output, ""), example[task.output])

    return metric


# -- the two frameworks ----------------------------------------------------------------------
# A runner compiles one optimizer and returns (compiled program, evaluate(program, rows) ->
# per-example correctness, describe(program) -> (instruction, number of demos)).

Rows = list[dict[str, str]]
Runner = Callable[[str, int, tuple[Rows, ...], int | None], tuple[Any, Callable[[Any, Rows], list[bool]], Callable[[Any], tuple[str, int]]]]


def dspy_runner(url: str, task: Task) -> Runner:
    import dspy

    logging.getLogger("dspy").setLevel(logging.ERROR)
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    lm = dspy.LM("openai/sim", api_base=url + "/v1", api_key="x", cache=False)
    dspy.configure(lm=lm)
    metric = make_metric(task)

    def examples(rows: list[dict[str, str]]) -> list[Any]:
        return [dspy.Example(**r).with_inputs(task.input) for r in rows]

    def evaluate(program: Any, rows: list[dict[str, str]]) -> list[bool]:
        result = dspy.Evaluate(devset=examples(rows), metric=metric, num_threads=THREADS, display_progress=False, max_errors=len(rows) + 1)(
            program
        )
        by_input = {ex[task.input]: bool(score) for ex, _, score in result.results}
        return [by_input.get(r[task.input], False) for r in rows]

    def describe(program: Any) -> tuple[str, int]:
        predictor = program.predictors()[0]
        return predictor.signature.instructions, len(predictor.demos)

    def run(name: str, seed: int, data: tuple[list[dict[str, str]], ...], cap: int | None) -> tuple[Any, Any, Any]:
        from dspy.teleprompt import BootstrapFewShot, BootstrapFewShotWithRandomSearch, MIPROv2

        train, dev = examples(data[0]), examples(data[1])
        program = dspy.Predict(dspy.Signature(f"{task.input} -> {task.output}", task.instruction))
        if name == "BootstrapFewShot":
            compiled = BootstrapFewShot(metric=metric, max_bootstrapped_demos=MAX_DEMOS, max_labeled_demos=MAX_DEMOS).compile(
                program, trainset=train
            )
        elif name == "RandomSearch":
            optimizer = BootstrapFewShotWithRandomSearch(metric=metric, max_bootstrapped_demos=MAX_DEMOS, max_labeled_demos=MAX_DEMOS,
                                                         num_candidate_programs=RS_CANDIDATES, num_threads=THREADS)  # fmt: skip
            compiled = optimizer.compile(program, trainset=train, valset=dev)
        elif name == "MIPROv2 light":
            optimizer = MIPROv2(metric=metric, auto="light", num_threads=THREADS, seed=seed, verbose=False)
            compiled = optimizer.compile(program, trainset=train, valset=dev)
        else:
            raise ValueError(name)
        return compiled, evaluate, describe

    return run


def oobleck_runner(url: str, task: Task) -> Runner:
    import oobleck as ob

    lm = ob.LM("openai/sim", base_url=url + "/v1", api_key="x", cache=False)
    metric = make_metric(task)

    def examples(rows: list[dict[str, str]]) -> list[Any]:
        return [ob.Example(**r).with_inputs(task.input) for r in rows]

    def evaluate(program: Any, rows: list[dict[str, str]]) -> list[bool]:
        result = ob.Evaluate(devset=examples(rows), metric=metric, num_threads=THREADS, display_progress=False)(program)
        return [bool(r.score) for r in result.results]

    def describe(program: Any) -> tuple[str, int]:
        predictor = next(p for _, p in program.named_predictors())
        return predictor.signature.instructions, len(predictor.demos)

    def run(name: str, seed: int, data: tuple[list[dict[str, str]], ...], cap: int | None) -> tuple[Any, Any, Any]:
        train, dev = examples(data[0]), examples(data[1])
        program = ob.Predict(ob.make_signature(f"{task.input} -> {task.output}", task.instruction), lm=lm)
        budget = ob.Budget(max_lm_calls=cap) if cap else None
        if name == "BootstrapFewShot":
            compiled = ob.optimizers.BootstrapFewShot(metric, max_demos=MAX_DEMOS, num_threads=THREADS, seed=seed).compile(
                program, trainset=train
            )
        elif name == "RandomSearch":
            optimizer = ob.optimizers.RandomSearch(metric, num_candidates=RS_CANDIDATES, max_demos=MAX_DEMOS, num_threads=THREADS, seed=seed,
                                                   display_progress=False)  # fmt: skip
            compiled = optimizer.compile(program, trainset=train, valset=dev)
        elif name == "Bayesian":
            optimizer = ob.optimizers.Bayesian(metric, **BAYESIAN, max_demos=MAX_DEMOS, num_threads=THREADS, budget=budget, seed=seed)
            compiled = optimizer.compile(program, trainset=train, valset=dev)
        elif name == "Reflective":
            optimizer = ob.optimizers.Reflective(metric, **REFLECTIVE, num_threads=THREADS, budget=budget, seed=seed)
            compiled = optimizer.compile(program, trainset=train, valset=dev)
        else:
            raise ValueError(name)
        return compiled, evaluate, describe

    return run


# -- measuring -------------------------------------------------------------------------------


def measure(server: OpenAITestServer, sim: Any, task: Task, runner: Runner, name: str, seed: int,
            data: tuple[list[dict[str, str]], ...], cap: int | None = None) -> dict[str, Any]:  # fmt: skip
    sim.seed = seed
    server.reset_counts()
    sim.reset_counts()
    start = time.perf_counter()
    # DSPy prints progress bars of its own; the table says what matters.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        compiled, evaluate, describe = runner(name, seed, data, cap)
    wall = time.perf_counter() - start
    stats, kinds = server.stats(), dict(sim.kinds)
    sim.reset_counts()
    correct = evaluate(compiled, data[2])
    expected = statistics.fmean(sim.answer_probabilities) if sim.answer_probabilities else float("nan")
    instruction, demos = describe(compiled)
    return {
        "seed": seed, "test_score": sum(correct) / len(correct), "test_correct": correct, "expected_test_score": expected,
        "compile_calls": stats["requests"], "prompt_tokens": stats["prompt_tokens"], "completion_tokens": stats["completion_tokens"],
        "tokens": stats["prompt_tokens"] + stats["completion_tokens"], "calls_by_kind": kinds, "wall_s": wall,
        "instruction": instruction, "rule_coverage": task.coverage(instruction), "demos": demos, "budget_cap": cap,
    }  # fmt: skip


def paired_bootstrap(a: list[bool], b: list[bool], rounds: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of a - b and its ``level`` percentile interval, resampling pairs."""
    diffs = [int(x) - int(y) for x, y in zip(a, b, strict=True)]
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(rounds))
    tail = (1 - level) / 2
    return sum(diffs) / n, means[int(tail * rounds)], means[int((1 - tail) * rounds) - 1]


CAPPED = {("oobleck", "Bayesian"), ("oobleck", "Reflective")}


def plumbing_check(task: Task, latency: float) -> None:
    """One compile per optimizer on seed 1000 (outside the measured seeds), printing only what the simulator parsed, no scores.

    It checks that the simulator finds the query in every answer request and sees worked
    examples when asked to write, for both frameworks' prompts, without looking at results.
    """
    sim = task.lm()
    data = split(task, 1000)
    with OpenAITestServer(responder=sim, latency=latency, models=["sim"], keep_recent=0) as server:
        runners = {"DSPy": dspy_runner(server.base_url, task), "oobleck": oobleck_runner(server.base_url, task)}
        for framework, name in PLAN:
            sim.seed = 1000
            sim.reset_counts()
            sim.plumbing.clear()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                runners[framework](name, 1000, data, None)
            console.print(f"{framework:8} {name:17} {dict(sim.kinds)} {dict(sim.plumbing)}")


PLAN = [("DSPy", "MIPROv2 light"), ("DSPy", "BootstrapFewShot"), ("DSPy", "RandomSearch"),
        ("oobleck", "BootstrapFewShot"), ("oobleck", "RandomSearch"), ("oobleck", "Bayesian"), ("oobleck", "Reflective")]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="animal")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(15)))
    parser.add_argument("--latency", type=float, default=0.02, help="seconds the server waits before each answer")
    parser.add_argument("--only", nargs="+", help="run only these, as framework:optimizer (e.g. oobleck:Bayesian)")
    parser.add_argument("--no-cap", action="store_true", help="run Bayesian and Reflective without their cap (half of MIPROv2 light's calls)")
    parser.add_argument("--plumbing", action="store_true", help="only check that the simulator parses every prompt (seed 1000, no scores)")
    args = parser.parse_args()

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    task = TASKS[args.task]
    if args.plumbing:
        plumbing_check(task, args.latency)
        return

    plan = PLAN
    if args.only:
        plan = [p for p in plan if f"{p[0]}:{p[1]}".lower() in {o.lower() for o in args.only} or p == MIPRO]
    sim = task.lm()
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {p: [] for p in plan}
    with OpenAITestServer(responder=sim, latency=args.latency, models=["sim"], keep_recent=0) as server:
        runners = {"DSPy": dspy_runner(server.base_url, task), "oobleck": oobleck_runner(server.base_url, task)}
        for seed in args.seeds:
            data = split(task, seed)
            mipro_calls: int | None = None
            for framework, name in plan:
                capped = (framework, name) in CAPPED and mipro_calls and not args.no_cap
                cap = mipro_calls // 2 if capped else None
                with console.status(f"seed {seed}: {framework} {name}"):
                    record = measure(server, sim, task, runners[framework], name, seed, data, cap)
                if (framework, name) == MIPRO:
                    mipro_calls = record["compile_calls"]
                runs[(framework, name)].append(record)
                console.print(f"seed {seed} {framework:8} {name:17} test {record['test_score']:.3f} (expected {record['expected_test_score']:.3f})  calls {record['compile_calls']:5}  "
                              f"tokens {record['tokens']:8}  {record['wall_s']:6.1f} s  rule coverage: {record['rule_coverage']:.2f}")  # fmt: skip

    mean = statistics.fmean
    rows = []
    mipro_mean_calls = mean(r["compile_calls"] for r in runs[MIPRO]) if runs.get(MIPRO) else None
    for (framework, name), records in runs.items():
        row = {
            "framework": framework, "optimizer": name, "seeds": [r["seed"] for r in records],
            "test_score": mean(r["test_score"] for r in records), "test_scores": [r["test_score"] for r in records],
            "expected_test_score": mean(r["expected_test_score"] for r in records),
            "expected_test_scores": [r["expected_test_score"] for r in records],
            "compile_calls": mean(r["compile_calls"] for r in records), "tokens": mean(r["tokens"] for r in records),
            "wall_s": mean(r["wall_s"] for r in records), "rule_coverage": mean(r["rule_coverage"] for r in records),
            "calls_vs_mipro": mean(r["compile_calls"] for r in records) / mipro_mean_calls if mipro_mean_calls else None,
        }  # fmt: skip
        rows.append(row)

    table = Table(title=f"Optimizers on {task.title}: train/dev/test {'/'.join(map(str, SPLIT))}, "
                        f"means over seeds {', '.join(map(str, args.seeds))}")  # fmt: skip
    for column, justify in [("framework", "left"), ("optimizer", "left"), ("test score", "right"), ("min-max over seeds", "right"),
                            ("expected test score", "right"),
                            ("compile LM calls", "right"), ("calls / MIPROv2", "right"), ("tokens", "right"), ("wall s", "right"),
                            ("rule coverage of the instruction", "right")]:  # fmt: skip
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(row["framework"], row["optimizer"], f"{row['test_score']:.3f}", f"{min(row['test_scores']):.3f}-{max(row['test_scores']):.3f}",
                      f"{row['expected_test_score']:.3f}",
                      f"{row['compile_calls']:.0f}", f"{row['calls_vs_mipro']:.2f}" if row["calls_vs_mipro"] is not None else "-",
                      f"{row['tokens']:,.0f}", f"{row['wall_s']:.1f}", f"{row['rule_coverage']:.2f}")  # fmt: skip

    target: dict[str, Any] = {
        "text": "our best optimizer reaches a higher held-out score than MIPROv2 light with at most half of its LM calls"
    }
    mipro_row = next((r for r in rows if (r["framework"], r["optimizer"]) == MIPRO), None)
    ours = [r for r in rows if r["framework"] == "oobleck"]
    if mipro_row and ours:
        # Our best is picked by its test score among the optimizers within half of MIPROv2's
        # calls, so its interval is widened for that choice (Bonferroni over the eligible ones).
        eligible = [r for r in ours if r["compile_calls"] <= 0.5 * mipro_row["compile_calls"]]
        best = max(eligible or ours, key=lambda r: r["test_score"])
        level = 1 - 0.05 / max(len(eligible), 1)
        best_runs = runs[("oobleck", best["optimizer"])]
        a = [x for r in best_runs for x in r["test_correct"]]
        b = [x for r in runs[MIPRO] for x in r["test_correct"]]
        gain, low, high = paired_bootstrap(a, b, level=level)
        met = bool(eligible) and best["test_score"] > mipro_row["test_score"]
        expected_gain = best["expected_test_score"] - mipro_row["expected_test_score"]
        target.update(best=best["optimizer"], best_test_score=best["test_score"], mipro_test_score=mipro_row["test_score"],
                      best_expected_test_score=best["expected_test_score"], mipro_expected_test_score=mipro_row["expected_test_score"],
                      expected_gain=expected_gain, eligible=[r["optimizer"] for r in eligible], interval_level=level,
                      calls_ratio=best["compile_calls"] / mipro_row["compile_calls"], gain=gain, gain_interval=[low, high],
                      significant=low > 0 or high < 0, met=met)  # fmt: skip
        table.caption = (f"target: oobleck {best['optimizer']} {best['test_score']:.3f} vs MIPROv2 light {mipro_row['test_score']:.3f} "
                         f"(gain {gain:+.3f}, paired {100 * level:.1f}% CI [{low:+.3f}, {high:+.3f}], best of {len(eligible)} within half the calls) "
                         f"at {target['calls_ratio']:.2f}x its calls: {verdict(met)}; expected scores (the simulator's own probabilities, "
                         f"no draw noise) {best['expected_test_score']:.3f} vs {mipro_row['expected_test_score']:.3f} (gain {expected_gain:+.3f})")  # fmt: skip
    console.print(table)
    note = load_note()
    if note:
        console.print(f"[dim]{note}[/dim]")
    name = "optimizers" if task.name == "animal" else f"optimizers-{task.name}"
    path = write_result(name, {
        "target": target,
        "settings": {"task": task.name, "split": SPLIT, "threads": THREADS, "max_demos": MAX_DEMOS, "random_search_candidates": RS_CANDIDATES,
                     "bayesian": BAYESIAN, "reflective": REFLECTIVE,
                     "budget": None if args.no_cap else "Bayesian and Reflective: max_lm_calls = half of MIPROv2 light's calls on the same seed",
                     "latency_s": args.latency, "seeds": args.seeds, "instruction": task.instruction},
        "rows": rows,
        "runs": {f"{f}:{n}": [{k: v for k, v in r.items() if k != "test_correct"} for r in rs] for (f, n), rs in runs.items()},
    })  # fmt: skip
    console.print(f"[dim]wrote {path}[/dim]")


if __name__ == "__main__":
    main()
