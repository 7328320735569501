"""The ``oobleck`` command: compile, evaluate, run and inspect programs.

PROGRAM and metric references (``path/to/file.py:object``) name the user's own code, which
is imported because the user asked for it on the command line. Nothing named inside an
artifact is ever imported. Every ``OobleckError`` ends the command with its message and exit
code 2, never a traceback.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from oobleck.errors import ConfigurationError, DataError, OobleckError

app = typer.Typer(help="oobleck: compile LM programs against data and a metric.", no_args_is_help=True, add_completion=False)
console = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _friendly(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OobleckError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _import_reference(reference: str, what: str) -> Any:
    """``file.py:name`` -> the object, from the user's own file."""
    path_text, sep, attribute = reference.rpartition(":")
    if not sep or not path_text or not attribute:
        raise ConfigurationError(f"{what} must look like path/to/file.py:name, got {reference!r}")
    path = Path(path_text)
    if not path.is_file():
        raise ConfigurationError(f"{what}: no file {path}")
    module_name = f"oobleck_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigurationError(f"{what}: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except OobleckError:
        raise
    except Exception as exc:
        raise ConfigurationError(f"{what}: importing {path} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(path.resolve().parent))
    if not hasattr(module, attribute):
        raise ConfigurationError(f"{what}: {path} has no {attribute!r}")
    return getattr(module, attribute)


def _program(reference: str) -> Any:
    from oobleck.modules.module import Module

    obj = _import_reference(reference, "PROGRAM")
    if isinstance(obj, Module):
        return obj
    found = _dspy_module(obj)
    if found is None and callable(obj):
        made = obj()
        if isinstance(made, Module):
            return made
        found = _dspy_module(made)
    if found is not None:  # a DSPy program, converted so every command takes one (see oobleck.interop)
        from oobleck.interop import from_dspy

        return from_dspy(found)
    raise ConfigurationError(f"PROGRAM {reference!r} is neither an ob.Module, a DSPy module, nor a function/class returning one")


def _dspy_module(obj: Any) -> Any:
    """``obj`` if it is a DSPy module (a DSPy module class is instantiated), else None; never imports DSPy."""
    dspy = sys.modules.get("dspy")
    if dspy is None:
        return None
    if isinstance(obj, dspy.Module):
        return obj
    if isinstance(obj, type) and issubclass(obj, dspy.Module):
        return obj()
    return None


def _metric(spec: str) -> Callable[..., Any]:
    from oobleck.evaluate.metrics import METRICS

    if spec in METRICS:
        return METRICS[spec]
    if ":" in spec:
        fn = _import_reference(spec, "--metric")
        if callable(fn):
            return fn
    from oobleck.errors import MetricError

    raise MetricError(f"unknown metric {spec!r}; use a built-in ({', '.join(sorted(METRICS))}) or path/to/file.py:function")


def _inputs_for(program: Any, data_inputs: str | None) -> list[str]:
    if data_inputs:
        return [k.strip() for k in data_inputs.split(",") if k.strip()]
    predictors = program.named_predictors()
    if len(predictors) == 1:
        return list(predictors[0][1].signature.input_fields)
    raise DataError("this program has several predictors; name the data's input keys with --inputs a,b")


def _lm_for(lm_id: str | None, manifest: dict[str, Any] | None) -> Any:
    from oobleck.lm.lm import LM

    if lm_id:
        return LM(lm_id)
    if manifest:
        for state in manifest["program"]["predictors"].values():
            described = state.get("lm")
            if isinstance(described, dict) and isinstance(described.get("model"), str):
                kwargs = {"base_url": described["base_url"]} if described.get("base_url") else {}
                return LM(described["model"], **kwargs, **(described.get("settings") or {}))
    raise ConfigurationError("no LM: pass --lm (e.g. --lm hf/oobleck-tiny or --lm openai/gpt-4o-mini)")


def _load(directory: Path, program_ref: str | None, lm_id: str | None) -> Any:
    from oobleck.artifact import load_program, read_manifest

    manifest = read_manifest(directory)
    program = _program(program_ref) if program_ref else None
    loaded = load_program(directory, program)
    loaded.set_lm(_lm_for(lm_id, manifest))
    return loaded, manifest


def _candidates_table(candidates: list[dict[str, Any]]) -> Table:
    """The candidates an optimizer scored: where each came from, its dev score, its LM calls."""
    table = Table(title="candidates")
    table.add_column("source")
    table.add_column("dev score", justify="right")
    table.add_column("LM calls", justify="right")
    for c in candidates:
        score = c.get("score")
        table.add_row(Text(str(c.get("source"))), "-" if score is None else f"{100 * score:.1f}%", str((c.get("cost") or {}).get("calls", "-")))
    return table


def _score_table(rows: list[tuple[str, Any]]) -> Table:
    """One row per evaluated program."""
    table = Table(show_header=True)
    table.add_column("program")
    table.add_column("score", justify="right")
    for label, result in rows:
        table.add_row(Text(label), f"{result.percent:.1f}%  ({len(result.results)} examples, {result.errors} errors)")
    return table


_OPTIMIZERS = ("labeled", "bootstrap", "random", "bayesian", "copro", "knn", "reflective", "ensemble", "soft", "auto")
_SESSION_OPTIMIZERS = ("bayesian", "copro", "reflective")


def _make_optimizer(name: str, metric_fn: Callable[..., Any], *, trainset_size: int, devset_size: int | None, max_demos: int,
                    num_candidates: int, trials: int, threads: int, seed: int, budget: Any, session: dict[str, Any],
                    soft: dict[str, Any] | None = None) -> Any:  # fmt: skip
    from oobleck import optimizers as opt

    if name == "auto":
        return opt.auto(metric_fn, trainset_size=trainset_size, devset_size=devset_size, budget=budget, max_demos=max_demos,
                        num_threads=threads, seed=seed, **session)  # fmt: skip
    if name == "labeled":
        return opt.LabeledFewShot(max_demos, seed=seed)
    if name == "bootstrap":
        return opt.BootstrapFewShot(metric_fn, max_demos=max_demos, num_threads=threads, seed=seed)
    if name in ("random", "random_search"):
        return opt.RandomSearch(metric_fn, max_demos=max_demos, num_candidates=num_candidates, num_threads=threads, seed=seed, display_progress=False)
    if name == "bayesian":
        return opt.Bayesian(metric_fn, num_trials=trials, max_demos=max_demos, num_threads=threads, seed=seed, budget=budget, **session)
    if name == "copro":
        return opt.COPRO(metric_fn, num_threads=threads, seed=seed, budget=budget, **session)
    if name == "reflective":
        return opt.Reflective(metric_fn, num_threads=threads, seed=seed, budget=budget, **session)
    if name == "ensemble":
        ensemble = opt.Ensemble(reducer="majority_vote", seed=seed)
        ensemble._member_optimizer = opt.BootstrapFewShot(metric_fn, max_demos=max_demos, num_threads=threads, seed=seed)
        return ensemble
    if name == "knn":
        return opt.KNNFewShot(metric_fn, k=max_demos, num_threads=threads, seed=seed)
    if name == "soft":
        return _soft_prompt(metric_fn, soft or {}, threads, seed)
    raise ConfigurationError(f"unknown optimizer {name!r}; choose one of {', '.join(_OPTIMIZERS)}")


def _soft_prompt(metric_fn: Callable[..., Any], soft: dict[str, Any], threads: int, seed: int) -> Any:
    from oobleck.optimizers.soft_prompt import SoftPrompt

    return SoftPrompt(metric_fn, method=soft.get("method", "prompt_tuning"), steps=soft.get("steps", 300), num_threads=threads, seed=seed,
                      checkpoint_dir=soft.get("checkpoint_dir"))  # fmt: skip


def _spawn_workers(count: int) -> list[Any]:
    """``count`` more processes running this same command as trial-only workers on the shared study."""
    import subprocess

    argv = [sys.executable, "-m", "oobleck.cli", *sys.argv[1:], "--worker"]
    return [subprocess.Popen(argv, stdout=subprocess.DEVNULL) for _ in range(count)]


def _dry_run(opt: Any, student: Any, trainset: Any, devset: Any) -> None:
    from oobleck.optimizers.estimate import estimate_compile

    estimate = estimate_compile(opt, student, trainset, devset)
    table = Table(title=f"{type(opt).__name__}: estimated spend (dry run: no LM was called)")
    for column in ("phase", "LM calls", "prompt tokens", "completion tokens"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for row in estimate.phases:
        table.add_row(row["phase"], str(row["calls"]), str(row["prompt_tokens"]), str(row["completion_tokens"]))
    table.add_row("total", str(estimate.calls), str(estimate.prompt_tokens), str(estimate.completion_tokens), style="bold")
    console.print(table)
    cost = "unknown (no price for this LM; add one with ob.set_price)" if estimate.cost is None else f"${estimate.cost:.4f}"
    console.print(f"estimated cost: {cost}")
    console.print_json(json.dumps(estimate.to_dict()))


@app.command()
@_friendly
def compile(
    program: str = typer.Argument(..., help="path/to/file.py:object (an ob.Module, or a function returning one)"),
    train: Path = typer.Option(..., "--train", help="training data (.jsonl, .json, .csv, .parquet)"),
    dev: Path = typer.Option(None, "--dev", help="dev data for scoring candidates and the before/after table"),
    test: Path = typer.Option(None, "--test", help="held-out data: scored before and after, never used to choose"),
    metric: str = typer.Option("exact_match", "--metric", help="built-in name or path/to/file.py:function"),
    optimizer: str = typer.Option("bootstrap", "--optimizer", help=" | ".join(_OPTIMIZERS)),
    lm: str = typer.Option(None, "--lm", help="LM id, e.g. hf/oobleck-tiny or openai/gpt-4o-mini"),
    out: Path = typer.Option(..., "--out", help="artifact folder to write (e.g. qa.oobleck)"),
    inputs: str = typer.Option(None, "--inputs", help="input keys of the data, e.g. context,question"),
    max_demos: int = typer.Option(4, "--max-demos"),
    num_candidates: int = typer.Option(8, "--num-candidates", help="random search: bootstrapped candidates; ensemble: members"),
    trials: int = typer.Option(24, "--trials", help="bayesian: number of trials"),
    threads: int = typer.Option(8, "--threads"),
    seed: int = typer.Option(0, "--seed"),
    budget_calls: int = typer.Option(None, "--budget-calls", help="stop after this many LM calls (cache hits count)"),
    budget_tokens: int = typer.Option(None, "--budget-tokens", help="stop once this many tokens are spent"),
    budget_cost: float = typer.Option(None, "--budget-cost", help="stop once this many USD are spent (see ob.set_price)"),
    storage: str = typer.Option(None, "--storage", help="optuna storage: a file (.db = SQLite, else journal) or a URL such as postgresql://..."),
    study: str = typer.Option(None, "--study", help="study name in the storage (default: derived from the compile's settings)"),
    workers: int = typer.Option(1, "--workers", help="local worker processes sharing the study"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="continue the study left by an earlier run of this compile"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the estimated LM calls, tokens and cost, and stop"),
    fallback: str = typer.Option(None, "--fallback", help="soft: train soft prompts if the discrete result is below --target or plateaued"),
    target: float = typer.Option(None, "--target", help="soft prompts train when the discrete dev score is below this (or gained too little)"),
    soft_method: str = typer.Option("prompt_tuning", "--soft-method", help="prompt_tuning | prefix_tuning | p_tuning | multitask_prompt_tuning"),
    soft_steps: int = typer.Option(300, "--soft-steps", help="soft prompt training steps (early stopping on the dev metric)"),
    worker: bool = typer.Option(False, "--worker", hidden=True, help="run trials only (started by --workers)"),
) -> None:
    """Compile PROGRAM on --train (scored on --dev) and save the artifact to --out."""
    from oobleck.data import load_examples
    from oobleck.evaluate import Evaluate
    from oobleck.lm.budget import Budget, spending
    from oobleck.lm.lm import LM

    student = _program(program)
    if lm:
        student.set_lm(LM(lm))
    else:
        for predictor in student.predictors():
            predictor.resolve_lm()  # fails early, with a clear message, when no LM is set anywhere
    metric_fn = _metric(metric)
    keys = _inputs_for(student, inputs)
    trainset = load_examples(train, keys)
    devset = load_examples(dev, keys) if dev else None
    testset = load_examples(test, keys) if test else None
    if workers < 1:
        raise ConfigurationError("--workers must be >= 1")
    budget = Budget(budget_calls, budget_tokens, budget_cost)
    shared = storage is not None or workers > 1 or worker
    session = {"storage": storage or out.parent / f"{out.name}.study.db", "study": study, "exclusive": not shared}
    soft = {"method": soft_method, "steps": soft_steps, "checkpoint_dir": out.parent / f"{out.name}.softprompt"}
    opt = _make_optimizer(optimizer, metric_fn, trainset_size=len(trainset), devset_size=len(devset) if devset else None,
                          max_demos=max_demos, num_candidates=num_candidates, trials=trials, threads=threads, seed=seed,
                          budget=budget, session=session, soft=soft)  # fmt: skip
    if fallback is not None:
        if fallback != "soft":
            raise ConfigurationError(f"--fallback takes 'soft', not {fallback!r}")
        if optimizer in ("ensemble", "soft"):
            raise ConfigurationError(f"--fallback soft follows a discrete optimizer, not --optimizer {optimizer}")
        from oobleck.optimizers.fallback import WithFallback

        opt = WithFallback(opt, _soft_prompt(metric_fn, soft, threads, seed), target=target, num_threads=threads)
    if dry_run:
        _dry_run(opt, student, trainset, devset)
        return
    resumable = hasattr(opt, "session")
    if not resumable and (storage or workers > 1):
        raise ConfigurationError(f"{type(opt).__name__} runs in one go; --storage and --workers apply to bayesian, copro and reflective")
    if resumable and not resume and not worker:
        _drop_study(session["storage"], opt, student, trainset, devset)
    children = _spawn_workers(workers - 1) if resumable and workers > 1 and not worker else []
    err.print(f"compiling with {type(opt).__name__} on {len(trainset)} training examples" + (f", {workers} workers" if children else ""))
    from contextlib import nullcontext

    from oobleck.optimizers.session import show_progress

    show_progress(resumable)  # searches draw their own live line: trial, best score, spend
    draws_own = resumable or optimizer == "soft" or fallback is not None  # soft prompt training shows its own progress bar
    waiting = nullcontext() if draws_own else err.status(f"{type(opt).__name__} is searching")
    try:
        with waiting, spending(None if resumable else budget) as spent:
            compiled = _run_optimizer(opt, optimizer, student, trainset, devset, num_candidates, seed)
    finally:
        for child in children:
            child.wait()
    if worker:
        err.print("worker finished its trials")
        return
    info = compiled.compile_info
    if not resumable:
        info.setdefault("spend", {k: v for k, v in spent.to_dict().items() if k != "billed_calls"})
    scores = info.setdefault("scores", {})
    rows, heldout = [], None
    for label, data in (("dev", devset), ("test", testset)):
        if data:
            scorer = Evaluate(devset=data, metric=metric_fn, num_threads=threads, display_progress=False)
            before, after = scorer(student), scorer(compiled)
            scores.update({f"{label}_before": before.score, f"{label}_after": after.score})
            rows.append((label, len(data), before, after))
            if label == "test":  # dev chose the candidate: only the test set is held out
                heldout = (before, after)
    if len(info.get("candidates", [])) > 1 and not resumable:
        console.print(_candidates_table(info["candidates"]))
    if rows:
        table = Table(title=f"{type(opt).__name__}: score before and after compiling")
        for column in ("set", "examples", "before", "after", "gain"):
            table.add_column(column, justify="left" if column == "set" else "right")
        for label, n, before, after in rows:
            table.add_row(label, str(n), f"{before.percent:.1f}%", f"{after.percent:.1f}%", f"{after.percent - before.percent:+.1f} pts")
        console.print(table)
    gain = None
    if heldout is not None:
        from oobleck.evaluate.significance import compare

        gain = compare(*heldout, seed=seed)
        info["heldout"] = gain.to_dict()
    path = compiled.save(out)
    _write_report(opt, compiled, gain, path, spent, budget)
    console.print(f"saved [bold]{escape(str(path))}[/] (report: {escape(str(path / 'report.html'))})")


def _run_optimizer(opt: Any, name: str, student: Any, trainset: Any, devset: Any, members: int, seed: int) -> Any:
    """``opt.compile``; for ``ensemble``, first bootstrap ``members`` programs with different seeds."""
    if name != "ensemble":
        return opt.compile(student, trainset=trainset, valset=devset)
    bootstrap = opt._member_optimizer
    programs = []
    for i in range(members):
        bootstrap.seed = seed + i
        programs.append(bootstrap.compile(student, trainset=trainset, valset=devset))
    return opt.compile(programs)


def _drop_study(storage: Any, opt: Any, student: Any, trainset: Any, devset: Any) -> None:
    """--no-resume: delete this compile's study so the search starts over."""
    import optuna

    from oobleck.optimizers.session import open_storage

    store = open_storage(storage)
    names = {s.study_name for s in optuna.get_all_study_summaries(store)}
    target = getattr(opt, "_study", None)
    for name in names:
        if (target and name == target) or (not target and name.startswith("oobleck-")):
            optuna.delete_study(study_name=name, storage=store)


def _write_report(opt: Any, compiled: Any, gain: Any, path: Path, spent: Any, budget: Any) -> None:
    from oobleck.optimizers.report import CompileReport, print_summary, write_report

    info = compiled.compile_info
    extras = getattr(opt, "report_extras", None) or {}
    session_spend = extras.get("spend") or spent.to_dict()
    spend = {"calls": session_spend.get("calls", 0), "billed_calls": session_spend.get("billed_calls", 0),
             "tokens": session_spend.get("prompt_tokens", 0) + session_spend.get("completion_tokens", 0), "cost": session_spend.get("cost", 0.0)}  # fmt: skip
    candidates = [{"label": c.get("source", ""), "score": c.get("score"), "instructions": c.get("instructions") or "", "demos": sum((c.get("demos") or {}).values())}
                  for c in info.get("candidates", [])]  # fmt: skip
    stopped = info.get("stopped")
    report = CompileReport(optimizer=info.get("optimizer", type(opt).__name__), metric=str(info.get("metric") or ""), seed=info.get("seed"),
                           settings=info.get("settings") or {}, trials=extras.get("trials") or [], candidates=candidates, spend=spend,
                           budget=budget.to_dict(), stopped_at_cap=bool(stopped), stop_reason=stopped, heldout=gain)  # fmt: skip
    write_report(report, path)
    print_summary(report, err)


@app.command()
@_friendly
def evaluate(
    artifact: Path = typer.Argument(..., help="artifact folder"),
    data: Path = typer.Option(..., "--data", help="data file to score on"),
    metric: str = typer.Option("exact_match", "--metric"),
    inputs: str = typer.Option(None, "--inputs", help="input keys of the data"),
    lm: str = typer.Option(None, "--lm", help="LM id (default: the one recorded in the artifact)"),
    program: str = typer.Option(None, "--program", help="path/to/file.py:object for artifacts of user Modules"),
    threads: int = typer.Option(8, "--threads"),
    show: int = typer.Option(0, "--show", help="print the first N examples"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Score a compiled program on a data file."""
    from oobleck.data import load_examples
    from oobleck.evaluate import Evaluate

    loaded, _ = _load(artifact, program, lm)
    examples = load_examples(data, _inputs_for(loaded, inputs))
    result = Evaluate(devset=examples, metric=_metric(metric), num_threads=threads, display_progress=not as_json)(loaded)
    if as_json:
        console.print_json(json.dumps(result.summary()))
        return
    if show:
        console.print(result.table(show))
    console.print(_score_table([(str(artifact), result)]))


@app.command()
@_friendly
def run(
    artifact: Path = typer.Argument(..., help="artifact folder"),
    input: list[str] = typer.Option([], "--input", "-i", help="an input as key=value (repeat for each field)"),
    lm: str = typer.Option(None, "--lm", help="LM id (default: the one recorded in the artifact)"),
    program: str = typer.Option(None, "--program", help="path/to/file.py:object for artifacts of user Modules"),
    as_json: bool = typer.Option(False, "--json", help="print the outputs as JSON"),
) -> None:
    """Run a compiled program once on --input key=value pairs."""
    from oobleck._json import to_jsonable

    loaded, _ = _load(artifact, program, lm)
    values = _input_values(input)
    prediction = loaded(**values)
    outputs = dict(prediction) if hasattr(prediction, "items") else {"output": prediction}
    if as_json:
        console.print_json(json.dumps(to_jsonable(outputs)))
        return
    table = Table(show_header=True)
    table.add_column("field")
    table.add_column("value")
    for key, value in outputs.items():
        table.add_row(Text(key), Text(str(value)))  # LM output may hold "[...]": not markup
    console.print(table)


def _input_values(items: list[str]) -> dict[str, Any]:
    """``--input key=value`` pairs as the program's keyword inputs (JSON lists and objects parsed, the rest text)."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DataError(f"--input must be key=value, got {item!r}")
        values[key.strip()] = _parse_cli_value(value)
    return values


def _parse_cli_value(text: str) -> Any:
    """JSON lists and objects become values; everything else stays text."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return text
    return text


@app.command()
@_friendly
def inspect(
    artifact: Path = typer.Argument(..., help="artifact folder"),
    demos: int = typer.Option(3, "--demos", help="demos shown per predictor"),
    trace: bool = typer.Option(False, "--trace", help="also run once on --input and show every step: each hop's query and passages"),
    input: list[str] = typer.Option([], "--input", "-i", help="with --trace: an input as key=value (repeat for each field)"),
    program_ref: str = typer.Option(None, "--program", help="with --trace: path/to/file.py:object for artifacts of user Modules"),
    lm: str = typer.Option(None, "--lm", help="with --trace: LM id (default: the one recorded in the artifact)"),
) -> None:
    """Show a compiled program: instructions, demos, scores and provenance (and, with --trace, one run step by step)."""
    from oobleck.artifact import read_manifest

    manifest = read_manifest(artifact)
    program = manifest["program"]
    console.print(f"[bold]{escape(str(artifact))}[/]  {escape(str(program.get('class', '?')))}  (oobleck {escape(str(manifest.get('oobleck_version')))}, saved {escape(str(manifest.get('created_at')))})")
    for name, state in program["predictors"].items():
        signature = state["signature"]
        fields = ", ".join(f"{f['name']}: {f['type']}" for f in signature["fields"] if f.get("kind") == "input")
        outs = ", ".join(f"{f['name']}: {f['type']}" for f in signature["fields"] if f.get("kind") == "output")
        console.rule(f"predictor [bold]{escape(name)}[/] ({escape(str(state['kind']))})")
        console.print(f"signature: {fields} -> {outs}", markup=False, highlight=False)
        console.print(f"instructions: {signature.get('instructions', '')}", markup=False, highlight=False)
        if state.get("lm"):
            console.print(f"lm: {state['lm'].get('model')}  adapter: {state.get('adapter') or 'default'}", markup=False, highlight=False)
        shown = state.get("demos", [])
        console.print(f"demos: {len(shown)}")
        for demo in shown[:demos]:
            console.print("  " + json.dumps(demo, ensure_ascii=False), markup=False, highlight=False)
    provenance = manifest.get("provenance") or {}
    if provenance:
        console.rule("provenance")
        for key in ("optimizer", "seed", "metric", "data", "scores", "usage", "lms", "settings"):
            if key in provenance:
                console.print(f"{key}: {json.dumps(provenance[key], ensure_ascii=False)}", markup=False, highlight=False)
        candidates = provenance.get("candidates") or []
        if len(candidates) > 1:
            console.print(_candidates_table(candidates))
    for name, entry in program.get("retrievers", {}).items():
        config = entry.get("retriever") or {}
        where = config.get("index") or config.get("url") or config.get("name") or "the configured retriever"
        described = f"{config.get('kind', 'configured')} k={entry.get('k')} ({where})"
        console.print(f"retriever [bold]{escape(name)}[/]: {escape(described)}", highlight=False)
    if trace:
        _inspect_trace(artifact, program_ref, lm, input)


def _inspect_trace(artifact: Path, program_ref: str | None, lm_id: str | None, items: list[str]) -> None:
    """``inspect --trace``: one traced run of the loaded program, shown hop by hop."""
    from oobleck.modules.trace import trace as tracing
    from oobleck.trace_view import render_trace

    if not items:
        raise DataError("--trace needs the program's inputs: --input key=value (repeat for each field)")
    loaded, _ = _load(artifact, program_ref, lm_id)
    values = _input_values(items)
    with tracing() as entries:
        outputs = loaded(**values)
    render_trace(console, loaded, entries, outputs)


@app.command("import-dspy")
@_friendly
def import_dspy(
    file: Path = typer.Argument(..., help="JSON state written by dspy_program.save('program.json')"),
    program: str = typer.Option(..., "--program", help="path/to/file.py:object, the DSPy (or oobleck) program the state belongs to"),
    out: Path = typer.Option(..., "--out", help="artifact folder to write"),
) -> None:
    """Import a DSPy-saved JSON program state as an oobleck artifact (pickles are refused)."""
    from oobleck.interop import import_dspy_json

    loaded = import_dspy_json(file, _program(program), out=out)
    console.print(f"wrote {out} ({len(loaded.named_predictors())} predictors)", highlight=False, markup=False)


@app.command("export-dspy")
@_friendly
def export_dspy(
    artifact: Path = typer.Argument(..., help="artifact folder"),
    out: Path = typer.Option(..., "--out", help="JSON file to write, for dspy_program.load(FILE)"),
    program: str = typer.Option(None, "--program", help="path/to/file.py:object, the DSPy program to check names and fields against"),
) -> None:
    """Write a compiled program's instructions and demos as DSPy's saved JSON state."""
    from oobleck.interop import to_dspy

    reference = None
    if program:
        obj = _import_reference(program, "--program")
        reference = _dspy_module(obj)
        if reference is None and callable(obj):
            reference = _dspy_module(obj())
        if reference is None:
            raise ConfigurationError(f"--program {program!r} is not a DSPy module (or a function/class returning one)")
    to_dspy(artifact, out, dspy_program=reference)
    console.print(f"wrote {out}; load it with dspy_program.load({str(out)!r})", highlight=False, markup=False)

@app.command()
@_friendly
def serve(
    artifacts: list[str] = typer.Argument(..., help="artifact folders, each DIR (named after the folder) or NAME=DIR"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0 for every interface)"),
    port: int = typer.Option(8000, "--port", help="port to listen on; 0 picks a free one"),
    lm: str = typer.Option(None, "--lm", help="LM id for every program (default: the one recorded in each artifact)"),
    program: list[str] = typer.Option([], "--program", help="[NAME=]path/to/file.py:object for artifacts of user Modules (repeatable)"),
    workers: int = typer.Option(1, "--workers", help="server processes sharing the port (each loads its own programs and models)"),
    threads: int = typer.Option(256, "--threads", help="worker threads for synchronous work (user Modules, in-process models)"),
    openai: bool = typer.Option(True, "--openai/--no-openai", help="serve in-process models at /v1/chat/completions"),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level"),
    access_log: bool = typer.Option(False, "--access-log", help="log every request"),
) -> None:
    """Serve compiled programs over HTTP: POST /programs/NAME, GET /programs, /healthz, /metrics, /docs."""
    import os

    from oobleck.serve.server import bind, run_server, run_workers, url_of

    if workers < 1:
        raise ConfigurationError("--workers must be >= 1")
    spec = {"artifacts": artifacts, "program": program, "lm": lm, "threads": threads, "openai": openai}
    application = _serve_app(spec, preload=False)  # in the parent too: a bad artifact fails here, with its message
    models = application.state.registry.hf_models()
    if workers == 1:  # loaded here, so a model that cannot load is a clean error (workers load their own)
        for model in {id(m): m for m in models.values()}.values():
            with err.status(f"loading {model.budget_id}"):
                model.load()
    sock = bind(host, port)
    url = url_of(sock)
    console.print(f"serving {len(application.state.registry)} program(s) at {url}  (docs: {url}/docs)", highlight=False, soft_wrap=True, markup=False)
    for s in application.state.registry:
        console.print(f"  POST {url}/programs/{s.name}   <- {s.source}", highlight=False, soft_wrap=True, markup=False)
    if models and openai:
        console.print(f"  OpenAI-compatible: {url}/v1  models: {', '.join(models)}", highlight=False, soft_wrap=True, markup=False)
    sys.stdout.flush()
    if workers == 1:
        run_server(application, sock, log_level=log_level, access_log=access_log)
        return
    os.environ[_SERVE_SPEC] = json.dumps(spec)  # spawned workers read it in _serve_worker_app
    run_workers("oobleck.cli:_serve_worker_app", sock, workers, log_level=log_level, access_log=access_log)


_SERVE_SPEC = "OOBLECK_SERVE_SPEC"


def _serve_app(spec: dict[str, Any], *, preload: bool = True) -> Any:
    """The app for ``oobleck serve``: each artifact loaded as ``oobleck run`` loads it, named, LMs shared."""
    from oobleck.serve import ServedProgram, create_app
    from oobleck.serve.registry import name_for, split_named

    references: dict[str | None, str] = {}
    for item in spec["program"]:
        name, reference = split_named(item)
        if name in references:
            raise ConfigurationError(f"--program given twice for {name or 'every program'!r}")
        references[name] = reference
    served, shared = [], {}
    for item in spec["artifacts"]:
        name, path = split_named(item)
        name = name or name_for(path)
        loaded, _ = _load(Path(path), references.get(name, references.get(None)), spec["lm"])
        _share_lms(loaded, shared)
        served.append(ServedProgram(name, loaded, source=str(path)))
    unused = sorted(n for n in references if n is not None and n not in {s.name for s in served})
    if unused:
        raise ConfigurationError(f"--program names {unused}, which are not among the programs served ({[s.name for s in served]})")
    return create_app(served, max_threads=spec["threads"], openai_compat=spec["openai"], preload=preload, freeze_heap=True)


def _serve_worker_app() -> Any:
    """App factory for ``oobleck serve --workers N``: each worker process builds its own app."""
    import os

    return _serve_app(json.loads(os.environ[_SERVE_SPEC]))


def _share_lms(program: Any, shared: dict[str, Any]) -> None:
    """Programs recording the same LM share one instance: one loaded model, one batcher, one client pool."""
    for predictor in program.predictors():
        if predictor.lm is None:
            continue
        key = json.dumps([type(predictor.lm).__name__, predictor.lm.describe()], sort_keys=True, default=str)
        predictor.lm = shared.setdefault(key, predictor.lm)


def main() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
