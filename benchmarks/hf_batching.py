"""hf_batching: in-process Hugging Face evaluation of 256 prompts, batched vs one at a time.

Both runs evaluate the same program on the bundled demo model (oobleck-tiny) with the cache
off. "one at a time" is one thread and a batch size of 1; "batched" is Evaluate with 128
threads (``--threads``), whose requests the backend gathers into shared ``generate`` calls of
up to that many prompts. On a CPU the prompts' prefill is pure compute that batching cannot
remove, so larger batches amortise the decoding steps better (64: ~4x, 128: ~6x here). The two runs
alternate over several rounds so machine noise hits both alike. Target: batched >= 5x faster,
with identical predictions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import oobleck as ob
from oobleck.tiny.tasks import task_examples

RESULTS = Path(__file__).parent / "results"


def _devset(n: int) -> list[ob.Example]:
    tasks = ["reverse", "uppercase", "repeat", "first_letter"]
    rows = [row for i, task in enumerate(tasks) for row in task_examples(task, n // len(tasks), seed=100 + i)]
    return [ob.Example(r).with_inputs("word") for r in rows]


def _run(devset: list[ob.Example], *, threads: int, batch: int) -> tuple[float, list[str], int]:
    lm = ob.LM("hf/oobleck-tiny", cache=False, max_batch_size=batch)
    program = ob.Predict("word -> answer", lm=lm)
    lm.load()
    started = time.perf_counter()
    result = ob.Evaluate(devset=devset, metric="exact_match", num_threads=threads, display_progress=False)(program)
    seconds = time.perf_counter() - started
    answers = [r.prediction.answer if r.prediction is not None else f"<error {r.error}>" for r in result.results]
    return seconds, answers, lm.batches_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=128, help="Evaluate threads, and the largest batch")
    args = parser.parse_args()
    devset = _devset(args.prompts)
    _run(devset[:16], threads=4, batch=64)  # warm-up: load weights, first-call costs
    single_times, batched_times = [], []
    same = True
    batches = 0
    for _ in range(args.rounds):
        t_single, a_single, _ = _run(devset, threads=1, batch=1)
        t_batched, a_batched, batches = _run(devset, threads=args.threads, batch=args.threads)
        single_times.append(t_single)
        batched_times.append(t_batched)
        same = same and a_single == a_batched
    single, batched = statistics.median(single_times), statistics.median(batched_times)
    report = {
        "prompts": len(devset),
        "rounds": args.rounds,
        "one_at_a_time_s": round(single, 3),
        "batched_s": round(batched, 3),
        "speedup": round(single / batched, 2),
        "prompts_per_s_one_at_a_time": round(len(devset) / single, 1),
        "prompts_per_s_batched": round(len(devset) / batched, 1),
        "generate_calls_batched": batches,
        "identical_predictions": same,
        "target_speedup": 5.0,
    }
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"hf_batching: {len(devset)} prompts on oobleck-tiny (median of {args.rounds} rounds)")
    for column in ("mode", "seconds", "prompts/s", "generate calls"):
        table.add_column(column, justify="right")
    table.add_row("one at a time", f"{single:.2f}", f"{len(devset) / single:.1f}", str(len(devset)))
    table.add_row(f"batched ({args.threads} threads)", f"{batched:.2f}", f"{len(devset) / batched:.1f}", str(batches))
    console = Console()
    console.print(table)
    console.print(f"speedup {report['speedup']}x (target >= 5x); identical predictions: {same}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hf_batching.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
