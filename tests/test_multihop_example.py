"""The multi-hop example end to end: compile, compare, save, and reload in a fresh process with the same predictions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_multihop_example_compiles_saves_and_reloads_in_a_fresh_process(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "multihop" / "run.py"), "all", "--out", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    before, after = results["uncompiled"], results["compiled"]
    assert after["answer_em"] >= before["answer_em"] + 0.5 and after["all_gold_retrieved"] > before["all_gold_retrieved"]
    assert results["demos"]["generate_query.1"] == 3
    assert results["fresh_process_same_predictions"] is True
    fresh = json.loads((tmp_path / "predictions_fresh.json").read_text())
    assert fresh == json.loads((tmp_path / "predictions.json").read_text()) and len(fresh) == results["test_questions"]
    manifest = json.loads((tmp_path / "multihop.oobleck" / "program.json").read_text())
    assert manifest["program"]["retrievers"]["retrieve"]["retriever"]["kind"] == "bm25"
