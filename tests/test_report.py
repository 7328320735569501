"""The end-of-compile report: report.html, history.png and report.json in an artifact folder."""

from __future__ import annotations

import base64
import json
import os
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from oobleck.errors import ArtifactError, DataError
from oobleck.evaluate import paired_bootstrap
from oobleck.lm.budget import Budget, Spend
from oobleck.optimizers import report as report_module
from oobleck.optimizers.report import HISTORY_SIZE, CompileReport, print_summary, write_report

EVIL = "<script>alert('pwned')</script>"


def _trials() -> list[dict[str, Any]]:
    states = ["complete", "pruned", "fail", "complete", "complete", "pruned"]  # "fail": optuna's TrialState name, lowered
    scores = [0.40, 0.30, None, 0.55, 0.50, 0.20]
    return [
        {"number": i, "state": state, "score": score, "full_score": 0.6 if i == 3 else None, "calls": 12, "tokens": 900,
         "cost": 0.0, "seconds": 0.5, "label": f"trial {i} {EVIL}" if i == 3 else f"trial {i}", "params": {"instruction": i % 3}}
        for i, (state, score) in enumerate(zip(states, scores))
    ]  # fmt: skip


def _report(heldout: Any = None, **changes: Any) -> CompileReport:
    fields: dict[str, Any] = {
        "optimizer": "bayesian",
        "metric": "exact_match",
        "seed": 7,
        "settings": {"num_trials": 6, "note": EVIL},
        "trials": _trials(),
        "candidates": [
            {"label": "baseline", "score": 0.4, "instructions": "Answer the question.", "demos": 0},
            {"label": "instr-2+demos-1", "score": 0.6, "instructions": f"Think, then answer. {EVIL}", "demos": 3},
        ],
        "spend": {"calls": 72, "billed_calls": 40, "tokens": 5400, "cost": 0.0},
        "budget": {"max_lm_calls": 100},
        "heldout": heldout,
    }
    fields.update(changes)
    return CompileReport(**fields)


SIGNIFICANT = paired_bootstrap([1.0] * 30 + [0.0] * 70, [1.0] * 90 + [0.0] * 10, resamples=2_000)
NOT_SIGNIFICANT = paired_bootstrap([1.0, 0.0] * 20, [0.0, 1.0] * 10 + [1.0, 0.0] * 10, resamples=2_000)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    folder = tmp_path_factory.mktemp("artifact") / "compiled"  # not there yet: write_report makes it
    return folder, write_report(_report(SIGNIFICANT), folder)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_write_report_writes_three_files_and_nothing_else(written: tuple[Path, list[Path]]) -> None:
    folder, paths = written
    assert [p.name for p in paths] == ["history.png", "report.html", "report.json"]
    assert sorted(p.name for p in folder.iterdir()) == ["history.png", "report.html", "report.json"]  # no temp files left
    assert all(p.stat().st_size > 0 and os.access(p, os.R_OK) for p in paths)


def test_history_png_is_a_valid_png_of_the_documented_size(written: tuple[Path, list[Path]]) -> None:
    folder, _ = written
    data = (folder / "history.png").read_bytes()
    assert _png_size(data) == HISTORY_SIZE == (960, 540)
    assert data.endswith(b"IEND\xaeB`\x82")


def test_html_is_self_contained_and_embeds_the_same_png(written: tuple[Path, list[Path]]) -> None:
    folder, _ = written
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<style>" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing fetched from a network
    embedded = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert embedded is not None
    assert base64.b64decode(embedded.group(1)) == (folder / "history.png").read_bytes()


def test_html_escapes_every_user_text(written: tuple[Path, list[Path]]) -> None:
    folder, _ = written
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    escaped = "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;"
    assert f"Think, then answer. {escaped}" in page  # candidate instructions
    assert f"trial 3 {escaped}" in page  # trial label
    assert escaped in page.split("setting: note")[1]  # settings


def test_html_headline_tables_and_spend(written: tuple[Path, list[Path]]) -> None:
    folder, _ = written
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert "Held-out score: 30.0% &rarr; <b>90.0%</b>" in page
    assert SIGNIFICANT.describe() in page and SIGNIFICANT.describe().endswith(": significant")
    assert "not significant" not in page and "budget cap" not in page
    assert "72 of 100 (40 billed, the rest from the cache)" in page
    assert page.count('<tr class="pruned">') == 2 and page.count('<tr class="failed">') == 1
    assert "instr-2+demos-1" in page


def test_report_json_holds_the_same_normalised_data(written: tuple[Path, list[Path]]) -> None:
    folder, _ = written
    data = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert data["format"] == "oobleck-compile-report" and data["optimizer"] == "bayesian" and data["seed"] == 7
    assert [t["state"] for t in data["trials"]] == ["complete", "pruned", "failed", "complete", "complete", "pruned"]
    # best so far was not given: derived from complete trials, by full-set score where there is one
    assert [t["best_so_far"] for t in data["trials"]] == [0.4, 0.4, 0.4, 0.6, 0.6, 0.6]
    assert data["heldout"]["significant"] is True and data["heldout"]["n"] == 100
    assert data["budget"] == {"max_lm_calls": 100, "max_tokens": None, "max_cost": None}
    assert data["candidates"][1]["instructions"] == f"Think, then answer. {EVIL}"  # JSON keeps the text as it was
    assert CompileReport.from_dict(data).to_dict() == data


