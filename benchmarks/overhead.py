"""Per-call framework overhead: oobleck vs DSPy, ``Predict`` and ``ChainOfThought``, zero-latency LM.

What it measures: the time one predictor call costs when the LM itself costs nothing, i.e. the
framework's own work: checking inputs, formatting the chat prompt, the LM front (cache lookup,
retries, usage, history), parsing and coercing the reply, building the prediction.

Both sides get the same signature (``"context: list[str], question -> answer"``), the same
inputs and the same canned completion, written in each framework's chat format (which is the
same ``[[ ## field ## ]]`` layout in both). The response cache is off on both sides.

* oobleck: a ``BaseLM`` subclass whose ``generate`` returns the canned text.
* DSPy: a ``dspy.BaseLM`` subclass whose ``forward`` returns an OpenAI-shaped response object
  (``choices[i].message.content``, ``usage``, ``model``), ``cache=False``. This is DSPy's
  legacy custom-LM interface (deprecated in 3.4, which warns on each call; the warning is
  filtered out here). DSPy 3.4's newer engine interface (``dspy.LM(engine=...)`` with
  ``complete(Request) -> Response``) is measured too, for information (``--no-engine`` skips it).

Calls run in interleaved rounds (every contender runs one round in turn, the order rotating,
with a ``gc.collect()`` before each round), so background load hits every contender alike;
the reported figure per contender is the median over rounds of the mean µs/call in a round.

Target: oobleck's per-call time at most 1/10 of DSPy's (ratio oobleck/DSPy <= 0.10), for both
predictors, against the ``forward`` interface the comparison is specified with.

    python benchmarks/overhead.py [--calls 2000] [--warmup 200] [--rounds 10] [--profile]
"""

from __future__ import annotations

import argparse
import gc
import time
import warnings
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from _common import console, load_note, median, verdict, write_result
from rich.table import Table

SIGNATURE = "context: list[str], question -> answer"
INPUTS = {
    "context": [
        "Paris is the capital and most populous city of France.",
        "The Seine flows through Paris before reaching the English Channel.",
        "France is a country in Western Europe.",
    ],
    "question": "What is the capital of France?",
}
# The same completion text for both frameworks: their chat adapters share the marker layout.
COMPLETIONS = {
    "Predict": "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]",
    "ChainOfThought": (
        "[[ ## reasoning ## ]]\nThe first passage says Paris is the capital of France.\n\n"
        "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"
    ),
}
EXPECTED = {
    "Predict": {"answer": "Paris"},
    "ChainOfThought": {"reasoning": "The first passage says Paris is the capital of France.", "answer": "Paris"},
}
TARGET_RATIO = 0.10


# -- oobleck ---------------------------------------------------------------------------------


def oobleck_contenders() -> dict[str, Callable[[], Any]]:
    import oobleck as ob

    class ZeroLatencyLM(ob.BaseLM):
        """Returns a fixed completion instantly."""

        def __init__(self, text: str):
            super().__init__("zero-latency", cache=False)
            self.text = text

        def generate(self, messages: list[dict[str, str]], **settings: Any) -> list[str]:
            return [self.text]

    predictors = {
        "Predict": ob.Predict(SIGNATURE, lm=ZeroLatencyLM(COMPLETIONS["Predict"])),
        "ChainOfThought": ob.ChainOfThought(SIGNATURE, lm=ZeroLatencyLM(COMPLETIONS["ChainOfThought"])),
    }
    calls = {}
    for kind, predictor in predictors.items():
        prediction = predictor(**INPUTS)
        got = {k: prediction[k] for k in EXPECTED[kind]}
        assert got == EXPECTED[kind], f"oobleck {kind} parsed {got!r}"
        calls[kind] = lambda p=predictor: p(**INPUTS)
    return calls


# -- DSPy ------------------------------------------------------------------------------------


