"""`oobleck serve` throughput against a 50 ms OpenAI-compatible LM server, vs the latency limit.

What it measures: requests per second and p50/p99 latency of ``POST /programs/echo`` (a
compiled ``Predict("question -> answer")`` whose LM is an OpenAI-compatible server answering
every request after 50 ms) at 1, 16 and 64 concurrent clients. With ``c`` clients in a closed
loop and nothing else in the way, the ceiling is ``c / 0.05`` requests per second; the table
reports the fraction of that limit reached, as benchmarks/throughput.py does for Evaluate.

Three processes, so none competes with another for the GIL:

* the LM: ``benchmarks/_echo_server.py`` (oobleck's asyncio loopback test server; its answer
  echoes the question);
* the server under test: ``python -m oobleck.cli serve echo.oobleck`` exactly as a user runs
  it (uvicorn, one worker process), with the LM response cache off (``OOBLECK_CACHE=0``) so
  every request reaches the LM;
* the load: ``benchmarks/_serve_load.py``, keep-alive raw-socket clients that check every
  answer echoes its own question (so no response is lost or swapped).

The load generator runs on uvloop by default (``--harness-loop asyncio`` for plain asyncio):
on a small machine it shares the cores with the server under test, which real clients would
not, so it should take as little CPU as it can. The LM stand-in stays on asyncio: uvloop
fires timers against a loop clock cached at the start of each iteration, so under load some
of its "50 ms" answers came back after 49.4 ms, which would flatter the server.

Each concurrency gets a warm-up run, then ``--rounds`` measured runs of ``--seconds``; the
table shows the median rate and the latency percentiles over all measured requests, plus the
server's CPU time per request (from /proc), which is what caps the rate on a small machine.

Target: at least 0.9 of the latency limit at every concurrency.

    python benchmarks/serve.py [--concurrency 1 16 64] [--rounds 3] [--seconds 3] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import console, load_note, median, verdict, write_result
from rich.table import Table

TARGET_FRACTION = 0.9
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LM_SERVER = HERE / "_echo_server.py"
LOAD = HERE / "_serve_load.py"


def _first_line(proc: subprocess.Popen[str], pattern: str, timeout: float = 120.0) -> str:
    """The first stdout line of ``proc`` matching ``pattern`` (group 1)."""
    found: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            match = re.search(pattern, line)
            if match:
                found.append(match.group(1))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found:
        proc.kill()
        raise RuntimeError(f"process {proc.args} did not start: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
    return found[0]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux); NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _load(url: str, concurrency: int, seconds: float, tag: str, harness_loop: str) -> dict[str, Any]:
    cmd = [sys.executable, str(LOAD), "--url", url, "--concurrency", str(concurrency), "--seconds", str(seconds), "--tag", tag,
           *(["--uvloop"] if harness_loop == "uvloop" else [])]  # fmt: skip
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its direct children (the worker processes of ``--workers``)."""
    total = _cpu_seconds(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                total += _cpu_seconds(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return total


def _measure(url: str, pid: int, workers: int, c: int, args: argparse.Namespace) -> dict[str, Any]:
    limit = c / args.latency
    with console.status(f"{workers} worker(s), {c} clients: warm-up, then {args.rounds} x {args.seconds:g} s"):
        _load(url, max(c, 16 * workers), 1.0, f"warm{workers}-{c}", args.harness_loop)  # enough connections to reach (and warm) every worker
        runs = []
        for r in range(args.rounds):
            cpu = _tree_cpu(pid)
            run = _load(url, c, args.seconds, f"w{workers}c{c}r{r}", args.harness_loop)
            run["server_cpu_s"] = _tree_cpu(pid) - cpu
            runs.append(run)
    latencies = [x for run in runs for x in run.pop("latencies_ms")]
    rates = [run["requests"] / run["wall_s"] for run in runs]
    requests = sum(run["requests"] for run in runs)
    rps = median(rates)
    row = {
        "workers": workers, "concurrency": c, "limit_rps": limit, "rps": rps, "fraction_of_limit": rps / limit,
        "p50_ms": _percentile(latencies, 0.50), "p99_ms": _percentile(latencies, 0.99), "requests": requests,
        "errors": sum(run["errors"] for run in runs), "mismatches": sum(run["mismatches"] for run in runs),
        "server_cpu_ms_per_request": 1000 * sum(run["server_cpu_s"] for run in runs) / max(1, requests),
        "client_cpu_ms_per_request": 1000 * sum(run["client_cpu_s"] for run in runs) / max(1, requests),
        "runs": runs,
    }  # fmt: skip
    row["target_met"] = row["fraction_of_limit"] >= TARGET_FRACTION
    console.print(f"workers={workers} c={c}: {rps:.0f} req/s ({row['fraction_of_limit']:.2f} of limit), p50 {row['p50_ms']:.1f} ms, "
                  f"p99 {row['p99_ms']:.1f} ms, server CPU {row['server_cpu_ms_per_request']:.2f} ms/req")  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="`oobleck serve --workers` settings to measure")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one measured run")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--harness-loop", choices=["uvloop", "asyncio"], default="uvloop",
                        help="event loop of the load generator (it shares the cores with the server)")  # fmt: skip
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OOBLECK_CACHE": "0", "HF_HUB_OFFLINE": "1"}
    lm_server = subprocess.Popen([sys.executable, str(LM_SERVER), "--latency", str(args.latency)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    rows: list[dict[str, Any]] = []
    try:
        lm_url = _first_line(lm_server, r"^(http://\S+)")
        with tempfile.TemporaryDirectory() as tmp:
            sys.path.insert(0, str(ROOT))
            import oobleck as ob

            artifact = Path(tmp) / "echo.oobleck"
            ob.Predict("question -> answer", lm=ob.LM("openai/test", base_url=lm_url + "/v1")).save(artifact)
            for workers in args.workers:
                command = [sys.executable, "-m", "oobleck.cli", "serve", str(artifact), "--port", "0", "--log-level", "warning",
                           "--workers", str(workers)]  # fmt: skip
                serve = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                try:
                    base = _first_line(serve, r"at (http://\S+)")
                    _wait_healthy(base)
                    for c in args.concurrency:
                        rows.append(_measure(base + "/programs/echo", serve.pid, workers, c, args))
                finally:
                    _stop(serve)
    finally:
        _stop(lm_server)

    title = f"oobleck serve vs a {args.latency * 1000:.0f} ms LM server (median of {args.rounds} runs of {args.seconds:g} s; {os.cpu_count()} CPUs)"
    table = Table(title=title)
    for column in ("workers", "clients", "limit req/s", "req/s", "req/s / limit", "p50 ms", "p99 ms", "server CPU ms/req", "errors",
                   f"target ≥ {TARGET_FRACTION}"):  # fmt: skip
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["workers"]), str(row["concurrency"]), f"{row['limit_rps']:.0f}", f"{row['rps']:.1f}",
                      f"{row['fraction_of_limit']:.2f}", f"{row['p50_ms']:.1f}", f"{row['p99_ms']:.1f}",
                      f"{row['server_cpu_ms_per_request']:.2f}", str(row["errors"] + row["mismatches"]), verdict(row["target_met"]))  # fmt: skip
    clean = all(r["errors"] == 0 and r["mismatches"] == 0 for r in rows)
    table.caption = "every response answered its own request" if clean else "[red]errors or mismatched responses[/red]"
    console.print(table)
    note = load_note()
    if note:
        console.print(f"[dim]{note}[/dim]")
    best = {c: max(r["fraction_of_limit"] for r in rows if r["concurrency"] == c) for c in args.concurrency}
    path = write_result("serve", {
        "target": f">= {TARGET_FRACTION} of the latency limit (clients / latency) at every concurrency",
        "latency_s": args.latency, "rounds": args.rounds, "seconds": args.seconds, "harness_loop": args.harness_loop, "rows": rows,
        "best_fraction_by_concurrency": best, "target_met": all(v >= TARGET_FRACTION for v in best.values()), "all_runs_clean": clean,
    })  # fmt: skip
    console.print(f"[dim]wrote {path}[/dim]")


def _wait_healthy(base: str, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the server at {base} did not become healthy")


if __name__ == "__main__":
    main()
