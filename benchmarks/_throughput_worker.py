"""One framework's side of the throughput benchmark, run in a process that imports only it.

``throughput.py`` starts this script once per measured run (``--framework oobleck`` or
``--framework dspy``), so each framework is timed in an interpreter holding only its own modules,
as a user's program would: a full garbage collection there rescans one framework's objects, not
both. The script warms up (threads, HTTP connections, first-call costs) on a small dev set,
times one ``Evaluate`` call, and prints the measurement as one JSON object on stdout (anything
the frameworks print goes to stderr). It imports nothing but the standard library and the
framework it measures; ``throughput.py --in-process`` imports the runners below instead.

    python benchmarks/_throughput_worker.py --framework oobleck --url http://127.0.0.1:PORT --threads 8 --examples 320
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

Runner = Callable[[list[str], int], tuple[float, int, str]]


def questions(n: int) -> list[str]:
    return [f"What is item number {i}?" for i in range(n)]


def oobleck_runner(url: str, mode: str = "auto") -> Runner:
    """A function (questions, threads) -> (score in [0, 1], errors, mode used) running one ob.Evaluate."""
    import oobleck as ob

    lm = ob.LM("openai/test", base_url=url + "/v1", cache=False)
    program = ob.Predict("question -> answer", lm=lm)

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        return prediction.answer == example.answer

    def run(qs: list[str], threads: int) -> tuple[float, int, str]:
        devset = [ob.Example(question=q, answer=q).with_inputs("question") for q in qs]
        result = ob.Evaluate(devset=devset, metric=metric, num_threads=threads, display_progress=False, mode=mode)(program)  # type: ignore[arg-type]
        return result.score, result.errors, result.mode

    return run


def dspy_runner(url: str) -> Runner:
    """The same with dspy.Evaluate; DSPy reports scores in percent, converted to [0, 1]."""
    import logging

    import dspy

    logging.getLogger("dspy").setLevel(logging.WARNING)  # Evaluate logs "Average Metric" at INFO on every run
    lm = dspy.LM("openai/test", api_base=url + "/v1", api_key="x", cache=False)
    program = dspy.Predict("question -> answer")
    program.set_lm(lm)

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        return prediction.answer == example.answer

    def run(qs: list[str], threads: int) -> tuple[float, int, str]:
        devset = [dspy.Example(question=q, answer=q).with_inputs("question") for q in qs]
        result = dspy.Evaluate(devset=devset, metric=metric, num_threads=threads, display_progress=False, max_errors=len(qs) + 1)(program)
        errors = sum(1 for _, prediction, _ in result.results if not hasattr(prediction, "answer"))
        return float(result.score) / 100, errors, "threads"

    return run


def measure(run: Runner, qs: list[str], threads: int) -> dict[str, Any]:
    """Time one Evaluate call: wall time, and the client's CPU time (what caps it once GIL-bound)."""
    cpu, start = time.process_time(), time.perf_counter()
    score, errors, mode = run(qs, threads)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"rps": len(qs) / wall, "seconds": wall, "client_cpu_us_per_request": cpu / len(qs) * 1e6, "client_cores_busy": cpu / wall,
            "score": score, "errors": errors, "mode": mode}  # fmt: skip


def warm_up(run: Runner, examples: int, threads: int) -> None:
    """An unmeasured run first: the thread pool, HTTP connections and lazy imports are set up here."""
    run(questions(min(examples, 2 * threads)), threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--framework", choices=["oobleck", "dspy"], required=True)
    parser.add_argument("--url", required=True, help="the test server's base URL (without /v1)")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--examples", type=int, required=True)
    parser.add_argument("--mode", choices=["auto", "threads", "async"], default="auto", help="ob.Evaluate(mode=...), oobleck only")
    args = parser.parse_args()

    # Offline and quiet: no model-metadata download attempts, no deprecation chatter. The JSON
    # line is the only thing on stdout, so whatever a framework prints goes to stderr meanwhile.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    out, sys.stdout = sys.stdout, sys.stderr

    run = oobleck_runner(args.url, args.mode) if args.framework == "oobleck" else dspy_runner(args.url)
    warm_up(run, args.examples, args.threads)
    result = measure(run, questions(args.examples), args.threads)
    # Evidence of the isolation (only the measured framework loaded) and of DSPy's transport.
    result["frameworks_imported"] = sorted(name for name in ("oobleck", "dspy") if name in sys.modules)
    result["litellm_imported"] = "litellm" in sys.modules
    out.write(json.dumps(result) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
