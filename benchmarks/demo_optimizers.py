"""Optimizers on the bundled demo model (offline): Bayesian vs RandomSearch vs BootstrapFewShot.

The demo model answers its ambiguous tasks well only with a precise instruction or demos; the
default instruction is vague. Each optimizer compiles the same program on the same data, and
Bayesian uses the demo model itself as its instruction proposer (instruction induction).
Reported per task: held-out score, compile LM calls (logical: cache hits counted), and the
paired bootstrap 95% interval of Bayesian's gain over each other optimizer on the same
held-out examples. Caches are off so every call is real.

    python benchmarks/demo_optimizers.py [--tasks uppercase,first_letter] [--trials 12]
"""

from __future__ import annotations

import argparse
import time

from _common import console, write_result
from rich.table import Table

import oobleck as ob
from oobleck.evaluate.significance import compare
from oobleck.tiny.tasks import TASKS, task_examples


def _data(task: str, seed: int) -> tuple[list[ob.Example], list[ob.Example], list[ob.Example]]:
    rows = task_examples(task, 330, seed=seed)
    inputs = list(TASKS[task].inputs)
    examples = [ob.Example(**r).with_inputs(*inputs) for r in rows]
    return examples[:30], examples[30:130], examples[130:]


def _program(task: str, lm: ob.BaseLM) -> ob.Predict:
    spec = TASKS[task]
    return ob.Predict(f"{', '.join(spec.inputs)} -> {spec.output}", lm=lm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="uppercase,first_letter")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    lm = ob.LM("hf/oobleck-tiny", cache=False)
    rows, results = [], []
    for task in args.tasks.split(","):
        train, dev, test = _data(task, args.seed)
        runs = {
            "BootstrapFewShot": ob.optimizers.BootstrapFewShot("exact_match", max_demos=4, num_threads=16, seed=args.seed),
            "RandomSearch": ob.optimizers.RandomSearch("exact_match", num_candidates=6, max_demos=4, num_threads=16, seed=args.seed,
                                                       display_progress=False),
            "Bayesian": ob.optimizers.Bayesian("exact_match", num_trials=args.trials, max_demos=4, num_threads=16, seed=args.seed),
        }  # fmt: skip
        scored = {}
        baseline = ob.Evaluate(devset=test, metric="exact_match", num_threads=16, display_progress=False)(_program(task, lm))
        for name, optimizer in runs.items():
            started = time.perf_counter()
            with ob.spending() as spent:
                compiled = optimizer.compile(_program(task, lm), trainset=train, valset=dev)
            seconds = time.perf_counter() - started
            result = ob.Evaluate(devset=test, metric="exact_match", num_threads=16, display_progress=False)(compiled)
            scored[name] = result
            results.append({"task": task, "optimizer": name, "test": result.score, "baseline": baseline.score, "calls": spent.calls,
                            "seconds": round(seconds, 1), "instruction": compiled.signature.instructions, "demos": len(compiled.demos)})  # fmt: skip
        for entry in results[-3:]:
            gain = compare(scored[entry["optimizer"]], scored["Bayesian"], seed=args.seed) if entry["optimizer"] != "Bayesian" else None
            entry["bayesian_gain"] = gain.to_dict() if gain else None
            rows.append((task, entry, gain))
    table = Table(title=f"Optimizers on the demo model (train/dev/test 30/100/200, seed {args.seed}, no cache)")
    for column in ("task", "optimizer", "test (vague zero-shot)", "compile LM calls", "s", "Bayesian's gain over it (95% CI)", "instruction"):
        table.add_column(column)
    for task, entry, gain in rows:
        table.add_row(task, entry["optimizer"], f"{100 * entry['test']:.1f}% ({100 * entry['baseline']:.1f}%)", str(entry["calls"]),
                      str(entry["seconds"]), gain.describe() if gain else "-", entry["instruction"][:50])  # fmt: skip
    console.print(table)
    path = write_result("demo_optimizers", {"trials": args.trials, "seed": args.seed, "results": results})
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
