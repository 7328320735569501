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
from rich.table import Table

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
            err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
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
    except Exception as exc:  # noqa: BLE001 - the user's file failed; say where
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
    if callable(obj):
        made = obj()
        if isinstance(made, Module):
            return made
    raise ConfigurationError(f"PROGRAM {reference!r} is neither an ob.Module nor a function/class returning one")


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
        table.add_row(str(c.get("source")), "-" if score is None else f"{100 * score:.1f}%", str((c.get("cost") or {}).get("calls", "-")))
    return table


def _score_table(rows: list[tuple[str, Any]]) -> Table:
    """One row per evaluated program."""
    table = Table(show_header=True)
    table.add_column("program")
    table.add_column("score", justify="right")
    for label, result in rows:
        table.add_row(label, f"{result.percent:.1f}%  ({len(result.results)} examples, {result.errors} errors)")
    return table


@app.command()
@_friendly
def compile(  # noqa: A001 - the command's name
    program: str = typer.Argument(..., help="path/to/file.py:object (an ob.Module, or a function returning one)"),
    train: Path = typer.Option(..., "--train", help="training data (.jsonl, .json, .csv, .parquet)"),
    dev: Path = typer.Option(None, "--dev", help="dev data for scoring candidates and the before/after table"),
    test: Path = typer.Option(None, "--test", help="held-out data: scored before and after, never used to choose"),
    metric: str = typer.Option("exact_match", "--metric", help="built-in name or path/to/file.py:function"),
    optimizer: str = typer.Option("bootstrap", "--optimizer", help="labeled | bootstrap | random"),
    lm: str = typer.Option(None, "--lm", help="LM id, e.g. hf/oobleck-tiny or openai/gpt-4o-mini"),
    out: Path = typer.Option(..., "--out", help="artifact folder to write (e.g. qa.oobleck)"),
    inputs: str = typer.Option(None, "--inputs", help="input keys of the data, e.g. context,question"),
    max_demos: int = typer.Option(4, "--max-demos"),
    num_candidates: int = typer.Option(8, "--num-candidates", help="random search: bootstrapped candidates"),
    threads: int = typer.Option(8, "--threads"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Compile PROGRAM on --train (scored on --dev) and save the artifact to --out."""
    from oobleck.data import load_examples
    from oobleck.evaluate import Evaluate
    from oobleck.lm.lm import LM
    from oobleck.optimizers import BootstrapFewShot, LabeledFewShot, RandomSearch

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
    if optimizer == "labeled":
        opt: Any = LabeledFewShot(max_demos, seed=seed)
    elif optimizer == "bootstrap":
        opt = BootstrapFewShot(metric_fn, max_demos=max_demos, num_threads=threads, seed=seed)
    elif optimizer in ("random", "random_search"):
        opt = RandomSearch(metric_fn, max_demos=max_demos, num_candidates=num_candidates, num_threads=threads, seed=seed, display_progress=False)
    else:
        raise ConfigurationError(f"unknown optimizer {optimizer!r}; choose labeled, bootstrap or random")
    err.print(f"compiling with {type(opt).__name__} on {len(trainset)} training examples")
    with err.status(f"{type(opt).__name__} is searching"):
        compiled = opt.compile(student, trainset=trainset, valset=devset)
    if len(compiled.compile_info.get("candidates", [])) > 1:
        console.print(_candidates_table(compiled.compile_info["candidates"]))
    scores = compiled.compile_info.setdefault("scores", {})
    rows = []
    for label, data in (("dev", devset), ("test", testset)):
        if data:
            scorer = Evaluate(devset=data, metric=metric_fn, num_threads=threads, display_progress=False)
            before, after = scorer(student), scorer(compiled)
            scores.update({f"{label}_before": before.score, f"{label}_after": after.score})
            rows.append((label, len(data), before, after))
    if rows:
        table = Table(title=f"{type(opt).__name__}: score before and after compiling")
        for column in ("set", "examples", "before", "after", "gain"):
            table.add_column(column, justify="left" if column == "set" else "right")
        for label, n, before, after in rows:
            table.add_row(label, str(n), f"{before.percent:.1f}%", f"{after.percent:.1f}%", f"{after.percent - before.percent:+.1f} pts")
        console.print(table)
    path = compiled.save(out)
    console.print(f"saved [bold]{path}[/]")


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
    input: list[str] = typer.Option([], "--input", "-i", help="an input as key=value (repeat for each field)"),  # noqa: A002
    lm: str = typer.Option(None, "--lm", help="LM id (default: the one recorded in the artifact)"),
    program: str = typer.Option(None, "--program", help="path/to/file.py:object for artifacts of user Modules"),
    as_json: bool = typer.Option(False, "--json", help="print the outputs as JSON"),
) -> None:
    """Run a compiled program once on --input key=value pairs."""
    from oobleck._json import to_jsonable

    loaded, _ = _load(artifact, program, lm)
    values: dict[str, Any] = {}
    for item in input:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DataError(f"--input must be key=value, got {item!r}")
        values[key.strip()] = _parse_cli_value(value)
    prediction = loaded(**values)
    outputs = dict(prediction) if hasattr(prediction, "items") else {"output": prediction}
    if as_json:
        console.print_json(json.dumps(to_jsonable(outputs)))
        return
    table = Table(show_header=True)
    table.add_column("field")
    table.add_column("value")
    for key, value in outputs.items():
        table.add_row(key, str(value))
    console.print(table)


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
def inspect(artifact: Path = typer.Argument(..., help="artifact folder"), demos: int = typer.Option(3, "--demos", help="demos shown per predictor")) -> None:
    """Show a compiled program: instructions, demos, scores and provenance."""
    from oobleck.artifact import read_manifest

    manifest = read_manifest(artifact)
    program = manifest["program"]
    console.print(f"[bold]{artifact}[/]  {program.get('class', '?')}  (oobleck {manifest.get('oobleck_version')}, saved {manifest.get('created_at')})")
    for name, state in program["predictors"].items():
        signature = state["signature"]
        fields = ", ".join(f"{f['name']}: {f['type']}" for f in signature["fields"] if f.get("kind") == "input")
        outs = ", ".join(f"{f['name']}: {f['type']}" for f in signature["fields"] if f.get("kind") == "output")
        console.rule(f"predictor [bold]{name}[/] ({state['kind']})")
        console.print(f"signature: {fields} -> {outs}", highlight=False)
        console.print(f"instructions: {signature.get('instructions', '')}", highlight=False)
        if state.get("lm"):
            console.print(f"lm: {state['lm'].get('model')}  adapter: {state.get('adapter') or 'default'}", highlight=False)
        shown = state.get("demos", [])
        console.print(f"demos: {len(shown)}")
        for demo in shown[:demos]:
            console.print("  " + json.dumps(demo, ensure_ascii=False), highlight=False)
    provenance = manifest.get("provenance") or {}
    if provenance:
        console.rule("provenance")
        for key in ("optimizer", "seed", "metric", "data", "scores", "usage", "lms", "settings"):
            if key in provenance:
                console.print(f"{key}: {json.dumps(provenance[key], ensure_ascii=False)}", highlight=False)
        candidates = provenance.get("candidates") or []
        if len(candidates) > 1:
            console.print(_candidates_table(candidates))


def main() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
