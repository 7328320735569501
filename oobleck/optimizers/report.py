"""The end-of-compile report: ``report.html``, ``history.png`` and ``report.json`` in an artifact folder.

A compile's score alone hides what matters for trusting it: how the search went (did the best
score come early and plateau, or was it still climbing when the budget ran out?), what it cost,
which candidates it weighed, and whether the held-out gain is more than noise. The report
shows all of that. The HTML file is self-contained (inline CSS, the chart embedded as a PNG,
no script, nothing fetched) so it can be opened from a CI artifact or mailed as it is; every
text that came from users or LMs (labels, instructions, settings) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oobleck._json import to_jsonable
from oobleck._version import __version__
from oobleck.errors import ArtifactError, DataError
from oobleck.evaluate.significance import GainInterval

__all__ = ["HISTORY_PNG", "REPORT_HTML", "REPORT_JSON", "CompileReport", "print_summary", "write_report"]

logger = logging.getLogger("oobleck.optimizers.report")

REPORT_HTML = "report.html"
HISTORY_PNG = "history.png"
REPORT_JSON = "report.json"
REPORT_FORMAT = "oobleck-compile-report"
REPORT_VERSION = 1

# history.png is HISTORY_SIZE pixels: the figure size in inches times HISTORY_DPI.
HISTORY_DPI = 100
HISTORY_SIZE = (960, 540)

TRIAL_STATES = ("complete", "pruned", "failed")
_STATE_ALIASES = {"fail": "failed", "completed": "complete", "prune": "pruned"}  # optuna's TrialState names, lowered
_SHORT = 240  # characters of instructions shown in a table cell


@dataclass
class CompileReport:
    """Everything the report shows, as JSON-ready data.

    ``trials`` holds one dict per trial: ``number``, ``state`` (``complete``, ``pruned`` or
    ``failed``), ``score``, ``full_score``, ``best_so_far`` (derived from the scores when no
    trial gives it), ``calls``, ``tokens``, ``cost``, ``seconds``, ``label``, ``params``.
    ``candidates`` rows hold ``label``, ``score``, ``instructions`` (text, or a dict by
    predictor name) and ``demos`` (a count). ``spend`` has ``calls``, ``billed_calls``,
    ``tokens`` and ``cost``; ``budget`` the caps (``max_lm_calls``, ``max_tokens``,
    ``max_cost``, None for no cap). ``heldout`` is a ``GainInterval`` (or its ``to_dict``).
    Scores are fractions in [0, 1], shown as percentages.
    """

    optimizer: str
    metric: str = ""
    seed: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    trials: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    spend: dict[str, Any] = field(default_factory=dict)  # or a Spend
    budget: dict[str, Any] = field(default_factory=dict)  # or a Budget
    stopped_at_cap: bool = False
    stop_reason: str | None = None
    heldout: GainInterval | dict[str, Any] | None = None

    def gain(self) -> GainInterval | None:
        """The held-out comparison as a ``GainInterval``, or None when none was run."""
        if self.heldout is None or isinstance(self.heldout, GainInterval):
            return self.heldout
        return GainInterval.from_dict(self.heldout)

    def to_dict(self) -> dict[str, Any]:
        """The report as ``report.json`` holds it: trials and candidates checked and completed."""
        gain = self.gain()
        return to_jsonable({
            "format": REPORT_FORMAT,
            "version": REPORT_VERSION,
            "oobleck_version": __version__,
            "optimizer": str(self.optimizer),
            "metric": str(self.metric),
            "seed": self.seed,
            "settings": dict(self.settings),
            "trials": _trials(self.trials),
            "candidates": [_candidate(i, c) for i, c in enumerate(self.candidates)],
            "spend": _spend(_plain(self.spend)),
            "budget": {"max_lm_calls": None, "max_tokens": None, "max_cost": None, **_plain(self.budget)},
            "stopped_at_cap": bool(self.stopped_at_cap),
            "stop_reason": self.stop_reason,
            "heldout": gain.to_dict() if gain is not None else None,
        })  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompileReport:
        """A report read back from ``report.json`` (to re-render it, say)."""
        if data.get("format") not in (None, REPORT_FORMAT):
            raise DataError(f"not an oobleck compile report: format is {data.get('format')!r}")
        return cls(
            optimizer=str(data.get("optimizer", "")), metric=str(data.get("metric", "")), seed=data.get("seed"),
            settings=dict(data.get("settings") or {}), trials=list(data.get("trials") or []),
            candidates=list(data.get("candidates") or []), spend=dict(data.get("spend") or {}),
            budget=dict(data.get("budget") or {}), stopped_at_cap=bool(data.get("stopped_at_cap", False)),
            stop_reason=data.get("stop_reason"), heldout=data.get("heldout"),
        )  # fmt: skip


def _plain(value: Any) -> dict[str, Any]:
    """A dict, or the ``to_dict()`` of a ``Spend`` or ``Budget``."""
    return dict(value.to_dict() if hasattr(value, "to_dict") else value or {})


def _number(value: Any, what: str, kind: type = float) -> Any:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{what} must be a number or None, not {value!r}") from None
    return kind(number) if math.isfinite(number) else None  # a NaN score is no score


def _trials(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, record in enumerate(records):
        where = f"trial record {i}"
        state = str(record.get("state", "complete")).lower()
        state = _STATE_ALIASES.get(state, state)
        if state not in TRIAL_STATES:
            raise DataError(f"{where} has state {record.get('state')!r}; expected one of {list(TRIAL_STATES)}")
        out.append({
            **record,
            "number": _number(record.get("number", i), f"{where} number", int),
            "state": state,
            "score": _number(record.get("score"), f"{where} score"),
            "full_score": _number(record.get("full_score"), f"{where} full_score"),
            "best_so_far": _number(record.get("best_so_far"), f"{where} best_so_far"),
            "calls": _number(record.get("calls", 0), f"{where} calls", int) or 0,
            "tokens": _number(record.get("tokens", 0), f"{where} tokens", int) or 0,
            "cost": _number(record.get("cost", 0.0), f"{where} cost") or 0.0,
            "seconds": _number(record.get("seconds", 0.0), f"{where} seconds") or 0.0,
            "label": str(record.get("label", "")),
            "params": dict(record.get("params") or {}),
        })  # fmt: skip
    if out and all(t["best_so_far"] is None for t in out):
        # Not given: the best complete trial so far, by its full-set score where it has one.
        best = None
        for trial in out:
            score = trial["full_score"] if trial["full_score"] is not None else trial["score"]
            if trial["state"] == "complete" and score is not None and (best is None or score > best):
                best = score
            trial["best_so_far"] = best
    return out


def _candidate(i: int, row: Mapping[str, Any]) -> dict[str, Any]:
    demos = row.get("demos", 0)
    if isinstance(demos, Mapping):  # Candidate.summary() gives demo counts by predictor
        demos = sum(int(v) for v in demos.values())
    elif isinstance(demos, (list, tuple)):
        demos = len(demos)
    return {
        **row,
        "label": str(row.get("label", row.get("source", f"candidate {i}"))),
        "score": _number(row.get("score"), f"candidate {i} score"),
        "instructions": row.get("instructions", ""),
        "demos": _number(demos, f"candidate {i} demos", int) or 0,
    }


def _spend(spend: Mapping[str, Any]) -> dict[str, Any]:
    tokens = spend.get("tokens")
    if tokens is None and ("prompt_tokens" in spend or "completion_tokens" in spend):  # Spend.to_dict() spelling
        tokens = int(spend.get("prompt_tokens", 0)) + int(spend.get("completion_tokens", 0))
    return {**spend, "calls": spend.get("calls"), "billed_calls": spend.get("billed_calls"), "tokens": tokens, "cost": spend.get("cost")}


# ---------------------------------------------------------------------------------------------
# Writing


def write_report(report: CompileReport, folder: str | os.PathLike[str]) -> list[Path]:
    """Write ``history.png``, ``report.html`` and ``report.json`` into ``folder``; their paths.

    Each file is written to a temporary file beside it and moved into place, so a crash leaves
    either the old file or the new one, never half of one.
    """
    target = Path(folder)
    if target.exists() and not target.is_dir():
        raise ArtifactError(f"cannot write the compile report into {target}: it is a file, not a folder")
    target.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    png = history_png(data)
    html_text = render_html(data, png)
    try:
        json_bytes = (json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (from a "\ud800" escape) only survive as JSON escapes
        json_bytes = (json.dumps(data, indent=2, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")
    written = [
        _write_atomic(target / HISTORY_PNG, png),
        _write_atomic(target / REPORT_HTML, html_text.encode("utf-8", errors="replace")),
        _write_atomic(target / REPORT_JSON, json_bytes),
    ]
    logger.info("compile report written to %s", target / REPORT_HTML)
    return written


def _write_atomic(path: Path, payload: bytes) -> Path:
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(staging, 0o644)  # mkstemp makes it private; a report is meant to be shared
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return path


def history_png(data: Mapping[str, Any]) -> bytes:
    """The search history chart of a report's ``to_dict()`` as PNG bytes (``HISTORY_SIZE`` pixels).

    Score per trial as points (pruned trials hollow, failed ones as ticks on the axis), the
    best so far as a step line, and the cumulative LM calls on a second axis.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A bare Figure with its own Agg canvas: no pyplot, so the user's backend and open figures are untouched.
    fig = Figure(figsize=(HISTORY_SIZE[0] / HISTORY_DPI, HISTORY_SIZE[1] / HISTORY_DPI), dpi=HISTORY_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    trials = list(data.get("trials") or [])
    ax.set_title(f"{data.get('optimizer', '')}: {len(trials)} trials", fontsize=11)
    ax.set_xlabel("trial")
    ax.set_ylabel("score (%)")
    ax.grid(True, alpha=0.3)
    if not trials:
        ax.text(0.5, 0.5, "no trials", transform=ax.transAxes, ha="center", va="center", color="0.4")
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        _plot_trials(fig, ax, trials)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=HISTORY_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _plot_trials(fig: Any, ax: Any, trials: list[dict[str, Any]]) -> None:
    from matplotlib.ticker import MaxNLocator

    def points(state: str, key: str = "score") -> tuple[list[int], list[float]]:
        chosen = [t for t in trials if t["state"] == state and t.get(key) is not None]
        return [t["number"] for t in chosen], [100 * t[key] for t in chosen]

    handles = []
    xs, ys = points("complete")
    handles.append(ax.scatter(xs, ys, s=22, color="#1f6feb", zorder=3, label="trial score"))
    xs, ys = points("complete", "full_score")
    if xs:
        handles.append(ax.scatter(xs, ys, s=36, marker="D", facecolors="none", edgecolors="#0a3069", zorder=4, label="full-set score"))
    xs, ys = points("pruned")
    if xs:
        handles.append(ax.scatter(xs, ys, s=28, marker="o", facecolors="none", edgecolors="#9a6700", zorder=3, label="pruned"))
    failed = [t["number"] for t in trials if t["state"] == "failed"]
    if failed:
        handles.append(ax.scatter(failed, [0.02] * len(failed), s=30, marker="x", color="#cf222e", transform=ax.get_xaxis_transform(),
                                  zorder=3, clip_on=False, label="failed"))  # fmt: skip
    best = [(t["number"], 100 * t["best_so_far"]) for t in trials if t.get("best_so_far") is not None]
    if best:
        (line,) = ax.step([b[0] for b in best], [b[1] for b in best], where="post", color="#1a7f37", linewidth=2, label="best so far")
        handles.append(line)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    spend_ax = ax.twinx()
    ax.set_zorder(spend_ax.get_zorder() + 1)  # scores in front of the spend line
    ax.patch.set_visible(False)
    total = 0
    cumulative = []
    for trial in trials:
        total += trial.get("calls", 0) or 0
        cumulative.append(total)
    (calls_line,) = spend_ax.plot(
        [t["number"] for t in trials], cumulative, color="0.55", linestyle="--", linewidth=1, label="LM calls (cumulative)"
    )
    spend_ax.set_ylabel("LM calls (cumulative)", color="0.35")
    spend_ax.set_ylim(bottom=0)
    handles.append(calls_line)
    cost = sum(t.get("cost", 0.0) or 0.0 for t in trials)
    if cost > 0:
        ax.set_title(f"{ax.get_title()}, ${cost:.4f} spent", fontsize=11)
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)


