"""End to end through the ``oobleck`` command, in subprocesses, on the bundled demo model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROGRAM = '''
import oobleck as ob

class Upper(ob.Signature):
    word: str = ob.InputField()
    answer: str = ob.OutputField()

program = ob.Predict(Upper)

def letters_metric(example, prediction, trace=None):
    return prediction.answer == example.answer
'''


def oobleck(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oobleck.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from oobleck.tiny.tasks import task_examples

    folder = tmp_path_factory.mktemp("cli")
    (folder / "program.py").write_text(PROGRAM)
    rows = task_examples("uppercase", 60, seed=21)
    for name, part in (("train", rows[:20]), ("dev", rows[20:40]), ("test", rows[40:])):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return folder


@pytest.fixture(scope="module")
def compiled(workdir: Path) -> Path:
    result = oobleck(
        "compile", "program.py:program", "--train", "train.jsonl", "--dev", "dev.jsonl", "--test", "test.jsonl",
        "--lm", "hf/oobleck-tiny", "--optimizer", "bootstrap", "--max-demos", "3", "--metric", "program.py:letters_metric",
        "--out", "upper.oobleck", cwd=workdir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "before" in result.stdout and "after" in result.stdout
    return workdir / "upper.oobleck"


def test_compile_writes_an_artifact_with_scores(compiled: Path) -> None:
    document = json.loads((compiled / "program.json").read_text())
    scores = document["provenance"]["scores"]
    assert {"dev_before", "dev_after", "test_before", "test_after"} <= set(scores)
    assert scores["test_after"] > scores["test_before"]
    assert document["provenance"]["optimizer"] == "BootstrapFewShot"
    assert len(document["program"]["predictors"]["self"]["demos"]) == 3


def test_run_evaluate_and_inspect(compiled: Path, workdir: Path) -> None:
    run = oobleck("run", str(compiled), "--input", "word=stone", "--json", cwd=workdir)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"answer": "STONE"}
    evaluated = oobleck("evaluate", str(compiled), "--data", "test.jsonl", "--json", cwd=workdir)
    assert evaluated.returncode == 0, evaluated.stderr
    summary = json.loads(evaluated.stdout)
    document = json.loads((compiled / "program.json").read_text())
    assert summary["n"] == 20 and summary["score"] == pytest.approx(document["provenance"]["scores"]["test_after"])
    inspected = oobleck("inspect", str(compiled), cwd=workdir)
    assert inspected.returncode == 0, inspected.stderr
    assert "BootstrapFewShot" in inspected.stdout and "demos: 3" in inspected.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.oobleck", "--input", "word=x"], "no artifact at missing.oobleck"),
        (["run", "gone[serve].oobleck", "--input", "word=x"], "no artifact at gone[serve].oobleck"),  # not read as markup
        (["compile", "program.py:nothing", "--train", "train.jsonl", "--lm", "hf/oobleck-tiny", "--out", "x.oobleck"], "has no 'nothing'"),
        (["compile", "program.py:program", "--train", "nope.csv", "--lm", "hf/oobleck-tiny", "--out", "x.oobleck"], "does not exist"),
        (["compile", "program.py:program", "--train", "train.jsonl", "--lm", "bogus/model", "--out", "x.oobleck"], "unknown LM provider"),
        (["compile", "program.py:program", "--train", "train.jsonl", "--metric", "nope", "--lm", "hf/oobleck-tiny", "--out", "x.oobleck"], "unknown metric"),
        (["compile", "program.py:program", "--train", "train.jsonl", "--inputs", "text", "--lm", "hf/oobleck-tiny", "--out", "x.oobleck"], "no column"),
    ],
)
def test_user_errors_exit_2_with_a_message_and_no_traceback(workdir: Path, args: list[str], message: str) -> None:
    result = oobleck(*args, cwd=workdir)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_inspect_shows_bracketed_text_as_written(compiled: Path, workdir: Path) -> None:
    """Instructions and demos are user and LM text: "[...]" in them is printed, not read as rich markup."""
    copy = workdir / "brackets.oobleck"
    shutil.copytree(compiled, copy)
    document = json.loads((copy / "program.json").read_text())
    predictor = document["program"]["predictors"]["self"]
    predictor["signature"]["instructions"] = "Answer [yes] or [no], in [bold]capitals[/bold]."
    predictor["demos"][0]["answer"] = "[red]STONE[/]"
    (copy / "program.json").write_text(json.dumps(document))
    inspected = oobleck("inspect", str(copy), cwd=workdir)
    assert inspected.returncode == 0, inspected.stderr
    assert "Answer [yes] or [no], in [bold]capitals[/bold]." in inspected.stdout
    assert "[red]STONE[/]" in inspected.stdout


def test_bad_artifact_is_a_clear_error(workdir: Path) -> None:
    broken = workdir / "broken.oobleck"
    broken.mkdir()
    (broken / "program.json").write_text('{"format": "oobleck.program", "schema_version": 1, "program": {"predic')
    result = oobleck("inspect", str(broken), cwd=workdir)
    assert result.returncode == 2
    assert "not valid JSON" in result.stderr and "Traceback" not in result.stderr


def _compile(workdir: Path, out: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return oobleck(
        "compile", "program.py:program", "--train", "train.jsonl", "--dev", "dev.jsonl", "--test", "test.jsonl",
        "--lm", "hf/oobleck-tiny", "--metric", "program.py:letters_metric", "--max-demos", "3", "--out", out, *extra, cwd=workdir,
    )  # fmt: skip


def test_bayesian_dry_run_budget_report_and_resume(workdir: Path) -> None:
    dry = _compile(workdir, "bayes.oobleck", "--optimizer", "bayesian", "--trials", "4", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    estimate = json.loads(dry.stdout[dry.stdout.index("{") :])
    assert estimate["calls"] > 0 and not (workdir / "bayes.oobleck").exists()
    cap = estimate["calls"] // 2
    capped = _compile(workdir, "bayes.oobleck", "--optimizer", "bayesian", "--trials", "4", "--budget-calls", str(cap))
    assert capped.returncode == 0, capped.stderr
    assert "budget" in capped.stderr and "LM calls" in capped.stderr  # the live line and the stop note
    document = json.loads((workdir / "bayes.oobleck" / "program.json").read_text())
    provenance = document["provenance"]
    assert provenance["spend"]["calls"] <= cap and "max_lm_calls" in provenance["stopped"]
    assert {"low", "high", "gain"} <= set(provenance["heldout"])
    for name in ("report.html", "history.png", "report.json"):
        assert (workdir / "bayes.oobleck" / name).is_file()
    assert (workdir / "bayes.oobleck.study.db").is_file()
    first = json.loads((workdir / "bayes.oobleck" / "report.json").read_text())
    again = _compile(workdir, "bayes.oobleck", "--optimizer", "bayesian", "--trials", "4", "--budget-calls", str(cap))
    assert again.returncode == 0, again.stderr
    report = json.loads((workdir / "bayes.oobleck" / "report.json").read_text())
    # Replayed from the study and the LM cache: at most the calls in flight when the cap hit reach the model again.
    assert report["spend"]["billed_calls"] <= 8 < first["spend"]["billed_calls"]
    assert report["spend"]["calls"] == provenance["spend"]["calls"]
    assert json.loads((workdir / "bayes.oobleck" / "program.json").read_text())["program"] == document["program"]


def test_ensemble_compiles_saves_and_runs(workdir: Path) -> None:
    result = _compile(workdir, "ensemble.oobleck", "--optimizer", "ensemble", "--num-candidates", "3")
    assert result.returncode == 0, result.stderr
    document = json.loads((workdir / "ensemble.oobleck" / "program.json").read_text())
    assert document["program"]["ensemble"]["reducer"] == "majority_vote"
    assert len(document["program"]["predictors"]) == 3
    run = oobleck("run", "ensemble.oobleck", "--input", "word=stone", "--json", cwd=workdir)
    assert run.returncode == 0, run.stderr
    assert set(json.loads(run.stdout)) == {"answer"}


def test_soft_prompt_from_the_command_line_and_the_fallback_record(workdir: Path) -> None:
    result = _compile(workdir, "soft.oobleck", "--optimizer", "soft", "--soft-steps", "12")
    assert result.returncode == 0, result.stderr
    document = json.loads((workdir / "soft.oobleck" / "program.json").read_text())
    entry = document["program"]["predictors"]["self"]["soft_prompt"]
    assert entry["method"] == "prompt_tuning" and (workdir / "soft.oobleck" / entry["file"]).is_file()
    assert (workdir / "soft.oobleck.softprompt").is_dir()  # checkpoints for a resumed run
    run = oobleck("run", "soft.oobleck", "--input", "word=stone", "--json", cwd=workdir)
    assert run.returncode == 0, run.stderr
    assert set(json.loads(run.stdout)) == {"answer"}

    fallback = _compile(workdir, "fallback.oobleck", "--optimizer", "labeled", "--fallback", "soft", "--target", "0.99", "--soft-steps", "6")
    assert fallback.returncode == 0, fallback.stderr
    document = json.loads((workdir / "fallback.oobleck" / "program.json").read_text())
    record = document["provenance"]["fallback"]
    assert record["ran"] is True and "below the target 0.99" in record["why"]
    kept_discrete = "kept" in record  # the soft prompt is saved only when it beat the discrete result on dev
    assert kept_discrete == (record["soft_dev"] <= record["discrete_dev"])
    assert ("soft_prompt" in document["program"]["predictors"]["self"]) is not kept_discrete

    refused = _compile(workdir, "x.oobleck", "--optimizer", "soft", "--fallback", "soft")
    assert refused.returncode == 2 and "follows a discrete optimizer" in refused.stderr and "Traceback" not in refused.stderr
