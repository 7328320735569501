"""Import time: ``import oobleck`` vs ``import dspy``, each in a fresh interpreter.

What it measures, per run, in a new subprocess of this same Python (so nothing is already
imported and the OS file cache is the only thing shared between runs):

* ``import``: the time the import statement itself takes, timed inside the subprocess with
  ``perf_counter`` around ``import <package>`` (interpreter start-up excluded). This is the
  number the target applies to.
* ``process``: the subprocess's whole wall time (start-up, import, exit) minus the median wall
  time of a bare ``python -c pass``, i.e. what the import adds to a CLI invocation.

Runs are interleaved (oobleck, dspy, baseline, then the next repetition, the order rotating)
so background load affects all alike; figures are medians over ``--repeat`` runs (default 7).
One extra ``-X importtime`` run of oobleck lists the modules that cost the most.

Target: ``import oobleck`` under 150 ms.

    python benchmarks/import_time.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any

from _common import console, load_note, median, verdict, write_result
from rich.table import Table

TARGET_MS = 150.0
PACKAGES = ("oobleck", "dspy")
_TIMED = "import time; t = time.perf_counter(); import {name}; print(time.perf_counter() - t)"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    env["PYTHONWARNINGS"] = "ignore"  # keep DeprecationWarnings some packages emit at import out of stderr
    return env


def timed_import(name: str | None) -> tuple[float, float]:
    """(seconds inside the import statement, seconds of subprocess wall time); name None: bare start-up."""
    code = "pass" if name is None else _TIMED.format(name=name)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=False)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"importing {name} failed:\n{out.stderr[-2000:]}")
    inner = float(out.stdout.strip().splitlines()[-1]) if name is not None else 0.0
    return inner, wall


def heaviest_modules(name: str, top: int = 8) -> dict[str, list[dict[str, Any]]]:
    """Where ``import name`` spends its time, from one ``-X importtime`` run.

    ``children``: the package's direct imports by cumulative time; ``external``: modules from
    outside the package that the package's own modules import, by cumulative time.
    """
    command = [sys.executable, "-X", "importtime", "-c", f"import {name}"]
    out = subprocess.run(command, capture_output=True, text=True, env=_env(), check=False)
    rows = []  # post-order: children are printed before their parent
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:") :].split("|")
        try:
            own, cumulative = int(parts[0]), int(parts[1])
        except ValueError:
            continue
        module = parts[2].rstrip()
        depth = (len(module) - len(module.lstrip()) - 1) // 2
        rows.append({"module": module.strip(), "depth": depth, "own_ms": own / 1000, "cumulative_ms": cumulative / 1000})
    root = next((i for i, r in enumerate(rows) if r["module"] == name and r["depth"] == 0), None)
    if root is None:
        return {"children": [], "external": []}
    first = root
    while first > 0 and rows[first - 1]["depth"] > 0:
        first -= 1
    subtree = rows[first:root]
    for i, row in enumerate(subtree):  # the parent is the next row one level up
        row["parent"] = next((r["module"] for r in subtree[i + 1 :] if r["depth"] == row["depth"] - 1), name)

    def mine(module: str) -> bool:
        return module == name or module.startswith(name + ".")

    children = sorted((r for r in subtree if r["depth"] == 1), key=lambda r: r["cumulative_ms"], reverse=True)
    external = sorted((r for r in subtree if not mine(r["module"]) and mine(r["parent"])), key=lambda r: r["cumulative_ms"], reverse=True)
    return {"total_ms": rows[root]["cumulative_ms"], "children": children[:top], "external": external[:top]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    contenders: list[str | None] = [*PACKAGES, None]
    for name in PACKAGES:  # warm the OS file cache and the .pyc files once, unmeasured
        timed_import(name)
    inner: dict[str | None, list[float]] = {c: [] for c in contenders}
    wall: dict[str | None, list[float]] = {c: [] for c in contenders}
    with console.status("timing imports"):
        for r in range(args.repeat):
            shift = r % len(contenders)
            for name in contenders[shift:] + contenders[:shift]:
                i, w = timed_import(name)
                inner[name].append(i * 1000)
                wall[name].append(w * 1000)

    baseline = median(wall[None])
    results = {}
    for name in PACKAGES:
        results[name] = {
            "import_ms": median(inner[name]),
            "import_ms_min": min(inner[name]),
            "process_ms_over_baseline": median(wall[name]) - baseline,
            "runs_import_ms": inner[name],
            "runs_wall_ms": wall[name],
        }
    ratio = results["oobleck"]["import_ms"] / results["dspy"]["import_ms"]
    ok = results["oobleck"]["import_ms"] < TARGET_MS

    table = Table(title=f"Import time, fresh interpreter, median of {args.repeat} interleaved runs")
    table.add_column("package")
    table.add_column("import ms (median)", justify="right")
    table.add_column("import ms (min)", justify="right")
    table.add_column("process ms over bare python", justify="right")
    table.add_column(f"target < {TARGET_MS:.0f} ms", justify="center")
    for name in PACKAGES:
        res = results[name]
        table.add_row(name, f"{res['import_ms']:.1f}", f"{res['import_ms_min']:.1f}", f"{res['process_ms_over_baseline']:.1f}",
                      verdict(ok) if name == "oobleck" else "")  # fmt: skip
    table.caption = f"oobleck / dspy = {ratio:.3f} ({1 / ratio:.1f}x faster); bare `python -c pass`: {baseline:.1f} ms"
    console.print(table)

    heavy = heaviest_modules("oobleck")
    detail = Table(title=f"Where `import oobleck` spends its time (one -X importtime run, {heavy.get('total_ms', 0):.1f} ms there)")
    detail.add_column("direct import of oobleck")
    detail.add_column("cumulative ms", justify="right")
    detail.add_column("outside module imported by oobleck code")
    detail.add_column("cumulative ms", justify="right")
    for i in range(max(len(heavy["children"]), len(heavy["external"]))):
        a = heavy["children"][i] if i < len(heavy["children"]) else None
        b = heavy["external"][i] if i < len(heavy["external"]) else None
        detail.add_row(a["module"] if a else "", f"{a['cumulative_ms']:.1f}" if a else "",
                       f"{b['module']} (from {b['parent']})" if b else "", f"{b['cumulative_ms']:.1f}" if b else "")  # fmt: skip
    console.print(detail)
    note = load_note()
    if note:
        console.print(f"[dim]{note}[/dim]")

    path = write_result("import_time", {
        "target": f"import oobleck < {TARGET_MS} ms",
        "repeat": args.repeat,
        "baseline_python_ms": baseline,
        "results": results,
        "ratio_oobleck_over_dspy": ratio,
        "target_met": ok,
        "oobleck_heaviest_imports": heavy,
    })  # fmt: skip
    console.print(f"[dim]wrote {path}[/dim]")


if __name__ == "__main__":
    main()
