"""Optimizers on the bundled demo model (offline): Bayesian vs RandomSearch vs BootstrapFewShot.

The demo model answers its ambiguous tasks well only with a precise instruction or demos; the
default instruction is vague. Each optimizer compiles the same program on the same data, and
Bayesian uses the demo model itself as its instruction proposer (instruction induction).
Caches are off so every call is real.

Every seed (``--seeds``) draws a fresh train/dev/test split (30/100/``--test``) and seeds every
optimizer with it. Reported per task and seed: held-out score and compile LM calls (logical:
cache hits counted); then, pooled over seeds, the paired bootstrap 95% interval of Bayesian's
gain over each other optimizer, resampling (seed, held-out example) pairs. That interval is
about the held-out examples given the compiled programs: it does not cover how much another
seed would change what each optimizer compiles (the per-seed rows show that spread).

    python benchmarks/demo_optimizers.py [--tasks uppercase,reverse,repeat,first_letter] [--seeds 0 1 2] [--test 500] [--trials 12]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from _common import console, load_note, write_result
from rich.table import Table

import oobleck as ob
from oobleck.evaluate.significance import paired_bootstrap
from oobleck.tiny.tasks import TASKS, task_examples

TRAIN, DEV = 30, 100
OPTIMIZERS = ("BootstrapFewShot", "RandomSearch", "Bayesian")
ALL = "all tasks"


def _data(task: str, seed: int, n_test: int) -> tuple[list[ob.Example], list[ob.Example], list[ob.Example]]:
    rows = task_examples(task, TRAIN + DEV + n_test, seed=seed)
    inputs = list(TASKS[task].inputs)
    examples = [ob.Example(**r).with_inputs(*inputs) for r in rows]
    return examples[:TRAIN], examples[TRAIN : TRAIN + DEV], examples[TRAIN + DEV :]


def _program(task: str, lm: ob.BaseLM) -> ob.Predict:
    spec = TASKS[task]
    return ob.Predict(f"{', '.join(spec.inputs)} -> {spec.output}", lm=lm)


def _optimizer(name: str, seed: int, trials: int) -> Any:
    if name == "BootstrapFewShot":
        return ob.optimizers.BootstrapFewShot("exact_match", max_demos=4, num_threads=16, seed=seed)
    if name == "RandomSearch":
        return ob.optimizers.RandomSearch("exact_match", num_candidates=6, max_demos=4, num_threads=16, seed=seed, display_progress=False)
    return ob.optimizers.Bayesian("exact_match", num_trials=trials, max_demos=4, num_threads=16, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="uppercase,reverse,repeat,first_letter")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--test", type=int, default=500, help="held-out examples per seed")
    parser.add_argument("--trials", type=int, default=12)
    args = parser.parse_args()
    lm = ob.LM("hf/oobleck-tiny", cache=False)
    runs: list[dict[str, Any]] = []
    scores: dict[tuple[str, str], list[float]] = {}
    for task in args.tasks.split(","):
        for seed in args.seeds:
            train, dev, test = _data(task, seed, args.test)
            evaluate = ob.Evaluate(devset=test, metric="exact_match", num_threads=16, display_progress=False)
            baseline = evaluate(_program(task, lm)).score
            for name in OPTIMIZERS:
                started = time.perf_counter()
                with console.status(f"{task} seed {seed}: {name}"), ob.spending() as spent:
                    compiled = _optimizer(name, seed, args.trials).compile(_program(task, lm), trainset=train, valset=dev)
                seconds = time.perf_counter() - started
                result = evaluate(compiled)
                scores.setdefault((task, name), []).extend(r.score for r in result.results)
                runs.append({"task": task, "seed": seed, "optimizer": name, "test": result.score, "baseline": baseline, "calls": spent.calls,
                             "seconds": round(seconds, 1), "instruction": compiled.signature.instructions, "demos": len(compiled.demos)})  # fmt: skip
                console.print(f"{task} seed {seed} {name:16} test {result.score:.3f} (vague zero-shot {baseline:.3f})  calls {spent.calls:5}  "
                              f"{seconds:6.1f} s  {compiled.signature.instructions[:50]!r} + {len(compiled.demos)} demos")  # fmt: skip

    tasks = args.tasks.split(",")
    if len(tasks) > 1:  # every task's (seed, example) pairs together: is the gain general, not one task's?
        for name in OPTIMIZERS:
            scores[(ALL, name)] = [s for task in tasks for s in scores[(task, name)]]
    pooled: list[dict[str, Any]] = []
    for task in tasks + ([ALL] if len(tasks) > 1 else []):
        for name in OPTIMIZERS:
            mine = [r for r in runs if task in (ALL, r["task"]) and r["optimizer"] == name]
            gain = None if name == "Bayesian" else paired_bootstrap(scores[(task, name)], scores[(task, "Bayesian")], seed=0)
            pooled.append({"task": task, "optimizer": name, "test": statistics.fmean(scores[(task, name)]),
                           "tests": [] if task == ALL else [r["test"] for r in mine], "calls": statistics.fmean(r["calls"] for r in mine),
                           "seconds": statistics.fmean(r["seconds"] for r in mine), "bayesian_gain": gain.to_dict() if gain else None,
                           "_gain": gain})  # fmt: skip

    table = Table(title=f"Optimizers on the demo model: train/dev/test {TRAIN}/{DEV}/{args.test} per seed, seeds "
                        f"{', '.join(map(str, args.seeds))}, no cache")  # fmt: skip
    for column in ("task", "optimizer", "test (pooled)", "per seed", "compile LM calls (mean)", "s (mean)",
                   "Bayesian's gain over it, pooled (95% CI)"):  # fmt: skip
        table.add_column(column)
    for row in pooled:
        gain = row.pop("_gain")
        table.add_row(row["task"], row["optimizer"], f"{100 * row['test']:.1f}%", " / ".join(f"{100 * t:.1f}" for t in row["tests"]) or "-",
                      f"{row['calls']:.0f}", f"{row['seconds']:.1f}", gain.describe() if gain else "-")  # fmt: skip
    console.print(table)
    note = load_note()
    if note:
        console.print(f"[dim]{note}[/dim]")
    path = write_result("demo_optimizers", {"trials": args.trials, "seeds": args.seeds, "split": [TRAIN, DEV, args.test],
                                            "pooled": pooled, "runs": runs})  # fmt: skip
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
