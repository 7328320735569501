"""Evaluation throughput against a 50 ms OpenAI-compatible server: oobleck vs DSPy vs the latency limit.

What it measures: requests per second of a parallel evaluation, ``Predict("question -> answer")``
over a dev set, against a real HTTP server on loopback that answers every request after a fixed
latency (50 ms). With ``c`` threads and nothing else in the way, the ceiling is ``c / 0.05``
requests per second; the benchmark reports each framework's rate and its fraction of that limit
at concurrency 1, 8, 32 and 64.

* oobleck: ``ob.Evaluate(num_threads=c, display_progress=False)`` with
  ``ob.LM("openai/test", base_url=..., cache=False)`` (the openai SDK underneath, over
  oobleck's keep-alive transport, as for any plain-http server). Its default
  ``mode="auto"`` runs this program on threads below 32 in flight and on one event loop from
  32 (``--oobleck-mode threads|async`` forces either); the table reports the mode each run used.
* DSPy: ``dspy.Evaluate(num_threads=c, display_progress=False)`` with
  ``dspy.LM("openai/test", api_base=..., api_key="x", cache=False)``.

The server is oobleck's loopback test server (``oobleck.testing.server``: asyncio, latency as a
timer) run in its own process, so it does not compete with the client for the GIL; it is
started through ``benchmarks/_echo_server.py``, which gives it a responder whose
``[[ ## answer ## ]]`` replies both frameworks' chat adapters parse. The answer echoes the
question and the metric checks it, so a score of 1.0 shows every example was answered by
exactly one parsed request (a failed parse would cost a re-ask or a fallback request, and a
point of score).

Each framework is measured in its own process, as a user runs it: every measured run is a
fresh ``benchmarks/_throughput_worker.py`` that imports only oobleck or only DSPy, warms up
(thread pool, HTTP connections, first-call costs) on a small dev set, times one ``Evaluate``
call and reports it as JSON on stdout. With both frameworks in one process, each full garbage
collection rescans both frameworks' objects (70-120 ms here), a cost no user of either one
pays; ``--in-process`` keeps that old arrangement (both in this process, one warm-up per
framework and concurrency) for comparison. The server is started once and shared.

Each dev set is sized to take ~2 s at the limit (``max(100, 40 * c)`` examples); at every
concurrency the ``--rounds`` measured runs alternate between the frameworks (oobleck, DSPy,
DSPy, oobleck, ...) so machine noise falls on both; the rate reported is the median over rounds
of examples / wall time of the ``Evaluate`` call. The client's CPU time per request and the
cores it kept busy (CPU time / wall time) are recorded too: on a small or busy machine, or once
the client is GIL-bound (~1 core of Python), that is what caps throughput.

Target: at least 0.9 of the latency limit at every concurrency (oobleck).

    python benchmarks/throughput.py [--concurrency 1 8 32 64] [--rounds 3] [--latency 0.05] [--in-process]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import console, load_note, median, verdict, write_result
from _throughput_worker import dspy_runner, measure, oobleck_runner, questions, warm_up
from rich.table import Table

TARGET_FRACTION = 0.9
HERE = Path(__file__).resolve().parent
SERVER = HERE / "_echo_server.py"
WORKER = HERE / "_throughput_worker.py"
NAMES = ("oobleck", "DSPy")


# -- the server process ----------------------------------------------------------------------


class ServerProcess:
    """``_echo_server.py`` in a child process; ``url`` is its base URL once started."""

    def __init__(self, latency: float):
        self.latency = latency
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> ServerProcess:  # noqa: PYI034 (typing.Self needs Python 3.11)
        self.proc = subprocess.Popen([sys.executable, str(SERVER), "--latency", str(self.latency)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout=60)
        if not line or not line[0].startswith("http"):
            self.proc.kill()
            err = self.proc.stderr.read() if self.proc.stderr else ""  # type: ignore[union-attr]
            raise RuntimeError(f"the test server did not start: {err[-2000:]}")
        self.url = line[0].strip()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.terminate()  # serve_forever stops cleanly on SIGTERM
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- one measured run, in its own process or in this one ----------------------------------------

Sampler = Callable[[str, int, int], dict[str, Any]]


def subprocess_sampler(url: str, mode: str) -> Sampler:
    """(framework, threads, examples) -> one measurement, taken by a fresh worker process."""

    def sample(name: str, threads: int, examples: int) -> dict[str, Any]:
        cmd = [sys.executable, str(WORKER), "--framework", name.lower(), "--url", url,
               "--threads", str(threads), "--examples", str(examples), "--mode", mode]  # fmt: skip
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"the {name} worker failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        expected = [name.lower()]
        if result["frameworks_imported"] != expected:  # the point of a separate process
            raise RuntimeError(f"the {name} worker imported {result['frameworks_imported']}, expected only {expected}")
        return result

    return sample


def in_process_sampler(url: str, mode: str) -> Sampler:
    """The same with both frameworks imported here: one heap, one garbage collector for both."""
    runners = {"oobleck": oobleck_runner(url, mode), "DSPy": dspy_runner(url)}
    warmed: set[int] = set()

    def sample(name: str, threads: int, examples: int) -> dict[str, Any]:
        if threads not in warmed:  # both frameworks before the first measured run, as the old code did
            for runner in runners.values():
                warm_up(runner, examples, threads)
            warmed.add(threads)
        result = measure(runners[name], questions(examples), threads)
        result["frameworks_imported"] = ["dspy", "oobleck"]
        result["litellm_imported"] = "litellm" in sys.modules
        return result

    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--seconds", type=float, default=2.0, help="target length of one run at the limit (dev set sizing)")
    parser.add_argument("--oobleck-mode", choices=["auto", "threads", "async"], default="auto", help="ob.Evaluate(mode=...)")
    parser.add_argument("--in-process", action="store_true",
                        help="measure both frameworks in this one process (the old way, for comparison) instead of a process per run")  # fmt: skip
    args = parser.parse_args()

    # Offline and quiet: no model-metadata download attempts, no deprecation chatter.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    isolation = "in-process" if args.in_process else "process per run"
    rows = []
    with ServerProcess(args.latency) as server:
        sample = (in_process_sampler if args.in_process else subprocess_sampler)(server.url, args.oobleck_mode)
        names = list(NAMES)
        for c in args.concurrency:
            limit = c / args.latency
            n = max(100, int(limit * args.seconds))
            samples: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
            with console.status(f"concurrency {c}: {n} examples x {args.rounds} rounds per framework ({isolation})"):
                for r in range(args.rounds):
                    order = names if r % 2 == 0 else names[::-1]
                    for name in order:
                        samples[name].append(sample(name, c, n))
            row: dict[str, Any] = {"concurrency": c, "examples": n, "limit_rps": limit}
            for name in names:
                runs = samples[name]
                rps = median([s["rps"] for s in runs])
                row[name] = {
                    "rps": rps,
                    "fraction_of_limit": rps / limit,
                    "client_cpu_us_per_request": median([s["client_cpu_us_per_request"] for s in runs]),
                    "client_cores_busy": median([s["client_cores_busy"] for s in runs]),
                    "min_score": min(s["score"] for s in runs),
                    "errors": sum(int(s["errors"]) for s in runs),
                    "mode": "/".join(sorted({s["mode"] for s in runs})),
                    "runs": runs,
                }
            row["ratio_oobleck_over_dspy"] = row["oobleck"]["rps"] / row["DSPy"]["rps"]
            row["target_met"] = row["oobleck"]["fraction_of_limit"] >= TARGET_FRACTION
            rows.append(row)
            console.print(
                f"c={c}: oobleck {row['oobleck']['rps']:.0f} req/s ({row['oobleck']['fraction_of_limit']:.2f} of limit, {row['oobleck']['mode']}), "
                f"DSPy {row['DSPy']['rps']:.0f} req/s ({row['DSPy']['fraction_of_limit']:.2f})"
            )
    # DSPy 3.4 talks to OpenAI-compatible servers natively unless it falls back to LiteLLM.
    litellm_used = any(s["litellm_imported"] for row in rows for s in row["DSPy"]["runs"])

    where = "both frameworks in one process" if args.in_process else "each run in its own process"
    table = Table(title=f"Evaluate throughput vs a {args.latency * 1000:.0f} ms server (median of {args.rounds} interleaved runs, {where})")
    table.add_column("threads", justify="right")
    table.add_column("examples", justify="right")
    table.add_column("limit req/s", justify="right")
    table.add_column("oobleck req/s", justify="right")
    table.add_column("oobleck / limit", justify="right")
    table.add_column("oobleck mode")
    table.add_column("DSPy req/s", justify="right")
    table.add_column("DSPy / limit", justify="right")
    table.add_column("oobleck / DSPy", justify="right")
    table.add_column("client CPU µs/req (ob, DSPy)", justify="right")
    table.add_column("client cores busy (ob, DSPy)", justify="right")
    table.add_column(f"target ≥ {TARGET_FRACTION}", justify="center")
    for row in rows:
        ob_row, ds_row = row["oobleck"], row["DSPy"]
        table.add_row(
            str(row["concurrency"]), str(row["examples"]), f"{row['limit_rps']:.0f}",
            f"{ob_row['rps']:.1f}", f"{ob_row['fraction_of_limit']:.2f}", ob_row["mode"],
            f"{ds_row['rps']:.1f}", f"{ds_row['fraction_of_limit']:.2f}",
            f"{row['ratio_oobleck_over_dspy']:.2f}",
            f"{ob_row['client_cpu_us_per_request']:.0f}, {ds_row['client_cpu_us_per_request']:.0f}",
            f"{ob_row['client_cores_busy']:.2f}, {ds_row['client_cores_busy']:.2f}",
            verdict(row["target_met"]),
        )  # fmt: skip
    bad = [f"{name} at c={row['concurrency']}" for row in rows for name in names if row[name]["min_score"] < 1.0 or row[name]["errors"]]
    clean = "every run scored 1.0 with no errors (one parsed request per example)"
    table.caption = clean if not bad else f"[red]imperfect runs: {', '.join(bad)}[/red]"
    console.print(table)
    note = load_note()
    if note:
        console.print(f"[dim]{note}[/dim]")
    path = write_result("throughput", {
        "target": f"oobleck >= {TARGET_FRACTION} of the latency limit (concurrency / latency) at every concurrency",
        "latency_s": args.latency,
        "rounds": args.rounds,
        "oobleck_mode": args.oobleck_mode,
        "isolation": isolation,
        "dspy_imported_litellm": litellm_used,
        "rows": rows,
        "target_met": all(r["target_met"] for r in rows),
        "all_runs_clean": not bad,
    })  # fmt: skip
    console.print(f"[dim]wrote {path}[/dim]")


if __name__ == "__main__":
    main()