def _openai_response(text: str) -> SimpleNamespace:
    """What an OpenAI chat completion looks like to DSPy's ``_process_completion``."""
    message = SimpleNamespace(role="assistant", content=text, tool_calls=None)
    choice = SimpleNamespace(index=0, message=message, finish_reason="stop", logprobs=None)
    return SimpleNamespace(
        id="chatcmpl-zero",
        object="chat.completion",
        model="zero-latency",
        choices=[choice],
        usage={"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    )


def dspy_contenders(with_engine: bool) -> dict[str, Callable[[], Any]]:
    import dspy

    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"dspy(\.|$)")
    warnings.filterwarnings("ignore", message=r"Implementing custom LMs through BaseLM\.forward", category=DeprecationWarning)

    class ZeroLatencyLM(dspy.BaseLM):
        """Legacy custom LM: ``forward`` returns an OpenAI-shaped response, instantly."""

        def __init__(self, text: str):
            super().__init__("zero-latency", cache=False)
            self.text = text

        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> SimpleNamespace:
            return _openai_response(self.text)

    lms: dict[str, dict[str, Any]] = {
        "DSPy": {kind: ZeroLatencyLM(text) for kind, text in COMPLETIONS.items()},
    }
    if with_engine:
        from dspy.lm15 import Message, Response, TextPart, Usage

        class ZeroLatencyEngine:
            """DSPy 3.4 engine interface: ``complete(Request) -> Response``, instantly."""

            def __init__(self, text: str):
                self.text = text

            def complete(self, request: Any) -> Any:
                usage = Usage(input_tokens=0, output_tokens=0, total_tokens=0)
                message = Message.assistant([TextPart(self.text)])
                return Response(id=None, model="zero-latency", message=message, finish_reason="stop", usage=usage)

            def close(self) -> None:
                pass

        lms["DSPy engine"] = {
            kind: dspy.LM("zero-latency", engine=ZeroLatencyEngine(text), cache=False) for kind, text in COMPLETIONS.items()
        }

    calls = {}
    for label, by_kind in lms.items():
        for kind, lm in by_kind.items():
            module = dspy.Predict(SIGNATURE) if kind == "Predict" else dspy.ChainOfThought(SIGNATURE)
            module.set_lm(lm)
            prediction = module(**INPUTS)
            got = {k: prediction[k] for k in EXPECTED[kind]}
            assert got == EXPECTED[kind], f"{label} {kind} parsed {got!r}"
            calls[(label, kind)] = lambda m=module: m(**INPUTS)
    return calls


# -- measurement -----------------------------------------------------------------------------


def run_round(call: Callable[[], Any], n: int) -> float:
    """Mean µs per call over ``n`` calls."""
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(n):
        call()
    return (time.perf_counter_ns() - start) / n / 1000


def profile_oobleck(calls: dict[str, Callable[[], Any]], n: int, top: int = 15) -> dict[str, list[dict[str, Any]]]:
    """cProfile the oobleck predictors; the functions with the most own time, oobleck's code only."""
    import cProfile
    import pstats

    report = {}
    for kind, call in calls.items():
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(n):
            call()
        profiler.disable()
        stats = pstats.Stats(profiler)
        rows = []
        for (file, line, func), (_, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
            if "/oobleck/" in file and "/benchmarks/" not in file:
                where = file[file.rindex("/oobleck/") + len("/oobleck/") :]
                rows.append({"function": f"{where}:{line} {func}", "calls_per_call": ncalls / n,
                             "own_us_per_call": tottime / n * 1e6, "cum_us_per_call": cumtime / n * 1e6})  # fmt: skip
        rows.sort(key=lambda r: r["own_us_per_call"], reverse=True)
        report[kind] = rows[:top]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="measured calls per contender (after warm-up)")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-engine", action="store_true", help="skip DSPy's engine-interface contender")
    parser.add_argument("--profile", action="store_true", help="also cProfile oobleck (always done when it misses the target)")
    args = parser.parse_args()

    ob_calls = oobleck_contenders()
    ds_calls = dspy_contenders(with_engine=not args.no_engine)
    contenders: dict[tuple[str, str], Callable[[], Any]] = {("oobleck", k): c for k, c in ob_calls.items()}
    contenders.update(ds_calls)

    per_round = max(1, args.calls // args.rounds)
    for call in contenders.values():  # warm-up
        for _ in range(args.warmup):
            call()
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in contenders}
    keys = list(contenders)
    with console.status("measuring per-call overhead"):
        for r in range(args.rounds):
            shift = r % len(keys)
            for key in keys[shift:] + keys[:shift]:
                samples[key].append(run_round(contenders[key], per_round))

    us = {key: median(values) for key, values in samples.items()}
    labels = sorted({label for label, _ in keys}, key=["oobleck", "DSPy", "DSPy engine"].index)
    calls = per_round * args.rounds
    table = Table(title=f"Per-call overhead, zero-latency LM ({calls} calls each, median of {args.rounds} interleaved rounds)")
    table.add_column("module")
    for label in labels:
        table.add_column(f"{label} µs/call", justify="right")
    table.add_column("oobleck / DSPy", justify="right")
    table.add_column("speed-up", justify="right")
    if "DSPy engine" in labels:
        table.add_column("oobleck / DSPy engine", justify="right")
    table.add_column(f"target ≤ {TARGET_RATIO:.2f}", justify="center")
    rows = []
    for kind in COMPLETIONS:
        ratio = us[("oobleck", kind)] / us[("DSPy", kind)]
        row = {"module": kind, "us_per_call": {label: us[(label, kind)] for label in labels}, "ratio_oobleck_over_dspy": ratio,
               "speedup": 1 / ratio, "target_met": ratio <= TARGET_RATIO,
               "rounds_us_per_call": {label: samples[(label, kind)] for label in labels}}  # fmt: skip
        cells = [kind, *(f"{us[(label, kind)]:.1f}" for label in labels), f"{ratio:.3f}", f"{1 / ratio:.1f}x"]
        if "DSPy engine" in labels:
            engine_ratio = us[("oobleck", kind)] / us[("DSPy engine", kind)]
            row["ratio_oobleck_over_dspy_engine"] = engine_ratio
            cells.append(f"{engine_ratio:.3f}")
        cells.append(verdict(ratio <= TARGET_RATIO))
        table.add_row(*cells)
        rows.append(row)
    console.print(table)
    note = load_note()
    if note:
        console.print(f"[dim]{note}[/dim]")

    payload: dict[str, Any] = {
        "target": f"oobleck per-call time <= {TARGET_RATIO} x DSPy's",
        "signature": SIGNATURE,
        "calls_per_contender": per_round * args.rounds,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "rows": rows,
        "target_met": all(r["target_met"] for r in rows),
    }
    if args.profile or not payload["target_met"]:
        hotspots = profile_oobleck(ob_calls, per_round * args.rounds)
        payload["oobleck_hotspots"] = hotspots
        for kind, top in hotspots.items():
            hot = Table(title=f"oobleck {kind}: top functions by own time (cProfile, inflated by profiling)")
            hot.add_column("function")
            hot.add_column("calls/call", justify="right")
            hot.add_column("own µs/call", justify="right")
            hot.add_column("cum µs/call", justify="right")
            for h in top:
                hot.add_row(h["function"], f"{h['calls_per_call']:.0f}", f"{h['own_us_per_call']:.2f}", f"{h['cum_us_per_call']:.2f}")
            console.print(hot)
    path = write_result("overhead", payload)
    console.print(f"[dim]wrote {path}[/dim]")


if __name__ == "__main__":
    main()
