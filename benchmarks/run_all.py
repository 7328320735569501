"""Run every benchmark in ``benchmarks/`` in turn (``make bench``).

A benchmark is any ``benchmarks/*.py`` except this file and private helpers (``_*.py``). Each
runs in its own interpreter, the one running this script, so one benchmark's imports and
threads never affect another's numbers; each prints its table and writes
``benchmarks/results/<name>.json``. Extra arguments select benchmarks by name
(``python benchmarks/run_all.py overhead import_time``). The exit status is non-zero if any
benchmark crashed; a missed target is reported in its table and JSON, not as a failure.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover() -> list[Path]:
    return sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))


def main(argv: list[str]) -> int:
    scripts = discover()
    if argv:
        unknown = sorted(set(argv) - {p.stem for p in scripts})
        if unknown:
            print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(p.stem for p in scripts)}", file=sys.stderr)
            return 2
        scripts = [p for p in scripts if p.stem in argv]
    failed = []
    for script in scripts:
        print(f"\n=== {script.stem} ===", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"--- {script.stem}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.perf_counter() - start:.0f} s", flush=True)
        if code != 0:
            failed.append(script.stem)
    results = HERE / "results"
    print(f"\nresults in {results}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