# ---------------------------------------------------------------------------------------------
# HTML


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _pct(score: Any) -> str:
    return "—" if score is None else f"{100 * float(score):.1f}%"


def _count(value: Any) -> str:
    return "—" if value is None else f"{int(value):,}"


def _money(value: Any) -> str:
    return "—" if value is None else f"${float(value):.4f}"


def _short(text: str, width: int = _SHORT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _instructions_text(value: Any) -> str:
    if isinstance(value, Mapping):
        if len(value) == 1:
            return str(next(iter(value.values())))
        return " | ".join(f"{name}: {text}" for name, text in value.items())
    return "" if value is None else str(value)


_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #d0d7de; }
.headline { font-size: 1.35em; margin: .4em 0; } .ci { color: #57606a; }
.note { border-left: 4px solid #bf8700; background: #fff8c5; padding: .6em 1em; margin: .8em 0; }
.note.cap { border-color: #cf222e; background: #ffebe9; } .good { color: #1a7f37; font-weight: 600; }
table { border-collapse: collapse; width: 100%; font-size: .9em; margin: .6em 0; }
th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #d8dee4; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.pruned td { color: #9a6700; } tr.failed td { color: #cf222e; } code { font-size: .85em; word-break: break-word; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1.2em; } dl.facts dt { color: #57606a; } dl.facts dd { margin: 0; }
img.history { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
footer { margin-top: 2.5em; color: #8c959f; font-size: .85em; }
"""


def render_html(data: Mapping[str, Any], png: bytes) -> str:
    """The self-contained HTML page of a report's ``to_dict()``, with ``png`` embedded."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>oobleck compile report: {_e(data.get('optimizer'))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Compile report: {_e(data.get('optimizer'))}</h1>",
        *_headline(data),
        "<h2>Run</h2>",
        _facts(data),
        "<h2>Search history</h2>",
        _image(png),
        f'<p class="ci">Also saved as <code>{HISTORY_PNG}</code> beside this page.</p>',
        "<h2>Candidates</h2>",
        _candidates_table(data.get("candidates") or []),
        "<h2>Trials</h2>",
        _trials_table(data.get("trials") or []),
        f"<footer>Written by oobleck {_e(data.get('oobleck_version', __version__))}; the same data is in <code>{REPORT_JSON}</code>.</footer>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _image(png: bytes) -> str:
    source = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    alt = "score per trial, best so far and cumulative LM calls"
    return f'<img class="history" alt="{alt}" width="{HISTORY_SIZE[0]}" height="{HISTORY_SIZE[1]}" src="{source}">'


def _headline(data: Mapping[str, Any]) -> list[str]:
    out = []
    heldout = data.get("heldout")
    if heldout is not None:
        gain = GainInterval.from_dict(heldout)
        out.append(f'<p class="headline">Held-out score: {_pct(gain.baseline)} &rarr; <b>{_pct(gain.compiled)}</b></p>')
        mark = ' class="good"' if gain.significant else ""
        out.append(f'<p class="ci"><span{mark}>{_e(gain.describe())}</span> (paired bootstrap, {gain.resamples:,} resamples).</p>')
        interval = f"the {gain.confidence * 100:g}% interval of the gain runs from {gain.low * 100:+.1f} to {gain.high * 100:+.1f} points"
        if gain.high < 0:
            out.append(
                f'<div class="note not-significant"><b>The compiled program scores lower than the baseline:</b> {interval}, '
                "all below 0. Keep the baseline.</div>"
            )
        elif not gain.significant:
            out.append(
                f'<div class="note not-significant"><b>The gain is not significant:</b> {interval}, which includes 0, so on new '
                "data the compiled program may do no better than the baseline. More held-out examples or a longer search may "
                "settle it.</div>"
            )
    else:
        out.append('<p class="headline">No held-out comparison was run.</p>')
    if data.get("stopped_at_cap"):
        reason = data.get("stop_reason") or "a budget cap was reached"
        out.append(f'<div class="note cap"><b>The compile stopped at a budget cap:</b> {_e(reason)}. '
                   "The result is the best candidate found before the cap.</div>")  # fmt: skip
    return out


def _facts(data: Mapping[str, Any]) -> str:
    spend = data.get("spend") or {}
    budget = data.get("budget") or {}

    def capped(used: str, cap: Any, fmt: Any) -> str:
        return used if cap is None else f"{used} of {fmt(cap)}"

    rows = [
        ("optimizer", _e(data.get("optimizer"))),
        ("metric", _e(data.get("metric") or "—")),
        ("seed", _e(data.get("seed") if data.get("seed") is not None else "—")),
        ("LM calls", capped(_count(spend.get("calls")), budget.get("max_lm_calls"), _count)
         + (f" ({_count(spend.get('billed_calls'))} billed, the rest from the cache)" if spend.get("billed_calls") is not None else "")),
        ("tokens", capped(_count(spend.get("tokens")), budget.get("max_tokens"), _count)),
        ("cost", capped(_money(spend.get("cost")), budget.get("max_cost"), _money)),
    ]  # fmt: skip
    for key, value in (data.get("settings") or {}).items():
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
        rows.append((f"setting: {key}", f"<code>{_e(_short(shown, 400))}</code>"))
    body = "".join(f"<dt>{_e(name)}</dt><dd>{value}</dd>" for name, value in rows)
    return f'<dl class="facts">{body}</dl>'


def _candidates_table(candidates: list[Mapping[str, Any]]) -> str:
    if not candidates:
        return "<p>No candidates were recorded.</p>"
    rows = []
    for c in candidates:
        text = _instructions_text(c.get("instructions"))
        rows.append(f'<tr><td>{_e(c.get("label"))}</td><td class="num">{_pct(c.get("score"))}</td>'
                    f'<td class="num">{_count(c.get("demos"))}</td><td title="{_e(_short(text, 2000))}">{_e(_short(text))}</td></tr>')  # fmt: skip
    head = "<tr><th>candidate</th><th>score</th><th>demos</th><th>instructions</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _trials_table(trials: list[Mapping[str, Any]]) -> str:
    if not trials:
        return "<p>No trials were run.</p>"
    rows = []
    for t in trials:
        params = json.dumps(t.get("params") or {}, ensure_ascii=False, sort_keys=True)
        rows.append(
            f'<tr class="{_e(t.get("state"))}"><td class="num">{_e(t.get("number"))}</td><td>{_e(t.get("state"))}</td>'
            f'<td class="num">{_pct(t.get("score"))}</td><td class="num">{_pct(t.get("full_score"))}</td>'
            f'<td class="num">{_pct(t.get("best_so_far"))}</td><td class="num">{_count(t.get("calls"))}</td>'
            f'<td class="num">{_count(t.get("tokens"))}</td><td class="num">{_money(t.get("cost"))}</td>'
            f'<td class="num">{float(t.get("seconds") or 0):.1f}s</td><td>{_e(t.get("label"))}</td>'
            f"<td><code>{_e(_short(params, 300))}</code></td></tr>"
        )
    head = ("<tr><th>#</th><th>state</th><th>score</th><th>full score</th><th>best so far</th><th>calls</th><th>tokens</th>"
            "<th>cost</th><th>time</th><th>label</th><th>params</th></tr>")  # fmt: skip
    return f"<table>{head}{''.join(rows)}</table>"


# ---------------------------------------------------------------------------------------------
# Terminal


def print_summary(report: CompileReport, console: Any) -> None:
    """Print the candidates table and the before/after line to a rich ``console``."""
    from rich.table import Table
    from rich.text import Text

    data = report.to_dict()
    candidates = data["candidates"]
    if candidates:
        table = Table(title=Text(f"{data['optimizer']}: candidates"))
        table.add_column("candidate")
        table.add_column("score", justify="right")
        table.add_column("demos", justify="right")
        table.add_column("instructions", overflow="fold")
        for c in candidates:  # Text(), not str: LM-written instructions must not be read as rich markup
            table.add_row(Text(c["label"]), _pct(c["score"]), _count(c["demos"]), Text(_short(_instructions_text(c["instructions"]), 120)))
        console.print(table)
    heldout = data["heldout"]
    if heldout is not None:
        gain = GainInterval.from_dict(heldout)
        line = Text(f"held-out: {_pct(gain.baseline)} -> {_pct(gain.compiled)}, {gain.describe()}")
        line.stylize("bold green" if gain.significant else "yellow")
        console.print(line)
    else:
        console.print(Text("held-out: no comparison was run"))
    spend = data["spend"]
    console.print(Text(f"spent: {_count(spend.get('calls'))} LM calls, {_count(spend.get('tokens'))} tokens, {_money(spend.get('cost'))}"))
    if data["stopped_at_cap"]:
        console.print(
            Text(f"stopped at a budget cap: {data['stop_reason'] or 'a cap was reached'}; kept the best so far", style="bold red")
        )