def test_not_significant_gain_and_budget_cap_get_a_clear_note(tmp_path: Path) -> None:
    report = _report(NOT_SIGNIFICANT.to_dict(), stopped_at_cap=True, stop_reason="budget reached: max_lm_calls 100 <cap>")
    write_report(report, tmp_path)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert not NOT_SIGNIFICANT.significant
    assert "<b>The gain is not significant:</b>" in page
    assert NOT_SIGNIFICANT.describe() in page and "the interval includes 0" in page
    assert "<b>The compile stopped at a budget cap:</b> budget reached: max_lm_calls 100 &lt;cap&gt;." in page
    assert json.loads((tmp_path / "report.json").read_text())["stopped_at_cap"] is True


def test_a_report_without_heldout_or_trials_still_renders(tmp_path: Path) -> None:
    write_report(CompileReport(optimizer="knn"), tmp_path)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "No held-out comparison was run." in page and "No trials were run." in page and "No candidates were recorded." in page
    assert _png_size((tmp_path / "history.png").read_bytes()) == HISTORY_SIZE


def test_spend_and_budget_objects_are_accepted(tmp_path: Path) -> None:
    spend = Spend(calls=10, prompt_tokens=300, completion_tokens=50, cost=0.25, billed_calls=4)
    write_report(_report(spend=spend, budget=Budget(max_lm_calls=10, max_cost=1.0)), tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert (data["spend"]["calls"], data["spend"]["tokens"], data["spend"]["cost"]) == (10, 350, 0.25)
    assert data["budget"] == {"max_lm_calls": 10, "max_tokens": None, "max_cost": 1.0}
    assert "$0.2500 of $1.0000" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_same_report_gives_identical_files(tmp_path: Path) -> None:
    first = [p.read_bytes() for p in write_report(_report(SIGNIFICANT), tmp_path / "a")]
    second = [p.read_bytes() for p in write_report(_report(SIGNIFICANT), tmp_path / "b")]
    assert first == second


def test_a_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_report(_report(SIGNIFICANT), tmp_path)
    before = (tmp_path / "report.json").read_bytes()

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(report_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_report(_report(NOT_SIGNIFICANT), tmp_path)
    assert (tmp_path / "report.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.png", "report.html", "report.json"]  # temp file removed


def test_an_unknown_trial_state_is_a_data_error() -> None:
    with pytest.raises(DataError, match="trial record 0 has state 'exploded'"):
        CompileReport(optimizer="x", trials=[{"number": 0, "state": "exploded"}]).to_dict()
    with pytest.raises(DataError, match="trial record 0 score must be a number"):
        CompileReport(optimizer="x", trials=[{"number": 0, "state": "complete", "score": "high"}]).to_dict()


def test_print_summary_shows_candidates_and_the_before_after_line() -> None:
    console = Console(record=True, width=160, color_system=None)
    report = _report(
        SIGNIFICANT, candidates=[{"label": "[bold]mine[/bold]", "score": 0.6, "instructions": "Use [red]care[/red].", "demos": 2}]
    )
    print_summary(report, console)
    text = console.export_text()
    assert "[bold]mine[/bold]" in text and "Use [red]care[/red]." in text  # shown as written, not read as markup
    assert "60.0%" in text
    assert f"held-out: 30.0% -> 90.0%, {SIGNIFICANT.describe()}" in text
    assert "spent: 72 LM calls, 5,400 tokens, $0.0000" in text
    assert "budget cap" not in text


def test_print_summary_says_when_it_stopped_at_a_cap_without_heldout() -> None:
    console = Console(record=True, width=160, color_system=None)
    print_summary(_report(None, stopped_at_cap=True, stop_reason="max_lm_calls 100 (100 made)"), console)
    text = console.export_text()
    assert "held-out: no comparison was run" in text
    assert "stopped at a budget cap: max_lm_calls 100 (100 made); kept the best so far" in text


def test_nan_scores_count_as_missing_and_a_file_is_not_a_folder(tmp_path: Path) -> None:
    trials = [{"number": 0, "state": "complete", "score": float("nan")}, {"number": 1, "state": "complete", "score": 0.5}]
    data = CompileReport(optimizer="x", trials=trials).to_dict()
    assert [t["score"] for t in data["trials"]] == [None, 0.5]
    assert [t["best_so_far"] for t in data["trials"]] == [None, 0.5]
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ArtifactError, match="it is a file, not a folder"):
        write_report(CompileReport(optimizer="x"), tmp_path / "file")
