"""Shared helpers for the oobleck-vs-DSPy benchmarks (not a benchmark itself: ``run_all`` skips ``_*.py``).

Every benchmark prints a rich table and writes ``benchmarks/results/<name>.json`` with the
measurements plus enough about the machine to judge them (CPU count, load average, versions).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console

RESULTS = Path(__file__).resolve().parent / "results"
# Wide enough for the tables when the output is a file or a pipe (rich assumes 80 columns there).
console = Console(width=None if sys.stdout.isatty() else 140)


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """The machine and package versions, recorded next to every measurement."""
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_1_5_15": load,
        "oobleck": version("oobleck"),
        "dspy": version("dspy"),
        "openai": version("openai"),
        "litellm": version("litellm"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``results/<name>.json`` (measurements plus environment) and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"benchmark": name, "environment": environment(), **payload}
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def verdict(ok: bool) -> str:
    return "[green]met[/green]" if ok else "[red]missed[/red]"


def load_note() -> str:
    """A warning line when the machine is busy, since timings are then noisy."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return ""
    cpus = os.cpu_count() or 1
    if load > 0.5 * cpus:
        return f"note: 1-min load average {load:.1f} on {cpus} CPUs; absolute times are noisy, compare the ratios (measured interleaved)"
    return ""
